"""Uploaded and drawn images -> what a model reads: float32 [C, H, W] in [0, 1], with a note of
every conversion made. Refusals are ``ImageError`` with a sentence a user can act on."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vaescope.errors import InputError
from vaescope.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS


class ImageError(InputError):
    """An upload is not a usable image; the message says why, in words a user can act on."""


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
        arr = _finite(arr.astype(np.float64))
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def _finite(arr: np.ndarray) -> np.ndarray:
    """``arr`` unchanged when every pixel is a finite number; ImageError saying how many are not."""
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ImageError(f"{bad:,} of its {arr.size:,} pixel values are NaN or infinite; an image needs finite "
                         "pixel values (save it as an 8-bit PNG)")
    return arr


def _to_8bit(img: Image.Image, notes: list[str]) -> Image.Image:
    """Bring any Pillow mode to L, RGB or RGBA, noting what changed."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _finite(np.asarray(img, dtype=np.float64))
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
    """Letterbox: scale to fit inside the target keeping the aspect ratio (box filter when
    shrinking), then pad to the exact size with the border colour. Nothing larger than the input
    or the target is ever allocated, however thin the image (a 1 x 20-million-pixel strip pads a
    few pixels, not a 20-million-pixel square)."""
    w, h = size
    iw, ih = img.size
    scale = min(w / iw, h / ih)
    fitted = (max(1, min(w, round(iw * scale))), max(1, min(h, round(ih * scale))))
    border = _border_colour(img)
    shrinking = scale < 1
    img = img.resize(fitted, Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    if fitted == (w, h):
        return img
    notes.append("padded to the model's aspect ratio")
    canvas = Image.new(img.mode, (w, h), border[0] if img.mode == "L" else border)
    canvas.paste(img, ((w - fitted[0]) // 2, (h - fitted[1]) // 2))
    return canvas


def _border_colour(img: Image.Image) -> tuple[int, ...]:
    """The median colour of the image's outermost pixels (rows and columns at its edges)."""
    arr = np.asarray(img)
    edges = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    edges = edges[:: max(1, len(edges) // 4096)]  # a median of 4k edge pixels is plenty, and fast
    return tuple(int(v) for v in np.median(edges.reshape(len(edges), -1), axis=0))


def dataset_background(images: np.ndarray | None) -> str | None:
    """"dark" or "light": the mean border brightness of up to 256 images [N, C, H, W] (uint8, or
    float in [0, 1]); None if none."""
    if images is None or len(images) == 0:
        return None
    x = images[:256].astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    border = np.concatenate([x[:, :, 0].ravel(), x[:, :, -1].ravel(), x[:, :, :, 0].ravel(), x[:, :, :, -1].ravel()])
    return "light" if float(border.mean()) > 0.5 else "dark"


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
