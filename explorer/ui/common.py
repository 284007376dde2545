"""What every panel shares: the app's context, the handler wrapper (errors and staleness in one
place), images as served files, downloads, and the Panel protocol the app assembles."""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gradio as gr
import numpy as np
from PIL import Image

from vaescope.errors import InputError
from vaescope.explorer.core import figures
from vaescope.explorer.core.projection import ProjectionCache
from vaescope.explorer.core.store import ModelEntry, ModelStore
from vaescope.explorer.ui.state import Session, SessionPair

log = logging.getLogger("vaescope.explorer")

PROGRESS = gr.Progress()  # a marker default: Gradio hands each call its own tracker in its place
QUICK = {"show_progress": "hidden"}  # quick events: a progress badge would only cover the control
PREVIEW_PX = 288  # single images are upscaled (nearest) to about this size: readable on a projector
STRIP_PX = 128  # the least cell size of image grids (strips, samples, class rows): a projector's back row
# Downloads (traversal-grid PNGs, interpolation GIFs) are written to a per-app temp folder and
# Gradio copies each into its own cache when the response goes out (that cache is cleaned by the
# Blocks' delete_cache), so ours only has to hold files until then: each write drops all but the
# newest DOWNLOADS_KEPT and any older than DOWNLOADS_MAX_AGE_S.
DOWNLOADS_KEPT = 64
DOWNLOADS_MAX_AGE_S = 3600.0


class NoModel(InputError):
    """The session has no model to work on."""


@dataclass
class Context:
    """What the panels share: the server-wide store, projection cache and download folder."""

    store: ModelStore
    projections: ProjectionCache
    downloads: Downloads

    def current(self, session: Session) -> tuple[int, ModelEntry]:
        """(version, entry) of the session's current model; reloads an evicted checkpoint.
        Raises NoModel with what to do when there is none."""
        version, key = session.version, session.key
        if key is None:
            raise NoModel("No model is loaded yet: pick one in the list or upload a checkpoint.")
        try:
            return version, self.store.get(key)
        except KeyError:
            raise NoModel("That model is no longer available; pick it again in the list.") from None


def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an event handler that takes a ``Session`` (or a ``SessionPair``) among its arguments:

    - its result is dropped (no output changes) when a session switched models meanwhile;
    - an ``InputError`` becomes a ``gr.Error`` with its message, so the page says what was wrong;
    - any other exception is logged with its traceback and shown as a short message, never as
      Gradio's generic "error" text.
    """
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        sessions = _sessions((*args, *kwargs.values()))
        versions = [s.version for s in sessions]
        moved = lambda: any(s.version != v for s, v in zip(sessions, versions, strict=True))  # noqa: E731
        try:
            result = fn(*args, **kwargs)
        except gr.Error:
            raise
        except InputError as exc:
            if moved():
                return gr.skip()
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # a bug: the log keeps the traceback, the page says what failed
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"{fn.__name__.replace('_', ' ')} failed ({type(exc).__name__}: {exc}); "
                           "the server log has the details.") from None
        if moved():
            return gr.skip()  # computed for a model that is no longer the session's: drop it
        return as_response(result)
    run.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return run


def _sessions(args: Iterable[Any]) -> list[Session]:
    """The sessions among a handler's arguments (both sides of a pair)."""
    found: list[Session] = []
    for arg in args:
        if isinstance(arg, Session):
            found.append(arg)
        elif isinstance(arg, SessionPair):
            found.extend(arg.sessions())
    return found


def reporter(progress: Any) -> Callable[[float, str], None] | None:
    """Gradio's progress tracker as the (fraction, words) callback core functions take (None: none)."""
    return None if progress is None else lambda fraction, words: progress(fraction, desc=words)


def as_response(updates: Any) -> Any:
    """An event's return value: its dict of updates, or ``gr.skip()`` (nothing changes) when the
    dict is empty; Gradio would read an empty dict as one output value and fail."""
    return gr.skip() if isinstance(updates, dict) and not updates else updates


def served(image: np.ndarray | Image.Image) -> Image.Image:
    """A copy of an output image (PIL, or uint8 [H, W, 3]) tagged with a one-off PNG text chunk.

    Gradio 6 caches an output image under the hash of its PNG bytes and rewrites that file in
    place on every response (processing_utils.save_pil_to_cache). When two requests return the
    same picture at once (every user opening one model gets the same diagnostics grids), one
    client's download raced the other's rewrite. The tag makes each response's bytes, hence its
    file, its own.
    """
    pil = image.copy() if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.info["vaescope-response"] = uuid.uuid4().hex
    return pil


