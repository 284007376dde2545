"""Find and load checkpoints, pick the device, encode a dataset into a latents cache, read uploads.

Everything here is plain Python and numpy / torch: no Gradio, so the app's handlers stay thin and
these functions are tested on their own. Nothing runs at import.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vaescope.training.checkpoint import (
    PICKLE_SUFFIXES,
    TRAIN_STATE_NAME,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_metadata,
)
from vaescope.training.metrics import encode_split
from vaescope.training.models import LatentModel

CHECKPOINT_SUFFIX = ".safetensors"
# Uploads larger than this are refused before decoding. 25 MP is a 5000 x 5000 photo: far more than
# any model here needs, far less than a decompression bomb (PNG headers can declare 10^10 pixels).
MAX_IMAGE_PIXELS = 25_000_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024


# Said instead of a bare "not a .safetensors file", so someone with a torch.save file learns why
# and what to do; the file is never opened.
PICKLE_REFUSAL = ("'{suffix}' files are Python pickles (torch.save), which can run arbitrary code when "
                  "loaded, so vaescope never opens them; use a .safetensors checkpoint from latent-train")


class ImageError(ValueError):
    """An upload is not a usable image; the message says why, in words a user can act on."""


# -- device --------------------------------------------------------------------------------------
def pick_device(requested: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU raises ValueError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use cpu or auto")
    return device


# -- checkpoint discovery ------------------------------------------------------------------------
def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location (symlinks followed) lies under the real ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def list_checkpoints(root: Path) -> list[str]:
    """Sorted relative POSIX paths of ``*.safetensors`` under ``root``.

    Files (or folders) reached through a symlink that points outside ``root`` are skipped, so the
    dropdown can only ever name files inside the folder the server was started on. So is
    latent-train's resume state (``train_state.safetensors`` beside each run's model), so that a
    folder of runs lists its models only.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob(f"*{CHECKPOINT_SUFFIX}"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # hidden files / temp files of writers
            continue
        if path.name == TRAIN_STATE_NAME:
            continue
        if path.is_file() and _inside(path, root):
            found.append(rel.as_posix())
    return sorted(found)


def resolve_checkpoint(root: Path, name: str) -> Path:
    """The path of checkpoint ``name`` (relative to ``root``); refuses anything outside ``root``.

    Raises CheckpointError for empty names, absolute paths, '..' components, symlinks leading out
    of ``root``, pickle files (never opened), other non-checkpoint suffixes and missing files.
    """
    root = Path(root).expanduser()
    if not name or not str(name).strip():
        raise CheckpointError(name or "<empty>", "no checkpoint name given")
    rel = Path(name)
    if rel.is_absolute() or rel.drive:
        raise CheckpointError(name, "absolute paths are refused; name a file inside the checkpoint folder")
    if ".." in rel.parts:
        raise CheckpointError(name, "'..' is refused; name a file inside the checkpoint folder")
    path = root / rel
    if not _inside(path, root):
        raise CheckpointError(name, "the path leads outside the checkpoint folder (symlink?); refused")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(name, PICKLE_REFUSAL.format(suffix=path.suffix))
    if path.suffix.lower() != CHECKPOINT_SUFFIX:
        raise CheckpointError(name, f"not a {CHECKPOINT_SUFFIX} file")
    if not path.is_file():
        raise CheckpointError(name, "file not found in the checkpoint folder")
    return path


DEFAULT_PREFERENCE = ("vae", "gmvae", "cvae", "ae")  # what a first-time visitor learns most from


def choose_default(root: Path, names: list[str]) -> str | None:
    """The checkpoint to open first: the first VAE by name, else GMVAE, CVAE, AE; unreadable ones last.

    Reads only the JSON headers, so it is cheap even for a folder of large checkpoints.
    """
    rank = {}
    for name in names:
        try:
            kind = read_metadata(Path(root) / name).model_type
        except CheckpointError:
            kind = None
        rank[name] = DEFAULT_PREFERENCE.index(kind) if kind in DEFAULT_PREFERENCE else len(DEFAULT_PREFERENCE)
    return min(names, key=lambda n: (rank[n], n)) if names else None


# -- loading -------------------------------------------------------------------------------------
@dataclass
class LatentsCache:
    """Per-point encodings of the evaluation images, for the map, the sliders and the samplers."""

    mean: np.ndarray  # [N, D] posterior means
    std: np.ndarray  # [N, D] posterior standard deviations (0 for an AE)
    labels: np.ndarray  # [N] int64, -1 where unknown
    recon_error: np.ndarray  # [N] mean squared error per pixel of the reconstruction from the mean
    kl: np.ndarray  # [N] KL(q(z|x) || p(z)) per point, nats
    kl_per_dim: np.ndarray  # [D] mean over points of the KL per dimension, nats
    component_probs: np.ndarray | None  # [N, K] GMVAE q(y|x); None for other models
    images: np.ndarray  # [N, C, H, W] float32 in [0, 1]

    def __len__(self) -> int:
        return len(self.mean)


@dataclass
class LoadedModel:
    name: str  # what the user sees: the path relative to the checkpoint folder, or the upload's name
    path: Path
    model: LatentModel
    meta: CheckpointMeta
    device: torch.device
    digest: str  # sha256 of the file: identifies the checkpoint in caches


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_model(path: Path, device: torch.device, name: str | None = None) -> LoadedModel:
    """Load a checkpoint onto ``device`` in eval mode. Raises CheckpointError naming the file."""
    path = Path(path)
    model, meta = load_checkpoint(path, device)  # validates; CheckpointError names the file
    try:
        digest = file_digest(path)
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc}") from None
    return LoadedModel(name=name or path.name, path=path, model=model, meta=meta,
                       device=torch.device(device), digest=digest)


