"""safetensors files: read with every size checked before anything is allocated, written atomically.

A safetensors file is an 8-byte little-endian header length, a JSON header (a table of tensors,
each with a dtype, a shape and a byte range, plus a string-to-string ``__metadata__`` map), then
the tensor bytes. ``read_header`` parses that header itself, with a size cap and a depth cap, and
checks that the byte ranges tile the rest of the file exactly; ``check_tensors`` compares the
declared dtypes and shapes with what the caller needs. Only then does ``read_tensors`` read each
tensor at its checked byte range, so no declared size can make a reader allocate more than the
file holds and the caller allows, and no second parser can read the header differently.

``write_atomically`` writes to a temporary file in the same folder, fsyncs it and renames it into
place, so a crash or a full disk never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import save as encode_safetensors

from vaescope.errors import InputError
from vaescope.limits import MAX_HEADER_BYTES, MAX_TENSOR_RANK, MAX_TENSORS
from vaescope.training.checks import (
    ConfigError,
    Range,
    as_dict,
    as_int,
    as_list,
    as_str,
    parse_json,
    shown,
)

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
               "F32": 4, "I64": 8, "U64": 8, "F64": 8}
TORCH_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.uint16: "U16",
                torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32",
                torch.float32: "F32", torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64"}
TORCH_BY_NAME = {name: dtype for dtype, name in TORCH_DTYPES.items()}
# What a float tensor may be stored as: the shipped checkpoints are float16 copies.
STORED_FLOATS = ("F32", "F16", "BF16")
HEADER_LENGTH_BYTES = 8


class TensorFileError(InputError):
    """A safetensors file is malformed or does not hold what is needed; the caller names the file."""


class WriteError(OSError):
    """A file could not be written (a full disk, no permission); the earlier file is unchanged."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            reason = "no space left on the disk"
        super().__init__(f"cannot write {path}: {reason}; the file that was there is kept as it was")
        self.path = path


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it: dtype name, shape, and byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: the tensor table, the metadata map, and the JSON's length."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    length: int


@dataclass(frozen=True)
class TensorSpec:
    """What a tensor must be: its exact shape and the dtypes it may be stored as."""

    shape: tuple[int, ...]
    dtypes: tuple[str, ...]

    @classmethod
    def like(cls, tensor: torch.Tensor, exact: bool = False) -> TensorSpec:
        """The spec of ``tensor`` (a meta tensor is enough); a float one may be stored in any of
        ``STORED_FLOATS`` unless ``exact``."""
        name = TORCH_DTYPES.get(tensor.dtype, str(tensor.dtype))
        floats = tensor.dtype.is_floating_point and not exact
        return cls(tuple(tensor.shape), STORED_FLOATS if floats else (name,))


