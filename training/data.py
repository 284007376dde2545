"""Dataset registry: a name -> train / test splits of uint8 images plus a ``DatasetInfo``.

Images are kept as uint8 [N, C, H, W] (70k Fashion-MNIST images take 55 MB instead of 220 MB as
float32) and turned into float32 in [0, 1] per batch with ``to_float``. Importing this module reads,
generates and downloads nothing; ``load_dataset`` does the work.

Names (see ``dataset_names``):
- ``digits``: scikit-learn's 8x8 handwritten digits, shipped with scikit-learn, always offline.
- ``shapes``: procedural dSprites-like shapes (Matthey et al. 2017) with ground-truth factors.
- ``waveforms``: procedural sequences with ground-truth factors, drawn as lines (``waveforms.py``).
- ``fashion-mnist`` / ``mnist`` / ``kmnist``: IDX files on disk, else a torchvision download.
- ``folder:PATH``: one subfolder per class, RGB, resized to ``image_size``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaescope.errors import InputError
from vaescope.limits import MAX_IMAGE_PIXELS
from vaescope.training.config import DISPLAYS

DEFAULT_DATA_DIR = "~/.cache/vaescope/data"
# Debian's dataset-fashion-mnist package; the environment variable overrides it (tests use this).
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_DIR_ENV = "VAESCOPE_FASHION_MNIST_DIR"
FOLDER_PREFIX = "folder:"

Index = int | slice | list[int] | torch.Tensor | None


class DatasetError(InputError):
    """A dataset cannot be found, read or made; the message says what is wrong and what to do."""


# -- containers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the explorer need to know about a dataset; kept in checkpoint metadata."""

    name: str  # the name load_dataset was given, e.g. "digits" or "folder:/abs/path"
    image_shape: tuple[int, int, int]  # [C, H, W]
    class_names: tuple[str, ...]
    value_range: tuple[float, float] = (0.0, 1.0)  # of the float images models see
    factor_names: tuple[str, ...] = ()  # ground-truth generative factors (shapes, waveforms)
    display: str = "image"  # "image", or "line" for sequences [1, T, 1] drawn as curves (waveforms)

    def __post_init__(self) -> None:
        # from_dict hands over JSON lists: store tuples so infos stay hashable and compare equal.
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        object.__setattr__(self, "factor_names", tuple(str(f) for f in self.factor_names))
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise DatasetError(f"DatasetInfo.image_shape must be [C, H, W] with positive sizes, "
                               f"got {list(self.image_shape)}")
        if len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]:
            raise DatasetError(f"DatasetInfo.value_range must be [low, high] with low < high, "
                               f"got {list(self.value_range)}")
        if self.display not in DISPLAYS:
            raise DatasetError(f"DatasetInfo.display must be one of {DISPLAYS}, got {self.display!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (lists, not tuples) for checkpoint metadata."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        """Inverse of ``to_dict``; unknown or missing keys raise DatasetError."""
        fields = dataclasses.fields(cls)
        unknown = sorted(set(data) - {f.name for f in fields})
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
        if unknown or missing:
            raise DatasetError(f"dataset block: unknown key(s) {unknown}, missing key(s) {missing}; "
                               f"expected keys {[f.name for f in fields]}")
        return cls(**data)


@dataclass
class Split:
    """One split: uint8 images [N, C, H, W], int64 labels [N], optional float32 factors [N, F]."""

    images: torch.Tensor
    labels: torch.Tensor
    factors: torch.Tensor | None = None  # ground-truth factors, shapes only

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(f"Split.images must be uint8 [N, C, H, W], got {self.images.dtype} "
                               f"{list(self.images.shape)}; convert floats with (x * 255).round().byte()")
        n = self.images.shape[0]
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (n,):
            raise DatasetError(f"Split.labels must be [N] = [{n}], got {list(self.labels.shape)}")
        if self.factors is not None:
            self.factors = self.factors.to(torch.float32)
            if self.factors.ndim != 2 or self.factors.shape[0] != n:
                raise DatasetError(f"Split.factors must be [N, F] with N = {n}, "
                                   f"got {list(self.factors.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def float_images(self, index: Index = None) -> torch.Tensor:
        """float32 in [0, 1]: all images [N, C, H, W], or those ``index`` picks ([K, C, H, W])."""
        return to_float(self.images if index is None else self.images[index])


@dataclass
class Dataset:
    """A named dataset: its info and the train / test splits."""

    info: DatasetInfo
    train: Split
    test: Split


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., C, H, W] -> float32 in [0, 1], same shape and device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32) / 255.0


