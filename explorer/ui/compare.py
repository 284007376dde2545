"""The side-by-side view: two models on the same evaluation images, one projection method, linked
clicks (a click on either map shows that image in both), and every request answered by both sides.

Each side is a ``Session`` of its own inside the tab's ``SessionPair``: loading a model into one
side bumps that side's version, and the handler wrapper drops any answer computed while either
side changed. Hovering a point on one map rings the same image on the other: that happens in the
page (``static/bridge.js``), without a round trip. The overlays (the picked point, a path, a
posterior cloud) travel in one hidden JSON box per side, which the page script restyles into the
map's named traces, so a click never resends a map.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core import figures
from vaescope.explorer.core.codes import decode, index_code
from vaescope.explorer.core.compare import (
    Rows,
    interpolation_rows,
    posterior_rows,
    prior_rows,
    same_images,
    traversal_rows,
)
from vaescope.explorer.core.diagnostics import kl_panel
from vaescope.explorer.core.maps import (
    METHOD_NAMES,
    MapView,
    color_choices,
    map_figure,
    message_figure,
    overlay_choices,
    project,
    subsample,
)
from vaescope.explorer.core.scores import denoise
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.timeline import training_timeline
from vaescope.explorer.ui.common import (
    PROGRESS,
    QUICK,
    STRIP_PX,
    Context,
    big,
    grid,
    handler,
    log,
    served,
    short_name,
)
from vaescope.explorer.ui.map import MAP_CONCURRENCY, MAX_PICK_CHARS
from vaescope.explorer.ui.state import SessionPair

SIDES = ("a", "b")
COLOURS = [("class", "class"), ("mixture component", "component"), ("reconstruction error", "recon"),
           ("KL per image", "kl")]
OVERLAYS = [("none", "none"), ("prior samples", "prior")]
ACTIONS = {"samples": "Prior samples", "interpolate": "Interpolate the last two picks",
           "traverse": "Traverse from the pick", "posterior": "Posterior samples of the pick",
           "denoise": "Denoise the pick", "kl": "KL per dimension", "timeline": "Play the training"}
DENOISE = ("gaussian", 0.5)  # the corruption the compare view's denoise button applies
CAPTION = ("**Side by side.** Two models on the same test images. Click a point on either map: the image is shown "
           "through both models. Hover a point: the same image is ringed on the other map. The buttons below "
           "answer on both sides at once.")
LINKED = {"symbol": "circle-open", "size": 18, "color": "#111", "line": {"width": 3}}
CLOUD = {"symbol": "circle", "size": 6, "color": "rgba(220, 20, 60, 0.55)"}


class ComparePanel:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pair = gr.State(SessionPair())
        self.side_parts: dict[str, dict[str, Any]] = {}

    # -- layout --
    def build(self) -> None:
        names = self.ctx.store.names()
        gr.Markdown(CAPTION, elem_classes="caption", elem_id="compare-caption")
        with gr.Row(equal_height=True):
            self.method = gr.Dropdown([(v, k) for k, v in METHOD_NAMES.items()], value="pca", label="Projection",
                                      elem_id="compare-method", min_width=110)
            self.color = gr.Dropdown(COLOURS, value="class", label="Colour by", elem_id="compare-color",
                                     allow_custom_value=True, min_width=140)
            self.overlay = gr.Dropdown(OVERLAYS, value="none", label="Overlay", elem_id="compare-overlay",
                                       min_width=140)
            self.draw_btn = gr.Button("Draw both", variant="primary", elem_id="compare-draw-btn", scale=0,
                                      min_width=90)
        with gr.Row(equal_height=False):
            for side in SIDES:
                with gr.Column(min_width=380):
                    parts = self.side_parts[side] = {}
                    parts["model"] = gr.Dropdown(names, value=None, label=f"Model {side.upper()}",
                                                 elem_id=f"compare-model-{side}", interactive=True)
                    parts["plot"] = gr.Plot(label=f"Map {side.upper()}", elem_id=f"compare-map-{side}")
                    parts["info"] = gr.Markdown("", elem_id=f"compare-info-{side}")
                    parts["overlays"] = gr.Textbox("{}", visible="hidden", elem_id=f"compare-overlays-{side}")
        self.pick_data = gr.Textbox(visible="hidden", elem_id="compare-pick-data")
        self.pick_btn = gr.Button("pick", visible="hidden", elem_id="compare-pick-btn")
        with gr.Row(equal_height=False):
            self.original = gr.Image(label="Picked image", format="png", interactive=False, height=150, width=150,
                                     elem_id="compare-original", elem_classes="pixelated", min_width=150, scale=0,
                                     buttons=[])
            for side in SIDES:
                self.side_parts[side]["recon"] = gr.Image(
                    label=f"Through model {side.upper()}", format="png", interactive=False, height=150, width=150,
                    elem_id=f"compare-recon-{side}", elem_classes="pixelated", min_width=150, scale=0, buttons=[])
            self.picked_info = gr.Markdown("Click a point on either map.", elem_id="compare-picked-info")
        with gr.Row():
            self.buttons = {kind: gr.Button(label, size="sm", elem_id=f"compare-{kind}-btn")
                            for kind, label in ACTIONS.items()}
        with gr.Row(equal_height=False):
            for side in SIDES:
                with gr.Column(min_width=380):
                    parts = self.side_parts[side]
                    parts["note"] = gr.Markdown("", elem_id=f"compare-note-{side}")
                    parts["result"] = gr.Image(label=f"Model {side.upper()}", format="png", interactive=False,
                                               height=360, elem_id=f"compare-result-{side}",
                                               elem_classes="pixelated", buttons=["download", "fullscreen"])
                    parts["chart"] = gr.Plot(visible=False, elem_id=f"compare-chart-{side}", show_label=False)

    def side(self, side: str, part: str) -> Any:
        return self.side_parts[side][part]

    def outputs(self, part: str) -> list[Any]:
        return [self.side(s, part) for s in SIDES]

    # -- events --
    def wire(self) -> list[Any]:
        """Wire the events; returns each side's load event (a lesson chains on them)."""
        heavy = {"concurrency_id": "map", "concurrency_limit": MAP_CONCURRENCY}
        shared = [self.method, self.color, self.overlay, self.pair]
        loads = []
        for side in SIDES:
            model, plot = self.side(side, "model"), self.side(side, "plot")
            side_out = [plot, self.side(side, "info"), self.side(side, "overlays"), self.side(side, "note"),
                        self.side(side, "result"), self.side(side, "chart")]
            load = model.select(self.loader(side), [model, self.pair], side_out, api_name=f"compare_load_{side}",
                                concurrency_id="load", concurrency_limit=2, show_progress_on=[plot])
            load.success(self.drawer(side), shared, [plot, self.side(side, "info"), self.side(side, "overlays"), self.color],
                         api_name=f"compare_draw_after_load_{side}", api_visibility="private", **heavy)
            loads.append(load)
        gr.on([self.draw_btn.click, self.method.select, self.color.select, self.overlay.select], self.draw_both,
              shared, self.draw_outputs(), api_name="compare_draw", **heavy)
        self.pick_btn.click(self.pick, [self.pick_data, self.pair],
                            [self.original, *self.outputs("recon"), self.picked_info, *self.outputs("overlays")],
                            js="(payload, pair) => [window.__comparePicked, pair]", api_name="compare_pick",
                            trigger_mode="always_last", **QUICK)
        action_out = [*self.outputs("note"), *self.outputs("result"), *self.outputs("chart"),
                      *self.outputs("overlays")]
        for kind, button in self.buttons.items():
            button.click(self.actor(kind), [self.pair], action_out, api_name=f"compare_{kind}",
                         show_progress_on=self.outputs("result"))
        return loads

    def draw_outputs(self) -> list[Any]:
        """What drawing both maps updates: each side's map, info and overlays, and the colourings offered."""
        return [*self.outputs("plot"), *self.outputs("info"), *self.outputs("overlays"), self.color]

    # -- handlers --
    def loader(self, side: str) -> Callable[..., Any]:
        def load_side(name: str | None, pair: SessionPair, progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
            return self.load(side, name, pair, progress)
        return load_side

    def drawer(self, side: str) -> Callable[..., Any]:
        @handler
        def draw_side(method: str, color_by: str, overlay: str, pair: SessionPair,
                      progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
            return self.draw(side, method, color_by, overlay, pair, progress)
        return draw_side

    def actor(self, kind: str) -> Callable[..., Any]:
        @handler
        def act(pair: SessionPair, progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
            return self.act(kind, pair)
        act.__name__ = f"compare_{kind}"
        return act

    def load(self, side: str, name: str | None, pair: SessionPair, progress: Any = None) -> Any:
        """Put model ``name`` on one side: every output of that side is cleared for it."""
        session = pair.side(side)
        if not name:
            raise gr.Error("Choose a model.")
        claimed = session.begin_switch()
        try:
            entry = self.ctx.store.open_name(name, None if progress is None else
                                             (lambda f, d: progress(f, desc=d)))
        except InputError as exc:
            raise gr.Error(f"Cannot load {name} — {exc}") from None
        except Exception as exc:  # a bug, or a file that breaks something unforeseen: say so, keep serving
            log.exception("opening a model for the side-by-side view failed")
            raise gr.Error(f"Cannot load {name} ({type(exc).__name__}: {exc}); the server log has the details.") from None
        if session.finish_switch(claimed, entry.key) is None:
            return gr.skip()
        waiting = (message_figure(f"Drawing the map of {short_name(entry)}…") if entry.has_points
                   else message_figure(f"No map for {short_name(entry)}: {entry.data_note}."))
        return {self.side(side, "plot"): waiting, self.side(side, "info"): self._info(entry),
                self.side(side, "overlays"): "{}", self.side(side, "note"): "",
                self.side(side, "result"): gr.Image(value=None, label=f"{short_name(entry)}"),
                self.side(side, "chart"): gr.Plot(visible=False)}

    @handler
    def draw_both(self, method: str, color_by: str, overlay: str, pair: SessionPair,
                  progress: gr.Progress = PROGRESS) -> dict[Any, Any]:
        updates: dict[Any, Any] = {}
        for side in SIDES:
            if pair.side(side).key is not None:
                updates |= self.draw(side, method, color_by, overlay, pair, progress)
        return updates

    def draw(self, side: str, method: str, color_by: str, overlay: str, pair: SessionPair,
             progress: Any = None) -> dict[Any, Any]:
        session = pair.side(side)
        version, entry = self.ctx.current(session)
        plot, info, box = self.side(side, "plot"), self.side(side, "info"), self.side(side, "overlays")
        if not entry.has_points:
            return {plot: message_figure(f"No map for {short_name(entry)}: {entry.data_note}."),
                    info: self._info(entry), box: "{}"}
        if method not in METHOD_NAMES:
            raise InputError(f"Projection must be one of {', '.join(METHOD_NAMES)}.")
        idx = subsample(len(entry.latents), 0)
        report = None if progress is None else (lambda f, d: progress(f, desc=d))
        try:
            projection = self.ctx.projections.get(f"{entry.key}:", entry.latents.mean[idx], method, 2, progress=report)
        except ValueError as exc:
            raise InputError(f"Cannot project: {exc}") from None
        colours = [value for _, value in color_choices(entry)]
        view = MapView(entry.key, projection, idx, method, color_by if color_by in colours else colours[0])
        session.update(version, view=view)
        overlay = overlay if overlay in [v for _, v in overlay_choices(entry)] else "none"
        figure = map_figure(entry, view, overlay)
        figures.add_points(figure, np.zeros((0, 2)), 2, "linked", LINKED)
        figures.add_points(figure, np.zeros((0, 2)), 2, "cloud", CLOUD)
        figure.update_layout(height=420, showlegend=True)
        return {plot: figure, info: self._info(entry), box: self._overlays(pair, side, {}),
                self.color: gr.Dropdown(choices=self._colourings(pair))}

    def _colourings(self, pair: SessionPair) -> list[tuple[str, str]]:
        """The colourings either loaded model offers (each map falls back to its first where it lacks one)."""
        found: list[tuple[str, str]] = []
        for side in SIDES:
            entry = self.ctx.store.peek(pair.side(side).key) if pair.side(side).key is not None else None
            for choice in color_choices(entry) if entry is not None else []:
                if choice not in found:
                    found.append(choice)
        return found or COLOURS

    @handler
    def pick(self, payload: str | None, pair: SessionPair) -> dict[Any, Any]:
        """A click on either map: the image, through both models."""
        try:  # the bridge sends a few dozen characters; anything longer is not a click
            data = json.loads(payload or "null") if len(payload or "") <= MAX_PICK_CHARS else None
        except (json.JSONDecodeError, RecursionError):
            data = None
        if not isinstance(data, dict) or data.get("kind") != "point" or data.get("side") not in SIDES:
            return {}
        clicked = pair.side(str(data["side"]))
        if clicked.key is None:
            return {}
        _, entry = self.ctx.current(clicked)
        index = index_code(entry, data.get("index")).index  # checked against the clicked side's images
        picks = pair.pick(index)
        updates: dict[Any, Any] = {self.original: big(entry, entry.latents.image(index), 150)}
        lines = [f"**Test image #{index}**" + self._class_words(entry, index)]
        for side in SIDES:
            other = self._entry(pair, side)
            if other is None:
                continue
            if other.key != entry.key and (why := same_images(entry, other)) is not None:
                lines.append(f"Model {side.upper()}: {why}.")
            if not other.has_points or index >= len(other.latents):
                continue
            code = index_code(other, index)
            if other.description.decodes:
                updates[self.side(side, "recon")] = big(other, decode(other, code.z, code.y)[0], 150)
            updates[self.side(side, "overlays")] = self._overlays(pair, side, {"you are here": [code.z]})
        if len(picks) == 2:
            lines.append(f"Last two picks: #{picks[0]} → #{picks[1]} (what *Interpolate* joins).")
        updates[self.picked_info] = "  \n".join(lines)
        return updates

    def act(self, kind: str, pair: SessionPair) -> dict[Any, Any]:
        """One button: its answer on both sides."""
        entries = {side: self._entry(pair, side) for side in SIDES}
        if not any(entries.values()):
            raise InputError("Choose a model for side A or B first.")
        updates: dict[Any, Any] = {}
        for side, entry in entries.items():
            if entry is None:
                continue
            try:
                updates |= self._act_side(kind, side, entry, pair)
            except InputError as exc:
                updates |= {self.side(side, "note"): f"**{short_name(entry)}:** {exc}",
                            self.side(side, "result"): gr.Image(value=None)}
        return updates

    def _act_side(self, kind: str, side: str, entry: ModelEntry, pair: SessionPair) -> dict[Any, Any]:
        note, result, chart = self.side(side, "note"), self.side(side, "result"), self.side(side, "chart")
        name = short_name(entry)
        if kind == "kl":  # the chart only: a picture already shown stays
            figure, notes = kl_panel(entry)
            return {chart: gr.Plot(value=figure, visible=True), note: f"**{name}** · " + " ".join(notes[:2])}
        if kind == "timeline":
            figure, words = training_timeline(entry)
            return {chart: gr.Plot(value=figure, visible=True), note: f"**{name}** · {words}"}
        if not entry.description.decodes:
            raise InputError("precomputed embeddings have no decoder: nothing to decode")
        picks = pair.picks or [0]
        overlay: dict[str, list[np.ndarray] | np.ndarray] = {}
        if kind == "samples":
            rows = prior_rows(entry)
        elif kind == "interpolate":
            if len(picks) < 2:
                raise InputError("click two points on a map first: the interpolation joins the last two picks")
            rows = interpolation_rows(entry, picks[0], picks[1])
            overlay = {"path": rows.codes}
        elif kind == "traverse":
            rows = traversal_rows(entry, picks[-1])
        elif kind == "posterior":
            rows = posterior_rows(entry, picks[-1])
            overlay = {"you are here": [entry.latents.mean[picks[-1]]]}
            if entry.latents.std[picks[-1]].any():  # a deterministic encoder has no cloud to draw
                overlay["cloud"] = rows.codes
        elif kind == "denoise":
            rows = self._denoise_rows(entry, picks[-1])
        else:
            raise InputError(f"unknown action {kind!r}")
        picture = grid(entry, rows.images, nrow=rows.columns, cell_px=STRIP_PX if rows.columns > 8 else 64,
                       row_labels=rows.row_labels if any(rows.row_labels) else None)
        updates = {note: f"**{name}** · {rows.note}",
                   result: gr.Image(value=served(picture), label=f"{name} · {ACTIONS[kind].lower()}")}
        if overlay:
            updates[self.side(side, "overlays")] = self._overlays(pair, side, overlay)
        return updates

    @staticmethod
    def _denoise_rows(entry: ModelEntry, index: int) -> Rows:
        kind, level = DENOISE
        code = index_code(entry, index)
        out = denoise(entry, code.image, kind, level, seed=0, label=code.y)
        return Rows(np.stack([out.clean, out.corrupted, out.rebuilt]), 3, [""],
                    f"test image #{index}: clean · with {kind} noise (level {level}) · rebuilt from its code · "
                    f"error {out.corrupted_error:.4f} → {out.rebuilt_error:.4f} (mean squared, per pixel)")

    # -- helpers --
    def _entry(self, pair: SessionPair, side: str) -> ModelEntry | None:
        session = pair.side(side)
        return None if session.key is None else self.ctx.current(session)[1]

    def _overlays(self, pair: SessionPair, side: str, codes: dict[str, Any]) -> str:
        """The JSON of one side's overlay traces: each named trace's codes placed on that side's map
        (the traces not named are emptied)."""
        view = pair.side(side).view
        out: dict[str, list] = {"you are here": [], "path": [], "cloud": []}
        if view is not None:
            for name, z in codes.items():
                out[name] = np.round(project(view, z), 4).tolist()
        return json.dumps(out)

    @staticmethod
    def _class_words(entry: ModelEntry, index: int) -> str:
        label = int(entry.latents.labels[index])
        return f" (class {entry.description.class_name(label)})" if label >= 0 else ""

    @staticmethod
    def _info(entry: ModelEntry) -> str:
        d = entry.description
        facts = [d.title or d.family, f"{d.latent_dim}-d code"]
        if "active_units" in entry.metrics:
            facts.append(f"{entry.metrics['active_units']} active units")
        return f"**{short_name(entry)}** · " + " · ".join(str(f) for f in facts if f)