def load_eval_images(dataset: dict[str, Any], data_dir: str | Path | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray] | str:
    """The test split of a checkpoint's dataset block: (images float32 [N, C, H, W], labels [N]).

    Returns a message instead when the data cannot be had (package absent, offline, a folder that
    moved), so the caller can say why and carry on without a map.
    """
    from vaescope.training.data import (  # imported here: heavy, only on demand
        DatasetError,
        load_dataset,
    )

    name = dataset.get("name")
    shape = tuple(dataset.get("image_shape") or ())
    if not name:
        return "the checkpoint names no dataset"
    try:
        data = load_dataset(name, data_dir=data_dir, image_size=int(shape[-1]) if shape else 64, seed=seed)
    except (DatasetError, OSError, ValueError, ImportError) as exc:
        return f"dataset {name!r} could not be loaded: {exc}"
    images = data.test.float_images().numpy()
    if shape and tuple(images.shape[1:]) != shape:
        return (f"dataset {name!r} has images of shape {list(images.shape[1:])} but the model was "
                f"trained on {list(shape)}")
    return images, data.test.labels.numpy()


def _condition(model: LatentModel, labels: torch.Tensor) -> torch.Tensor | None:
    """The labels a conditional model needs (unknown -1 labels become class 0); None otherwise."""
    return labels.clamp(min=0) if model.is_conditional else None


