"""The interpolation panel: two endpoints (a test image, a clicked point, an upload), a straight or
great-circle path between their codes, the decoded strip, a GIF, and the path drawn on the map.

The strip never waits for the map: the path reaches the map through a small JSON value that the
page draws into the existing figure (``static/bridge.js``), placed on the map by nearest fitted
neighbours, so a fresh UMAP map costs nothing extra.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core import figures, interpolation
from vaescope.explorer.core.codes import (
    Code,
    decode,
    encode_image,
    index_code,
    item_noun,
    random_code,
)
from vaescope.explorer.core.compare import INTERPOLATION_STEPS
from vaescope.explorer.core.embeddings import NO_DECODER
from vaescope.explorer.core.maps import points_json
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import whole
from vaescope.explorer.ui.common import (
    QUICK,
    STRIP_PX,
    Context,
    big,
    decoder_buttons,
    display_of,
    grid,
    handler,
    served,
    short_name,
)
from vaescope.explorer.ui.state import Session
from vaescope.explorer.ui.traversal import _class, _filename, read_upload

CAPTION = ("**Interpolation.** Walk in a straight line (or along a great circle) from the code of image A "
           "to the code of image B and decode every step. A smooth strip means the space between the two "
           "codes is filled with sensible images.")
ENDPOINT_PX = 140  # the ends, chosen and decoded: 28 px digits upscaled 5 times
ENDS = ("a", "b")


class InterpolationPanel:
    def __init__(self, ctx: Context, session: gr.State, traversal: Any) -> None:
        self.ctx = ctx
        self.session = session
        self.traversal = traversal  # for the class the user chose to decode with
        self.original: dict[str, Any] = {}
        self.recon: dict[str, Any] = {}
        self.index: dict[str, Any] = {}
        self.index_btn: dict[str, Any] = {}
        self.pick_btn: dict[str, Any] = {}
        self.upload: dict[str, Any] = {}

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row():
            for end in ENDS:
                self._endpoint(end)
            with gr.Column(min_width=220):
                self.steps = gr.Slider(2, 32, value=INTERPOLATION_STEPS, step=1, label="Steps", elem_id="interp-steps",
                                       buttons=[])
                self.method = gr.Radio([("straight line", "linear"), ("great circle (slerp)", "slerp")],
                                       value="linear", label="Path", elem_id="interp-method")
                self.button = gr.Button("Interpolate", variant="primary", elem_id="interp-btn")
                self.info = gr.Markdown("", elem_id="interp-info")
        self.strip = gr.Image(label="Decoded path (A → B); the path is drawn on the map", format="png",
                              interactive=False, height=170, elem_id="interp-strip", elem_classes="pixelated",
                              buttons=["fullscreen"])
        with gr.Row():
            self.gif_view = gr.Image(label="Animation", type="filepath", format="gif", interactive=False,
                                     height=200, elem_id="interp-gif-view", elem_classes="pixelated", buttons=[])
            self.gif = gr.File(label="GIF download", interactive=False, height=70, elem_id="interp-gif")
        self.path_json = gr.Textbox(visible="hidden", elem_id="map-path")

    def _endpoint(self, end: str) -> None:
        with gr.Column(min_width=240):
            gr.Markdown(f"**Endpoint {end.upper()}**")
            with gr.Row(equal_height=False):
                self.original[end] = gr.Image(label=f"{end.upper()}: chosen", format="png", height=ENDPOINT_PX + 30,
                                              interactive=False, elem_id=f"interp-{end}-original",
                                              elem_classes="pixelated", min_width=100, buttons=[])
                self.recon[end] = gr.Image(label=f"{end.upper()}: decoded", format="png", height=ENDPOINT_PX + 30,
                                           interactive=False, elem_id=f"interp-{end}-image",
                                           elem_classes="pixelated", min_width=100, buttons=[])
            with gr.Row():
                self.index[end] = gr.Number(0 if end == "a" else 1, precision=0, minimum=0, label="Test image #",
                                            elem_id=f"interp-{end}-index", min_width=90)
                self.index_btn[end] = gr.Button("Use image", size="sm", elem_id=f"interp-{end}-index-btn")
            self.pick_btn[end] = gr.Button("Use the point picked on the map", size="sm",
                                           elem_id=f"interp-{end}-pick-btn")
            self.upload[end] = gr.File(label="…or upload an image", file_types=["image"], height=90,
                                       elem_id=f"interp-{end}-upload")

    # -- the model changed --
    def model_outputs(self) -> list[Any]:
        return [*self.original.values(), *self.recon.values(), self.strip, self.gif_view, self.gif, self.info,
                self.path_json, *self.index.values(), *self.decoder_buttons()]

    def decoder_buttons(self) -> list[Any]:
        return [self.button, *self.index_btn.values(), *self.pick_btn.values()]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        cleared: dict[Any, Any] = {c: None for c in [*self.original.values(), *self.recon.values(), self.gif_view,
                                                     self.gif]}
        info = "" if entry.generator is not None else f"**{short_name(entry)}** · {NO_DECODER.format(what='interpolate')}."
        cleared |= {self.index[end]: gr.Number(label=f"Test {item_noun(entry)} #") for end in ENDS}
        return cleared | {self.strip: gr.Image(value=None, label="Decoded path (A → B); the path is drawn on the map"),
                          self.info: info, self.path_json: json.dumps({"points": []})} | \
            decoder_buttons(entry, self.decoder_buttons())

    # -- events --
    def wire(self) -> None:
        s = self.session
        for end in ENDS:
            out = [self.original[end], self.recon[end], self.path_json]
            self.index_btn[end].click(self._set_from_index(end), [self.index[end], s], out,
                                      api_name=f"interp_{end}_index", **QUICK)
            self.pick_btn[end].click(self._set_from_pick(end), [s], out, api_name=f"interp_{end}_picked", **QUICK)
            self.upload[end].upload(self._set_from_upload(end), [self.upload[end], self.traversal.cls, s], out,
                                    api_name=f"interp_{end}_upload", **QUICK)
        self.button.click(self.interpolate, [self.steps, self.method, s],
                          [self.strip, self.gif_view, self.gif, self.info, self.path_json,
                           *self.original.values(), *self.recon.values()],
                          api_name="interpolate", show_progress_on=[self.strip])

    def _endpoint_updates(self, end: str, entry: ModelEntry, code: Code) -> dict[Any, Any]:
        recon = decode(entry, code.z, code.y)[0]
        return {self.original[end]: None if code.image is None else big(entry, code.image, ENDPOINT_PX),
                self.recon[end]: big(entry, recon, ENDPOINT_PX)}

    def _set(self, end: str, entry: ModelEntry, code: Code, session: Session, version: int) -> dict[Any, Any]:
        ends = {**session.ends, end: code}
        if not session.update(version, ends=ends, path=None):
            return {}
        return self._endpoint_updates(end, entry, code) | {self.path_json: json.dumps({"points": []})}

    def _set_from_index(self, end: str) -> Any:
        @handler
        def set_from_index(index: Any, session: Session) -> dict[Any, Any]:
            version, entry = self.ctx.current(session)
            return self._set(end, entry, index_code(entry, index), session, version)
        set_from_index.__name__ = f"interp_{end}_index"
        return set_from_index

    def _set_from_pick(self, end: str) -> Any:
        @handler
        def set_from_pick(session: Session) -> dict[Any, Any]:
            version, entry = self.ctx.current(session)
            picked = session.picked
            if picked is None or picked.key != entry.key:
                raise InputError("Click a point on the map first.")
            return self._set(end, entry, picked, session, version)
        set_from_pick.__name__ = f"interp_{end}_picked"
        return set_from_pick

    def _set_from_upload(self, end: str) -> Any:
        @handler
        def set_from_upload(path: str | None, y: Any, session: Session) -> dict[Any, Any]:
            version, entry = self.ctx.current(session)
            code, note = encode_image(entry, read_upload(path), _class(y, entry), f"uploaded {_filename(path)}")
            if note:
                gr.Info(f"Image converted: {note}")
            return self._set(end, entry, code, session, version)
        set_from_upload.__name__ = f"interp_{end}_upload"
        return set_from_upload

    @handler
    def interpolate(self, steps: Any, method: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        n = whole(steps, "Steps", 2, 32)
        if method not in ("linear", "slerp"):
            raise InputError(f"Path must be linear or slerp, got {method!r}.")
        ends = {end: code for end, code in session.ends.items() if code.key == entry.key}
        for i, end in enumerate(ENDS):  # unset endpoints: test images 0 and 1, or prior samples
            if end not in ends:
                ends[end] = index_code(entry, i) if entry.has_points else random_code(entry, None, seed=i)
        a, b = ends["a"], ends["b"]
        codes = interpolation.interpolate(a.z, b.z, n, method).astype(np.float32)
        images = decode(entry, codes, a.y)
        drawn = figures.pictures(images, display_of(entry))
        name = short_name(entry)
        gif = self.ctx.downloads.write(f"{name.replace('/', '-')}-interpolation.gif",
                                       figures.gif_bytes(drawn, scale=max(1, 192 // max(drawn.shape[-2:])),
                                                         duration_ms=120))
        if not session.update(version, ends=ends, path=codes):
            return {}
        note = f"**{name}** · {n} steps, {method}, from {a.source} to {b.source}"
        if a.y is not None:
            note += f"; decoded as class {entry.description.class_name(a.y)}"
        view = session.view
        path_json = points_json(view if view is not None and view.key == entry.key else None, codes)
        label = f"{name} · decoded path (A → B); the path is drawn on the map"
        captions = ["A", *[""] * (n - 2), "B"]
        updates = {self.strip: gr.Image(value=served(grid(entry, images, nrow=len(images), cell_px=STRIP_PX, captions=captions)),
                                        label=label),
                   self.gif_view: gif, self.gif: gif, self.info: note,
                   self.path_json: path_json}
        for end in ENDS:
            updates |= self._endpoint_updates(end, entry, ends[end])
        return updates
