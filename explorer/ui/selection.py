"""Finding and keeping points of the map: the search box (its matches ringed on the map, across
redraws) and the selection a lasso or box on the map makes (its size, label mix and mean code; the
mean decoded, traversed from, or the points exported as CSV / parquet / npz).

Both are parts of the map panel, which builds them under the map. The page script
(``static/bridge.js``) turns plotly's ``plotly_selected`` into ``window.__selected`` and a press of
the hidden ``#select-btn``, as it does for clicks.
"""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core.codes import Code, class_of, decode
from vaescope.explorer.core.selection import (
    EXPORT_FORMATS,
    Selection,
    export,
    read_selection,
    search,
    summarize,
)
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.ui.common import QUICK, Context, big, decoder_buttons, handler, short_name
from vaescope.explorer.ui.neighbours import rings_json
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_SEARCH_CHARS

SELECT_HINT = ("**Selection.** Choose the lasso or box tool at the top right of the map and draw around some "
               "points (double-click the map to clear), or select a search's matches (Select them): their size, classes and "
               "mean code appear here.")
MIX_SHOWN = 6  # classes named in a selection's label mix; the rest are counted
CODE_SHOWN = 8  # values of the mean code written out
MEAN_PX = 150
SEARCH_TIP = "Try a class name, #12 (an image), label:3, or column=value (a factor of the data)."


class SelectionView:
    """The selection made on the map, for the session; the app's ``selection()`` reads the most
    recent one made in any session (``last``)."""

    def __init__(self, ctx: Context, session: gr.State, traversal: Any) -> None:
        self.ctx = ctx
        self.session = session
        self.traversal = traversal  # the TraversalPanel "Traverse from here" starts
        self._lock = threading.Lock()
        self._last: Selection | None = None

    def build(self) -> None:
        self.data = gr.Textbox(visible="hidden", elem_id="select-data")
        self.button = gr.Button("select", visible="hidden", elem_id="select-btn")
        with gr.Group(elem_id="selection"):
            self.summary = gr.Markdown(SELECT_HINT, elem_id="selection-summary", padding=True)
            with gr.Row(equal_height=True):
                self.decode_btn = gr.Button("Decode the mean", size="sm", elem_id="selection-decode-btn")
                self.traverse_btn = gr.Button("Traverse from here", size="sm", elem_id="selection-traverse-btn")
                self.format = gr.Dropdown([("CSV", "csv"), ("Parquet", "parquet"), ("NumPy .npz", "npz")],
                                          value="csv", show_label=False, container=False, min_width=110,
                                          elem_id="selection-format")
                self.export_btn = gr.Button("Export", size="sm", elem_id="selection-export-btn")
            with gr.Row(equal_height=False):
                self.mean_image = gr.Image(label="The mean, decoded", format="png", interactive=False,
                                           elem_id="selection-mean",
                                           elem_classes="pixelated", buttons=[], visible=False, scale=0,
                                           min_width=MEAN_PX)
                self.file = gr.File(label="Selection download", interactive=False, height=70,
                                    elem_id="selection-file", visible=False)

    # -- the model changed --
    def outputs(self) -> list[Any]:
        return [self.summary, self.mean_image, self.file]

    def decoder_buttons(self) -> list[Any]:
        return [self.decode_btn, self.traverse_btn]

    def on_model(self, entry: ModelEntry) -> dict[Any, Any]:
        return {self.summary: SELECT_HINT, self.mean_image: gr.Image(value=None, visible=False),
                self.file: gr.File(value=None, visible=False)} | decoder_buttons(entry, self.decoder_buttons())

    def wire(self) -> None:
        self.button.click(self.select, [self.data, self.session], self.outputs(),
                          js="(payload, session) => [window.__selected, session]", api_name="select_points",
                          trigger_mode="always_last", **QUICK)
        self.decode_btn.click(self.decode_mean, [self.session], [self.mean_image], api_name="decode_selection_mean",
                              **QUICK)
        self.traverse_btn.click(self.traverse_mean, [self.session], self.traversal.start_outputs(),
                                api_name="traverse_selection_mean", **QUICK)
        self.export_btn.click(self.export, [self.format, self.session], [self.file], api_name="export_selection",
                              **QUICK)

    # -- handlers --
    @handler
    def select(self, payload: str | None, session: Session) -> dict[Any, Any]:
        """A lasso or box selection on the map ({"indices": [...]}); an empty one clears it."""
        version, entry = self.ctx.current(session)
        if not entry.has_points:
            return {}
        return self.choose(entry, read_selection(payload, len(entry.latents)), session, version)

    def choose(self, entry: ModelEntry, indices: np.ndarray, session: Session, version: int,
               how: str = "selected on the map") -> dict[Any, Any]:
        """Make ``indices`` (evaluation images) the session's selection and summarize it."""
        latents = entry.latents
        selection = None
        if len(indices):
            selection = summarize(indices, latents.mean, latents.labels, entry.description.class_names)
        if not session.update(version, selection=selection):
            return {}
        with self._lock:
            self._last = selection
        cleared = {self.mean_image: gr.Image(value=None, visible=False), self.file: gr.File(value=None, visible=False)}
        if selection is None:
            return {self.summary: SELECT_HINT} | cleared
        return {self.summary: summary_text(entry, selection, how)} | cleared

    def last(self) -> Selection | None:
        """The selection made last, in any session (None: none yet, or it was cleared)."""
        with self._lock:
            return self._last

    def _selection(self, session: Session) -> tuple[int, ModelEntry, Selection]:
        version, entry = self.ctx.current(session)
        if session.selection is None:
            raise InputError("Nothing is selected: choose the lasso or box tool on the map and draw around points.")
        return version, entry, session.selection

    @handler
    def decode_mean(self, session: Session) -> dict[Any, Any]:
        _, entry, selection = self._selection(session)
        image = decode(entry, selection.mean_code, _majority_class(entry, selection))[0]
        return {self.mean_image: gr.Image(value=big(entry, image, MEAN_PX), visible=True, label="The mean, decoded")}

    @handler
    def traverse_mean(self, session: Session) -> dict[Any, Any]:
        version, entry, selection = self._selection(session)
        z = selection.mean_code.astype(np.float32)
        code = Code(entry.key, z.copy(), z, _majority_class(entry, selection),
                    f"the mean code of {selection.size:,} selected points")
        return self.traversal.start(entry, code, session, version)

    @handler
    def export(self, fmt: Any, session: Session) -> dict[Any, Any]:
        _, entry, selection = self._selection(session)
        fmt = str(fmt or "")
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"A selection is exported as {', '.join(EXPORT_FORMATS)}, not {fmt[:20]!r}.")
        latents = entry.latents
        data = export(selection, latents.mean, latents.labels, entry.description.class_names, fmt)
        name = f"{short_name(entry).replace('/', '-')}-selection-{selection.size}.{fmt}"
        return {self.file: gr.File(value=self.ctx.downloads.write(name, data), visible=True)}


