"""Latent traversals: move one coordinate of a code at a time, over a prior or data range."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SLIDER_MODES = ("prior", "data")
MIN_SPAN = 1e-3  # a dimension the data never moves (a dead AE unit) still gets a usable slider


def dimension_order(kl_per_dim: np.ndarray) -> np.ndarray:
    """Dimension indices [D], highest KL first (the most informative dims get the first sliders).

    A stable sort, so tied dimensions (e.g. all zero for an AE) keep their natural order.
    """
    return np.argsort(-np.asarray(kl_per_dim, np.float64), kind="stable")


def slider_ranges(mode: str, latents: np.ndarray | None, prior_sd: float = 3.0, *,
                  latent_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension slider bounds (lo [D], hi [D]).

    mode "prior": -prior_sd .. +prior_sd, D taken from ``latent_dim`` or ``latents.shape[-1]``.
    mode "data": min / max over the points of ``latents`` [N, D]; a constant dimension is widened
    by MIN_SPAN so lo < hi always holds.
    """
    if mode not in SLIDER_MODES:
        raise ValueError(f"unknown slider mode {mode!r}; choose one of {SLIDER_MODES}")
    if mode == "prior":
        d = latent_dim if latent_dim is not None else None if latents is None else latents.shape[-1]
        if d is None:
            raise ValueError("prior slider ranges need latent_dim or latents to know the dimension count")
        return np.full(d, -prior_sd, np.float32), np.full(d, prior_sd, np.float32)
    if latents is None or len(latents) == 0:
        raise ValueError("data slider ranges need the encoded latents [N, D]; none were given")
    lo, hi = latents.min(axis=0).astype(np.float32), latents.max(axis=0).astype(np.float32)
    flat = hi - lo < MIN_SPAN
    return np.where(flat, lo - MIN_SPAN / 2, lo), np.where(flat, hi + MIN_SPAN / 2, hi)


def set_coordinate(z: np.ndarray, dim: int, value: float) -> np.ndarray:
    """A copy of z [D] with z[dim] = value; the input is never modified (it may be a cached code)."""
    out = np.array(z, copy=True)
    out[dim] = value
    return out


def traversal_codes(z0: np.ndarray, dims: Sequence[int], lo: np.ndarray, hi: np.ndarray,
                    steps: int) -> np.ndarray:
    """Grid of codes [len(dims) * steps, D], row-major (dim, step).

    Row i * steps + j is z0 with coordinate dims[i] set to the j-th of ``steps`` evenly spaced values
    from lo[dims[i]] to hi[dims[i]]; all other coordinates stay at z0's.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    z0 = np.asarray(z0)
    codes = np.repeat(z0[None], len(dims) * steps, axis=0)
    for i, d in enumerate(dims):
        codes[i * steps:(i + 1) * steps, d] = np.linspace(lo[d], hi[d], steps)
    return codes
