"""The decoded manifold: a grid of codes over two latent dimensions, decoded (Kingma & Welling
2014, fig. 4). The grid's coordinates are the prior's quantiles (the inverse normal CDF of evenly
spaced probabilities), so each cell covers the same prior mass; the other dimensions stay at a base
code (the mean code of the evaluation images by default). ``axes`` says where a model's grid is
centred and how wide it is (its prior's, or the data's for a model without a prior), and
``default_dims`` which two dimensions it opens on.

Examples:
    >>> grid_codes(np.zeros(3, np.float32), (0, 2), 3)[:, [0, 2]].round(2).tolist()[:2]
    [[-1.64, -1.64], [-1.64, 0.0]]
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from vaescope.errors import InputError
from vaescope.explorer.core.dims import dim_info, slider_bounds
from vaescope.explorer.core.store import ModelEntry
from vaescope.limits import MAX_MANIFOLD_STEPS

EDGE = 0.05  # the grid spans the prior's 5 % to 95 % quantiles on each axis


def grid_codes(base: np.ndarray, dims: tuple[int, int], steps: int, scale: np.ndarray | float = 1.0,
               centre: np.ndarray | float = 0.0) -> np.ndarray:
    """Codes [steps * steps, D]: ``base`` [D] with dimension ``dims[0]`` swept down the rows and
    ``dims[1]`` along the columns over ``centre + scale * Phi^-1(linspace(EDGE, 1 - EDGE))`` (a
    standard prior by default; pass a dimension's mean and spread for a model without one)."""
    base = np.asarray(base, np.float32).reshape(-1)
    d = base.size
    i, j = (int(v) for v in dims)
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise InputError(f"choose two different dimensions between 0 and {d - 1}, got {i} and {j}")
    if not 2 <= steps <= MAX_MANIFOLD_STEPS:
        raise InputError(f"a manifold grid has 2 to {MAX_MANIFOLD_STEPS} steps a side, got {steps}")
    ticks = norm.ppf(np.linspace(EDGE, 1 - EDGE, steps))
    scale, centre = np.broadcast_to(scale, (d,)), np.broadcast_to(centre, (d,))
    codes = np.repeat(base[None], steps * steps, axis=0)
    rows, cols = np.meshgrid(ticks, ticks, indexing="ij")
    codes[:, i] = centre[i] + scale[i] * rows.ravel()
    codes[:, j] = centre[j] + scale[j] * cols.ravel()
    return codes.astype(np.float32)


def axes(entry: ModelEntry) -> tuple[np.ndarray, np.ndarray, str]:
    """(centre [D], scale [D], in words) of the grid's axes for ``entry``'s model: its prior's centre
    and standard deviation (read from the prior's 0.13 % / 99.87 % quantiles, exactly 0 and 1 for a
    standard normal), or for a model without a prior the mean and standard deviation of its
    evaluation codes (0 and 1 when it has none)."""
    d = entry.description.latent_dim
    if entry.has_prior:
        lo, hi = slider_bounds(entry, "prior")
        return ((lo + hi) / 2).astype(np.float32), ((hi - lo) / 6).astype(np.float32), "the prior's quantiles"
    if not entry.has_points:
        return np.zeros(d, np.float32), np.ones(d, np.float32), "a standard normal (no prior, no data)"
    codes = entry.latents.mean
    spread = np.maximum(codes.std(0), 1e-6)
    return codes.mean(0).astype(np.float32), spread.astype(np.float32), "the codes' mean and spread (no prior)"


def default_dims(entry: ModelEntry) -> tuple[int, int]:
    """The two dimensions a manifold grid opens on: the two the model uses most (by KL from the
    prior, or by the spread of the codes without one). A 1-d latent has no second: (0, 0)."""
    order = dim_info(entry).order
    return (int(order[0]), int(order[1])) if len(order) > 1 else (0, 0)
