"""The traversal panel: one slider per latent dimension, the decoded image live while you drag, and
where the code starts (a test image, a prior sample, an upload, a drawing); plus the traversal grid.

A spatial code (a diffusers VAE's C x H x W) gets sliders named by channel and position, channel
pages (one slider moves a whole channel map, ``dims.CHANNELS``; the default) and the code drawn as
one small heatmap per channel under the image, redrawn on every move.

The slider events are the hot path: they skip Gradio's queue (one request per move), never load a
model (a model evicted from memory shows "loading" instead of blocking), decode one image and
return only what changed. Gradio 6 shows no error toast for an unqueued event, so a failure is
written into the note under the image.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from vaescope.contract import fill_other_groups
from vaescope.errors import InputError
from vaescope.explorer.core import figures, traversal
from vaescope.explorer.core.codes import (
    Code,
    decode,
    encode_image,
    index_code,
    item_noun,
    random_code,
)
from vaescope.explorer.core.dims import (
    SLIDERS,
    channel_bounds,
    channel_codes,
    channel_label,
    channel_offset,
    code_scale,
    default_range,
    dim_info,
    nice_bounds,
    page_channels,
    page_choices,
    page_dims,
    parse_page,
    shift_channel,
    slider_bounds,
    slider_label,
)
from vaescope.explorer.core.embeddings import NO_DECODER
from vaescope.explorer.core.maps import points_json
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.uploads import sketch_to_rgb
from vaescope.explorer.core.values import number, whole
from vaescope.explorer.ui.common import (
    PREVIEW_PX,
    QUICK,
    STRIP_PX,
    Context,
    as_response,
    big,
    decoder_buttons,
    grid,
    handler,
    log,
    served,
    short_name,
)
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_CLASSES, MAX_IMAGE_BYTES

# The slider events skip Gradio's queue: one request and response per move instead of a queue
# join and a stream of status messages, each of which Gradio 6's page answers by copying the
# props of every component with a loading status (12 ms of the page's main thread per move,
# measured with Chromium's profiler; docs/performance.md).
SLIDER_QUEUE = False
CAPTION = ("**Traversal.** The image decoded from one code. Each slider moves one dimension of that code; "
           "the most used dimensions come first. Drag one and watch what it controls. A code with channels "
           "(C × H × W) opens on channel sliders, each moving a whole channel map, and is drawn as channel maps "
           "under the image.")
GRID_CAPTION = ("Each row moves one dimension of the current code across the slider range, left to right "
                "(rows follow the current page of sliders, most used first).")
GRID_PX = 64
# the presenter layout's grid: the most used rows of the page, at most this many steps, cells of at
# least STRIP_PX (1280x720: three rows of 140 px MNIST digits beside the controls)
PRESENT_GRID_ROWS, PRESENT_GRID_STEPS = 3, 7
CODE_LABEL = "The code: {c} channel maps ({where}) · blue −{scale:.2g} · white 0 · red +{scale:.2g}"


class TraversalPanel:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    # -- layout --
    def build(self) -> None:
        gr.Markdown(CAPTION, elem_id="traversal-caption", elem_classes="caption")
        with gr.Row(equal_height=False):
            self.image = gr.Image(label="Decoded", format="png", height=PREVIEW_PX + 40, interactive=False,
                                  elem_id="traversal-image", elem_classes="pixelated", show_label=False,
                                  buttons=["fullscreen"], scale=3, min_width=200)
            self.start_image = gr.Image(label="Start image", format="png", height=110, width=110,
                                        interactive=False, elem_id="traversal-start", elem_classes="pixelated",
                                        scale=1, min_width=110, buttons=[])
        self.note = gr.Markdown("", elem_id="traversal-info")
        self.code_image = gr.Image(label="The code as channel maps", format="png", interactive=False, visible=False,
                                   elem_id="traversal-code", elem_classes="pixelated", buttons=[], height=150)
        self.marker = gr.Textbox(visible="hidden", elem_id="map-marker")
        # the current code for the page's own decoder (static/decode.js): a slider move decodes in the
        # page at once, and the server's answer follows
        self.code_json = gr.Textbox(visible="hidden", elem_id="traversal-code-json")
        with gr.Row(elem_id="traversal-controls"):
            self.index = gr.Number(0, precision=0, minimum=0, label="Test image #", elem_id="traversal-index",
                                   min_width=90)
            self.index_btn = gr.Button("Start from image", size="sm", elem_id="traversal-index-btn")
            self.random_btn = gr.Button("Random prior sample", size="sm", elem_id="traversal-random-btn")
            self.reset_btn = gr.Button("Reset", size="sm", elem_id="traversal-reset")
        with gr.Row(elem_id="traversal-range-row"):
            self.range = gr.Radio([("±3 prior sd", "prior"), ("data min–max", "data")], value="prior",
                                  label="Slider range", elem_id="traversal-range")
            self.cls = gr.Dropdown([], label="Decode as class", visible=False, elem_id="traversal-class")
        self.page = gr.Dropdown([("dims 1–16", "z:0")], value="z:0", label="Latent layer / dimensions", visible=False,
                                elem_id="dim-page")
        # no per-slider reset button: it would move the slider without decoding (Reset above does both)
        with gr.Column(elem_id="sliders"):
            self.sliders = [gr.Slider(-3, 3, value=0, step=0.03, label=f"z{i}", elem_id=f"dim-slider-{i}",
                                      elem_classes="dim-slider", buttons=[]) for i in range(SLIDERS)]
        with gr.Accordion("Start from your own image or a drawing", open=False,
                          elem_id="traversal-own") as self.own:
            self.upload = gr.File(label="Image (PNG / JPEG …); converted to the model's size", file_types=["image"],
                                  elem_id="traversal-upload", height=110)
            self.sketch = gr.Sketchpad(type="numpy", canvas_size=(280, 280), fixed_canvas=True, layers=False,
                                       brush=gr.Brush(default_size=20, colors=["#000000"], color_mode="fixed"),
                                       label="…or draw, then encode", height=330, elem_id="traversal-sketch")
            self.sketch_btn = gr.Button("Encode the drawing", size="sm", elem_id="traversal-sketch-btn")

    def build_grid(self) -> None:
        gr.Markdown(GRID_CAPTION, elem_classes="caption")
        with gr.Row():
            self.grid_steps = gr.Slider(3, 15, value=9, step=1, label="Steps", elem_id="traversal-grid-steps", buttons=[])
            self.grid_btn = gr.Button("Make traversal grid", variant="primary", elem_id="traversal-grid-btn")
        self.grid_image = gr.Image(label="Traversal grid", format="png", interactive=False, height=520,
                                   elem_id="traversal-grid", elem_classes="pixelated", buttons=["fullscreen"])
        self.grid_file = gr.File(label="PNG download", interactive=False, height=70, elem_id="traversal-grid-file")

    # -- the model changed --
    def start_outputs(self) -> list[Any]:
        """What a new start code updates: the class dropdown, the images, the note, the sliders, the
        marker, and the "Test image #" field (it names the image the code came from)."""
        return [self.cls, self.image, self.start_image, self.note, *self.sliders, self.marker, self.index,
                self.code_image, self.code_json]

    def model_outputs(self) -> list[Any]:
        return [*self.start_outputs(), self.page, self.range, self.grid_image, self.grid_file, self.own,
                *self.decoder_buttons()]

    def decoder_buttons(self) -> list[Any]:
        return [self.index_btn, self.random_btn, self.reset_btn, self.sketch_btn, self.grid_btn]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        if entry.generator is None:
            return self._no_decoder(entry, session)
        condition = entry.description.condition
        names = entry.description.class_names or tuple(str(i) for i in range(condition.size))
        code = index_code(entry, 0) if entry.has_points else random_code(entry, None, seed=0)
        pages = page_choices(entry)
        mode = default_range(entry)
        max_index = len(entry.latents) - 1 if entry.has_points else 0
        updates = {self.page: gr.Dropdown(choices=pages, value=pages[0][1], visible=len(pages) > 1),
                   self.range: mode,
                   self.grid_image: gr.Image(value=None, label="Traversal grid"), self.grid_file: None}
        updates |= self.start(entry, code, session, session.version, page=pages[0][1], range_mode=mode)
        updates[self.index] = gr.Number(value=0, maximum=max_index, label=f"Test {item_noun(entry)} #")  # its range
        updates |= decoder_buttons(entry, self.decoder_buttons())
        updates[self.own] = gr.Accordion(visible=entry.description.display != "features")  # a table's row: no images
        choices = condition.class_choices(names)
        updates[self.cls] = gr.Dropdown(choices=choices, value=code.y if choices else None, visible=bool(choices))
        return updates

    def _no_decoder(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        """Precomputed codes: no sliders and no image, and a note that says why."""
        session.update(session.version, code=None)
        note = f"**{short_name(entry)}** · {NO_DECODER.format(what='traverse')}."
        return {self.note: note, self.image: None, self.start_image: None, self.marker: points_json(None, None),
                self.code_image: gr.Image(value=None, visible=False), self.own: gr.Accordion(visible=False),
                **{slider: gr.Slider(visible=False) for slider in self.sliders},
                self.page: gr.Dropdown(visible=False), self.cls: gr.Dropdown(choices=[], value=None, visible=False),
                self.code_json: page_code(entry, None, None),
                self.index: gr.Number(value=0), self.range: "prior",
                self.grid_image: gr.Image(value=None, label="Traversal grid"), self.grid_file: None,
                **decoder_buttons(entry, self.decoder_buttons())}

    # -- shared by every start --
    def start(self, entry: ModelEntry, code: Code, session: Session, version: int, page: int | None = None,
              range_mode: str | None = None) -> dict[Any, Any]:
        """Make ``code`` the session's traversal code and show it: sliders, images, note, class."""
        if not session.update(version, code=code):
            return {}
        trail = session.record_trail(version, code.z, restart=True)
        updates = self.view(entry, code, page, range_mode)
        updates[self.marker] = self._marker_json(session, entry, trail)
        updates[self.start_image] = None if code.image is None else big(entry, code.image, 110)
        if code.index is not None:
            updates[self.index] = code.index
        if code.y is not None:  # a code decoded with a class shows it in the class list
            updates[self.cls] = gr.Dropdown(value=code.y)
        return updates

    def view(self, entry: ModelEntry, code: Code, page: Any, range_mode: str | None) -> dict[Any, Any]:
        """The sliders, decoded image and note for ``code`` on dimension page ``page`` (a channel
        page: one slider per channel, at its offset from the start code)."""
        info = dim_info(entry)
        mode = range_mode or default_range(entry)
        channels = page_channels(entry, page)
        if channels is not None:
            lo, hi = channel_bounds(entry, mode, code.z0)
            slots = [(int(c), channel_offset(entry, code.z, code.z0, int(c)), channel_label(entry, info, int(c)))
                     for c in channels]
        else:
            lo, hi = slider_bounds(entry, mode)
            slots = [(int(d), float(code.z[d]), slider_label(info, int(d), entry.description.dim_name(int(d))))
                     for d in page_dims(entry, page)]
        updates: dict[Any, Any] = {}
        for slot, slider in enumerate(self.sliders):
            if slot < len(slots):
                d, value, label = slots[slot]
                mn, mx, step = nice_bounds(float(lo[d]), float(hi[d]), value)
                shown = min(max(round(value, 4), mn), mx)  # shown rounded; the session keeps the exact code
                updates[slider] = gr.Slider(minimum=mn, maximum=mx, step=step, value=shown, label=label, visible=True)
            else:
                updates[slider] = gr.Slider(visible=False)
        image = decode(entry, code.z, code.y)[0]
        updates[self.image] = big(entry, image)
        updates[self.note] = self.note_text(entry, code)
        updates[self.code_image] = self.code_view(entry, code.z)
        updates[self.code_json] = page_code(entry, code, None if channels is not None else
                                            [d for d, _, _ in slots])
        return updates

    @staticmethod
    def code_view(entry: ModelEntry, z: np.ndarray) -> Any:
        """The code z [D] as one heatmap per channel (a spatial code), else hidden."""
        description = entry.description
        if not description.spatial:
            return gr.Image(value=None, visible=False)
        scale = code_scale(entry)
        where = "×".join(str(s) for s in description.latent_shape[1:])
        label = CODE_LABEL.format(c=description.latent_shape[0], where=where, scale=scale)
        return gr.Image(value=served(figures.code_maps(z, description.latent_shape, scale)), label=label, visible=True)

    @staticmethod
    def note_text(entry: ModelEntry, code: Code) -> str:
        """Where the code came from, and the class it is decoded as."""
        text = f"**{short_name(entry)}** · from {code.source}"
        if code.y is not None:  # only a decoder that takes the class gives a code one
            text += f" · decoded as class {entry.description.class_name(code.y)}"
        return text

    def _marker_json(self, session: Session, entry: ModelEntry, trail: list[np.ndarray]) -> str:
        """The trail of codes placed on the current map, for the page's "you are here" marker."""
        view = session.view
        return points_json(view if view is not None and view.key == entry.key else None, trail)

    # -- events --
    def wire(self, present: Any = None) -> None:
        """The panel's events; ``present`` is the page's presenter-layout toggle (the traversal grid
        is drawn for a projector when it is on)."""
        s = self.session
        start_out = self.start_outputs()
        view_out = [self.image, self.note, *self.sliders, self.code_image, self.code_json]
        for i, slider in enumerate(self.sliders):
            # preprocess=False skips Gradio's per-event bounds check; the handler checks the value itself
            slider.input(self.slider_handler(i), [slider, self.page, s],
                         [self.image, self.note, self.marker, self.code_image],
                         api_name=f"slider_{i}", trigger_mode="always_last", preprocess=False, queue=SLIDER_QUEUE,
                         show_progress_on=[self.image], **QUICK)
        self.index_btn.click(self.traverse_from_index, [self.index, self.page, self.range, s], start_out,
                             api_name="traverse_from_index", **QUICK)
        self.random_btn.click(self.traverse_random, [self.cls, self.page, self.range, s], start_out,
                              api_name="traverse_random", **QUICK)
        self.upload.upload(self.traverse_upload, [self.upload, self.cls, self.page, self.range, s], start_out,
                           api_name="traverse_upload", **QUICK)
        self.sketch_btn.click(self.traverse_sketch, [self.sketch, self.cls, self.page, self.range, s], start_out,
                              api_name="traverse_sketch", **QUICK)
        self.reset_btn.click(self.traverse_reset, [self.page, self.range, s], [*view_out, self.marker],
                             api_name="traverse_reset", **QUICK)
        self.cls.select(self.traverse_class, [self.cls, self.page, self.range, s], view_out,
                        api_name="traverse_class", **QUICK)
        gr.on([self.range.input, self.page.select], self.traverse_view, [self.page, self.range, s], view_out,
              api_name="traverse_view", **QUICK)
        self.grid_btn.click(self.traversal_grid, [self.grid_steps, self.page, self.range, s,
                                                  *([present] if present is not None else [])],
                            [self.grid_image, self.grid_file], api_name="traversal_grid",
                            show_progress_on=[self.grid_image])

    def slider_handler(self, slot: int) -> Any:
        """The handler of slider ``slot``: set one coordinate, decode one image."""
        def on_slide(value: Any, page: Any, session: Session) -> Any:
            return as_response(slide(value, page, session))

        def slide(value: Any, page: Any, session: Session) -> dict[Any, Any]:
            version, key, code = session.version, session.key, session.code
            entry = self.ctx.store.peek(key)
            if entry is None:
                if key is not None:
                    self.ctx.store.warm(key)  # reload in the background; this move does not wait
                    return {self.note: "**Loading the model…** move the slider again in a moment."}
                return {self.note: "**No model is loaded yet:** pick one in the list."}
            try:
                x = number(value, "The slider value")
            except InputError as exc:
                return {self.note: f"**Cannot decode:** {exc}"}
            try:
                if code is None or code.key != entry.key:  # a code of another model never reaches its decoder
                    code = index_code(entry, 0) if entry.has_points else random_code(entry, None, seed=0)
                channels = page_channels(entry, page)
                if channels is not None:  # a whole channel map moves by one offset from the start code
                    if slot >= len(channels):
                        return {}
                    new = code.moved(shift_channel(entry, code.z, code.z0, int(channels[slot]), x))
                else:
                    dims = page_dims(entry, page)
                    if slot >= len(dims):
                        return {}
                    new = code.moved(moved_in_group(entry, code.z, int(dims[slot]), x, page))
                image = decode(entry, new.z, new.y)[0]
            except InputError as exc:
                return {self.note: f"**Cannot decode:** {exc}"}
            except Exception as exc:  # a bug: the log keeps the traceback, the page says what failed
                log.exception("slider %d failed", slot)
                return {self.note: f"**Decoding failed** ({type(exc).__name__}: {exc}); the server log has the details."}
            if not session.update(version, code=new):
                return {}  # the session switched models meanwhile
            trail = session.record_trail(version, new.z)
            updates = {self.image: big(entry, image), self.note: self.note_text(entry, new),
                       self.marker: self._marker_json(session, entry, trail)}
            if entry.description.spatial:
                updates[self.code_image] = self.code_view(entry, new.z)
            return updates
        on_slide.__name__ = f"slider_{slot}"
        return on_slide

    @handler
    def traverse_from_index(self, index: Any, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        return self.start(entry, index_code(entry, index), session, version, page, range_mode)

    @handler
    def traverse_random(self, y: Any, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        return self.start(entry, random_code(entry, _class(y, entry)), session, version, page, range_mode)

    @handler
    def traverse_upload(self, path: str | None, y: Any, page: Any, range_mode: str, session: Session
                        ) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        code, note = encode_image(entry, read_upload(path), _class(y, entry), f"uploaded {_filename(path)}")
        if note:
            gr.Info(f"Image converted: {note}")
        return self.start(entry, code, session, version, page, range_mode)

    @handler
    def traverse_sketch(self, sketch: Any, y: Any, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        rgb = sketch_to_rgb(sketch)
        if rgb is None:
            raise InputError("Draw something first.")
        code, note = encode_image(entry, rgb, _class(y, entry), "your drawing")
        if note:
            gr.Info(f"Drawing converted: {note}")
        return self.start(entry, code, session, version, page, range_mode)

    def _current_code(self, session: Session, entry: ModelEntry) -> Code:
        code = session.code
        if code is None or code.key != entry.key:
            return index_code(entry, 0) if entry.has_points else random_code(entry, None, seed=0)
        return code

    @handler
    def traverse_reset(self, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        code = self._current_code(session, entry).reset()
        if not session.update(version, code=code):
            return {}
        trail = session.record_trail(version, code.z, restart=True)
        return self.view(entry, code, page, range_mode) | {self.marker: self._marker_json(session, entry, trail)}

    @handler
    def traverse_class(self, y: Any, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        code = self._current_code(session, entry).with_class(_class(y, entry))
        if not session.update(version, code=code):
            return {}
        return self.view(entry, code, page, range_mode)

    @handler
    def traverse_view(self, page: Any, range_mode: str, session: Session) -> dict[Any, Any]:
        version, entry = self.ctx.current(session)
        code = self._current_code(session, entry)
        session.update(version, code=code)
        return self.view(entry, code, page, range_mode)

    @handler
    def traversal_grid(self, steps: Any, page: Any, range_mode: str, session: Session,
                       present: bool = False) -> dict[Any, Any]:
        """A grid: each row moves one dimension (or channel) of the current code over the range. In
        the presenter layout (``present``), the page's PRESENT_GRID_ROWS most used rows and at most
        PRESENT_GRID_STEPS steps, in cells of at least STRIP_PX, so it fits 1280x720 unscaled."""
        version, entry = self.ctx.current(session)
        code = self._current_code(session, entry)
        n = whole(steps, "Steps", 3, 15)
        if present:
            n = min(n, PRESENT_GRID_STEPS)
        rows_shown = PRESENT_GRID_ROWS if present else None
        mode = range_mode if range_mode in ("prior", "data") else default_range(entry)
        channels = page_channels(entry, page)
        if channels is not None:  # rows move whole channels, by offsets from the start code
            channels = channels[:rows_shown]
            lo, hi = channel_bounds(entry, mode, code.z0)
            codes = channel_codes(entry, code.z, code.z0, channels, lo, hi, n)
            names = [f"c{c}" for c in channels]
        else:
            dims = page_dims(entry, page)[:rows_shown]
            lo, hi = slider_bounds(entry, mode)
            codes = traversal.traversal_codes(code.z, dims, lo, hi, n)
            group, _ = parse_page(page, entry)
            with torch.inference_mode():  # the other layers follow each moved one (a hierarchical model)
                codes = fill_other_groups(entry.model, torch.from_numpy(codes).to(entry.model.device),
                                          group.name).float().cpu().numpy()
            names = [entry.description.dim_name(int(d)) for d in dims]
        images = decode(entry, codes, code.y)
        picture = grid(entry, images, nrow=n, cell_px=STRIP_PX if present else GRID_PX, row_labels=names)
        rows = ", ".join(names) + (" (whole channels)" if channels is not None else "")
        name = short_name(entry)
        label = f"{name} · traversal grid · rows, top to bottom: {rows} · columns: {mode} range, low to high" + (
            f" · presenter layout: the {len(names)} most used, {n} steps" if present else "")
        return {self.grid_image: gr.Image(value=served(picture), label=label),
                self.grid_file: self.ctx.downloads.write(f"{name.replace('/', '-')}-traversal-grid.png",
                                                         _png(picture))}


def page_code(entry: ModelEntry, code: Code | None, dims: list[int] | None) -> str:
    """The code the page's own decoder starts from (static/decode.js), as JSON: the model's key, z
    [D], the class the decoder takes (0 when it takes none), the dimension each slider moves
    (``dims``; null on a channel page, whose sliders move whole channels: the server decodes those),
    and a fresh nonce, so the same code sent again (a Reset) still reaches the page."""
    if code is None:
        return json.dumps({"key": entry.key, "z": None, "nonce": uuid.uuid4().hex})
    y = entry.description.condition.decoder_class(code.y)
    return json.dumps({"key": entry.key, "z": [float(v) for v in np.asarray(code.z, np.float32)],
                       "y": 0 if y is None else int(y), "dims": dims, "nonce": uuid.uuid4().hex})


def moved_in_group(entry: ModelEntry, z: np.ndarray, dim: int, value: float, page: Any) -> np.ndarray:
    """z [D] with dimension ``dim`` set to ``value``, and the latent groups other than the page's
    filled with their conditional means (a hierarchical model; otherwise nothing else changes)."""
    moved = traversal.set_coordinate(z, dim, value)
    if len(entry.description.latent_groups) < 2:
        return moved
    group, _ = parse_page(page, entry)
    with torch.inference_mode():
        filled = fill_other_groups(entry.model, torch.from_numpy(moved[None]).to(entry.model.device), group.name)
    return filled[0].float().cpu().numpy()


def _class(y: Any, entry: ModelEntry) -> int | None:
    """A chosen class from a request value: None when none is chosen; InputError when out of range."""
    if y is None or y == "":
        return None
    size = entry.description.condition.size or len(entry.description.class_names)
    return whole(y, "The class", 0, (size or MAX_CLASSES) - 1)


def _filename(path: str | None) -> str:
    return Path(path).name if path else "file"


def read_upload(path: str | None) -> bytes:
    """The bytes of an uploaded image file Gradio saved; InputError when absent or too large."""
    if not path:
        raise InputError("No file arrived.")
    try:
        size = Path(path).stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InputError(f"{Path(path).name} is {size / 2**20:.1f} MB; images up to "
                             f"{MAX_IMAGE_BYTES // 2**20} MB are accepted.")
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read {Path(path).name}: {exc.strerror or exc}") from None


def _png(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()
