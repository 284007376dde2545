"""Input corruption P(x̃|x) for denoising (Vincent et al. 2008, 2010): a data transform, not a model.

``corrupt(x, kind, level, generator)`` is pure (it never writes into ``x``) and seeded (the same
generator state gives the same corruption). The DAE family (``models/dae.py``) applies it to its
input inside ``loss``; a trainer option that corrupts the inputs of any family (a denoising VAE)
and the explorer's denoising view are meant to call this same function.

Kinds, each with a ``level`` in [0, 1]:
- ``gaussian``: additive N(0, level^2) noise per pixel, clipped back to [0, 1] so that the corrupted
  image is still an image in the data's value range (and can be shown and uploaded like one);
- ``mask``: each pixel independently set to 0 with probability ``level`` (Vincent et al.'s "masking
  noise": the model must fill in what was erased);
- ``salt-pepper``: each pixel independently, with probability ``level``, set to 0 or 1 (half each).

A level of 0 returns an unchanged copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

CORRUPTIONS = ("gaussian", "mask", "salt-pepper")


def check_corruption(kind: str, level: float) -> None:
    """ValueError naming the problem when ``kind`` is unknown or ``level`` is outside [0, 1]."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {kind!r}")
    if not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"corruption level must lie in [0, 1], got {level}")


def parse_corruption(text: str) -> tuple[str, float]:
    """``"KIND:LEVEL"`` (``latent-train --corrupt``) as (kind, level); ValueError naming the problem.

    Examples:
        >>> parse_corruption("gaussian:0.5")
        ('gaussian', 0.5)
    """
    kind, sep, level = str(text).partition(":")
    try:
        value = float(level)
    except ValueError:
        value = None
    if not sep or value is None:
        raise ValueError(f"expected KIND:LEVEL with KIND one of {CORRUPTIONS} and LEVEL in [0, 1] "
                         f"(e.g. gaussian:0.5), got {str(text)[:40]!r}")
    check_corruption(kind, value)
    return kind, value


def corrupt(x: Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """A corrupted copy x̃ ~ P(x̃|x) of images x [B, C, H, W] (any shape) with values in [0, 1].

    ``generator`` (on x's device) makes the draw reproducible; without it the global RNG is used.
    Returns a new tensor of x's shape and dtype, values in [0, 1].

    Examples:
        >>> x = torch.full((2, 1, 8, 8), 0.5)
        >>> noisy = corrupt(x, "gaussian", 0.3, torch.Generator().manual_seed(0))
        >>> bool(noisy.min() >= 0 and noisy.max() <= 1), bool(torch.equal(x, torch.full((2, 1, 8, 8), 0.5)))
        (True, True)
        >>> float(corrupt(x, "mask", 1.0).sum())
        0.0
    """
    check_corruption(kind, level)
    if level == 0:
        return x.clone()

    def uniform() -> Tensor:
        return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp(0.0, 1.0)
    hit = uniform() < level
    if kind == "mask":
        return torch.where(hit, torch.zeros_like(x), x)
    salt = (uniform() < 0.5).to(x.dtype)  # drawn for every pixel, so the stream does not depend on `hit`
    return torch.where(hit, salt, x)
