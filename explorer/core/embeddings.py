"""Embeddings only: precomputed codes from any encoder (a VAE's means, CLIP, ...), explored on the map.

An embeddings file is ``.npz`` (no pickles) or ``.parquet``:

- ``.npz``: ``latents`` (or ``embeddings`` / ``codes`` / ``z``) [N, D] (floats or integers); optional
  ``images`` ([N, C, H, W], [N, H, W] or [N, H, W, C]; uint8, or float in [0, 1]), ``labels`` [N]
  (integers, or strings), ``class_names`` [K].
- ``.parquet``: a list-of-floats column ``vector`` (or ``embedding`` / ``latents``; a list or a
  fixed-size list); optional ``label`` (integers or strings), ``class_name`` (strings: each row's
  class name, beside integer labels, or the labels themselves without a ``label`` column) and
  ``image`` (PNG / JPEG bytes) columns. The class names, class 0 first, may be a JSON list under
  the schema metadata key ``class_names`` (``table.replace_schema_metadata({"class_names":
  json.dumps(names)})``): they name integer labels and order string ones (else sorted).

A file of more than ``MAX_EMBEDDING_POINTS`` rows (up to ``MAX_EMBEDDING_FILE_ROWS``) is read as a
seeded subset of that many rows (``seeded_rows``), block by block, and its origin says so.

A file is checked against ``vaescope.limits`` from what it declares before any of its data is read:
an .npz by its zip directory and the .npy header of each array used (shape, dtype, order, and the
byte size its zip entry must agree with); a .parquet by its footer (schema, rows, and each row
group's declared values and bytes). The arrays are then streamed in blocks of a few megabytes and
converted on the way (float64 codes to float32, float images to uint8), so reading costs about the
size of the result. Every refusal is one ``EmbeddingsError`` sentence naming the file.
The ``EmbeddingsModel`` answers the contract with ``decodes=False``: the panels that decode say so.
"""

from __future__ import annotations

import io
import json
import lzma
import math
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from vaescope.adapter import SUBSET_SEED
from vaescope.contract import Condition, Description
from vaescope.errors import InputError
from vaescope.limits import (
    MAX_EMBEDDING_BYTES,
    MAX_EMBEDDING_DIM,
    MAX_EMBEDDING_FILE_BYTES,
    MAX_EMBEDDING_FILE_ROWS,
    MAX_EMBEDDING_IMAGE_BYTES,
    MAX_EMBEDDING_IMAGE_SIDE,
    MAX_EMBEDDING_LABEL_BYTES,
    MAX_EMBEDDING_LABEL_CHARS,
    MAX_EMBEDDING_MEMBERS,
    MAX_EMBEDDING_META_BYTES,
    MAX_EMBEDDING_POINTS,
    MAX_EMBEDDING_VALUES,
)
from vaescope.training.checks import as_array

LATENT_KEYS = ("latents", "embeddings", "codes", "z", "vector", "embedding")
VECTOR_COLUMNS = ("vector", "embedding", "latents", "embeddings", "z")
NO_DECODER = ("these are precomputed embeddings: there is no decoder, so there is nothing to {what}. "
              "Export a model with vs.export to explore it with its decoder")