def scale_for(image: np.ndarray, px: int = PREVIEW_PX) -> int:
    """Nearest-neighbour upscaling factor that brings a [C, H, W] image near ``px``."""
    return max(1, px // max(image.shape[-2:]))


def big(entry: ModelEntry, image: np.ndarray, px: int = PREVIEW_PX) -> Image.Image:
    """One image [C, H, W] in [0, 1] of ``entry``'s model, drawn the way the model says (a sequence as
    a line), as a served PIL image upscaled (nearest) to about ``px``."""
    picture = figures.pictures(image, display_of(entry))
    return served(figures.to_pil(picture, scale_for(picture, px)))


def grid(entry: ModelEntry, images: np.ndarray, nrow: int, cell_px: int = STRIP_PX, **labels: Any) -> np.ndarray:
    """Images [N, C, H, W] of ``entry``'s model, drawn the way the model says, as a uint8 grid with
    cells of at least ``cell_px`` (pixels: the smallest whole upscaling factor that gets there; a
    line or bars: at most ``cell_px``), ``captions`` / ``row_labels`` as ``figures.image_grid`` takes
    them."""
    drawing = display_of(entry)
    pictures = figures.pictures(images, drawing, cell=True)
    side = max(pictures.shape[-2:])  # a drawn line or row of bars is drawn at its size, pixels upscaled
    scale = -(-cell_px // side) if drawing.kind == "image" else cell_px // side
    return figures.image_grid(pictures, nrow=nrow, scale=max(1, scale), **labels)


def decoder_buttons(entry: ModelEntry, buttons: Iterable[Any]) -> dict[Any, Any]:
    """Updates that enable ``buttons`` (the ones that need a decoder) for a model that decodes and
    disable them for one that does not (precomputed embeddings): a button that cannot work is never
    pressable, so nothing raises behind it."""
    return {button: gr.Button(interactive=entry.generator is not None) for button in buttons}


def display_of(entry: ModelEntry) -> figures.Drawing:
    """How the model's images are drawn: as pixels, a sequence as a line, a table's row as bars of
    named features (the contract says; ``figures.pictures`` takes it)."""
    return figures.Drawing.of(entry.description)


def stale_files(files: Iterable[tuple[Path, float]], now: float, keep: int = DOWNLOADS_KEPT,
                max_age_s: float = DOWNLOADS_MAX_AGE_S) -> list[Path]:
    """Which of ``files`` ((path, modification time) pairs) to delete: all but the newest ``keep``,
    and any modified more than ``max_age_s`` seconds before ``now``."""
    newest_first = sorted(files, key=lambda f: f[1], reverse=True)
    return [path for rank, (path, mtime) in enumerate(newest_first) if rank >= keep or now - mtime > max_age_s]


class Downloads:
    """A per-app temp folder for files handed out; bounded, and removed with the app."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vaescope-explorer-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def write(self, name: str, data: bytes) -> str:
        """Write a download under a readable, unique name (``name`` with a short suffix); its path."""
        self._prune(keep=DOWNLOADS_KEPT - 1)  # before writing: the new file is never pruned
        stem, _, suffix = name.rpartition(".")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stem)[:60] or "vaescope"
        path = self.folder / f"{safe}-{uuid.uuid4().hex[:6]}.{suffix}"
        path.write_bytes(data)
        return str(path)

    def _prune(self, keep: int) -> None:
        files = []
        for path in self.folder.iterdir():
            try:
                files.append((path, path.stat().st_mtime))
            except FileNotFoundError:  # another request pruned it meanwhile
                continue
        for path in stale_files(files, time.time(), keep=max(0, keep), max_age_s=DOWNLOADS_MAX_AGE_S):
            path.unlink(missing_ok=True)


def short_name(entry: ModelEntry) -> str:
    """The model's name without the file suffix, for labels: "digits/vae"."""
    return entry.name.removesuffix(".safetensors")


class Panel(Protocol):
    """One part of the page: its components, its events and its handlers.

    ``on_model`` returns the updates for a newly chosen model: every output the panel shows is
    either recomputed for it or cleared, so nothing of the previous model stays on the page.
    ``model_outputs`` lists the components ``on_model`` may update.
    """

    def model_outputs(self) -> list[Any]: ...

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]: ...
