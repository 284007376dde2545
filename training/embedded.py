"""What a checkpoint may carry besides the model: an embedded evaluation sample and a training record.

Both are optional tensors beside the state dict, checked like it (shape, dtype and size against
``vaescope.limits`` from the header alone, before anything is read; values once read):

=================  ========  ============  =====================================================
tensor             dtype     shape         what
=================  ========  ============  =====================================================
``sample.images``  uint8     [N, C, H, W]  test images, the model's image shape
``sample.labels``  int64     [N]           their classes, -1 where unknown
``sample.factors`` float32   [N, F]        ground-truth factors (optional; F =
                                           ``len(dataset.factor_names)``, shapes and waveforms)
``record.codes``   float16   [E, N, D]     posterior means of N fixed test images at E moments
                                           of training
``record.labels``  int64     [N]           their classes, -1 where unknown
``record.epochs``  float32   [E]           the fractional epoch of each frame (0 = initialisation)
``record.indices`` int64     [N]           the images' indices in the test split
=================  ========  ============  =====================================================

The sample lets the explorer draw a map when the dataset is not on the machine; the record lets it
show the latent space forming. ``sample.images`` and ``sample.labels`` come together (and
``sample.factors`` only with them); the four ``record.*`` tensors come together; N agrees across
each group, E across the record. This module knows the format only: ``training/checkpoint.py``
reads and writes the files, ``training/record.py`` makes the record during training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaescope.limits import (
    MAX_RECORD_BYTES,
    MAX_RECORD_FRAMES,
    MAX_RECORD_POINTS,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLE_FACTORS,
    MAX_SAMPLE_IMAGES,
    MAX_SAMPLE_SIDE,
)
from vaescope.training.checks import ConfigError, as_array
from vaescope.training.tensorfile import TensorEntry, TensorSpec

SAMPLE_IMAGES, SAMPLE_LABELS, SAMPLE_FACTORS = "sample.images", "sample.labels", "sample.factors"
RECORD_CODES, RECORD_LABELS, RECORD_EPOCHS, RECORD_INDICES = (
    "record.codes", "record.labels", "record.epochs", "record.indices")
SAMPLE_NAMES = (SAMPLE_IMAGES, SAMPLE_LABELS, SAMPLE_FACTORS)
RECORD_NAMES = (RECORD_CODES, RECORD_LABELS, RECORD_EPOCHS, RECORD_INDICES)
PREFIXES = ("sample.", "record.")
FLOAT16_MAX = 65504.0  # codes beyond this would be stored as infinities

# latent-train's default sample (--embed-sample): the whole test split of small images, fewer of
# larger ones, so that the sample never outweighs the model by much (a 16-d conv VAE is 1-4 MB):
# 10,000 28x28 images are 7.5 MiB, 2,000 64x64 RGB images 23.4 MiB, and larger images get none.
DEFAULT_SAMPLE_BY_PIXELS = ((32 * 32, 10_000), (64 * 64, 2_000))  # (H * W at most, images)


def is_extra(name: str) -> bool:
    """Whether a tensor name belongs to the sample or the record rather than to the model."""
    return name.startswith(PREFIXES)


def default_sample_size(image_shape: tuple[int, int, int], test_images: int) -> int:
    """latent-train's default ``--embed-sample``: every test image up to 10,000 when H * W <= 32 * 32,
    up to 2,000 when H * W <= 64 * 64, none above; never past the sample limits."""
    c, h, w = image_shape
    for pixels, images in DEFAULT_SAMPLE_BY_PIXELS:
        if h * w <= pixels:
            return min(images, test_images, MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES // (c * h * w))
    return 0


def subset_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices [min(n, n_total)] of a seeded subset of ``range(n_total)``.

    Subsets of one seed nest: the first n of one seeded permutation, so a smaller subset (the
    record's points) lies inside a larger one (the sample's).
    """
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:max(0, min(n, n_total))])


# -- the header's tensor table ----------------------------------------------------------------------
def _rank(entry: TensorEntry, rank: int, name: str) -> tuple[int, ...]:
    if len(entry.shape) != rank:
        raise ConfigError(f"tensor '{name}' must have {rank} dimension(s), got shape {list(entry.shape)}")
    return entry.shape


def _group(tensors: dict[str, TensorEntry], names: tuple[str, ...], required: tuple[str, ...]) -> bool:
    present = [n for n in names if n in tensors]
    missing = [n for n in required if n not in tensors]
    if present and missing:
        raise ConfigError(f"the file holds {present} but not {missing}: these tensors come together")
    return bool(present)