CHUNK_BYTES = 16 << 20  # one block of a streamed read: the peak stays near the size of the result


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
    rows = max(1, CHUNK_BYTES // max(1, latents[0].nbytes))
    if not all(np.isfinite(latents[i:i + rows]).all() for i in range(0, n, rows)):  # no full-size mask
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
    if n < 1 or d < 1:
        raise EmbeddingsError(f"{what} must be [N, D] with N >= 1 and D >= 1, got {list(shape)}")


def _image_layout(shape: tuple[int, ...], n: int, rows_read: int | None = None) -> str:
    """How images of ``shape`` become [N, C, H, W] ("nhw", "nhwc" or "nchw"), checked against the
    limits from the shape alone (``rows_read`` of them, when a seeded subset is read)."""
    if len(shape) == 3:
        layout, nchw = "nhw", (shape[0], 1, *shape[1:])
    elif len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        layout, nchw = "nhwc", (shape[0], shape[3], shape[1], shape[2])
    else:
        layout, nchw = "nchw", tuple(shape)
    if len(nchw) != 4 or nchw[1] not in (1, 3) or nchw[0] != n or min(nchw[2:]) < 1:
        raise EmbeddingsError(f"images must be [N, C, H, W] (C = 1 or 3) with N = {n}, got {list(shape)}")
    if max(nchw[2:]) > MAX_EMBEDDING_IMAGE_SIDE or math.prod(nchw[1:]) * (rows_read or n) > MAX_EMBEDDING_IMAGE_BYTES:
        raise EmbeddingsError(f"images exceed the limits: sides up to {MAX_EMBEDDING_IMAGE_SIDE} px and "
                              f"{MAX_EMBEDDING_IMAGE_BYTES // 2**20} MB in all")
    return layout


def _as_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        array = array[:, None]
    elif layout == "nhwc":
        array = array.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(array)


def _images(array: np.ndarray, n: int) -> np.ndarray:
    """Images as uint8 [N, C, H, W] (grey or RGB), from the common layouts."""
    layout = _image_layout(array.shape, n)
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise EmbeddingsError(f"images must be uint8, or finite floats in [0, 1]; got {array.dtype}")
    return _as_nchw(_pixels(array), layout)


def _pixels(values: np.ndarray) -> np.ndarray:
    """uint8 pixels as they are; floats in [0, 1] rounded to 0..255 (NaN and infinities refused)."""
    if values.dtype == np.uint8:
        return values
    if not np.isfinite(values).all():
        raise EmbeddingsError(f"images must be uint8, or finite floats in [0, 1]; got {values.dtype} with NaN or infinities")
    return (np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8)


def _codes(values: np.ndarray) -> np.ndarray:
    """A block of codes as float32; NaN, infinities and values beyond float32's range refused."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise EmbeddingsError("latents contain NaN or infinite values")
    with np.errstate(over="ignore"):
        codes = values.astype(np.float32)
    if values.dtype.kind == "f" and values.dtype.itemsize > 4 and not np.isfinite(codes).all():
        raise EmbeddingsError("latents hold values beyond float32's range (about 3.4e38)")
    return codes


def _labels(labels: object, n: int, class_names: object) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels [N] (-1 unknown) and class names; string labels become classes in sorted order."""
    names = () if class_names is None else tuple(_text(c)[:200] for c in np.asarray(class_names).ravel())
    if labels is None:
        return np.full(n, -1, np.int64), names
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.dtype == object:  # a list of names
        if not all(isinstance(v, str) for v in array.ravel()):
            raise EmbeddingsError("labels must be integers or strings")
        array = array.astype(str)
    if array.shape != (n,):
        raise EmbeddingsError(f"labels must give one label per point: {array.shape} for {n} points")
    if array.dtype.kind in "US":
        found, codes = np.unique(array, return_inverse=True)
        return _string_labels(codes.reshape(-1), [_text(v) for v in found], names)
    if not np.issubdtype(array.dtype, np.integer):
        raise EmbeddingsError(f"labels must be integers or strings, got {array.dtype}")
    array = array.astype(np.int64)
    if names and array.max(initial=-1) >= len(names):
        raise EmbeddingsError(f"labels go up to {int(array.max())} but there are {len(names)} class names")
    return np.where(array < 0, -1, array), names


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _string_labels(codes: np.ndarray, vocabulary: list[str], names: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels [N] int64 from ``codes`` into ``vocabulary`` (-1: missing): the classes are ``names``
    when given (a label not among them is unknown), else the distinct labels in sorted order."""
    longest = max((len(v) for v in vocabulary), default=0)
    if longest > MAX_EMBEDDING_LABEL_CHARS:
        raise EmbeddingsError(f"a label is {longest:,} characters long; labels up to "
                              f"{MAX_EMBEDDING_LABEL_CHARS} characters are read")
    order = names or tuple(sorted(set(vocabulary)))
    index = {name: i for i, name in enumerate(order)}
    lookup = np.array([index.get(v, -1) for v in vocabulary] + [-1], np.int64)  # the last: code -1, missing
    return lookup[codes], tuple(order)


def _short(exc: BaseException) -> str:
    """The first line of a library's error, cut to a sentence's length."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _mib(size: int) -> str:
    """A size for people: "763 MiB", "1.1 MiB", "4 MiB", "512 bytes"."""
    if size < 2**20:
        return f"{size:,} bytes"
    return f"{size / 2**20:,.0f} MiB" if size >= 10 * 2**20 else f"{size / 2**20:.1f}".removesuffix(".0") + " MiB"


# -- files --------------------------------------------------------------------------------------
def read_embeddings(path: str | Path) -> EmbeddingTable:
    """An embeddings file (.npz or .parquet), checked against the limits before its arrays are read.

    Examples:
        >>> table = read_embeddings("codes.npz")  # doctest: +SKIP
        >>> table.latents.shape, table.class_names  # doctest: +SKIP
        ((10000, 12), ('circle', 'square', 'triangle'))
    """
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
    except (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error,
            lzma.LZMAError, MemoryError) as exc:  # what zipfile, numpy's header parser and pyarrow raise
        raise EmbeddingsError(f"{path.name}: not a readable {suffix} embeddings file "
                              f"({type(exc).__name__}: {_short(exc)})") from None
    raise EmbeddingsError(f"{path.name}: embeddings files are .npz or .parquet")


# -- .npz: a checked plan of the arrays used, from their headers; then the data, streamed ---------
_KINDS = {"O": "Python objects", "c": "complex numbers", "V": "records (a structured dtype)", "U": "text",
          "S": "bytes", "M": "dates", "m": "time spans", "b": "booleans", "f": "floats", "i": "integers",
          "u": "integers"}


@dataclass(frozen=True)
class _Member:
    """One array of an .npz as its .npy header declares it; none of its data has been read."""

    name: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # the .npy header's length: the data follows it

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The data's size as the header declares it (in the file's dtype, before any conversion)."""
        return self.count * self.dtype.itemsize

    def described(self) -> str:
        """E.g. "float64 [2,000,000 x 50]" or "U100000 [10,000]"."""
        kind = self.dtype.name if self.dtype.kind in "biufc" else self.dtype.str.lstrip("<>|=")
        return f"{kind} [{' x '.join(f'{s:,}' for s in self.shape)}]"

    def refuse_dtype(self, rule: str) -> NoReturn:
        what = _KINDS.get(self.dtype.kind, "values")
        raise EmbeddingsError(f"the {self.name} array holds {what} ({self.described()}); {rule}")

    def check_text(self) -> None:
        """Strings no longer than MAX_EMBEDDING_LABEL_CHARS (a U100000 array is 400 KB an item)."""
        chars = self.dtype.itemsize // 4 if self.dtype.kind == "U" else self.dtype.itemsize
        if chars > MAX_EMBEDDING_LABEL_CHARS:
            raise EmbeddingsError(f"the {self.name} array holds strings of up to {chars:,} characters ({self.described()}); "
                                  f"labels and class names up to {MAX_EMBEDDING_LABEL_CHARS} characters are read")

    def check_bytes(self, limit: int, what: str, hint: str = "", share: float = 1.0) -> None:
        """The declared size against ``limit``; ``share``: the part of the rows read (a seeded subset)."""
        if self.nbytes * share > limit:
            kept = "" if share == 1 else f" (the seeded subset read holds {_mib(math.ceil(self.nbytes * share))})"
            raise EmbeddingsError(f"{self.name} declared as {self.described()} take {_mib(self.nbytes)}{kept}; "
                                  f"at most {_mib(limit)} of {what} are read{hint}")


def _npz_directory(path: Path) -> None:
    """The zip directory's size, from its end record, before zipfile builds one object per entry."""
    with path.open("rb") as fh:
        end = zipfile._EndRecData(fh)  # noqa: SLF001 - the one reader of the end record (zip64 too)
    if end is None:
        raise EmbeddingsError("not a readable .npz embeddings file (no zip directory)")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # noqa: SLF001
    if entries > MAX_EMBEDDING_MEMBERS or size > MAX_EMBEDDING_META_BYTES:
        raise EmbeddingsError(f"its zip directory lists {entries:,} entries in {_mib(size)}; at most "
                              f"{MAX_EMBEDDING_MEMBERS} arrays and {_mib(MAX_EMBEDDING_META_BYTES)} are read")


def _npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> _Member:
    """An array's shape, dtype and order from its .npy header, without reading the array."""
    if info.flag_bits & 0x1:
        raise EmbeddingsError(f"{name} is encrypted")
    with archive.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
        except (ValueError, TypeError, SyntaxError, EOFError, tokenize.TokenError, RecursionError) as exc:
            # numpy parses the header's dict literal with the tokenizer and ast: these are its failures
            raise EmbeddingsError(f"{name} has no readable .npy header ({_short(exc)})") from None
        offset = fh.tell()
    if any(s < 0 for s in shape):
        raise EmbeddingsError(f"{name} declares a negative size {list(shape)}")
    return _Member(name, info, tuple(int(s) for s in shape), dtype, bool(fortran), offset)


def _npz_plan(archive: zipfile.ZipFile) -> dict[str, _Member]:
    """The arrays an .npz contributes ("latents", and "images", "labels", "class_names" if present),
    each checked from its header against the limits and against its zip entry's size. Arrays not
    used are never opened; no array's data has been read when this returns."""
    infos = {i.filename[:-4]: i for i in archive.infolist() if i.filename.endswith(".npy")}
    key = next((k for k in LATENT_KEYS if k in infos), None)
    if key is None:
        raise EmbeddingsError(f"no latents array: name it one of {LATENT_KEYS[:4]} (found {sorted(infos)[:8]})")
    plan = {"latents": _npz_member(archive, infos[key], key)}
    plan.update({role: _npz_member(archive, infos[role], role) for role in ("images", "labels", "class_names")
                 if role in infos})
    for m in plan.values():
        if m.dtype.hasobject:
            raise EmbeddingsError(f"the {m.name} array holds Python objects, which are never unpickled")
        if m.dtype.fields is not None or m.dtype.subdtype is not None or m.dtype.itemsize == 0:
            m.refuse_dtype("only plain arrays of numbers or strings are read")
    latents = plan["latents"]
    keep = _npz_rows_kept(latents)
    share = 1.0 if keep is None else len(keep) / latents.shape[0]
    if latents.dtype.kind not in "biuf" or latents.dtype.itemsize > 8:
        latents.refuse_dtype("codes must be real numbers: floats or integers of at most 8 bytes")
    latents.check_bytes(MAX_EMBEDDING_BYTES, "codes", " (float32 takes half the room of float64)", share)
    n = latents.shape[0]
    if "images" in plan:
        images = plan["images"]
        _image_layout(images.shape, n, None if keep is None else len(keep))
        if images.dtype != np.uint8 and (images.dtype.kind != "f" or images.dtype.itemsize > 8):
            images.refuse_dtype("images must be uint8, or floats in [0, 1]")
        images.check_bytes(MAX_EMBEDDING_IMAGE_BYTES, "thumbnails", share=share)
    if "labels" in plan:
        labels = plan["labels"]
        if labels.shape != (n,):
            raise EmbeddingsError(f"labels must give one label per point: {list(labels.shape)} for {n} points")
    if "class_names" in plan and plan["class_names"].count > MAX_EMBEDDING_POINTS:
        raise EmbeddingsError(f"class_names of shape {list(plan['class_names'].shape)} is too large")
    for role in ("labels", "class_names"):
        if role in plan:
            m = plan[role]
            if m.dtype.kind not in "iuUS" or (m.dtype.kind in "iu" and m.dtype.itemsize > 8):
                m.refuse_dtype(f"{role} must be integers or strings")
            if m.dtype.kind in "US":
                m.check_text()
            m.check_bytes(MAX_EMBEDDING_LABEL_BYTES, role.replace("_", " "), share=share if role == "labels" else 1.0)
    for m in plan.values():  # a header that disagrees with its zip entry is a crafted file
        if m.offset + m.nbytes != m.info.file_size:
            raise EmbeddingsError(f"{m.info.filename} declares {m.nbytes:,} bytes of data but its zip entry "
                                  f"holds {max(0, m.info.file_size - m.offset):,}")
    return plan


def _npz_rows_kept(latents: _Member) -> np.ndarray | None:
    """The rows of an .npz read (None: all), its codes' shape checked against the limits for them."""
    if len(latents.shape) != 2:
        _check_count(latents.shape, latents.name)
    n, d = latents.shape
    _check_count((min(n, MAX_EMBEDDING_POINTS), d), latents.name)
    if n > MAX_EMBEDDING_FILE_ROWS:
        raise EmbeddingsError(f"{latents.name} of shape {[n, d]} exceed the limits: at most {MAX_EMBEDDING_FILE_ROWS:,} "
                              f"points (above {MAX_EMBEDDING_POINTS:,}, a seeded subset of that many is read), "
                              f"{MAX_EMBEDDING_DIM} dimensions and {MAX_EMBEDDING_VALUES:,} values")
    return _rows_kept(n)


def _read_member(archive: zipfile.ZipFile, m: _Member, dtype: np.dtype | type,
                 convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``m``'s array as ``dtype``, streamed from its zip entry CHUNK_BYTES at a time and converted
    block by block: no copy of the whole array in the file's dtype is ever made."""
    out = np.empty(m.shape[::-1] if m.fortran else m.shape, dtype)  # Fortran order: the transpose, in C order
    flat = out.reshape(-1)
    step = max(1, CHUNK_BYTES // m.dtype.itemsize)
    with archive.open(m.info) as fh:
        fh.read(m.offset)
        for start in range(0, m.count, step):
            stop = min(start + step, m.count)
            raw = fh.read((stop - start) * m.dtype.itemsize)
            if len(raw) != (stop - start) * m.dtype.itemsize:
                raise EmbeddingsError(f"{m.name} ends before the size its header declares")
            values = np.frombuffer(raw, m.dtype)
            flat[start:stop] = values if convert is None else convert(values)
        if fh.read(1):  # also makes zipfile check the entry's CRC
            raise EmbeddingsError(f"{m.name} holds more data than its header declares")
    return out.T if m.fortran else out


def _read_rows(archive: zipfile.ZipFile, m: _Member, keep: np.ndarray, dtype: np.dtype | type,
               convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The rows ``keep`` (sorted) of ``m``'s array as ``dtype``, streamed from its zip entry in
    blocks of rows of about CHUNK_BYTES: only the rows kept are held."""
    if m.fortran and len(m.shape) > 1:
        raise EmbeddingsError(f"{m.name} is stored in Fortran order; a file over {MAX_EMBEDDING_POINTS:,} rows is "
                              "read as a seeded subset from C-order arrays only (np.ascontiguousarray before np.savez)")
    row_shape = m.shape[1:]
    row_bytes = max(1, math.prod(row_shape) * m.dtype.itemsize)
    step = max(1, CHUNK_BYTES // row_bytes)
    out = np.empty((len(keep), *row_shape), dtype)
    at = 0
    with archive.open(m.info) as fh:
        fh.read(m.offset)
        for start in range(0, m.shape[0], step):
            stop = min(start + step, m.shape[0])
            raw = fh.read((stop - start) * row_bytes)
            if len(raw) != (stop - start) * row_bytes:
                raise EmbeddingsError(f"{m.name} ends before the size its header declares")
            lo, hi = np.searchsorted(keep, [start, stop])
            if hi > lo:
                block = np.frombuffer(raw, m.dtype).reshape(stop - start, *row_shape)[keep[lo:hi] - start]
                out[at:at + hi - lo] = block if convert is None else convert(block)
                at += hi - lo
        if fh.read(1):  # also makes zipfile check the entry's CRC
            raise EmbeddingsError(f"{m.name} holds more data than its header declares")
    return out


def _read_npz(path: Path) -> EmbeddingTable:
    _npz_directory(path)
    with zipfile.ZipFile(path) as archive:
        plan = _npz_plan(archive)
        n = plan["latents"].shape[0]
        keep = _rows_kept(n)

        def read(m: _Member, dtype: np.dtype | type, convert: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> np.ndarray:
            return _read_member(archive, m, dtype, convert) if keep is None else _read_rows(archive, m, keep, dtype,
                                                                                             convert)

        latents = np.ascontiguousarray(read(plan["latents"], np.float32, _codes))
        images = None
        if "images" in plan:
            layout = _image_layout(plan["images"].shape, n, None if keep is None else len(keep))
            images = _as_nchw(read(plan["images"], np.uint8, _pixels), layout)
        strings = {role: (read if role == "labels" else partial(_read_member, archive))(
                       plan[role], plan[role].dtype.newbyteorder("="))
                   for role in ("labels", "class_names") if role in plan}
    k = n if keep is None else len(keep)
    labels, names = _labels(strings.get("labels"), k, strings.get("class_names"))
    origin = (f"the {n:,} points of {path.name}" if keep is None else
              f"a seeded subset (seed {SUBSET_SEED}) of {k:,} of the {n:,} points of {path.name} (files over "
              f"{MAX_EMBEDDING_POINTS:,} points are read so)")
    return EmbeddingTable(latents, images, labels, names, origin)


# -- .parquet: the footer first (schema, rows, declared sizes), then the columns, block by block --
def _read_parquet(path: Path) -> EmbeddingTable:
    import pyarrow as pa

    try:
        return _parquet_table(path)
    except pa.ArrowException as exc:  # ArrowInvalid, ArrowMemoryError, ArrowIOError ...: one sentence, not Arrow's text
        raise EmbeddingsError(f"not a readable .parquet embeddings file ({type(exc).__name__}: {_short(exc)})") from None


def _parquet_footer(path: Path) -> None:
    """The footer's length, from the file's last 8 bytes, before pyarrow parses it."""
    with path.open("rb") as fh:
        size = fh.seek(0, io.SEEK_END)
        fh.seek(max(0, size - 8))
        tail = fh.read(8)
    if size < 12 or tail[4:] != b"PAR1":
        raise EmbeddingsError("not a readable .parquet embeddings file (no parquet footer)")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_EMBEDDING_META_BYTES:
        raise EmbeddingsError(f"its footer (schema and row groups) takes {_mib(footer)}; "
                              f"at most {_mib(MAX_EMBEDDING_META_BYTES)} are read")


@dataclass(frozen=True)
class _Column:
    """A top-level column as the footer declares it, summed over the row groups."""

    name: str
    type: Any  # pyarrow.DataType
    leaves: tuple[int, ...]  # its leaf columns in the parquet schema
    values: int  # declared leaf values (nulls and empty lists included)
    nbytes: int  # declared uncompressed size of its pages

    def refuse(self, rule: str) -> NoReturn:
        raise EmbeddingsError(f"the {self.name} column holds {self.type}; {rule}")

    def check_bytes(self, size: int, limit: int, what: str, share: float = 1.0) -> None:
        """The declared size (the larger of ``size`` and the pages') against ``limit``; ``share``: the
        part of the rows read (a seeded subset of a larger file)."""
        declared = max(size, self.nbytes)
        if declared * share > limit:
            kept = "" if share == 1 else f" (the seeded subset read holds {_mib(math.ceil(declared * share))})"
            raise EmbeddingsError(f"the {self.name} column declares {_mib(declared)} of {what}{kept}; "
                                  f"at most {_mib(limit)} are read")


def _parquet_column(md: Any, schema: Any, name: str) -> _Column:
    leaves = tuple(j for j in range(md.num_columns)
                   if md.schema.column(j).path == name or md.schema.column(j).path.startswith(name + "."))
    groups = [md.row_group(g) for g in range(md.num_row_groups)]
    return _Column(name, schema.field(name).type, leaves,
                   sum(rg.column(j).num_values for rg in groups for j in leaves),
                   sum(rg.column(j).total_uncompressed_size for rg in groups for j in leaves))


def _parquet_table(path: Path) -> EmbeddingTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _parquet_footer(path)
    md = pq.read_metadata(path)
    schema = md.schema.to_arrow_schema()
    n = md.num_rows
    key = next((k for k in VECTOR_COLUMNS if k in schema.names), None)
    if key is None:
        raise EmbeddingsError(f"no vector column: name it vector, embedding or latents (found {schema.names[:8]})")
    keep = _rows_kept(n)
    k = n if keep is None else len(keep)
    scale = k / n  # the declared sizes below are the file's; what is read is the kept share of them
    vectors = _parquet_column(md, schema, key)
    t = vectors.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        vectors.refuse("it must hold one list of floats (a vector) per row")
    if not pa.types.is_floating(t.value_type):
        vectors.refuse("vectors must be lists of floats (float16, float32 or float64)")
    if pa.types.is_fixed_size_list(t):
        _check_count((k, t.list_size), key)
    if vectors.values * scale > MAX_EMBEDDING_VALUES or vectors.values > n * MAX_EMBEDDING_DIM:
        kept = "" if keep is None else f" (the {k:,} rows of a seeded subset hold {math.ceil(vectors.values * scale):,})"
        raise EmbeddingsError(f"the {key} column declares {vectors.values:,} values for {n:,} row{'s' * (n != 1)}{kept}; "
                              f"at most {MAX_EMBEDDING_DIM} a row and {MAX_EMBEDDING_VALUES:,} in all are read")
    vectors.check_bytes(vectors.values * t.value_type.bit_width // 8, MAX_EMBEDDING_BYTES, f"{t.value_type} vectors",
                        scale)
    present = {c: _parquet_column(md, schema, c) for c in ("label", "class_name", "image") if c in schema.names}
    for c in ("label", "class_name"):
        if c in present:
            labels = present[c]
            text = _is_text(labels.type, pa.types.is_string, pa.types.is_large_string)
            if not (text or (c == "label" and pa.types.is_integer(labels.type))):
                labels.refuse("labels must be integers or strings" if c == "label" else "class names must be strings")
            labels.check_bytes(labels.values * 8, MAX_EMBEDDING_LABEL_BYTES, "labels", scale)
    if "image" in present:
        images = present["image"]
        if not _is_text(images.type, pa.types.is_binary, pa.types.is_large_binary):
            images.refuse("it must hold PNG / JPEG bytes")
        images.check_bytes(0, MAX_EMBEDDING_IMAGE_BYTES, "encoded images", scale)
    names = _metadata_class_names(schema.metadata)
    # Strings and images are read as dictionaries: a value repeated a million times is held once.
    with pq.ParquetFile(path, metadata=md, buffer_size=CHUNK_BYTES,
                        read_dictionary=[c for c in present if not pa.types.is_integer(present[c].type)]) as pf:
        latents = _parquet_vectors(pf, vectors, n, keep)
        labels_, names_ = _parquet_labels(pf, present, n, keep, names)
        images_ = _parquet_images(pf, present["image"], n, keep) if "image" in present else None
    origin = (f"the {n:,} rows of {path.name}" if keep is None else
              f"a seeded subset (seed {SUBSET_SEED}) of {k:,} of the {n:,} rows of {path.name} (files over "
              f"{MAX_EMBEDDING_POINTS:,} rows are read so)")
    return EmbeddingTable(latents, images_, labels_, names_, origin)


def _rows_kept(n: int) -> np.ndarray | None:
    """The rows read of a file of ``n`` rows: all (None) up to MAX_EMBEDDING_POINTS, a seeded subset of
    that many up to MAX_EMBEDDING_FILE_ROWS; more rows, or none, are refused."""
    if n < 1 or n > MAX_EMBEDDING_FILE_ROWS:
        raise EmbeddingsError(f"{n:,} rows; between 1 and {MAX_EMBEDDING_FILE_ROWS:,} are read")
    return None if n <= MAX_EMBEDDING_POINTS else seeded_rows(n, MAX_EMBEDDING_POINTS)


def seeded_rows(n: int, k: int, seed: int = SUBSET_SEED, block: int = 1 << 20) -> np.ndarray:
    """Sorted indices [k] of a uniformly drawn, seeded subset of ``range(n)``, in memory that grows
    with ``k`` and ``block``, not ``n``: the count in each block of rows is drawn from the
    hypergeometric distribution of what is left, then that many rows of the block.

    Examples:
        >>> rows = seeded_rows(10_000_000, 5)
        >>> len(rows), bool((np.diff(rows) > 0).all()), bool((seeded_rows(10_000_000, 5) == rows).all())
        (5, True, True)
    """
    rng = np.random.default_rng(seed)
    out = np.empty(k, np.int64)
    at, rows_left, wanted = 0, n, k
    for start in range(0, n, block):
        size = min(block, n - start)
        take = wanted if size == rows_left else int(rng.hypergeometric(size, rows_left - size, wanted)) if wanted else 0
        out[at:at + take] = np.sort(rng.choice(size, take, replace=False)) + start
        at, rows_left, wanted = at + take, rows_left - size, wanted - take
    return out


def _metadata_class_names(metadata: dict[bytes, bytes] | None) -> tuple[str, ...] | None:
    """The class names a parquet file's schema metadata carries (key ``class_names``: a JSON list of
    strings, class 0 first), or None."""
    raw = (metadata or {}).get(b"class_names")
    if raw is None:
        return None
    try:
        names = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
        raise EmbeddingsError("its class_names metadata must be a JSON list of strings, class 0 first")
    if len(names) > MAX_EMBEDDING_POINTS or max((len(v) for v in names), default=0) > MAX_EMBEDDING_LABEL_CHARS:
        raise EmbeddingsError(f"its class_names metadata holds {len(names):,} names of up to "
                              f"{max(len(v) for v in names):,} characters; names up to {MAX_EMBEDDING_LABEL_CHARS} "
                              "characters are read")
    return tuple(names)


def _is_text(t: Any, *kinds: Callable[[Any], bool]) -> bool:
    """Whether ``t`` (or the values of a dictionary type) is one of ``kinds``."""
    import pyarrow as pa

    t = t.value_type if pa.types.is_dictionary(t) else t
    return any(kind(t) for kind in kinds)


def _batches(pf: Any, column: _Column, keep: np.ndarray | None) -> Iterator[tuple[int, Any, np.ndarray | None]]:
    """(the file row of the batch's first row, the column's values in the batch, the kept rows'
    places in it or None for all), row group by row group, in batches whose declared size is
    about CHUNK_BYTES."""
    md = pf.metadata
    row = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows < 1:
            continue
        per_row = max(1, math.ceil(sum(rg.column(j).total_uncompressed_size for j in column.leaves) / rg.num_rows),
                      math.ceil(sum(rg.column(j).num_values for j in column.leaves) / rg.num_rows) * 8)
        for batch in pf.iter_batches(batch_size=max(1, CHUNK_BYTES // per_row), row_groups=[g],
                                     columns=[column.name], use_threads=False):
            values = batch.column(0)
            local = None
            if keep is not None:
                lo, hi = np.searchsorted(keep, [row, row + len(values)])
                local = keep[lo:hi] - row
            yield row, values, local
            row += len(values)


def _parquet_vectors(pf: Any, column: _Column, n: int, keep: np.ndarray | None) -> np.ndarray:
    """The vector column as float32 [N, D] (the kept rows of it), read row group by row group in
    blocks of rows whose declared size is a few megabytes; every vector must have one length (no
    silent regrouping)."""
    import pyarrow as pa

    key = column.name
    k = n if keep is None else len(keep)
    out: np.ndarray | None = None
    lengths: list[int] = []  # distinct lengths seen, for the message
    rows = at = 0  # rows of the file seen, vectors kept
    for row, vectors, local in _batches(pf, column, keep):
        if vectors.null_count:
            first = int(np.argmax(vectors.is_null().to_numpy(zero_copy_only=False)))
            raise EmbeddingsError(f"row {row + first:,} of the {key} column has no vector")
        if pa.types.is_fixed_size_list(vectors.type):
            seen = np.array([vectors.type.list_size])
        else:
            seen = np.unique(vectors.value_lengths().to_numpy(zero_copy_only=False))
        lengths += [int(s) for s in seen if int(s) not in lengths]
        if len(lengths) > 1:
            shown = sorted(lengths)[:6]
            raise EmbeddingsError(f"the {key} column's vectors do not all have one length: lengths "
                                  f"{', '.join(map(str, shown[:-1]))} and {shown[-1]} were seen")
        d = lengths[0]
        if out is None:
            _check_count((k, d), key)
            out = np.empty((k, d), np.float32)
        rows = row + len(vectors)
        if rows > n:
            raise EmbeddingsError(f"the {key} column holds more vectors than the file's {n:,} rows")
        vectors = _kept(vectors, local)
        values = vectors.flatten()
        if values.null_count:
            raise EmbeddingsError(f"the {key} column's vectors hold missing values (nulls)")
        out[at:at + len(vectors)] = _codes(values.to_numpy(zero_copy_only=False)).reshape(len(vectors), d)
        at += len(vectors)
    if out is None or rows != n or at != k:
        raise EmbeddingsError(f"the {key} column holds {rows:,} vectors for the file's {n:,} rows")
    return out


def _kept(values: Any, local: np.ndarray | None) -> Any:
    import pyarrow as pa

    return values if local is None else values.take(pa.array(local))


def _parquet_labels(pf: Any, present: dict[str, _Column], n: int, keep: np.ndarray | None,
                    names: tuple[str, ...] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels [N] int64 (-1 missing) and class names: from an integer or string ``label`` column (or
    a string ``class_name`` column without one), with the class names of the file's metadata
    (``names``) or, for integer labels, of its ``class_name`` column (each label's name)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    k = n if keep is None else len(keep)
    label = present.get("label") or present.get("class_name")
    if label is None:
        return np.full(k, -1, np.int64), names or ()
    if not pa.types.is_integer(label.type):
        codes, vocabulary = _string_codes(pf, label, k, keep)
        return _string_labels(codes, vocabulary, names or ())
    values = np.empty(k, np.int64)
    at = 0
    for _, column, local in _batches(pf, label, keep):
        got = pc.fill_null(_kept(column, local).cast(pa.int64()), -1).to_numpy()  # a missing label is unknown
        values[at:at + len(got)] = got
        at += len(got)
    if at != k:
        raise EmbeddingsError(f"the label column holds {at:,} values for the file's {n:,} rows")
    if names is None and "class_name" in present:
        names = _names_by_label(pf, present["class_name"], values, keep)
    return _labels(values, k, names)


def _names_by_label(pf: Any, column: _Column, labels: np.ndarray, keep: np.ndarray | None) -> tuple[str, ...]:
    """Class names from a ``class_name`` column beside integer labels: each label's name (one name
    a label; a label without a name is named by its number)."""
    codes, vocabulary = _string_codes(pf, column, len(labels), keep)
    pairs = np.unique(np.stack([labels, codes], 1), axis=0)
    pairs = pairs[(pairs[:, 0] >= 0) & (pairs[:, 1] >= 0)]
    labels_seen, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        c = int(labels_seen[np.argmax(counts > 1)])
        both = [vocabulary[int(j)] for j in pairs[pairs[:, 0] == c][:2, 1]]
        raise EmbeddingsError(f"label {c} is named both {both[0]!r} and {both[1]!r} in the class_name column; "
                              "give each label one name")
    if not len(pairs):
        return ()
    named = {int(c): vocabulary[int(j)] for c, j in pairs}
    return tuple(named.get(c, str(c)) for c in range(int(pairs[:, 0].max()) + 1))


def _string_codes(pf: Any, column: _Column, k: int, keep: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """A string column's kept rows as codes [k] into the words seen (-1: missing), read as
    dictionaries batch by batch, each distinct word once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = np.empty(k, np.int64)
    vocabulary: dict[str, int] = {}
    at = 0
    for _, values, local in _batches(pf, column, keep):
        chunk = _kept(values, local)
        chunk = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        index = pc.fill_null(chunk.indices, -1).to_numpy().astype(np.int64)
        used, inverse = np.unique(index, return_inverse=True)  # a dictionary may hold words no row uses
        shown = used[used >= 0]
        words = chunk.dictionary.take(pa.array(shown, pa.int64()))
        longest = (pc.max(pc.utf8_length(words)).as_py() or 0) if len(words) else 0
        if longest > MAX_EMBEDDING_LABEL_CHARS:
            raise EmbeddingsError(f"a label is {longest:,} characters long; labels up to "
                                  f"{MAX_EMBEDDING_LABEL_CHARS} characters are read")
        lookup = np.array([-1] * (len(used) - len(shown)) +
                          [-1 if w is None else vocabulary.setdefault(w, len(vocabulary)) for w in words.to_pylist()],
                          np.int64)
        codes[at:at + len(chunk)] = lookup[inverse.reshape(-1)]
        at += len(chunk)
    if at != k:
        raise EmbeddingsError(f"the {column.name} column holds {at:,} values for the rows read ({k:,})")
    return codes, list(vocabulary)


def _parquet_images(pf: Any, column: _Column, n: int, keep: np.ndarray | None) -> np.ndarray:
    """PNG / JPEG bytes per row -> uint8 [N, C, H, W] (the kept rows; all of one size); each distinct
    image of a batch is decoded once, and the total is checked against the limit from the first
    image's size."""
    import pyarrow as pa

    k = n if keep is None else len(keep)
    out: np.ndarray | None = None
    at = 0
    for row, values, local in _batches(pf, column, keep):
        chunk = _kept(values, local)
        chunk = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        rows_of = np.arange(row, row + len(values)) if local is None else row + local  # file rows, for messages
        if chunk.null_count:
            first = int(np.argmax(chunk.is_null().to_numpy(zero_copy_only=False)))
            raise EmbeddingsError(f"image {int(rows_of[first])} is missing")
        index = chunk.indices.to_numpy().astype(np.int64)
        # the images shown (a dictionary may hold more), the first row of each, and each row's
        used, first_row, inverse = np.unique(index, return_index=True, return_inverse=True)
        decoded: np.ndarray | None = None
        for j, (u, r) in enumerate(zip(used.tolist(), first_row.tolist(), strict=True)):
            frame = _decode_image(chunk.dictionary[u].as_py(), int(rows_of[r]))
            if out is None:
                if k * frame.nbytes > MAX_EMBEDDING_IMAGE_BYTES:
                    raise EmbeddingsError(f"{k:,} images of {' x '.join(map(str, frame.shape))} take "
                                          f"{_mib(k * frame.nbytes)}; at most {_mib(MAX_EMBEDDING_IMAGE_BYTES)} are read")
                out = np.empty((k, *frame.shape), np.uint8)
            if frame.shape != out.shape[1:]:
                raise EmbeddingsError("the images have different sizes; give thumbnails of one size")
            if decoded is None:
                decoded = np.empty((len(used), *frame.shape), np.uint8)
            decoded[j] = frame
        if decoded is not None:
            out[at:at + len(chunk)] = decoded[inverse.reshape(-1)]
        at += len(chunk)
    if out is None or at != k:
        raise EmbeddingsError(f"the image column holds no images for the file's {n:,} rows" if out is None else
                              f"the image column holds {at:,} images for the rows read ({k:,})")
    return out


def _decode_image(data: object, row: int) -> np.ndarray:
    """One row's PNG / JPEG bytes -> uint8 [C, H, W] (grey or RGB), its size checked before decoding."""
    from PIL import Image

    from vaescope.limits import MAX_IMAGE_PIXELS

    if not isinstance(data, bytes | bytearray):
        raise EmbeddingsError(f"image {row} is not PNG / JPEG bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS or max(img.size) > MAX_EMBEDDING_IMAGE_SIDE:
                raise EmbeddingsError(f"image {row} is {img.size[0]} x {img.size[1]} px; thumbnails up to "
                                      f"{MAX_EMBEDDING_IMAGE_SIDE} px a side are read")
            frame = np.asarray(img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB"))
    except EmbeddingsError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for broken bytes
        raise EmbeddingsError(f"image {row} cannot be read ({type(exc).__name__})") from None
    return frame[None] if frame.ndim == 2 else frame.transpose(2, 0, 1)


# -- the contract without a decoder --------------------------------------------------------------
class EmbeddingsModel:
    """Precomputed codes: a ``CodeSource`` (it describes itself) and no ``Generator``: it has no encode,
    decode or sample, so every panel that needs them shows that there is no decoder."""

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
