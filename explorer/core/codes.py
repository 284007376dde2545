"""Latent codes in, images out: where a traversal starts (a test image, a prior sample, an upload,
a drawing) and one forward pass of the decoder.

Problems a user can fix (an index out of range, an unreadable upload) are raised as ``gr.Error``
with a sentence that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from vaescope.explorer import figures, sampling
from vaescope.explorer.loading import ImageError, ModelEntry, prepare_image
from vaescope.explorer.session import Code

ENDPOINT_PX = 128  # interpolation endpoints are upscaled (nearest) to about this size


def class_names(entry: ModelEntry) -> list[str]:
    """The class names stored in the checkpoint's dataset block ([] when it has none)."""
    return [str(c) for c in (entry.loaded.meta.dataset or {}).get("class_names") or []]


def class_name(entry: ModelEntry, label: int | None) -> str:
    """A label in words: its class name, the number itself past the names, "?" when unknown."""
    names = class_names(entry)
    if label is None or label < 0:
        return "?"
    return names[label] if label < len(names) else str(label)


def decode(entry: ModelEntry, z: np.ndarray, y: int | None) -> np.ndarray:
    """Codes [D] or [M, D] -> images [M, C, H, W] float32 in [0, 1] (one forward pass)."""
    model, codes = entry.loaded.model, np.atleast_2d(z)
    labels = model.condition_labels(len(codes), 0 if y is None else int(y))  # None for unconditional models
    return sampling.decode(model, codes, labels)


def prior_samples(entry: ModelEntry, n: int, seed: int = 0) -> np.ndarray:
    """n images from the prior [n, C, H, W]; a CVAE cycles its classes."""
    model = entry.loaded.model
    gen = torch.Generator(model.device).manual_seed(seed)
    with torch.inference_mode():
        z = model.prior_sample(n, None, gen)
        y = None
        if model.is_conditional:
            y = torch.arange(n, device=model.device) % model.config.num_classes
        return model.decode(z, y).float().cpu().numpy()


def condition(entry: ModelEntry, y: int | None) -> int | None:
    """The decoder condition for a chosen class: the class (0 if none chosen) for a CVAE, else None."""
    return (int(y) if y is not None else 0) if entry.loaded.model.is_conditional else None


def start_code(entry: ModelEntry, index: int | None, kind: str, y: int | None) -> Code:
    """A starting code: test image ``index`` (its posterior mean, kind "index") or a seeded prior
    sample (any other kind)."""
    return index_code(entry, index) if kind == "index" else random_code(entry, y)


def index_code(entry: ModelEntry, index: int | None) -> Code:
    """The posterior mean of test image ``index``; a CVAE decodes it under its own class."""
    if entry.latents is None:
        raise gr.Error(f"No dataset images: {entry.data_note}. Start from a prior sample or an upload.")
    n, i = len(entry.latents), int(index or 0)
    if not 0 <= i < n:
        raise gr.Error(f"Test image # must be between 0 and {n - 1}, got {index}.")
    z = entry.latents.mean[i].astype(np.float32)
    label = int(entry.latents.labels[i])
    cond = label if entry.loaded.model.is_conditional else None
    return Code(z.copy(), z, cond, f"test image #{i} (class {class_name(entry, label)})")


def random_code(entry: ModelEntry, y: int | None) -> Code:
    """A prior sample under a fresh seed, which the info line names so it can be found again."""
    model = entry.loaded.model
    seed = int(np.random.default_rng().integers(2**31))
    with torch.inference_mode():
        z = model.prior_sample(1, None, torch.Generator(model.device).manual_seed(seed))[0].float().cpu().numpy()
    return Code(z.copy(), z, condition(entry, y), f"a prior sample (seed {seed})")


def upload_code(entry: ModelEntry, path: str | None, y: int | None) -> tuple[Code, str]:
    """Encode an uploaded image file (posterior mean); ImageError becomes a gr.Error."""
    if not path:
        raise gr.Error("No file arrived.")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise gr.Error(f"Cannot read {Path(path).name}: {exc}") from None
    return encode_image(entry, data, y, f"uploaded {Path(path).name}")


def encode_image(entry: ModelEntry, data: bytes | np.ndarray, y: int | None, source: str) -> tuple[Code, str]:
    """prepare_image + encode: the posterior mean of an image, and the note of its conversion."""
    model = entry.loaded.model
    try:
        x, note = prepare_image(data, model.config.image_shape, background=entry.background or "dark")
    except ImageError as exc:
        raise gr.Error(f"Cannot use {source.removeprefix('uploaded ')}: {exc}") from None
    cond = condition(entry, y)
    with torch.inference_mode():
        xt = torch.from_numpy(x[None]).to(model.device)
        yt = None if cond is None else torch.tensor([cond], device=model.device)
        z = model.encode(xt, yt).mean[0].float().cpu().numpy()
    return Code(z.copy(), z, cond, source + (f" ({note})" if note else "")), note


def sketch_to_rgb(sketch: dict | None) -> np.ndarray | None:
    """A Sketchpad value -> RGB uint8 [H, W, 3] on white paper; None when nothing is drawn."""
    if not isinstance(sketch, dict) or sketch.get("composite") is None:
        return None
    arr = np.asarray(sketch["composite"])
    if arr.ndim == 3 and arr.shape[-1] == 4:  # strokes on a transparent canvas: lay them on white
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.size == 0 or int(arr.min()) == int(arr.max()):
        return None  # a blank canvas
    return arr


def endpoint_image(code: Code, entry: ModelEntry | None = None) -> Image.Image:
    """The decoded endpoint, cached on the code so a redraw costs nothing."""
    if getattr(code, "image", None) is None:
        assert entry is not None
        image = decode(entry, code.z, code.y)[0]
        code.image = figures.to_pil(image, max(1, ENDPOINT_PX // max(image.shape[-2:])))
    return code.image
