"""The denoising panel: corrupt an image, let the model rebuild it, and see where each model breaks down."""

from __future__ import annotations

from typing import Any

import gradio as gr
import plotly.graph_objects as go

from vaescope.errors import InputError
from vaescope.explorer.core.codes import Code, encode_image, index_code, item_noun
from vaescope.explorer.core.scores import CORRUPTIONS, breakdown_curve, denoise
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import number
from vaescope.explorer.ui.common import QUICK, Context, big, decoder_buttons, handler, short_name
from vaescope.explorer.ui.state import Session
from vaescope.explorer.ui.traversal import _filename, read_upload

CAPTION = ("**Denoising.** Spoil a clean image with noise, let the model encode the spoilt image and decode it "
           "again, and compare. A model that has learnt what images look like puts back what the noise took away; "
           "raise the level to see where it stops coping.")
PX = 168


class DenoisingPanel:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row():
            with gr.Column(min_width=220):
                with gr.Row():
                    self.index = gr.Number(0, precision=0, minimum=0, label="Test image #", elem_id="denoise-index",
                                           min_width=90)
                    self.index_btn = gr.Button("Use image", size="sm", elem_id="denoise-index-btn")
                self.upload = gr.File(label="…or upload an image", file_types=["image"], height=90,
                                      elem_id="denoise-upload")
            with gr.Column(min_width=260):
                self.kind = gr.Radio([("Gaussian noise", "gaussian"), ("masking", "mask"),
                                      ("salt and pepper", "salt-pepper")], value="gaussian", label="Corruption",
                                     elem_id="denoise-kind")
                self.level = gr.Slider(0, 1, value=0.3, step=0.05, label="Level", elem_id="denoise-level", buttons=[])
        with gr.Row(equal_height=True):
            self.clean = gr.Image(label="Clean", format="png", interactive=False, height=PX + 40, buttons=[],
                                  elem_id="denoise-clean", elem_classes="pixelated")
            self.corrupted = gr.Image(label="Corrupted", format="png", interactive=False, height=PX + 40, buttons=[],
                                      elem_id="denoise-corrupted", elem_classes="pixelated")
            self.rebuilt = gr.Image(label="Rebuilt by the model", format="png", interactive=False, height=PX + 40,
                                    buttons=[], elem_id="denoise-rebuilt", elem_classes="pixelated")
        self.note = gr.Markdown("", elem_id="denoise-note")
        self.curve_btn = gr.Button("Where does it break down? (64 test images, every level)", size="sm",
                                   elem_id="denoise-curve-btn")
        self.curve = gr.Plot(label="Error by corruption level", elem_id="denoise-curve")

    def model_outputs(self) -> list[Any]:
        return [self.clean, self.corrupted, self.rebuilt, self.note, self.curve, self.index, self.index_btn, self.curve_btn]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        note = "" if entry.generator is not None else f"**{short_name(entry)}** has no decoder: nothing to denoise with."
        return {self.clean: None, self.corrupted: None, self.rebuilt: None, self.note: note, self.curve: None,
                self.index: gr.Number(value=0, maximum=len(entry.latents) - 1 if entry.has_points else 0,
                                      label=f"Test {item_noun(entry)} #")} | \
            decoder_buttons(entry, [self.index_btn, self.curve_btn])

    def wire(self) -> None:
        s = self.session
        out = [self.clean, self.corrupted, self.rebuilt, self.note]
        self.index_btn.click(self.denoise_index, [self.index, self.kind, self.level, s], out,
                             api_name="denoise_index", **QUICK)
        self.upload.upload(self.denoise_upload, [self.upload, self.kind, self.level, s], out,
                           api_name="denoise_upload", **QUICK)
        gr.on([self.level.input, self.kind.input], self.denoise_again, [self.kind, self.level, s], out,
              api_name="denoise", trigger_mode="always_last", **QUICK)
        self.curve_btn.click(self.denoise_curve, [self.kind, s], [self.curve], api_name="denoise_curve",
                             show_progress_on=[self.curve])

    def _show(self, entry: ModelEntry, source: Code, kind: Any, level: Any, session: Session,
              version: int) -> dict[Any, Any]:
        if source.image is None:
            raise InputError("pick a test image or upload one first")
        value = number(level, "Level", 0.0, 1.0)
        if kind not in CORRUPTIONS:
            raise InputError(f"Corruption must be one of {CORRUPTIONS}.")
        result = denoise(entry, source.image, kind, value, label=source.y)
        if not session.update(version, denoise_source=source):
            return {}
        removed = 1 - result.rebuilt_error / result.corrupted_error if result.corrupted_error > 0 else 0.0
        verdict = (f"the model removed {removed:.0%} of the error" if removed > 0 else
                   "the rebuild is further from the clean image than the corrupted one: the model does not help here")
        note = (f"**{short_name(entry)}** · {source.source} · {kind} at level {value:g}: squared error per pixel to the "
                f"clean image, corrupted **{result.corrupted_error:.4f}**, rebuilt **{result.rebuilt_error:.4f}** "
                f"({verdict}).")
        return {self.clean: big(entry, result.clean, PX), self.corrupted: big(entry, result.corrupted, PX),
                self.rebuilt: big(entry, result.rebuilt, PX), self.note: note}

    @handler
    def denoise_index(self, index: Any, kind: Any, level: Any, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        return self._show(entry, index_code(entry, index), kind, level, session, version)

    @handler
    def denoise_upload(self, path: str | None, kind: Any, level: Any, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        code, _ = encode_image(entry, read_upload(path), None, f"uploaded {_filename(path)}")
        return self._show(entry, code, kind, level, session, version)

    @handler
    def denoise_again(self, kind: Any, level: Any, session: Session) -> dict[Any, Any]:
        """The level or the kind moved: corrupt the same image again."""
        version, entry = self.ctx.current(session)
        source = session.denoise_source
        if source is None or source.key != entry.key:
            source = index_code(entry, 0)
        return self._show(entry, source, kind, level, session, version)

    @handler
    def denoise_curve(self, kind: Any, session: Session) -> dict[Any, Any]:
        _, entry = self.ctx.current(session)
        levels, corrupted, rebuilt = breakdown_curve(entry, str(kind))
        figure = go.Figure([go.Scatter(x=levels, y=corrupted, name="corrupted input", mode="lines+markers"),
                            go.Scatter(x=levels, y=rebuilt, name="rebuilt by the model", mode="lines+markers")])
        figure.update_layout(title=f"{short_name(entry)} · {kind}: error to the clean images by level",
                             xaxis={"title": "corruption level"}, yaxis={"title": "squared error per pixel"},
                             legend={"orientation": "h", "y": -0.25, "x": 0}, margin={"b": 80})
        return {self.curve: figure}
