"""The images a model is explored on: its dataset's test split, or images handed over with it.

``EvalData`` holds them as uint8 [N, C, H, W] with labels [N] (-1 where unknown) and says in words
where they came from, for the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaescope.explorer.core.latents import to_uint8


@dataclass
class EvalData:
    """Evaluation images [N, C, H, W] uint8, labels [N] int64 (-1 unknown), and their origin in words."""

    images: np.ndarray
    labels: np.ndarray
    origin: str

    def __post_init__(self) -> None:
        self.images = to_uint8(self.images)
        self.labels = np.asarray(self.labels, np.int64)
        if self.images.ndim != 4 or self.labels.shape != (len(self.images),):
            raise ValueError(f"evaluation images must be [N, C, H, W] with labels [N], got "
                             f"{list(self.images.shape)} and {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, max_points: int, seed: int = 0) -> EvalData:
        """A fixed, seeded subset of at most ``max_points`` images (all of them when fewer)."""
        if len(self) <= max_points:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), max_points, replace=False))
        return EvalData(self.images[keep], self.labels[keep], f"{self.origin} (a seeded subset of {max_points})")


def load_eval_images(dataset: dict[str, Any], data_dir: str | Path | None = None, seed: int = 0) -> EvalData | str:
    """The test split of a checkpoint's dataset block, or a message saying why it cannot be had
    (package absent, offline, a folder that moved), so the caller can carry on without a map."""
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
    images = data.test.images.numpy()
    if shape and tuple(images.shape[1:]) != shape:
        return (f"dataset {name!r} has images of shape {list(images.shape[1:])} but the model was "
                f"trained on {list(shape)}")
    return EvalData(images, data.test.labels.numpy(), f"the {len(images):,} test images of {name}")