def encode_dataset(model: LatentModel, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024,
                   progress: Callable[[float, str], None] | None = None) -> LatentsCache:
    """Encode images [N, C, H, W] (float in [0, 1]) with labels [N] into a LatentsCache.

    Reconstruction error is the per-pixel mean squared error of decode(mean); the KL is measured
    against the model's own prior (a GMVAE's chosen component), so an AE's is zero.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    d = model.config.latent_dim
    if len(images) == 0:
        empty = np.zeros((0, d), np.float32)
        return LatentsCache(mean=empty, std=empty, labels=labels, recon_error=np.zeros(0, np.float32),
                            kl=np.zeros(0, np.float32), kl_per_dim=np.zeros(d, np.float32),
                            component_probs=None, images=images)
    enc = encode_split(model, torch.from_numpy(images), _condition(model, torch.from_numpy(labels)),
                       batch_size, progress)
    return LatentsCache(
        mean=enc.mean, std=np.exp(0.5 * enc.logvar), labels=labels, recon_error=enc.recon_mse,
        kl=enc.kl_per_dim.sum(1), kl_per_dim=enc.kl_per_dim.mean(0), component_probs=enc.component_probs,
        images=images,
    )


# -- uploaded images -----------------------------------------------------------------------------
def _open_image(data: bytes) -> Image.Image:
    """Decode bytes into a loaded PIL image, refusing empty, non-image, huge and broken data."""
    if len(data) == 0:
        raise ImageError("the file is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MB; images up to "
                         f"{MAX_IMAGE_BYTES // 2**20} MB are accepted")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image declares too many pixels ({exc}); refused") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError("not an image (or a format Pillow cannot read); upload a PNG or JPEG") from None
    _check_pixels(img.size)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"the image data is truncated or corrupt: {exc}") from None
    return img


def _check_pixels(size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"the image is {w} x {h} pixels; at most {MAX_IMAGE_PIXELS // 10**6} million "
                         f"pixels are accepted (decompression-bomb guard)")
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w} x {h})")


def _array_to_image(arr: np.ndarray) -> Image.Image:
    """numpy [H, W], [H, W, 1|3|4] (uint8, or float in [0, 1]) -> PIL image."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array must be [H, W] or [H, W, 3|4], got {list(arr.shape)}")
    _check_pixels((arr.shape[1], arr.shape[0]))
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if np.nanmax(arr, initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def _to_8bit(img: Image.Image, notes: list[str]) -> Image.Image:
    """Bring any Pillow mode to L, RGB or RGBA, noting what changed."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        notes.append(f"{mode} (high bit depth) rescaled to 8 bits")
        return Image.fromarray(arr.round().astype(np.uint8), "L")
    if mode == "P" or mode == "PA" or mode == "LA" or "transparency" in img.info:
        return img.convert("RGBA")
    if mode in ("L", "RGB", "RGBA"):
        return img
    notes.append(f"{mode} converted to RGB")
    return img.convert("RGB")


def prepare_image(data: bytes | Image.Image | np.ndarray, image_shape: tuple[int, int, int],
                  background: str | None = None) -> tuple[np.ndarray, str]:
    """Turn an upload into what the model reads: float32 [C, H, W] in [0, 1], plus a note.

    The note lists each conversion made ("" when none): mode and channel changes, transparency
    flattened, padding to the model's aspect ratio, resizing, and inversion. ``background`` is the
    training data's background ("dark" or "light"); an image whose border is the other way round
    is inverted, so a pen drawing on white paper reads like an MNIST digit. Raises ImageError for
    empty data, non-images, images over MAX_IMAGE_PIXELS and truncated files.
    """
    c, h, w = (int(v) for v in image_shape)
    if isinstance(data, bytes | bytearray | memoryview):
        img = _open_image(bytes(data))
    elif isinstance(data, np.ndarray):
        img = _array_to_image(data)
    elif isinstance(data, Image.Image):
        _check_pixels(data.size)
        img = data
    else:
        raise ImageError(f"cannot read an image from a {type(data).__name__}")
    notes: list[str] = []
    img = ImageOps.exif_transpose(img) or img
    img = _to_8bit(img, notes)
    if img.mode == "RGBA":
        alpha = np.asarray(img)[..., 3]
        fill = (0, 0, 0, 255) if background != "light" else (255, 255, 255, 255)
        if alpha.min() < 255:
            notes.append(f"transparency flattened onto {'white' if background == 'light' else 'black'}")
        img = Image.alpha_composite(Image.new("RGBA", img.size, fill), img).convert("RGB")
    target_mode = "L" if c == 1 else "RGB"
    if img.mode != target_mode:
        notes.append(f"{img.mode} converted to {'greyscale' if c == 1 else 'RGB'}")
        img = img.convert(target_mode)
    if img.size != (w, h):
        notes.append(f"resized {img.size[0]}x{img.size[1]} -> {w}x{h}")
        img = _fit(img, (w, h), notes)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if background in ("dark", "light"):
        border = np.concatenate([arr[:, 0].ravel(), arr[:, -1].ravel(), arr[:, :, 0].ravel(), arr[:, :, -1].ravel()])
        is_light = float(border.mean()) > 0.5
        if is_light != (background == "light"):
            arr = 1.0 - arr
            notes.append(f"inverted to a {background} background like the training data")
    return np.ascontiguousarray(arr, dtype=np.float32), "; ".join(notes)


def _fit(img: Image.Image, size: tuple[int, int], notes: list[str]) -> Image.Image:
    """Pad to the target aspect ratio with the border colour, then resize (box filter when shrinking)."""
    w, h = size
    iw, ih = img.size
    if iw * h != ih * w:  # pad rather than crop: keep every stroke of a drawing
        arr = np.asarray(img)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        fill = tuple(int(v) for v in np.median(border.reshape(len(border), -1), axis=0))
        new_w, new_h = max(iw, round(ih * w / h)), max(ih, round(iw * h / w))
        canvas = Image.new(img.mode, (new_w, new_h), fill[0] if img.mode == "L" else fill)
        canvas.paste(img, ((new_w - iw) // 2, (new_h - ih) // 2))
        notes.append("padded to the model's aspect ratio")
        img = canvas
    shrinking = img.size[0] > w
    return img.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def dataset_background(images: np.ndarray | None) -> str | None:
    """"dark" or "light": the mean border brightness of up to 256 images [N, C, H, W]; None if none."""
    if images is None or len(images) == 0:
        return None
    x = images[:256]
    border = np.concatenate([x[:, :, 0].ravel(), x[:, :, -1].ravel(), x[:, :, :, 0].ravel(), x[:, :, :, -1].ravel()])
    return "light" if float(border.mean()) > 0.5 else "dark"


# -- the server's shared store ------------------------------------------------------------------
@dataclass
class ModelEntry:
    """A loaded checkpoint and what was derived from it once, shared by every session."""

    loaded: LoadedModel
    latents: LatentsCache | None
    data_note: str  # "" when the evaluation images are there, else why not
    background: str | None = None  # "dark" / "light" background of the training images
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # What the views derive from the model and latents alone (dimension order, slider bounds),
    # computed on first use: a slider move must not recompute a variance over 70k codes.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return self.loaded.digest


class ModelStore:
    """Thread-safe LRU of loaded checkpoints (by sha256) with single-flight loading.

    Sessions keep only a key in their state; the model, its latents cache and the dataset arrays
    live here once, however many browser tabs look at them. Evaluation images are cached per
    (dataset, shape, seed) so two checkpoints of one dataset share one array.
    """

    def __init__(self, root: Path, device: torch.device, data_dir: str | Path | None = None,
                 max_models: int = 4, max_points: int = 70_000) -> None:
        self.root = Path(root).expanduser()
        self.device = device
        self.data_dir = data_dir
        self.max_models = max_models
        self.max_points = max_points
        self._entries: OrderedDict[str, ModelEntry] = OrderedDict()
        self._datasets: dict[tuple, tuple[np.ndarray, np.ndarray] | str] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._known: dict[str, tuple[Path, str]] = {}  # digest -> (path, name), to reload after eviction

    def names(self) -> list[str]:
        return list_checkpoints(self.root)

    def get(self, key: str) -> ModelEntry:
        """The entry for a key handed out earlier, reloaded from its file if it was evicted.

        Raises KeyError for a key never seen, or whose file has gone since.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            path, name = self._known[key]
        if not path.is_file():
            raise KeyError(key)
        return self.open_path(path, name)

    def open_name(self, name: str, progress: Callable[[float, str], None] | None = None) -> ModelEntry:
        """Load checkpoint ``name`` from the folder (relative path). Raises CheckpointError."""
        return self.open_path(resolve_checkpoint(self.root, name), name, progress)

    def open_path(self, path: Path, name: str | None = None,
                  progress: Callable[[float, str], None] | None = None) -> ModelEntry:
        """Load any checkpoint file (an upload) and encode its dataset; cached by content hash."""
        path = Path(path)
        digest = file_digest(path) if path.is_file() else str(path)
        with self._lock:
            flight = self._loading.setdefault(digest, threading.Lock())
        with flight:  # a second caller for the same file waits and then finds the entry
            with self._lock:
                if digest in self._entries:
                    self._entries.move_to_end(digest)
                    return self._entries[digest]
            entry = self._build(path, name or path.name, progress)
            with self._lock:
                self._entries[entry.key] = entry
                self._known[entry.key] = (path, entry.loaded.name)
                while len(self._entries) > self.max_models:
                    self._entries.popitem(last=False)
            return entry

    def _build(self, path: Path, name: str, progress: Callable[[float, str], None] | None) -> ModelEntry:
        if progress:
            progress(0.0, f"loading {name}")
        loaded = load_model(path, self.device, name=name)
        data = self._eval_images(loaded.meta)
        if isinstance(data, str):
            return ModelEntry(loaded, None, data)
        images, labels = data
        if len(images) > self.max_points:  # a fixed, seeded subset keeps memory and encode time bounded
            keep = np.sort(np.random.default_rng(0).choice(len(images), self.max_points, replace=False))
            images, labels = images[keep], labels[keep]
        latents = encode_dataset(loaded.model, images, labels, progress=progress)
        return ModelEntry(loaded, latents, "", dataset_background(images))

    def _eval_images(self, meta: CheckpointMeta) -> tuple[np.ndarray, np.ndarray] | str:
        block = meta.dataset or {}
        seed = int((meta.train_config or {}).get("seed", 0))
        data_dir = self.data_dir or (meta.train_config or {}).get("data_dir")
        key = (block.get("name"), tuple(block.get("image_shape") or ()), seed)
        with self._lock:
            cached = self._datasets.get(key)
        if cached is None:
            cached = load_eval_images(block, data_dir=data_dir, seed=seed)
            with self._lock:
                self._datasets[key] = cached
        return cached


def default_cache_dir() -> Path:
    """Where projections are cached on disk: $XDG_CACHE_HOME/vaescope/projections."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "vaescope" / "projections"
