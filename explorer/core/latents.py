"""Encode a model's evaluation images once, through the contract: codes, spreads, KL, reconstruction error.

Everything the map, the sliders, the samplers and the diagnostics read about the data lives in one
``LatentsCache`` per model, built here from ``encode`` / ``decode`` / ``kl_per_dim`` alone, so it
works the same for every family and for foreign models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vaescope.contract import ExplorableModel
from vaescope.errors import InputError

Progress = Callable[[float, str], None]


@dataclass
class LatentsCache:
    """Per-image encodings of the evaluation images, N rows."""

    mean: np.ndarray  # [N, D] posterior means
    std: np.ndarray  # [N, D] posterior standard deviations (0 for a deterministic encoder)
    labels: np.ndarray  # [N] int64, -1 where unknown
    recon_error: np.ndarray  # [N] mean squared error per pixel of the reconstruction from the mean
    kl: np.ndarray  # [N] KL(q(z|x) || p(z)) per image, nats (0 without a prior)
    kl_per_dim: np.ndarray  # [D] mean over images of the KL per dimension, nats
    component_probs: np.ndarray | None  # [N, K] a mixture's q(k|x); None for other models
    images: np.ndarray | None  # [N, C, H, W] uint8 (a quarter of float32's memory); None: codes only
    factors: np.ndarray | None = None  # [N, F] the ground-truth factors of the images, when the data has them
    factor_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.mean)

    def image(self, index: int) -> np.ndarray | None:
        """Image ``index`` as float32 [C, H, W] in [0, 1] (None for codes without images)."""
        return None if self.images is None else self.images[index].astype(np.float32) / 255.0

    def float_images(self, indices: np.ndarray | slice) -> np.ndarray:
        """Images as float32 [K, C, H, W] in [0, 1]."""
        return self.images[indices].astype(np.float32) / 255.0

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images [N, C, H, W], uint8 or float in [0, 1], as uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    return (np.clip(np.nan_to_num(images.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)


@torch.inference_mode()
def encode_dataset(model: ExplorableModel, images: np.ndarray, labels: np.ndarray | None, batch_size: int = 512,
                   progress: Progress | None = None) -> LatentsCache:
    """Encode images [N, C, H, W] (uint8, or float in [0, 1]) with labels [N] (-1 unknown) through
    the contract, batch by batch on the model's device.

    The KL is measured against the model's own prior (``kl_per_dim``); reconstructions decode the
    posterior mean. Raises InputError when the model's codes or images are not finite (a broken
    file's weights), so a page can say so instead of drawing nonsense.
    """
    description = model.describe()
    stored = to_uint8(images)
    n, d = len(stored), description.latent_dim
    labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("mean", "std", "kl", "mse", "probs")}
    for start in range(0, n, batch_size):
        x = torch.from_numpy(stored[start:start + batch_size]).to(model.device).float() / 255
        y = description.condition.from_labels(torch.from_numpy(labels[start:start + batch_size]).to(model.device))
        post = model.encode(x, y)
        recon = model.decode(post.mean, y).float()
        mean = post.mean.float()
        if not (torch.isfinite(mean).all() and torch.isfinite(recon).all()):
            raise InputError("the model produces NaN or infinite values on the evaluation images; its weights "
                             "are broken (a diverged run or a damaged file)")
        parts["mean"].append(mean.cpu().numpy())
        parts["std"].append(post.std.float().cpu().numpy())
        parts["kl"].append(torch.nan_to_num(model.kl_per_dim(post).float()).cpu().numpy())
        parts["mse"].append((recon - x).pow(2).flatten(1).mean(1).cpu().numpy())
        if post.component_probs is not None:
            parts["probs"].append(post.component_probs.float().cpu().numpy())
        if progress is not None:
            progress(min(1.0, (start + batch_size) / max(n, 1)), "encoding the evaluation images")
    if n == 0:
        empty = np.zeros((0, d), np.float32)
        return LatentsCache(empty, empty, labels, np.zeros(0, np.float32), np.zeros(0, np.float32),
                            np.zeros(d, np.float32), None, stored)
    kl = np.concatenate(parts["kl"])
    return LatentsCache(
        mean=np.concatenate(parts["mean"]), std=np.concatenate(parts["std"]), labels=labels,
        recon_error=np.concatenate(parts["mse"]), kl=kl.sum(1), kl_per_dim=kl.mean(0),
        component_probs=np.concatenate(parts["probs"]) if parts["probs"] else None, images=stored)