def _split(images: np.ndarray, labels: np.ndarray, factors: np.ndarray | None = None) -> Split:
    """numpy uint8 [N, C, H, W], int [N], float [N, F] -> Split (copies, so arrays may be views)."""
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)),
                 None if factors is None else torch.from_numpy(factors.astype(np.float32)))


def _shuffled_stratified_split(labels: np.ndarray, test_fraction: float,
                               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), shuffled, with ~test_fraction of each class (>= 1 if it has >= 2).

    With two images or more the test split is never empty: when every class has a single image,
    one of them (a seeded choice) is moved to the test split, so evaluation always has an image.
    """
    rng = np.random.default_rng(seed)
    train, test = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(test_fraction * len(idx))) if len(idx) >= 2 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    if len(test_idx) == 0 and len(train_idx) >= 2:
        moved = rng.integers(len(train_idx))
        test_idx, train_idx = train_idx[moved:moved + 1], np.delete(train_idx, moved)
    return rng.permutation(train_idx), rng.permutation(test_idx)


# -- IDX files (MNIST, Fashion-MNIST, KMNIST) ---------------------------------------------------
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims [N, H, W]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim [N]
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_HINT = "the file is corrupt or not an IDX file: delete it and fetch it again"


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); {_IDX_HINT}") from exc


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-endian array of the header's shape.

    ``magic`` (e.g. ``IDX_IMAGES_MAGIC``) is the expected 4-byte header. A wrong magic number, a
    truncated file or trailing bytes raise DatasetError naming the file.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (header {raw[:4].hex() or 'empty'}); {_IDX_HINT}")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: IDX magic number 0x{found:08x}, expected 0x{magic:08x}; {_IDX_HINT}")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DatasetError(f"{path}: IDX header is truncated; {_IDX_HINT}")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected, got = math.prod(dims) * dtype.itemsize, len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DatasetError(f"{path}: IDX file is {what} ({got} data bytes for shape {list(dims)}, "
                           f"expected {expected}); {_IDX_HINT}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def fashion_mnist_system_dir() -> Path:
    """Where Debian's dataset-fashion-mnist puts the files; ``$VAESCOPE_FASHION_MNIST_DIR`` overrides."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or FASHION_MNIST_SYSTEM_DIR)


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset's four files may be, and how torchvision downloads them."""

    name: str
    class_names: tuple[str, ...]
    torchvision_class: str  # also torchvision's folder: data_dir/<class>/raw
    system_dir: Callable[[], Path] | None = None  # searched before data_dir

    def search_dirs(self, data_dir: Path) -> list[Path]:
        """Folders to look in, in order: system, data_dir/<name>, torchvision's raw folder."""
        system = [self.system_dir()] if self.system_dir else []
        return [*system, data_dir / self.name, data_dir / self.torchvision_class / "raw"]


def _find_idx_files(dirs: list[Path]) -> dict[str, Path] | None:
    """The first folder holding all four files (each plain or .gz): stem -> path, else None."""
    for folder in dirs:
        found = {stem: path for stem in (s for pair in _IDX_STEMS.values() for s in pair)
                 for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()}
        if len(found) == 4:
            return found
    return None


def _offline_message(source: IdxSource, data_dir: Path, exc: Exception) -> str:
    stems = ", ".join(s for pair in _IDX_STEMS.values() for s in pair)
    return (f"{source.name}: no IDX files on disk and the download through torchvision failed "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); this machine looks offline. Put the four IDX files "
            f"({stems}; gzipped or not) in {data_dir / source.name} and run again, or use a dataset "
            f"that needs no download: 'digits' (ships with scikit-learn), 'shapes' (generated), or "
            f"'fashion-mnist' after `apt install dataset-fashion-mnist` ({FASHION_MNIST_SYSTEM_DIR}).")


