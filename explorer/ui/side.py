"""One side of the side-by-side view, built twice (``SidePanel(ctx, pair, "a")`` and ``"b"``): its
model list, its map (drawn by ``core.maps.draw_map``, as the Explore page's map is), the picked
image through its model, and its answers to the action bar's buttons.

Each side is a ``Session`` of its own inside the tab's ``SessionPair``: choosing a model bumps that
side's version and clears everything the side shows (map, reconstruction, result, chart, note), so
nothing of its previous model stays. The overlays (the picked point, a path, a posterior cloud)
travel in the side's hidden JSON box, which ``static/bridge.js`` restyles into the map's named
traces, so a click never resends a map; hovering a point rings the same image on the other map
(the "linked" trace) without a round trip.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core import figures
from vaescope.explorer.core.codes import decode, index_code
from vaescope.explorer.core.compare import ACTIONS, CLOUD, Answer, same_images
from vaescope.explorer.core.maps import draw_map, placeholder, project
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.ui.common import (
    PROGRESS,
    STRIP_PX,
    Context,
    as_response,
    big,
    grid,
    log,
    reporter,
    served,
    short_name,
)
from vaescope.explorer.ui.state import SessionPair

LINKED = {"symbol": "circle-open", "size": 18, "color": "#111", "line": {"width": 3}}
TRACES = ("you are here", "path", "cloud")  # the map's traces the overlay box fills by name
PICK_PX = 150


class SidePanel:
    def __init__(self, ctx: Context, pair: gr.State, side: str) -> None:
        self.ctx = ctx
        self.pair = pair  # the gr.State holding the tab's SessionPair
        self.side = side  # "a" or "b": its elem_ids, its Session in the pair
        self.title = side.upper()

    # -- layout: three pieces, which the view lays out row by row beside the other side's --
    def build_map(self, choices: list[str], value: str | None) -> None:
        with gr.Column(min_width=380):
            self.model = gr.Dropdown(choices, value=value, label=f"Model {self.title}",
                                     elem_id=f"compare-model-{self.side}", interactive=True)
            self.plot = gr.Plot(label=f"Map {self.title}", elem_id=f"compare-map-{self.side}")
            self.info = gr.Markdown("", elem_id=f"compare-info-{self.side}")
            self.overlays = gr.Textbox("{}", visible="hidden", elem_id=f"compare-overlays-{self.side}")

    def build_recon(self) -> None:
        self.recon = gr.Image(label=f"Through model {self.title}", format="png", interactive=False, height=PICK_PX,
                              width=PICK_PX, elem_id=f"compare-recon-{self.side}", elem_classes="pixelated",
                              min_width=PICK_PX, scale=0, buttons=[])

    def build_result(self) -> None:
        with gr.Column(min_width=380):
            self.note = gr.Markdown("", elem_id=f"compare-note-{self.side}")
            self.result = gr.Image(label=f"Model {self.title}", format="png", interactive=False, height=360,
                                   elem_id=f"compare-result-{self.side}", elem_classes="pixelated",
                                   buttons=["download", "fullscreen"])
            self.chart = gr.Plot(visible=False, elem_id=f"compare-chart-{self.side}", show_label=False)

    def map_outputs(self) -> list[Any]:
        return [self.plot, self.info, self.overlays]

    def answer_outputs(self) -> list[Any]:
        return [self.note, self.result, self.chart, self.overlays]

    def load_outputs(self) -> list[Any]:
        """Everything a model switch updates: the whole side."""
        return [self.model, *self.map_outputs(), self.recon, self.note, self.result, self.chart]

    # -- events --
    def wire(self) -> Any:
        """Choosing a model loads it; returns that event (the action bar draws after it)."""
        return self.model.select(self.load, [self.model, self.pair], self.load_outputs(),
                                 api_name=f"compare_load_{self.side}", concurrency_id="load", concurrency_limit=2,
                                 show_progress_on=[self.plot])

    # -- handlers --
    def load(self, name: str | None, pair: SessionPair, progress: Any = PROGRESS) -> Any:
        """Put model ``name`` on this side; every output of the side is cleared for it. A model that
        cannot be loaded is named in the note (the side keeps its model); nothing changes when a
        later switch superseded this one."""
        return as_response(self._load(name, pair, progress))

    def load_if_empty(self, name: str | None, pair: SessionPair, progress: Any = PROGRESS) -> Any:
        """The side's first model (the view's default, when its tab opens): nothing if the side
        already has one or one is on its way."""
        session = pair.side(self.side)
        if not name or session.key is not None or session.version != 0:
            return gr.skip()
        return self.load(name, pair, progress)

    def _load(self, name: str | None, pair: SessionPair, progress: Any) -> dict[Any, Any]:
        session = pair.side(self.side)
        if not name:
            return {self.note: f"Choose a model for side {self.title} in the list above its map."}
        claimed = session.begin_switch()
        try:
            entry = self.ctx.store.open_name(name, reporter(progress))
        except InputError as exc:
            return self._not_loaded(pair, f"Cannot load {name} — {exc}")
        except Exception as exc:  # a bug, or a file that breaks something unforeseen: say so, keep serving
            log.exception("opening a model for the side-by-side view failed")
            return self._not_loaded(pair, f"Cannot load {name} ({type(exc).__name__}: {exc}); the server log "
                                          "has the details.")
        if session.finish_switch(claimed, entry.key) is None:
            return {}
        return {self.plot: placeholder(entry), self.info: self.words(entry), self.overlays: self.overlay_json(pair, {}),
                self.recon: gr.Image(value=None, label=f"Through {short_name(entry)}"), self.note: "",
                self.result: gr.Image(value=None, label=short_name(entry)), self.chart: gr.Plot(value=None, visible=False)}

    def _not_loaded(self, pair: SessionPair, message: str) -> dict[Any, Any]:
        gr.Warning(message)
        current = self.entry(pair)
        names = self.ctx.store.names()
        kept = current.name if current is not None and current.name in names else None
        return {self.model: gr.Dropdown(choices=names, value=kept), self.note: f"⚠️ {message}"}

    def draw(self, method: str, color_by: str, overlay: str, pair: SessionPair, progress: Any = None) -> dict[Any, Any]:
        """This side's map, with the view's projection, colouring and overlay."""
        session = pair.side(self.side)
        version, entry = self.ctx.current(session)
        if not entry.has_points:
            return {self.plot: placeholder(entry), self.info: self.words(entry), self.overlays: "{}"}
        view, figure = draw_map(entry, self.ctx.projections, method, 2, color_by, overlay, progress=reporter(progress))
        session.update(version, view=view)
        figures.add_points(figure, np.zeros((0, 2)), 2, "linked", LINKED)  # where the other map's hover rings
        figures.add_points(figure, np.zeros((0, 2)), 2, "cloud", CLOUD)
        figure.update_layout(height=420, showlegend=True)
        return {self.plot: figure, self.info: self.words(entry), self.overlays: self.overlay_json(pair, {})}

    def show_pick(self, index: int, clicked: ModelEntry, pair: SessionPair) -> tuple[dict[Any, Any], str | None]:
        """Evaluation image ``index`` (clicked on either map) through this side's model: its
        reconstruction and its place on this map; and a line for the page when this side's images
        are not the clicked side's."""
        entry = self.entry(pair)
        if entry is None:
            return {}, None
        why = same_images(clicked, entry) if entry.key != clicked.key else None
        line = None if why is None else f"Model {self.title}: {why}."
        if not entry.has_points or index >= len(entry.latents):
            return {}, line
        code = index_code(entry, index)
        updates: dict[Any, Any] = {self.overlays: self.overlay_json(pair, {"you are here": [code.z]})}
        if entry.generator is not None:
            updates[self.recon] = big(entry, decode(entry, code.z, code.y)[0], PICK_PX)
        return updates, line

    def show(self, answers: list[Answer | str], pair: SessionPair) -> dict[Any, Any]:
        """This side's answers to one press of the bar (a lesson may press several at once): the
        note, the picture or chart (what an earlier press showed is cleared), and the map's
        overlays (the answer's, else the last pick). A string is a refusal, in words."""
        entry = self.entry(pair)
        if entry is None:
            return {self.note: f"Side {self.title} has no model yet: choose one in the list above its map.",
                    self.result: gr.Image(value=None), self.chart: gr.Plot(value=None, visible=False)}
        name = short_name(entry)
        notes, picture, chart, overlay = [], None, None, self._pick_overlay(entry, pair)
        for answer in answers:
            if isinstance(answer, str):
                notes.append(f"**{name}:** {answer}")
                continue
            notes.append(f"**{name}** · {answer.note}")
            if answer.rows is not None:
                rows = answer.rows
                labelled = rows.row_labels if any(rows.row_labels) else None
                image = grid(entry, rows.images, nrow=rows.columns, cell_px=STRIP_PX if rows.columns > 8 else 64,
                             row_labels=labelled)
                picture = gr.Image(value=served(image), label=f"{name} · {ACTIONS[answer.kind].lower()}")
            chart = answer.figure if answer.figure is not None else chart
            overlay = answer.overlay or overlay
        return {self.note: "  \n".join(notes), self.result: picture or gr.Image(value=None, label=name),
                self.chart: gr.Plot(value=chart, visible=chart is not None),
                self.overlays: self.overlay_json(pair, overlay)}

    # -- helpers --
    def entry(self, pair: SessionPair) -> ModelEntry | None:
        """This side's model (None before one is chosen)."""
        session = pair.side(self.side)
        return None if session.key is None else self.ctx.current(session)[1]

    def overlay_json(self, pair: SessionPair, codes: dict[str, Any]) -> str:
        """The JSON of this side's overlay traces: each named trace's codes placed on this side's map
        (the traces not named are emptied)."""
        view = pair.side(self.side).view
        out: dict[str, list] = {name: [] for name in TRACES}
        if view is not None:
            for name, z in codes.items():
                out[name] = np.round(project(view, z), 4).tolist()
        return json.dumps(out)

    @staticmethod
    def _pick_overlay(entry: ModelEntry, pair: SessionPair) -> dict[str, Any]:
        """The last pick's code, to stay marked on the map when an answer has no overlay of its own."""
        if not pair.picks or not entry.has_points or pair.picks[-1] >= len(entry.latents):
            return {}
        return {"you are here": [entry.latents.mean[pair.picks[-1]]]}

    @staticmethod
    def words(entry: ModelEntry) -> str:
        d = entry.description
        facts = [d.title or d.family, f"{d.latent_dim}-d code"]
        if "active_units" in entry.metrics:
            facts.append(f"{entry.metrics['active_units']} active units")
        return f"**{short_name(entry)}** · " + " · ".join(str(f) for f in facts if f)
