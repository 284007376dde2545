"""Embeddings only: precomputed codes from any encoder (a VAE's means, CLIP, ...), explored on the map.

An embeddings file is ``.npz`` (read with ``allow_pickle=False``) or ``.parquet``:

- ``.npz``: ``latents`` (or ``embeddings`` / ``codes`` / ``z``) [N, D]; optional ``images``
  ([N, C, H, W], [N, H, W] or [N, H, W, C]; uint8, or float in [0, 1]), ``labels`` [N] (integers,
  or strings), ``class_names`` [K].
- ``.parquet``: a list-of-floats column ``vector`` (or ``embedding`` / ``latents``); optional
  ``label`` (integers or strings) and ``image`` (PNG / JPEG bytes) columns.

Every size is checked against ``vaescope.limits`` from the file's headers before an array is read.
The ``EmbeddingsModel`` answers the contract with ``decodes=False``: the panels that decode say so.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaescope.contract import Condition, Description, Posterior
from vaescope.errors import InputError
from vaescope.limits import (
    MAX_EMBEDDING_DIM,
    MAX_EMBEDDING_FILE_BYTES,
    MAX_EMBEDDING_IMAGE_BYTES,
    MAX_EMBEDDING_IMAGE_SIDE,
    MAX_EMBEDDING_POINTS,
    MAX_EMBEDDING_VALUES,
)
from vaescope.training.checks import as_array

LATENT_KEYS = ("latents", "embeddings", "codes", "z", "vector", "embedding")
NO_DECODER = ("these are precomputed embeddings: there is no decoder, so there is nothing to {what}. "
              "Export a model with vs.export to explore it with its decoder")


class EmbeddingsError(InputError):
    """An embeddings file or array cannot be used; the message says what is wrong."""


@dataclass
class EmbeddingTable:
    """Codes [N, D] float32, optional images [N, C, H, W] uint8, labels [N] int64 (-1 unknown), class names."""

    latents: np.ndarray
    images: np.ndarray | None
    labels: np.ndarray
    class_names: tuple[str, ...]
    origin: str

    def __post_init__(self) -> None:
        check_table(self.latents, self.images, self.labels)


def check_table(latents: np.ndarray, images: np.ndarray | None, labels: np.ndarray) -> None:
    n = len(latents)
    if latents.ndim != 2 or n < 1 or not 1 <= latents.shape[1] <= MAX_EMBEDDING_DIM:
        raise EmbeddingsError(f"latents must be [N, D] with N >= 1 and D <= {MAX_EMBEDDING_DIM}, "
                              f"got {list(latents.shape)}")
    if not np.isfinite(latents).all():
        raise EmbeddingsError("latents contain NaN or infinite values")
    if labels.shape != (n,):
        raise EmbeddingsError(f"labels must give one label per point: {len(labels)} labels for {n} points")
    if images is not None and (images.ndim != 4 or len(images) != n or images.dtype != np.uint8):
        raise EmbeddingsError(f"images must be uint8 [N, C, H, W] with N = {n}, got {images.dtype} {list(images.shape)}")


def table_from_arrays(latents: object, images: object = None, labels: object = None,
                      class_names: object = None, origin: str = "the given embeddings") -> EmbeddingTable:
    """An EmbeddingTable from in-memory arrays (numpy or torch), checked against the limits."""
    z = as_array(latents, "latents", EmbeddingsError)
    _check_count(z.shape, "latents")
    z = z.astype(np.float32, copy=False)
    n = len(z)
    ims = None if images is None else _images(as_array(images, "images", EmbeddingsError), n)
    labs, names = _labels(labels, n, class_names)
    return EmbeddingTable(np.ascontiguousarray(z), ims, labs, names, origin)


def _check_count(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2:
        raise EmbeddingsError(f"{what} must be [N, D], got {list(shape)}")
    n, d = shape
    if n > MAX_EMBEDDING_POINTS or d > MAX_EMBEDDING_DIM or n * d > MAX_EMBEDDING_VALUES:
        raise EmbeddingsError(f"{what} of shape {[n, d]} exceed the limits: at most {MAX_EMBEDDING_POINTS:,} points, "
                              f"{MAX_EMBEDDING_DIM} dimensions and {MAX_EMBEDDING_VALUES:,} values")


def _images(array: np.ndarray, n: int) -> np.ndarray:
    """Images as uint8 [N, C, H, W] (grey or RGB), from the common layouts."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or len(array) != n:
        raise EmbeddingsError(f"images must be [N, C, H, W] (C = 1 or 3) with N = {n}, got {list(array.shape)}")
    if max(array.shape[2:]) > MAX_EMBEDDING_IMAGE_SIDE or array.size > MAX_EMBEDDING_IMAGE_BYTES:
        raise EmbeddingsError(f"images exceed the limits: sides up to {MAX_EMBEDDING_IMAGE_SIDE} px and "
                              f"{MAX_EMBEDDING_IMAGE_BYTES // 2**20} MB in all")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise EmbeddingsError(f"images must be uint8, or finite floats in [0, 1]; got {array.dtype}")
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def _labels(labels: object, n: int, class_names: object) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels [N] (-1 unknown) and class names; string labels become classes in sorted order."""
    names = () if class_names is None else tuple(str(c)[:200] for c in np.asarray(class_names).ravel())
    if labels is None:
        return np.full(n, -1, np.int64), names
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.dtype == object:  # strings from a parquet column, or a list of names
        if not all(isinstance(v, str) for v in array.ravel()):
            raise EmbeddingsError("labels must be integers or strings")
        array = array.astype(str)
    if array.shape != (n,):
        raise EmbeddingsError(f"labels must give one label per point: {array.shape} for {n} points")
    if array.dtype.kind in "USO":
        text = array.astype(str)
        found = tuple(sorted(set(text.tolist())))
        order = names or found
        index = {name: i for i, name in enumerate(order)}
        return np.array([index.get(t, -1) for t in text], np.int64), tuple(order)
    if not np.issubdtype(array.dtype, np.integer):
        raise EmbeddingsError(f"labels must be integers or strings, got {array.dtype}")
    array = array.astype(np.int64)
    if names and array.max(initial=-1) >= len(names):
        raise EmbeddingsError(f"labels go up to {int(array.max())} but there are {len(names)} class names")
    return np.where(array < 0, -1, array), names


# -- files --------------------------------------------------------------------------------------
def read_embeddings(path: str | Path) -> EmbeddingTable:
    """An embeddings file (.npz or .parquet), checked against the limits before its arrays are read."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size > MAX_EMBEDDING_FILE_BYTES:
        raise EmbeddingsError(f"{path.name} is {size / 2**20:.0f} MB; embeddings files up to "
                              f"{MAX_EMBEDDING_FILE_BYTES // 2**20} MB are read")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            return _read_npz(path)
        if suffix == ".parquet":
            return _read_parquet(path)
    except EmbeddingsError as exc:
        raise EmbeddingsError(f"{path.name}: {exc}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise EmbeddingsError(f"{path.name}: not a readable {suffix} embeddings file ({type(exc).__name__}: {exc})") from None
    raise EmbeddingsError(f"{path.name}: embeddings files are .npz or .parquet")


def _npz_shape(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its .npy header, without reading the array."""
    with archive.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(fh))
    return shape, dtype


def _read_npz(path: Path) -> EmbeddingTable:
    with zipfile.ZipFile(path) as archive:
        members = {Path(m).stem: m for m in archive.namelist() if m.endswith(".npy")}
        key = next((k for k in LATENT_KEYS if k in members), None)
        if key is None:
            raise EmbeddingsError(f"no latents array: name it one of {LATENT_KEYS[:4]} (found {sorted(members)[:8]})")
        shape, dtype = _npz_shape(archive, members[key])
        _check_count(shape, key)
        n = shape[0]
        for name in ("images", "labels", "class_names"):
            if name in members:
                other, other_dtype = _npz_shape(archive, members[name])
                if other_dtype.hasobject:
                    raise EmbeddingsError(f"{name} holds Python objects, which are never unpickled")
                if name == "images" and (len(other) < 3 or other[0] != n or
                                         int(np.prod(other)) > MAX_EMBEDDING_IMAGE_BYTES):
                    raise EmbeddingsError(f"images of shape {list(other)} do not fit {n} points within the limits")
                if name != "images" and int(np.prod(other)) > MAX_EMBEDDING_POINTS:
                    raise EmbeddingsError(f"{name} of shape {list(other)} is too large")
        if dtype.hasobject:
            raise EmbeddingsError("latents hold Python objects, which are never unpickled")
    with np.load(path, allow_pickle=False) as data:
        return table_from_arrays(data[key], data["images"] if "images" in data.files else None,
                                 data["labels"] if "labels" in data.files else None,
                                 data["class_names"] if "class_names" in data.files else None,
                                 f"the {shape[0]:,} points of {path.name}")


def _read_parquet(path: Path) -> EmbeddingTable:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    n = meta.metadata.num_rows
    columns = meta.schema_arrow.names
    key = next((k for k in ("vector", "embedding", "latents", "embeddings", "z") if k in columns), None)
    if key is None:
        raise EmbeddingsError(f"no vector column: name it vector, embedding or latents (found {columns[:8]})")
    if n < 1 or n > MAX_EMBEDDING_POINTS:
        raise EmbeddingsError(f"{n:,} rows; between 1 and {MAX_EMBEDDING_POINTS:,} are read")
    wanted = [c for c in (key, "label", "image") if c in columns]
    table = meta.read(columns=wanted)
    vectors = table.column(key).combine_chunks()
    flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), np.float32)
    if len(flat) % n:
        raise EmbeddingsError(f"the {key} column's vectors do not all have one length")
    latents = flat.reshape(n, len(flat) // n)
    labels = table.column("label").to_numpy(zero_copy_only=False) if "label" in wanted else None
    images = _decode_images(table.column("image").to_pylist()) if "image" in wanted else None
    return table_from_arrays(latents, images, labels, None, f"the {n:,} rows of {path.name}")


def _decode_images(encoded: list[object]) -> np.ndarray:
    """PNG / JPEG bytes per row -> uint8 [N, C, H, W] (all of one size)."""
    from PIL import Image

    from vaescope.limits import MAX_IMAGE_PIXELS

    frames = []
    for i, data in enumerate(encoded):
        if not isinstance(data, bytes | bytearray):
            raise EmbeddingsError(f"image {i} is not PNG / JPEG bytes")
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS or max(img.size) > MAX_EMBEDDING_IMAGE_SIDE:
                    raise EmbeddingsError(f"image {i} is {img.size[0]} x {img.size[1]} px; thumbnails up to "
                                          f"{MAX_EMBEDDING_IMAGE_SIDE} px a side are read")
                frames.append(np.asarray(img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB")))
        except EmbeddingsError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for broken bytes
            raise EmbeddingsError(f"image {i} cannot be read ({type(exc).__name__})") from None
    if len({f.shape for f in frames}) > 1:
        raise EmbeddingsError("the images have different sizes; give thumbnails of one size")
    return np.stack(frames)


# -- the contract without a decoder --------------------------------------------------------------
class EmbeddingsModel:
    """Precomputed codes behind the contract: describes itself, decodes nothing (``decodes=False``)."""

    def __init__(self, table: EmbeddingTable, name: str) -> None:
        self.table = table
        self.name = name

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def describe(self) -> Description:
        shape = tuple(self.table.images.shape[1:]) if self.table.images is not None else (1, 1, 1)
        return Description(
            family="embeddings", title="Embeddings (no model)",
            summary="Precomputed codes: each dot is one item's vector, from whatever encoder made them. There is "
                    "no decoder, so the map and the items are all there is to explore.",
            image_shape=shape, latent_dim=self.table.latents.shape[1], class_names=self.table.class_names,
            condition=Condition(), has_prior=False, decodes=False,
            prior_note="Precomputed embeddings have no prior and no decoder: nothing can be sampled.",
            details=(f"{len(self.table.latents):,} points", "no decoder"))

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        raise EmbeddingsError(NO_DECODER.format(what="encode"))

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        raise EmbeddingsError(NO_DECODER.format(what="decode"))

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        raise EmbeddingsError(NO_DECODER.format(what="sample"))

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        return torch.zeros_like(posterior.mean)