def _download_idx(source: IdxSource, data_dir: Path) -> dict[str, Path]:
    """Fetch the files with torchvision into data_dir/<TorchvisionClass>/raw; stem -> path."""
    from torchvision import datasets  # imported here: slow to import and only needed to download

    tv_class = getattr(datasets, source.torchvision_class)
    try:
        for train in (True, False):
            tv_class(root=str(data_dir), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise DatasetError(_offline_message(source, data_dir, exc)) from exc
    files = _find_idx_files(source.search_dirs(data_dir))
    if files is None:
        raise DatasetError(f"{source.name}: torchvision reported a download but the IDX files are not "
                           f"in {data_dir / source.torchvision_class / 'raw'}; delete that folder and retry")
    return files


def _read_idx_split(files: dict[str, Path], split: str, num_classes: int) -> Split:
    """Images [N, 1, H, W] and labels [N] of one split, checked against each other."""
    image_path, label_path = (files[s] for s in _IDX_STEMS[split])
    images, labels = read_idx(image_path, IDX_IMAGES_MAGIC), read_idx(label_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{image_path} holds {len(images)} images but {label_path} holds "
                           f"{len(labels)} labels; the files come from different datasets or versions")
    if len(labels) and labels.max() >= num_classes:
        raise DatasetError(f"{label_path}: label {labels.max()} is out of range for {num_classes} classes")
    return _split(images[:, None], labels)


def load_idx_dataset(source: IdxSource, data_dir: Path, image_size: int = 0, seed: int = 0) -> Dataset:
    """Official train / test split from IDX files; ``image_size`` and ``seed`` are not used."""
    files = _find_idx_files(source.search_dirs(data_dir)) or _download_idx(source, data_dir)
    train = _read_idx_split(files, "train", len(source.class_names))
    test = _read_idx_split(files, "test", len(source.class_names))
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DatasetError(f"{source.name}: train images are {list(train.images.shape[1:])} but test "
                           f"images are {list(test.images.shape[1:])}; the files do not belong together")
    _, c, h, w = train.images.shape
    return Dataset(DatasetInfo(source.name, (c, h, w), source.class_names), train, test)


DIGIT_NAMES = tuple(str(d) for d in range(10))
IDX_SOURCES = (
    IdxSource("fashion-mnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                "Shirt", "Sneaker", "Bag", "Ankle boot"),
              "FashionMNIST", fashion_mnist_system_dir),
    IdxSource("mnist", DIGIT_NAMES, "MNIST"),
    IdxSource("kmnist", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "KMNIST"),
)


# -- scikit-learn digits -----------------------------------------------------------------------
DIGITS_TEST_SIZE = 300  # of 1,797: 30 per class, enough for per-class latent statistics


def load_digits(data_dir: Path | None = None, image_size: int = 0, seed: int = 0) -> Dataset:
    """sklearn's 8x8 digits, 0..16 scaled to uint8; seeded stratified 1,497 / 300 split [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits as sk_load_digits  # imported here: slow import
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.rint(bunch.images / 16.0 * 255.0).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE,
                                   stratify=labels, random_state=seed)
    info = DatasetInfo("digits", (1, 8, 8), DIGIT_NAMES)
    return Dataset(info, _split(images[train], labels[train]), _split(images[test], labels[test]))


# -- procedural shapes -------------------------------------------------------------------------
SHAPE_NAMES = ("square", "ellipse", "triangle")
SHAPE_FACTORS = ("shape", "scale", "rotation", "pos_x", "pos_y")
SHAPES_SIZE = 32
SHAPES_TRAIN, SHAPES_TEST = 12_000, 2_000
SCALE_RANGE = (0.5, 1.0)
# A quarter turn: a square looks the same after one, so any wider range would give one image
# several rotation values and make the factor unrecoverable (dSprites has this ambiguity).
ROTATION_RANGE = (0.0, math.pi / 2)
_RADIUS = 0.25  # shape radius at scale 1, as a fraction of the image size
_SQUARE_HALF, _ELLIPSE_MINOR = 0.8, 0.6  # in units of the radius; ellipse major semi-axis = 1
_EXTENT = _SQUARE_HALF * math.sqrt(2)  # farthest any shape reaches from its centre (square corner)
_TRIANGLE_NORMALS = np.array([(math.cos(a), math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6,
                                                                   11 * math.pi / 6)], np.float32)
_RENDER_CHUNK = 2048  # images per vectorised step: keeps temporaries near 10 MB


def sample_shape_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform factors [n, 5]: shape index, scale, rotation (rad), pos_x, pos_y in [0, 1]."""
    return np.stack([rng.integers(0, len(SHAPE_NAMES), n).astype(np.float64),
                     rng.uniform(*SCALE_RANGE, n), rng.uniform(*ROTATION_RANGE, n),
                     rng.uniform(0, 1, n), rng.uniform(0, 1, n)], axis=1)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-tests in shape coordinates (radius 1, unrotated): bool [n, H, W]."""
    square = np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF
    ellipse = u**2 + (v / _ELLIPSE_MINOR) ** 2 <= 1.0
    # Equilateral triangle with circumradius 1: inside every edge, each at the inradius 1/2.
    triangle = np.all(u[..., None] * _TRIANGLE_NORMALS[:, 0] + v[..., None] * _TRIANGLE_NORMALS[:, 1]
                      <= 0.5, axis=-1)
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, triangle))


def render_shapes(factors: np.ndarray, size: int = SHAPES_SIZE) -> np.ndarray:
    """Factors [N, 5] -> binary uint8 masks [N, size, size] (0 or 1), evaluated at pixel centres.

    pos_x moves the centre right (columns), pos_y down (rows), over a range that keeps every
    shape at every scale and rotation inside the frame.
    """
    out = np.empty((len(factors), size, size), np.uint8)
    grid = np.arange(size, dtype=np.float32)
    r_max = _RADIUS * size * SCALE_RANGE[1]
    low, high = _EXTENT * r_max, size - 1 - _EXTENT * r_max
    for start in range(0, len(factors), _RENDER_CHUNK):
        f = factors[start:start + _RENDER_CHUNK].astype(np.float32)[:, :, None, None]
        shape, scale, rot, pos_x, pos_y = (f[:, i] for i in range(5))  # each [n, 1, 1]
        radius = _RADIUS * size * scale
        dx = grid[None, None, :] - (low + pos_x * (high - low))  # [n, 1, W]
        dy = grid[None, :, None] - (low + pos_y * (high - low))  # [n, H, 1]
        cos, sin = np.cos(rot), np.sin(rot)
        u, v = (dx * cos + dy * sin) / radius, (dy * cos - dx * sin) / radius  # rotate by -rot
        out[start:start + len(f)] = _inside(shape, u, v)
    return out


def make_shapes(n: int, seed: int | np.random.Generator = 0, size: int = SHAPES_SIZE) -> Split:
    """n seeded shapes: images uint8 [n, 1, size, size] in {0, 255}, labels = shape, factors [n, 5]."""
    factors = sample_shape_factors(n, np.random.default_rng(seed))
    images = render_shapes(factors, size)[:, None] * np.uint8(255)
    return _split(images, factors[:, 0].astype(np.int64), factors)


def load_shapes(data_dir: Path | None = None, image_size: int = 0, seed: int = 0) -> Dataset:
    """12,000 / 2,000 seeded shapes at 32x32 (``image_size`` is not used: the factors need no more)."""
    rng = np.random.default_rng(seed)
    train, test = make_shapes(SHAPES_TRAIN, rng), make_shapes(SHAPES_TEST, rng)
    info = DatasetInfo("shapes", (1, SHAPES_SIZE, SHAPES_SIZE), SHAPE_NAMES, factor_names=SHAPE_FACTORS)
    return Dataset(info, train, test)


# -- image folders -----------------------------------------------------------------------------
FOLDER_TEST_FRACTION = 0.1


def _to_rgb(img: Any) -> Any:
    """PIL image of any mode -> RGB; transparent parts are composited onto white."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _load_image(path: Path, size: int) -> np.ndarray | None:
    """One image as uint8 [size, size, 3], centre-cropped to a square then resized; None if the
    file is not an image Pillow can decode, or declares more than ``MAX_IMAGE_PIXELS`` pixels."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow only warns below 2x its limit
            with Image.open(path) as img:
                width, height = img.size  # from the header: nothing decoded yet
                if min(width, height) < 1 or width * height > MAX_IMAGE_PIXELS:
                    return None
                square = ImageOps.fit(_to_rgb(ImageOps.exif_transpose(img)), (size, size),
                                      Image.Resampling.LANCZOS)
                array = np.asarray(square, dtype=np.uint8)
    except Exception:  # noqa: BLE001 - a decoder fed a file from outside may raise anything; the caller counts the file as skipped
        return None
    return array if array.shape == (size, size, 3) else None


def _folder_root(path: str) -> tuple[Path, list[Path]]:
    """The checked root folder and its class subfolders (sorted, hidden ones skipped)."""
    usage = "give folder:PATH, a directory with one subfolder of images per class"
    if not path:
        raise DatasetError(f"folder dataset without a path; {usage}")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"folder dataset {root} does not exist; {usage}")
    if not root.is_dir():
        raise DatasetError(f"folder dataset {root} is not a directory; {usage}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"folder dataset {root} has no class subfolders; {usage} "
                           f"(for unlabelled images use a single subfolder, e.g. {root / 'all'})")
    return root, class_dirs


def _image_files(folder: Path) -> list[Path]:
    """Files under ``folder`` with an image suffix Pillow knows, hidden ones left out, sorted."""
    from PIL import Image

    suffixes = Image.registered_extensions()
    found = []
    for p in folder.rglob("*"):
        if p.suffix.lower() not in suffixes or p.name.startswith("."):
            continue
        try:
            if p.is_file():  # follows a symlink; a FIFO or a device is not a file
                found.append(p)
        except OSError:  # unreadable: counted as skipped by the caller
            found.append(p)
    return sorted(found)


def _read_class_dir(folder: Path, size: int) -> tuple[list[np.ndarray], list[Path]]:
    """Images [size, size, 3] of one class folder and the image files that could not be read."""
    files = _image_files(folder)
    images = [_load_image(p, size) for p in files]
    return [im for im in images if im is not None], [p for p, im in zip(files, images, strict=True) if im is None]


def load_folder(path: str, image_size: int = 64, seed: int = 0, max_bytes: int | None = None) -> Dataset:
    """Class-per-subfolder images as RGB uint8 [N, 3, S, S]; seeded ~10% per-class test split.

    A single subfolder holds unlabelled images (one class). Files that Pillow cannot decode, or
    that declare more than ``MAX_IMAGE_PIXELS`` pixels, are skipped and counted in a warning. At
    least two readable images are needed: one to train on and one to test on. ``max_bytes``: the
    most the decoded images may take (files x 3 x S x S bytes, counted before any is decoded);
    DatasetError above it.
    """
    if image_size < 4:
        raise DatasetError(f"image_size must be >= 4 pixels, got {image_size}")
    root, class_dirs = _folder_root(path)
    if max_bytes is not None:
        count = sum(len(_image_files(folder)) for folder in class_dirs)
        need = count * 3 * image_size * image_size
        if need > max_bytes:
            raise DatasetError(f"folder dataset {root} holds {count:,} image files: at {image_size} px they take "
                               f"{need / 2**20:,.1f} MiB, more than the {max_bytes / 2**20:,.1f} MiB read here")
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    skipped: list[Path] = []
    empty = []
    for folder in class_dirs:
        found, bad = _read_class_dir(folder, image_size)
        skipped += bad
        if not found:
            empty.append(folder.name)
            continue
        labels += [len(names)] * len(found)
        names.append(folder.name)
        images += found
    if len(images) < 2:
        found = "no readable images" if not images else "only 1 readable image"
        raise DatasetError(f"folder dataset {root}: {found} in {[d.name for d in class_dirs][:10]} "
                           f"({len(skipped)} unreadable); at least 2 are needed, one to train on and one to test "
                           "on; put PNG / JPEG files in one subfolder per class")
    if skipped or empty:
        parts = [f"{len(skipped)} unreadable image file(s) (e.g. {', '.join(p.name for p in skipped[:3])})"] if skipped else []
        parts += [f"{len(empty)} class folder(s) with no readable images {empty[:10]}"] if empty else []
        warnings.warn(f"folder dataset {root}: skipped {' and '.join(parts)}", stacklevel=3)
    array, label_array = np.stack(images).transpose(0, 3, 1, 2), np.array(labels, np.int64)
    train, test = _shuffled_stratified_split(label_array, FOLDER_TEST_FRACTION, seed)
    info = DatasetInfo(f"{FOLDER_PREFIX}{root}", (3, image_size, image_size), tuple(names))
    return Dataset(info, _split(array[train], label_array[train]), _split(array[test], label_array[test]))


# -- binarised data (--binarize) ------------------------------------------------------------------
# The test split of a binarised run is binarised once with this seed, whatever the run's seed, so
# that every run's NLL is measured on the very same binary test images.
BINARIZE_TEST_SEED = 0


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli draws with the pixels' intensities as probabilities: uint8 images in {0, 255} of
    uint8 ``images`` [N, C, H, W] (a fixed ``generator`` gives a fixed draw), or float images in
    {0, 1} of float ``images`` in [0, 1] (on their device, from the global RNG when no generator)."""
    if images.dtype == torch.uint8:
        probs = images.to(torch.float32) / 255.0
        return (torch.bernoulli(probs, generator=generator) * 255).to(torch.uint8)
    return torch.bernoulli(images, generator=generator)


def binarized(data: Dataset, mode: str, seed: int) -> Dataset:
    """``data`` as a ``--binarize mode`` run sees it: the test split binarised once with
    ``BINARIZE_TEST_SEED``; with "static" the training split too, once, with the run's ``seed``
    ("dynamic" binarises each training batch as it is drawn: ``binarize`` on floats). "none":
    ``data`` itself."""
    if mode == "none":
        return data
    test = dataclasses.replace(data.test, images=binarize(data.test.images,
                                                          torch.Generator().manual_seed(BINARIZE_TEST_SEED)))
    train = data.train
    if mode == "static":
        train = dataclasses.replace(train, images=binarize(train.images, torch.Generator().manual_seed(seed)))
    return Dataset(data.info, train, test)


# -- registry ----------------------------------------------------------------------------------
Loader = Callable[[Path, int, int], Dataset]  # (data_dir, image_size, seed) -> Dataset


def load_waveforms(data_dir: Path | None = None, image_size: int = 0, seed: int = 0) -> Dataset:
    """The procedural waveforms [N, 1, 64, 1] (``waveforms.load_waveforms``; imported when called,
    because waveforms.py builds on this module's containers)."""
    from vaescope.training.waveforms import load_waveforms as load

    return load(data_dir, image_size, seed)


DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "shapes": load_shapes,
    "waveforms": load_waveforms,
    **{source.name: partial(load_idx_dataset, source) for source in IDX_SOURCES},
}


def dataset_names() -> list[str]:
    """Registered names plus the ``folder:PATH`` pattern, for CLI help and error messages."""
    return [*DATASETS, f"{FOLDER_PREFIX}PATH"]


def load_dataset(name: str, data_dir: str | Path | None = None, image_size: int = 64,
                 seed: int = 0, max_bytes: int | None = None) -> Dataset:
    """Load a dataset by name; images are uint8 [N, C, H, W], ``to_float`` maps them to [0, 1].

    ``data_dir`` (default ``~/.cache/vaescope/data``) is where IDX files are looked for and
    downloaded to. ``image_size`` resizes ``folder:`` datasets only; ``seed`` fixes the digits
    and folder splits and the generated shapes. ``max_bytes`` bounds what a ``folder:`` dataset
    may decode (the explorer passes MAX_EVAL_DATA_BYTES: a file's dataset block chooses the folder
    and the size).
    """
    if name.startswith(FOLDER_PREFIX):
        return load_folder(name[len(FOLDER_PREFIX):], image_size=image_size, seed=seed, max_bytes=max_bytes)
    loader = DATASETS.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return loader(Path(data_dir or DEFAULT_DATA_DIR).expanduser(), image_size, seed)