def summary_text(entry: ModelEntry, selection: Selection, how: str) -> str:
    """A selection in words: its size, label mix and the start of its mean code."""
    mix = ", ".join(f"{count:,} × {name}" for name, count in selection.label_counts[:MIX_SHOWN])
    rest = len(selection.label_counts) - MIX_SHOWN
    if rest > 0:
        mix += f" and {rest} more class{'es' if rest > 1 else ''}"
    if [name for name, _ in selection.label_counts] == ["?"]:
        mix = "labels unknown"
    z = selection.mean_code
    code = ", ".join(f"{v:.2f}" for v in z[:CODE_SHOWN]) + (f", … ({len(z)} values)" if len(z) > CODE_SHOWN else "")
    point = "point" if selection.size == 1 else "points"
    return (f"**{selection.size:,} {point}** {how} ({short_name(entry)}) · **labels:** {mix} · "
            f"**mean code:** [{code}]")


def _majority_class(entry: ModelEntry, selection: Selection) -> int | None:
    """The class a code made from a selection decodes with: its most common label (a
    class-conditional model), else None."""
    labels = entry.latents.labels[selection.indices]
    known = labels[labels >= 0]
    return class_of(entry, int(np.bincount(known).argmax()) if len(known) else None)


class SearchView:
    """The search box over the map: its matches are kept in the session and ringed on every map."""

    def __init__(self, ctx: Context, session: gr.State, selection: SelectionView) -> None:
        self.ctx = ctx
        self.session = session
        self.selection = selection  # the selection "Select the matches" fills

    def build(self, rings: Any) -> None:
        """The box and its buttons, in the row the map lays out; ``rings`` is the map's hidden box
        of ringed points."""
        self.rings = rings
        self.query = gr.Textbox(show_label=False, container=False, max_length=MAX_SEARCH_CHARS, scale=3, min_width=200,
                                placeholder="Search: a class name, #12, label:3, column=value",
                                elem_id="map-search")
        self.find_btn = gr.Button("Find", size="sm", elem_id="map-search-btn", scale=0, min_width=60)
        self.select_btn = gr.Button("Select them", size="sm", elem_id="map-search-select", scale=0, min_width=100)
        self.clear_btn = gr.Button("Clear", size="sm", elem_id="map-search-clear", scale=0, min_width=60)

    def build_note(self) -> None:
        self.note = gr.Markdown("", elem_id="map-search-note")

    def outputs(self) -> list[Any]:
        return [self.query, self.note]

    def on_model(self) -> dict[Any, Any]:
        return {self.query: "", self.note: ""}

    def wire(self) -> None:
        gr.on([self.find_btn.click, self.query.submit], self.find, [self.query, self.session], [self.note, self.rings],
              api_name="search_map", **QUICK)
        self.clear_btn.click(self.clear, [self.session], [self.query, self.note, self.rings], api_name="clear_search",
                             **QUICK)
        self.select_btn.click(self.select_matches, [self.query, self.session], [self.note, self.rings,
                                                                              *self.selection.outputs()],
                              api_name="select_matches", **QUICK)

    @handler
    def find(self, query: Any, session: Session) -> dict[Any, Any]:
        """Ring the points ``query`` names on the map (kept in the session across redraws)."""
        return self._find(query, session)[2]

    def _find(self, query: Any, session: Session) -> tuple[int, ModelEntry, dict[Any, Any]]:
        version, entry = self.ctx.current(session)
        text = str(query or "").strip()
        matches = self._search(entry, text)
        highlights = {**session.highlights, "matches": matches}
        if not session.update(version, highlights=highlights):
            return version, entry, {}
        return version, entry, {self.note: search_note(entry, session, text, matches),
                                self.rings: rings_json(session, entry, highlights)}

    @handler
    def clear(self, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        highlights = {k: v for k, v in session.highlights.items() if k != "matches"}
        if not session.update(version, highlights=highlights):
            return {}
        return {self.query: "", self.note: "", self.rings: rings_json(session, entry, highlights)}

    @handler
    def select_matches(self, query: Any, session: Session) -> dict[Any, Any]:
        """Search, and make the matches the selection."""
        version, entry, updates = self._find(query, session)
        matches = session.highlights.get("matches")
        if matches is None or len(matches) == 0:
            raise InputError(f"Nothing to select: no point matches. {SEARCH_TIP}")
        text = str(query or "").strip()[:40]
        return updates | self.selection.choose(entry, matches, session, version, f"matching “{text}”")

    def _search(self, entry: ModelEntry, text: str) -> np.ndarray:
        if not entry.has_points:
            raise InputError(f"No points to search: {entry.data_note}.")
        latents = entry.latents
        metadata = _metadata(entry) if "=" in text else None
        return search(text, latents.labels, entry.description.class_names, metadata)


def _metadata(entry: ModelEntry) -> dict[str, np.ndarray]:
    """The columns a ``column=value`` search reads: the data's ground-truth factors, as text ("1",
    "0.5"; made only for such a search)."""
    latents = entry.latents
    if latents is None or latents.factors is None:
        return {}
    return {name: np.array([f"{v:g}" for v in latents.factors[:, k]]) for k, name in enumerate(latents.factor_names)}


def search_note(entry: ModelEntry, session: Session, text: str, matches: np.ndarray) -> str:
    """What a search found, in words."""
    if not text:
        return ""
    shown = text if len(text) <= 40 else text[:39] + "…"
    if len(matches) == 0:
        columns = sorted(_metadata(entry)) if entry.has_points else []
        extra = f" Columns: {', '.join(columns)}." if columns else ""
        return f"Nothing matches “{shown}”. {SEARCH_TIP}{extra}"
    view = session.view
    on_map = int(np.isin(matches, view.indices).sum()) if view is not None and view.key == entry.key else 0
    where = f"{on_map:,} of them on this map" if on_map != len(matches) else "all on this map"
    point = "point matches" if len(matches) == 1 else "points match"
    return f"**{len(matches):,} {point}** “{shown}” ({where}, ringed in orange)."