def extra_specs(tensors: dict[str, TensorEntry], image_shape: tuple[int, ...], latent_dim: int,
                factor_count: int) -> dict[str, TensorSpec]:
    """The specs the sample and record tensors of a header's table must meet, from their declared
    shapes once those are checked against the limits and against each other. Unknown ``sample.*``
    or ``record.*`` names get no spec, so the caller's ``check_tensors`` refuses them.

    Raises ConfigError naming the tensor and the problem.
    """
    specs: dict[str, TensorSpec] = {}
    if _group(tensors, SAMPLE_NAMES, (SAMPLE_IMAGES, SAMPLE_LABELS)):
        shape = _rank(tensors[SAMPLE_IMAGES], 4, SAMPLE_IMAGES)
        n = shape[0]
        if tuple(shape[1:]) != tuple(image_shape):
            raise ConfigError(f"{SAMPLE_IMAGES} are {list(shape[1:])} but the model's images are {list(image_shape)}")
        if not 1 <= n <= MAX_SAMPLE_IMAGES or max(shape[2:]) > MAX_SAMPLE_SIDE:
            raise ConfigError(f"{SAMPLE_IMAGES} holds {n:,} images of {list(shape[1:])}; the limits are "
                              f"1 to {MAX_SAMPLE_IMAGES:,} images, {MAX_SAMPLE_SIDE} px a side")
        if tensors[SAMPLE_IMAGES].nbytes > MAX_SAMPLE_BYTES:
            raise ConfigError(f"{SAMPLE_IMAGES} is {tensors[SAMPLE_IMAGES].nbytes:,} bytes; the limit is "
                              f"{MAX_SAMPLE_BYTES:,}")
        specs[SAMPLE_IMAGES] = TensorSpec(shape, ("U8",))
        specs[SAMPLE_LABELS] = TensorSpec((n,), ("I64",))
        if SAMPLE_FACTORS in tensors:
            if not 1 <= factor_count <= MAX_SAMPLE_FACTORS:
                raise ConfigError(f"the file holds {SAMPLE_FACTORS} but its dataset block names "
                                  f"{factor_count} factors (1 to {MAX_SAMPLE_FACTORS} needed)")
            specs[SAMPLE_FACTORS] = TensorSpec((n, factor_count), ("F32",))
    if _group(tensors, RECORD_NAMES, RECORD_NAMES):
        e, n, d = _rank(tensors[RECORD_CODES], 3, RECORD_CODES)
        if d != latent_dim:
            raise ConfigError(f"{RECORD_CODES} holds {d}-d codes but the model's are {latent_dim}-d")
        if not (1 <= e <= MAX_RECORD_FRAMES and 1 <= n <= MAX_RECORD_POINTS):
            raise ConfigError(f"{RECORD_CODES} holds {e:,} frames of {n:,} points; the limits are 1 to "
                              f"{MAX_RECORD_FRAMES:,} frames and 1 to {MAX_RECORD_POINTS:,} points")
        if tensors[RECORD_CODES].nbytes > MAX_RECORD_BYTES:
            raise ConfigError(f"{RECORD_CODES} is {tensors[RECORD_CODES].nbytes:,} bytes; the limit is "
                              f"{MAX_RECORD_BYTES:,}")
        specs |= {RECORD_CODES: TensorSpec((e, n, d), ("F16",)), RECORD_LABELS: TensorSpec((n,), ("I64",)),
                  RECORD_EPOCHS: TensorSpec((e,), ("F32",)), RECORD_INDICES: TensorSpec((n,), ("I64",))}
    return specs


# -- values, once read ------------------------------------------------------------------------------
def _check_labels(labels: Tensor, name: str, num_classes: int) -> None:
    if len(labels) and int(labels.min()) < -1:
        raise ConfigError(f"{name} holds {int(labels.min())}; labels are class indices, or -1 when unknown")
    if num_classes and len(labels) and int(labels.max()) >= num_classes:
        raise ConfigError(f"{name} holds {int(labels.max())} but the dataset has {num_classes} classes")


def check_sample_values(tensors: dict[str, Tensor], num_classes: int) -> None:
    """Labels are -1 or a class index; factors are finite. ConfigError otherwise."""
    _check_labels(tensors[SAMPLE_LABELS], SAMPLE_LABELS, num_classes)
    factors = tensors.get(SAMPLE_FACTORS)
    if factors is not None and not bool(torch.isfinite(factors).all()):
        raise ConfigError(f"{SAMPLE_FACTORS} holds NaN or infinite values")


