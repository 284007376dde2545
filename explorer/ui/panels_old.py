"""The explorer's event handlers: thin adapters from component values to ``codes`` and ``views``.

A ``Handlers`` object holds only what every session shares (the model store, the projection
cache, a temp folder for downloads); per-user data travels in ``gr.State`` (a checkpoint key, a
``Code``, a ``MapView``, the interpolation endpoints). Each method returns the values of the
outputs it is wired to, in order (see ``app._wire``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from vaescope.explorer import figures, interpolation, sampling, traversal
from vaescope.explorer.codes import (
    class_name,
    decode,
    encode_image,
    endpoint_image,
    sketch_to_rgb,
    start_code,
    upload_code,
)
from vaescope.explorer.loading import ModelEntry, ModelStore, choose_default
from vaescope.explorer.projection import ProjectionCache
from vaescope.explorer.session import Code, MapView
from vaescope.explorer.views import (
    PICK_HINT,
    SLIDERS,
    STRIP_PX,
    class_choice,
    data_note,
    default_range,
    diagnostics_view,
    dim_info,
    grid_scale,
    map_figure,
    message_figure,
    model_card,
    model_controls,
    page_dims,
    path_codes,
    png_bytes,
    scale_for,
    served,
    set_endpoint,
    slider_bounds,
    subsample,
    traversal_note,
    traversal_view,
)
from vaescope.training.checkpoint import CheckpointError

log = logging.getLogger(__name__)

PROGRESS = gr.Progress()  # a marker default: Gradio hands each call its own tracker in its place
PICK_OUTPUTS = 4 + 1 + 3 + SLIDERS  # picked original, recon, info, picked state, class + the traversal outputs
# Downloads (traversal-grid PNGs, interpolation GIFs) are written to a per-app temp folder and
# Gradio copies each into its own cache when the response goes out (that cache is cleaned by the
# Blocks' delete_cache), so ours only has to hold files until then: each write drops all but the
# newest DOWNLOADS_KEPT and any older than DOWNLOADS_MAX_AGE_S.
DOWNLOADS_KEPT = 64
DOWNLOADS_MAX_AGE_S = 3600.0


def stale_files(files: Iterable[tuple[Path, float]], now: float, keep: int = DOWNLOADS_KEPT,
                max_age_s: float = DOWNLOADS_MAX_AGE_S) -> list[Path]:
    """Which of ``files`` ((path, modification time) pairs) to delete: all but the newest ``keep``,
    and any modified more than ``max_age_s`` seconds before ``now``."""
    newest_first = sorted(files, key=lambda f: f[1], reverse=True)
    return [path for rank, (path, mtime) in enumerate(newest_first) if rank >= keep or now - mtime > max_age_s]


class Handlers:
    """Event handlers. They hold only server-wide shared objects; per-user data is in gr.State."""

    def __init__(self, store: ModelStore, projections: ProjectionCache, default: str | None) -> None:
        self.store = store
        self.projections = projections
        self.default = default
        self.tmp = Path(tempfile.mkdtemp(prefix="vaescope-explorer-"))
        # removed with the handlers (the app) or at interpreter exit, whichever comes first
        self._remove_tmp = weakref.finalize(self, shutil.rmtree, self.tmp, ignore_errors=True)
        self.load_outputs = 0  # set by the wiring: how many components a checkpoint load updates

    # -- helpers --
    def entry(self, key: str | None) -> ModelEntry:
        """The session's model, or a gr.Error that says what to do."""
        if not key:
            raise gr.Error("No checkpoint is loaded yet: pick one in the dropdown or upload a file.")
        try:
            return self.store.get(key)
        except KeyError:
            raise gr.Error("That checkpoint is no longer available; pick it again in the dropdown.") from None

    def _file(self, suffix: str, data: bytes) -> str:
        """Write a download to the temp folder, after pruning it (see DOWNLOADS_KEPT); its path."""
        self._prune_downloads(keep=DOWNLOADS_KEPT - 1)  # before writing: the new file is never pruned
        path = self.tmp / f"{uuid.uuid4().hex[:12]}{suffix}"
        path.write_bytes(data)
        return str(path)

    def _prune_downloads(self, keep: int) -> None:
        files = []
        for path in self.tmp.iterdir():
            try:
                files.append((path, path.stat().st_mtime))
            except FileNotFoundError:  # another request pruned it meanwhile
                continue
        for path in stale_files(files, time.time(), keep=max(0, keep), max_age_s=DOWNLOADS_MAX_AGE_S):
            path.unlink(missing_ok=True)

    # -- checkpoints --
    def refresh_list(self, current: str | None) -> Any:
        names = self.store.names()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def page_load(self, current: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        """Open the default checkpoint (or the next one that loads) when a page opens."""
        names = self.store.names()
        if not names:
            return self._failed(f"No .safetensors checkpoints in {self.store.root}. Train one with latent-train, "
                                f"or upload a checkpoint file on this page.", key, choices=[])
        first = current if current in names else self.default if self.default in names else \
            choose_default(self.store.root, names)
        problems = []
        for name in [first, *(n for n in names if n != first)]:
            try:
                entry = self.store.open_name(name, lambda f, d: progress(f, desc=d))
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            out = self._opened(entry, gr.Dropdown(choices=names, value=name))
            if problems:
                out[3] = f"⚠️ Skipped: {'; '.join(problems)}\n\n{out[3]}"
            return out
        return self._failed(f"No checkpoint could be loaded: {'; '.join(problems)}", key, choices=names)

    def load_checkpoint(self, name: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not name:
            return self._failed("Choose a checkpoint.", key)
        try:
            entry = self.store.open_name(name, lambda f, d: progress(f, desc=d))
        except CheckpointError as exc:
            return self._failed(f"Cannot load checkpoint — {exc}", key)
        return self._opened(entry, gr.skip())

    def upload_checkpoint(self, path: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not path:
            return self._failed("No file arrived.", key)
        try:
            entry = self.store.open_path(Path(path), f"uploaded: {Path(path).name}",
                                         lambda f, d: progress(f, desc=d))
        except CheckpointError as exc:
            return self._failed(f"Cannot load the uploaded checkpoint — {exc}", key)
        return self._opened(entry, gr.Dropdown(value=None))

    def _failed(self, message: str, key: str | None, choices: list[str] | None = None) -> list[Any]:
        """A load that did not happen: warn, keep the current model, name it in the dropdown again."""
        gr.Warning(message)
        try:
            current = self.store.get(key).loaded.name if key else None
        except KeyError:
            current = None
        if current not in (choices if choices is not None else self.store.names()):
            current = None  # an uploaded model has no entry in the list
        dropdown = gr.Dropdown(value=current) if choices is None else gr.Dropdown(choices=choices, value=current)
        out: list[Any] = [gr.skip()] * self.load_outputs
        out[1], out[3] = dropdown, f"⚠️ {message}"
        return out

    def _opened(self, entry: ModelEntry, dropdown: Any) -> list[Any]:
        if entry.data_note:
            gr.Warning(f"{entry.data_note}. The map and dataset images are unavailable; traversal, "
                       f"sampling and interpolation of uploaded images still work.")
        has_images = entry.latents is not None and len(entry.latents) > 0
        code = start_code(entry, 0, "index" if has_images else "random", None)
        # A new model: no picked point (state and panel) or endpoints, and the class dropdown shows
        # the class the opening code decodes with.
        return [entry.key, dropdown, model_card(entry), data_note(entry), *model_controls(entry, code.y),
                *diagnostics_view(entry), None, None, None, None, None, PICK_HINT,
                *traversal_view(entry, code, 0, default_range(entry))]

    # -- map --
    def draw_map(self, key: str | None, method: str, dims: int, color_by: str, overlay: str,
                 max_points: float | None, ends: dict | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not key:
            return [message_figure("No checkpoint loaded."), None, ""]
        entry = self.entry(key)
        if entry.latents is None:
            return [message_figure(f"No map: {entry.data_note}"), None, ""]
        idx = subsample(len(entry.latents), int(max_points or 0))
        try:  # single-flight per (checkpoint, method, dims, points): a second caller waits for the first
            proj = self.projections.get(key, entry.latents.mean[idx], method, int(dims),
                                        progress=lambda f, d: progress(f, desc=d))
        except ValueError as exc:
            raise gr.Error(f"Cannot project: {exc}") from None
        view = MapView(key, proj, idx, f"{method.upper()} {dims}D · {len(idx)} test points", color_by)
        info = (f"{len(idx)} of {len(entry.latents)} test points. Click a point to inspect and traverse it"
                + ("; click empty space to decode that spot." if proj.invertible and int(dims) == 2 else "."))
        return [map_figure(entry, view, overlay, path_codes(ends)), view, info]

    def pick(self, payload: str | None, key: str | None, view: MapView | None, code: Code | None,
             page: int, range_mode: str) -> list[Any]:
        """A click on the map (see the bridge in app.HEAD): a test point, or a spot of a 2D PCA map."""
        entry = self.entry(key)
        try:
            data = json.loads(payload or "null")
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or view is None or view.key != key:
            return [gr.skip()] * PICK_OUTPUTS
        if data.get("kind") == "point":
            x, picked, info = self._picked_point(entry, int(data.get("index", -1)))
        elif view.projection.invertible and view.projection.dims == 2:
            x, picked, info = None, *self._picked_spot(view, float(data["x"]), float(data["y"]), code)
        else:
            gr.Info("Clicking empty space decodes a spot only on 2D PCA maps (PCA can be inverted).")
            return [gr.skip()] * PICK_OUTPUTS
        recon = decode(entry, picked.z, picked.y)[0]
        original = None if x is None else served(figures.to_pil(x, scale_for(x)))
        return [original, served(figures.to_pil(recon, scale_for(recon))), info, picked,
                *self._start(entry, picked, page, range_mode)]

    @staticmethod
    def _picked_point(entry: ModelEntry, i: int) -> tuple[np.ndarray, Code, str]:
        """(image [C, H, W], its code, info) of test point i (customdata: the test-set index)."""
        if entry.latents is None or not 0 <= i < len(entry.latents):
            raise gr.Error(f"Point {i} is not a test image of this model.")
        info = f"Test image #{i} · class {class_name(entry, int(entry.latents.labels[i]))}"
        return entry.latents.images[i], start_code(entry, i, "index", None), info

    @staticmethod
    def _picked_spot(view: MapView, x: float, y: float, code: Code | None) -> tuple[Code, str]:
        """The code under a 2D PCA map spot (the PCA inverse), decoded under the current class."""
        z = view.projection.inverse_transform(np.array([[x, y]]))[0]
        picked = Code(z, z, code.y if code is not None else None, f"map spot ({x:.2f}, {y:.2f})")
        return picked, f"Decoded the map spot ({x:.2f}, {y:.2f}) (PCA inverse)"

    # -- traversal --
    @staticmethod
    def _start(entry: ModelEntry, code: Code, page: int | None, range_mode: str) -> list[Any]:
        """Outputs of a new start code: the class dropdown (it names the code's class), the traversal."""
        return [class_choice(entry, code), *traversal_view(entry, code, page, range_mode)]

    def slider_handler(self, slot: int) -> Any:
        """The handler of slider ``slot``: set one coordinate, decode one image -> [image, code,
        traversal note]. Nothing else: no slider updates, no bounds; the dimension order is
        memoised on the entry. The slider events skip Gradio's queue (app.SLIDER_QUEUE), and
        Gradio 6 shows no error toast for an unqueued event, so a failure is written into the
        traversal note under the image instead of raised; the next good move restores the note."""
        def on_slide(value: float, key: str | None, code: Code | None, page: int | None) -> list[Any]:
            if not key or code is None or value is None:
                return [gr.skip(), gr.skip(), gr.skip()]
            try:
                entry = self.entry(key)
                dims = page_dims(dim_info(entry).order, int(page or 0))
                if slot >= len(dims):
                    return [gr.skip(), gr.skip(), gr.skip()]
                new = code.moved(traversal.set_coordinate(code.z, int(dims[slot]), float(value)))
                image = decode(entry, new.z, new.y)[0]
            except gr.Error as e:
                return [gr.skip(), code.with_note_error(True), f"**Cannot decode:** {e.message}"]
            except Exception as e:  # a bug: the log keeps the traceback, the page says what failed
                log.exception("slider %d failed", slot)
                failure = f"**Decoding failed** ({type(e).__name__}: {e}); the server log has the details."
                return [gr.skip(), code.with_note_error(True), failure]
            # the note is rewritten only to clear a failure: a Markdown update per move costs time
            note = traversal_note(entry, new) if code.note_shows_error else gr.skip()
            return [served(figures.to_pil(image, scale_for(image))), new, note]
        on_slide.__name__ = f"slider_{slot}"
        return on_slide

    def traverse_from_index(self, index: float | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return self._start(entry, start_code(entry, int(index or 0), "index", None), page, range_mode)

    def traverse_random(self, y: int | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return self._start(entry, start_code(entry, None, "random", y), page, range_mode)

    def traverse_upload(self, path: str | None, y: int | None, key: str | None, page: int,
                        range_mode: str) -> list[Any]:
        entry = self.entry(key)
        code, note = upload_code(entry, path, y)
        if note:
            gr.Info(f"Image converted: {note}")
        return self._start(entry, code, page, range_mode)

    def traverse_sketch(self, sketch: dict | None, y: int | None, key: str | None, page: int,
                        range_mode: str) -> list[Any]:
        entry = self.entry(key)
        rgb = sketch_to_rgb(sketch)
        if rgb is None:
            raise gr.Error("Draw something first.")
        code, note = encode_image(entry, rgb, y, "your drawing")
        if note:
            gr.Info(f"Drawing converted: {note}")
        return self._start(entry, code, page, range_mode)

    def traverse_reset(self, code: Code | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        start = start_code(entry, None, "random", None) if code is None else code.reset()
        return traversal_view(entry, start, page, range_mode)

    def traverse_class(self, y: int | None, code: Code | None, key: str | None, page: int,
                       range_mode: str) -> list[Any]:
        entry = self.entry(key)
        code = code or start_code(entry, None, "random", y)
        return traversal_view(entry, code.with_class(None if y is None else int(y)), page, range_mode)

    def traverse_view(self, code: Code | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return traversal_view(entry, code or start_code(entry, None, "random", None), page, range_mode)

    def traversal_grid(self, steps: float, code: Code | None, key: str | None, page: int,
                       range_mode: str) -> list[Any]:
        entry = self.entry(key)
        code = code or start_code(entry, None, "random", None)
        dims = page_dims(dim_info(entry).order, int(page or 0))
        lo, hi = slider_bounds(entry, range_mode)
        images = decode(entry, traversal.traversal_codes(code.z, dims, lo, hi, int(steps)), code.y)
        grid = figures.image_grid(images, nrow=int(steps), scale=grid_scale(images))
        rows = ", ".join(f"z{d}" for d in dims)
        return [gr.Image(served(grid), label=f"Traversal grid · rows, top to bottom: {rows} · "
                                     f"columns: {range_mode or 'prior'} range, low to high"),
                self._file(".png", png_bytes(Image.fromarray(grid)))]

    # -- interpolation --
    def endpoint_index(self, end: str) -> Any:
        def set_from_index(index: float | None, key: str | None, ends: dict | None) -> list[Any]:
            entry = self.entry(key)
            return set_endpoint(entry, ends, end, start_code(entry, int(index or 0), "index", None))
        set_from_index.__name__ = f"interp_{end}_index"
        return set_from_index

    def endpoint_picked(self, end: str) -> Any:
        def set_from_pick(picked: Code | None, key: str | None, ends: dict | None) -> list[Any]:
            entry = self.entry(key)
            if picked is None:
                raise gr.Error("Click a point on the map first.")
            return set_endpoint(entry, ends, end, picked)
        set_from_pick.__name__ = f"interp_{end}_picked"
        return set_from_pick

    def endpoint_upload(self, end: str) -> Any:
        def set_from_upload(path: str | None, key: str | None, ends: dict | None, y: int | None) -> list[Any]:
            entry = self.entry(key)
            code, note = upload_code(entry, path, y)
            if note:
                gr.Info(f"Image converted: {note}")
            return set_endpoint(entry, ends, end, code)
        set_from_upload.__name__ = f"interp_{end}_upload"
        return set_from_upload

    def interpolate(self, steps: float, method: str, key: str | None, ends: dict | None,
                    view: MapView | None, overlay: str) -> list[Any]:
        entry = self.entry(key)
        ends = self._with_default_ends(entry, ends)
        a, b = ends["a"], ends["b"]
        codes = interpolation.interpolate(a.z, b.z, int(steps), method).astype(np.float32)
        images = decode(entry, codes, a.y)
        strip = figures.image_grid(images, nrow=len(images), scale=grid_scale(images, STRIP_PX))
        gif = self._file(".gif", figures.gif_bytes(images, scale=scale_for(images[0]), duration_ms=120))
        ends["path"] = codes
        note = f"{len(images)} steps, {method}, from {a.source} to {b.source}"
        if entry.loaded.model.is_conditional:
            note += f"; decoded as class {class_name(entry, a.y)}"
        fig = map_figure(entry, view, overlay, codes) if view is not None and view.key == key else gr.skip()
        ends_images = [served(endpoint_image(ends[end], entry)) for end in ("a", "b")]
        return [served(strip), gif, gif, note, fig, ends, *ends_images]

    @staticmethod
    def _with_default_ends(entry: ModelEntry, ends: dict | None) -> dict:
        """A copy of the endpoints with unset ones filled: test images 0 and 1, or prior samples."""
        ends = dict(ends or {})
        for index, end in enumerate(("a", "b")):
            if ends.get(end) is None:
                kind = "random" if entry.latents is None else "index"
                ends[end] = start_code(entry, None if entry.latents is None else index, kind, None)
        return ends

    # -- sampling --
    def sample(self, class_index: int | None, n: float, seed: float | None, temperature: float,
               key: str | None) -> list[Any]:
        entry = self.entry(key)
        if class_index is None:
            raise gr.Error("Choose a class.")
        try:
            images, note = sampling.sample_class(entry.loaded.model, int(class_index), int(n), int(seed or 0),
                                                 float(temperature), entry.latents)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        nrow = int(np.ceil(np.sqrt(len(images))))
        note = f"**{class_name(entry, int(class_index))}** · {note}"  # the sampler knows labels only by number
        return [served(figures.image_grid(images, nrow=nrow, scale=grid_scale(images, STRIP_PX))), note]

    def every_class(self, key: str | None, code: Code | None) -> Any:
        entry = self.entry(key)
        if not entry.loaded.model.is_conditional:
            raise gr.Error("Only a conditional model (CVAE) decodes one code under every class.")
        z = code.z if code is not None else start_code(entry, None, "random", 0).z
        images = sampling.decode_under_every_class(entry.loaded.model, z)
        return served(figures.image_grid(images, nrow=len(images), scale=grid_scale(images, STRIP_PX)))
