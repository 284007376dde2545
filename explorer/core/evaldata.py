"""The images a model is explored on: its dataset's test split, or images handed over with it.

``EvalData`` holds them as uint8 [N, C, H, W] with labels [N] (-1 where unknown) and says in words
where they came from, for the page.

The trust boundary: a checkpoint names its dataset, and that name comes from outside (a listed
file, an upload). It is only a hint, resolved among the datasets this server knows
(``resolve_eval_data``): the bundled or generated ones (digits, shapes), IDX datasets already on
disk in the operator's data folder or Debian's package, and image folders inside the folder the
operator named with ``--data-dir``. A file never makes the server read another folder, list one,
create one or start a download, and the message for a dataset that cannot be had is the same
whether or not a path exists.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core.latents import to_uint8
from vaescope.limits import MAX_EVAL_DATA_BYTES


class NoEvalData(InputError):
    """Why a model has no evaluation images on this server (the map then says so instead)."""


MAX_NAME_CHARS = 512  # a dataset name longer than this is not a name
DATASET_CACHE = 4  # evaluation datasets kept in memory, least recently used dropped


@dataclass
class EvalData:
    """Evaluation images [N, C, H, W] uint8, labels [N] int64 (-1 unknown), and their origin in words;
    optionally the ground-truth factors [N, F] that generated them, named by ``factor_names``."""

    images: np.ndarray
    labels: np.ndarray
    origin: str
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.images = to_uint8(self.images)
        self.labels = np.asarray(self.labels, np.int64)
        if self.images.ndim != 4 or self.labels.shape != (len(self.images),):
            raise ValueError(f"evaluation images must be [N, C, H, W] with labels [N], got "
                             f"{list(self.images.shape)} and {list(self.labels.shape)}")
        if self.factors is not None:
            self.factors = np.asarray(self.factors, np.float32)
            self.factor_names = tuple(str(n) for n in self.factor_names)
            if self.factors.shape != (len(self.images), len(self.factor_names)):
                raise ValueError(f"factors must be [N, F] = [{len(self.images)}, {len(self.factor_names)}] "
                                 f"(one name per factor), got {list(self.factors.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, max_points: int, seed: int = 0) -> EvalData:
        """A fixed, seeded subset of at most ``max_points`` images (all of them when fewer)."""
        if len(self) <= max_points:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), max_points, replace=False))
        return EvalData(self.images[keep], self.labels[keep], f"{self.origin} (a seeded subset (seed {seed}) of {max_points:,} of them)",
                        None if self.factors is None else self.factors[keep], self.factor_names)


def _shape(block: dict[str, Any]) -> tuple[int, ...] | None:
    shape = block.get("image_shape")
    if not isinstance(shape, list | tuple) or len(shape) != 3:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in shape):
        return None
    return tuple(shape)


def _seed(train_config: Any) -> int:
    seed = train_config.get("seed", 0) if isinstance(train_config, dict) else 0
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31 else 0


def resolve_eval_data(dataset: Any, train_config: Any, data_dir: str | Path | None,
                      folders_allowed: bool) -> EvalData:
    """The test split of the dataset a checkpoint names, among the datasets this server knows;
    NoEvalData saying why there are none otherwise (the caller carries on without a map).

    ``data_dir`` is the operator's data folder (None: the default). ``folders_allowed``: image
    folders are read only when the operator named ``data_dir``, and only inside it.
    """
    from vaescope.training import data as datasets  # imported here: heavy, only on demand

    block = dataset if isinstance(dataset, dict) else {}
    name = block.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise NoEvalData("the model names no dataset")
    shape, seed = _shape(block), _seed(train_config)
    root = Path(data_dir or datasets.DEFAULT_DATA_DIR).expanduser()
    if name.startswith(datasets.FOLDER_PREFIX):
        inside = _folder_inside(name[len(datasets.FOLDER_PREFIX):], root) if folders_allowed and data_dir else None
        if inside is None:
            raise NoEvalData(f"its dataset is an image folder ({name[:80]!r}), and this server reads image folders only "
                    "inside the folder given with --data-dir")
        return _load(f"{datasets.FOLDER_PREFIX}{inside}", root, shape, seed)
    source = next((s for s in datasets.IDX_SOURCES if s.name == name), None)
    if source is not None:
        if datasets._find_idx_files(source.search_dirs(root)) is None:  # never a download for a model's dataset
            raise NoEvalData(f"dataset {name!r} is not on this server (no download is started for a model's dataset; "
                    f"the operator can put its files in the data folder)")
        return _load(name, root, shape, seed)
    if name in datasets.DATASETS:
        return _load(name, root, shape, seed)
    raise NoEvalData(f"dataset {name[:80]!r} is not one this server knows")


def _folder_inside(path: str, root: Path) -> Path | None:
    """The folder ``path`` if it lies inside ``root`` (symlinks followed), else None."""
    try:
        candidate = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
        return candidate if candidate.is_relative_to(root.resolve()) and candidate.is_dir() else None
    except (OSError, ValueError, RuntimeError):
        return None


_CACHE: OrderedDict[tuple, EvalData | NoEvalData] = OrderedDict()  # a refusal is kept too
_CACHE_LOCK = threading.Lock()


def _load(name: str, root: Path, shape: tuple[int, ...] | None, seed: int) -> EvalData:
    """Load a known dataset's test split (an LRU of DATASET_CACHE datasets, refusals included)."""
    key = (name, str(root), shape, seed)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
    if found is None:
        try:
            found = load_eval_images({"name": name, "image_shape": list(shape) if shape else None}, root, seed)
        except NoEvalData as refused:
            found = refused
        with _CACHE_LOCK:
            _CACHE[key] = found
            while len(_CACHE) > DATASET_CACHE:
                _CACHE.popitem(last=False)
    if isinstance(found, NoEvalData):
        raise NoEvalData(str(found))
    return found


def load_eval_images(dataset: dict[str, Any], data_dir: str | Path | None = None, seed: int = 0) -> EvalData:
    """The test split of a (trusted) dataset block; NoEvalData saying why it cannot be had."""
    from vaescope.training.data import (  # imported here: heavy, only on demand
        DatasetError,
        load_dataset,
    )

    name = dataset.get("name")
    shape = tuple(dataset.get("image_shape") or ())
    if not name:
        raise NoEvalData("the checkpoint names no dataset")
    try:
        data = load_dataset(name, data_dir=data_dir, image_size=int(shape[-1]) if shape else 64, seed=seed,
                            max_bytes=MAX_EVAL_DATA_BYTES)
    except (DatasetError, OSError, ValueError, ImportError) as exc:
        raise NoEvalData(f"dataset {str(name)[:80]!r} could not be loaded: {exc}") from None
    images = data.test.images.numpy()
    if shape and tuple(images.shape[1:]) != shape:
        raise NoEvalData(f"dataset {name!r} has images of shape {list(images.shape[1:])} but the model was "
                f"trained on {list(shape)}")
    shown = name if not name.startswith("folder:") else "its image folder"
    factors = data.test.factors
    return EvalData(images, data.test.labels.numpy(), f"the {len(images):,} test images of {shown}",
                    None if factors is None else factors.numpy(), data.info.factor_names if factors is not None else ())