# -- reading ------------------------------------------------------------------------------------
def read_header(path: Path) -> Header:
    """Parse and check the header of the safetensors file at ``path`` without reading any tensor.

    Raises TensorFileError for a file too short to hold a header, a header over
    ``MAX_HEADER_BYTES``, malformed JSON, or a tensor table whose byte ranges do not tile the data
    exactly (a truncated file, overlapping tensors, a declared size the file does not hold).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(HEADER_LENGTH_BYTES)
        if len(prefix) < HEADER_LENGTH_BYTES:
            raise TensorFileError(f"the file is {size} bytes, too short for a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES:
            raise TensorFileError(f"the header declares {length:,} bytes; the limit is {MAX_HEADER_BYTES:,}")
        if HEADER_LENGTH_BYTES + length > size:
            raise TensorFileError(f"the header declares {length:,} bytes but the file has only {size:,}")
        raw = fh.read(length)
    try:
        table = as_dict(parse_json(raw, "the header"), "the header", MAX_TENSORS + 1)
        metadata = as_dict(table.pop("__metadata__", {}), "__metadata__", 64)
        for key, value in metadata.items():
            as_str(value, f"__metadata__.{key}", MAX_HEADER_BYTES)
        tensors = {as_str(name, "a tensor name", 300): _entry(name, value) for name, value in table.items()}
    except ConfigError as exc:
        raise TensorFileError(str(exc)) from None
    _check_layout(tensors, size - HEADER_LENGTH_BYTES - length)
    return Header(tensors, metadata, length)


def _entry(name: str, value: object) -> TensorEntry:
    where = f"tensor {shown(name, 60)}"
    entry = as_dict(value, where, 3)
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ConfigError(f"{where} has dtype {shown(dtype)}; known dtypes are {sorted(DTYPE_BYTES)}")
    shape = tuple(as_int(v, f"{where} shape", Range(0, 2**62))
                  for v in as_list(entry.get("shape"), f"{where} shape", MAX_TENSOR_RANK))
    offsets = as_list(entry.get("data_offsets"), f"{where} data_offsets", 2)
    if len(offsets) != 2:
        raise ConfigError(f"{where} data_offsets must be [begin, end], got {shown(offsets)}")
    start, end = (as_int(v, f"{where} data_offsets", Range(0, 2**62)) for v in offsets)
    return TensorEntry(dtype, shape, start, end)


def _check_layout(tensors: dict[str, TensorEntry], data_bytes: int) -> None:
    """The byte ranges, in order, must tile [0, data_bytes) exactly, each as long as its dtype and
    shape say: so nothing can be declared that the file does not hold."""
    position = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if entry.end - entry.start != entry.nbytes:
            raise TensorFileError(f"tensor {shown(name)} declares shape {list(entry.shape)} {entry.dtype} "
                                  f"({entry.nbytes:,} bytes) but a byte range of {entry.end - entry.start:,}")
        if entry.start != position:
            raise TensorFileError(f"tensor {shown(name)} starts at byte {entry.start:,} of the data, expected "
                                  f"{position:,} (overlapping or misplaced tensors)")
        position = entry.end
    if position != data_bytes:
        what = "truncated" if position > data_bytes else "has trailing bytes"
        raise TensorFileError(f"the header declares {position:,} bytes of tensors but the file holds "
                              f"{data_bytes:,} ({what})")


def check_tensors(header: Header, expected: dict[str, TensorSpec], what: str) -> None:
    """The header's tensors must be exactly ``expected``: the same names, each with its shape and
    one of its dtypes. ``what`` names the thing that needs them ("the vae config")."""
    missing, unexpected = sorted(set(expected) - set(header.tensors)), sorted(set(header.tensors) - set(expected))
    if missing or unexpected:
        raise TensorFileError(f"tensors do not match {what}: missing {missing[:5]}, "
                              f"unexpected {[shown(k, 60) for k in unexpected[:5]]}")
    for name, spec in expected.items():
        entry = header.tensors[name]
        if entry.shape != spec.shape:
            raise TensorFileError(f"tensor '{name}' has shape {list(entry.shape)} but {what} needs {list(spec.shape)}")
        if entry.dtype not in spec.dtypes:
            raise TensorFileError(f"tensor '{name}' is {entry.dtype} but {what} needs one of {list(spec.dtypes)}")


def read_tensors(path: Path, header: Header, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors, on the CPU, read at the byte ranges of ``header`` (which
    ``read_header`` and ``check_tensors`` have checked): each allocation is the size the checked
    header declares, whatever the file holds by now. A file whose size changed since its header
    was read is refused."""
    expected_size = HEADER_LENGTH_BYTES + header.length + sum(e.nbytes for e in header.tensors.values())
    tensors = {}
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size != expected_size:
            raise TensorFileError(f"the file changed while it was read ({size:,} bytes, {expected_size:,} expected)")
        data_start = HEADER_LENGTH_BYTES + header.length
        for name in names:
            entry = header.tensors[name]
            tensors[name] = _read_one(fh, data_start + entry.start, entry, name)
    return tensors


def _read_one(fh: BinaryIO, offset: int, entry: TensorEntry, name: str) -> torch.Tensor:
    dtype = TORCH_BY_NAME[entry.dtype]
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=dtype)
    buffer = bytearray(entry.nbytes)
    fh.seek(offset)
    if fh.readinto(buffer) != entry.nbytes:
        raise TensorFileError(f"tensor {shown(name)} is cut short (truncated?)")
    tensor = torch.frombuffer(buffer, dtype=dtype).reshape(entry.shape)
    return tensor if sys.byteorder == "little" else tensor.byteswap()  # safetensors stores little-endian


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


# -- writing ------------------------------------------------------------------------------------
def encode(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (CPU, contiguous) and ``metadata``."""
    return encode_safetensors(tensors, metadata=metadata)


def _write_all(fh: object, data: bytes) -> None:
    """Write ``data`` to the open file ``fh`` (the one place bytes reach the disk; tests make it fail)."""
    fh.write(data)  # type: ignore[attr-defined]


def write_atomically(path: Path, data: bytes, check: Callable[[Path], None] | None = None) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync it, rename it
    into place and fsync the folder. Returns the sha256 hex digest of ``data``.

    ``check(temporary_path)``, when given, reads the written file back before the rename; whatever
    it raises leaves ``path`` as it was. On any failure (a full disk, no permission) the temporary
    file is removed, whatever was at ``path`` is left as it was, and WriteError says so in one line.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every checkpoint private to its writer
        with os.fdopen(fd, "wb") as fh:
            _write_all(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    """The process's umask: from /proc on Linux (no change to the process), else by setting it and
    putting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    # Some filesystems refuse fsync on a folder; the rename itself has happened either way.
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Temporary files ``write_atomically`` left for ``folder / name`` when its process was killed."""
    return sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