def check_record_values(tensors: dict[str, Tensor], num_classes: int) -> None:
    """Codes finite; epochs finite, >= 0 and never decreasing; indices >= 0; labels -1 or a class."""
    if not bool(torch.isfinite(tensors[RECORD_CODES]).all()):
        raise ConfigError(f"{RECORD_CODES} holds NaN or infinite values")
    epochs = tensors[RECORD_EPOCHS]
    if not bool(torch.isfinite(epochs).all()) or bool((epochs < 0).any()) or bool((epochs.diff() < 0).any()):
        raise ConfigError(f"{RECORD_EPOCHS} must be finite, >= 0 and in training order")
    if bool((tensors[RECORD_INDICES] < 0).any()):
        raise ConfigError(f"{RECORD_INDICES} holds negative indices")
    _check_labels(tensors[RECORD_LABELS], RECORD_LABELS, num_classes)


# -- writing ----------------------------------------------------------------------------------------
def sample_tensors(images: Any, labels: Any = None, factors: Any = None, *, image_shape: tuple[int, ...],
                   factor_count: int = 0, num_classes: int = 0) -> dict[str, Tensor]:
    """The sample tensors of uint8 ``images`` [N, C, H, W], ``labels`` [N] (None: all -1) and
    ``factors`` [N, F] (F = ``factor_count``), checked as the loader will check them.

    Raises ConfigError naming the problem.
    """
    x = as_array(images, "images")
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise ConfigError(f"the sample must be uint8 images [N, {', '.join(map(str, image_shape))}], "
                          f"got {x.dtype} {list(x.shape)}")
    n = len(x)
    if not 1 <= n <= MAX_SAMPLE_IMAGES or x.nbytes > MAX_SAMPLE_BYTES:
        raise ConfigError(f"a sample holds 1 to {MAX_SAMPLE_IMAGES:,} images and at most {MAX_SAMPLE_BYTES >> 20} MiB; "
                          f"got {n:,} images ({x.nbytes:,} bytes)")
    y = np.full(n, -1, np.int64) if labels is None else as_array(labels, "labels")
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"labels must be integers [N] = [{n}], got {y.dtype} {list(y.shape)}")
    tensors = {SAMPLE_IMAGES: torch.from_numpy(np.ascontiguousarray(x)),
               SAMPLE_LABELS: torch.from_numpy(np.ascontiguousarray(y.astype(np.int64)))}
    if factors is not None:
        f = as_array(factors, "factors")
        if f.shape != (n, factor_count) or not factor_count:
            raise ConfigError(f"factors must be [N, F] = [{n}, {factor_count}] (F: the dataset block's "
                              f"factor_names), got {list(f.shape)}")
        tensors[SAMPLE_FACTORS] = torch.from_numpy(np.ascontiguousarray(f.astype(np.float32)))
    check_sample_values(tensors, num_classes)
    return tensors


@dataclass(frozen=True)
class Record:
    """A training record read from a checkpoint: where N fixed test images were encoded at E moments.

    ``codes`` float16 [E, N, D] (posterior means; ``codes[e].astype(np.float32)`` for one frame),
    ``labels`` int64 [N] (-1 unknown), ``epochs`` float32 [E] (fractional epochs: 0 is the
    initialisation, 0.25 a quarter of the first epoch, 3 the end of the third; two equal epochs in
    a row are the frames before and after a GMVAE's component initialisation), ``indices`` int64
    [N] (positions in the test split of the dataset, as ``load_dataset`` gives it).
    """

    codes: np.ndarray
    labels: np.ndarray
    epochs: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> Record:
        return cls(tensors[RECORD_CODES].numpy(), tensors[RECORD_LABELS].numpy(), tensors[RECORD_EPOCHS].numpy(),
                   tensors[RECORD_INDICES].numpy())

    def to_tensors(self) -> dict[str, Tensor]:
        return {RECORD_CODES: torch.from_numpy(np.ascontiguousarray(self.codes, np.float16)),
                RECORD_LABELS: torch.from_numpy(np.ascontiguousarray(self.labels, np.int64)),
                RECORD_EPOCHS: torch.from_numpy(np.ascontiguousarray(self.epochs, np.float32)),
                RECORD_INDICES: torch.from_numpy(np.ascontiguousarray(self.indices, np.int64))}
