"""Nearest neighbours of a point in latent space (the codes themselves, not the 2-D map).

Exact search by brute force in blocks: a query against a million 16-d codes is one pass over 64 MB
of float32, tens of milliseconds (``benchmarks/neighbours.py`` measures it against scikit-learn's
``NearestNeighbors`` and pynndescent), with no index to build or keep, so a map of any size answers
its first query at once and nothing is held per model.

Examples:
    >>> import numpy as np
    >>> codes = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], np.float32)
    >>> nearest(codes, 0, 2).indices.tolist()
    [1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaescope.errors import InputError
from vaescope.limits import MAX_NEIGHBOURS

BLOCK_ROWS = 1 << 16  # codes compared at once: bounds the distance buffer to 256 KB per block


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` codes nearest a query, nearest first."""

    indices: np.ndarray  # [k] int64 rows of the codes
    distances: np.ndarray  # [k] float32 Euclidean distances in latent space


def nearest(codes: np.ndarray, query: int | np.ndarray, k: int = 10) -> Neighbours:
    """The ``k`` rows of ``codes`` [N, D] nearest ``query`` (a row index, which is left out, or a
    code [D]) by Euclidean distance; ties broken by row. InputError past MAX_NEIGHBOURS or a
    query of the wrong size."""
    codes = np.asarray(codes)
    if not 1 <= k <= MAX_NEIGHBOURS:
        raise InputError(f"the number of neighbours must be between 1 and {MAX_NEIGHBOURS}, got {k}")
    skip = None
    if isinstance(query, int | np.integer):
        if not 0 <= int(query) < len(codes):
            raise InputError(f"point {int(query)} is not among the {len(codes):,} points")
        skip, query = int(query), codes[int(query)]
    q = np.asarray(query, np.float32).reshape(-1)
    if q.shape != codes.shape[1:]:
        raise InputError(f"a query code must have {codes.shape[1]} values, got {q.size}")
    k = min(k, len(codes) - (skip is not None))
    best_d = np.full(0, np.inf, np.float32)
    best_i = np.zeros(0, np.int64)
    for start in range(0, len(codes), BLOCK_ROWS):
        block = codes[start:start + BLOCK_ROWS].astype(np.float32, copy=False)
        d = np.sqrt(((block - q) ** 2).sum(1))
        if skip is not None and start <= skip < start + len(block):
            d[skip - start] = np.inf
        take = min(k, len(d))
        part = np.argpartition(d, take - 1)[:take] if take < len(d) else np.arange(len(d))
        best_d = np.concatenate([best_d, d[part]])
        best_i = np.concatenate([best_i, part + start])
        if len(best_d) > k:
            order = np.lexsort((best_i, best_d))[:k]
            best_d, best_i = best_d[order], best_i[order]
    order = np.lexsort((best_i, best_d))[:k]
    return Neighbours(best_i[order], best_d[order])
