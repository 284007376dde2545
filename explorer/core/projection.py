"""2D / 3D projections of latent codes (PCA, t-SNE, UMAP), fit / transform style, with a cache.

Choices, and why:
- t-SNE is openTSNE (Policar et al. 2024): FFT-accelerated gradients (Linderman et al. 2019) make
  70k points practical on a few cores, and its embeddings can place new points (``transform``).
  FFT interpolation only exists in 2D, so 3D uses Barnes-Hut.
- UMAP (McInnes et al. 2018) runs with ``random_state=None``: umap-learn drops to one thread when
  a seed is set. The layout starts from a PCA initialisation, which fixes its global arrangement,
  and ``transform_seed`` seeds placement of new points; the fitted layout itself is not
  bit-reproducible across runs, which is why results are cached (memory and disk).
- PCA is stored as its mean and components, so it transforms and inverts exactly after a disk reload.
- A t-SNE or UMAP map of more than ``MAX_FIT_POINTS`` (50,000) codes is fitted on a seeded subset
  of that many, and every other code is placed at the distance-weighted mean of its nearest fitted
  codes' coordinates (``Projection.fitted`` names the fitted rows; the map's title says so). That
  placement matched the libraries' own on 1M 16-d codes (trustworthiness 0.962 for both UMAP and
  openTSNE's, against 0.961 for umap-learn's ``transform`` and 0.966 for openTSNE's) at a fraction of
  the cost: openTSNE's ``transform`` takes about 0.6 ms a point on a 2-core box (10 minutes for
  950,000), umap-learn's first ``transform`` builds its search index for over a minute
  (``docs/performance.md``). ``PLACEMENT`` chooses per method.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaescope.explorer.core.locks import KeyedLocks
from vaescope.limits import (
    MAX_FIT_POINTS,
    MAX_PROJECTION_BYTES,
    MAX_PROJECTION_FILES,
    MAX_PROJECTIONS_IN_MEMORY,
)
from vaescope.training.threads import torch_threads

log = logging.getLogger(__name__)

METHODS = ("pca", "tsne", "umap")
LONG_METHODS = ("tsne", "umap")  # fits that take minutes on 70k points
Progress = Callable[[float, str], None]
N_JOBS = min(os.cpu_count() or 1, 8)  # all cores of a small box; beyond 8 the gains are small
MIN_POINTS = 5  # t-SNE / UMAP need a few neighbours per point
NN_PLACEMENT_K = 10  # neighbours averaged when placing new points without the fitted estimator
TSNE_PERPLEXITY = 30.0  # openTSNE's default; lowered for tiny N (needs N > 3 * perplexity)
TSNE_THREADS_FROM = 10_000  # point count from which t-SNE runs multi-threaded (see _fit_tsne)
TSNE_PROGRESS_EVERY = 10  # iterations between t-SNE progress reports
# Iterations after openTSNE's 250 early-exaggeration ones (its default is 500). Its learning rate
# scales with N (N / 12, Belkina et al. 2019), so large maps converge early: on 70k Fashion-MNIST
# codes, 250 gave trustworthiness 0.9809 (k=10, 5k sample) vs 0.9804 with 500, in 0.65x the time
# (204 s vs 312 s, same busy 2-core box); on 20k codes 0.9814 vs 0.9811.
TSNE_ITERATIONS = 250
UMAP_NEIGHBORS = 15  # umap-learn's default balance of local vs global structure
# Rough shares of the run spent before the first iteration / epoch (kNN graph, affinities, numba
# compilation), measured on 70k 16-d codes on a 2-core box: t-SNE 96 s of 326 s (with openTSNE's
# 500 iterations, before TSNE_ITERATIONS; its share is larger now), UMAP 108 s of 171 s.
TSNE_AFFINITY_SHARE = 0.3
UMAP_GRAPH_SHARE = 0.6
# How the codes beyond a subset fit are placed: "neighbours" (the weighted mean of the nearest fitted
# codes' coordinates) or "transform" (the fitted estimator's own transform; see the module docstring)
PLACEMENT = {"tsne": "neighbours", "umap": "neighbours"}
PLACE_BLOCK = 50_000  # codes placed at a time, between progress reports
FIT_SHARE = 0.6  # rough share of a subset fit's run spent fitting (the rest: placing 950k of 1M codes)


@dataclass
class Projection:
    """A fitted projection of N latent codes [N, D] to ``coords`` [N, dims].

    ``reference`` holds the codes, ``estimator`` the fitted openTSNE / umap object (None after a
    disk reload), ``pca_mean`` [D] and ``pca_components`` [dims, D] the linear map of PCA.
    ``fitted`` [F] names the rows the estimator was fitted on when it was fitted on a seeded subset
    (None: all); the other rows were placed (``PLACEMENT``).
    """

    method: str
    dims: int
    coords: np.ndarray
    reference: np.ndarray
    estimator: Any = None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    fitted: np.ndarray | None = None
    _neighbours: Any = field(default=None, init=False, repr=False)

    @property
    def invertible(self) -> bool:
        """True when coordinates map back to latent codes (PCA only)."""
        return self.pca_components is not None

    @property
    def note(self) -> str:
        """How the map was made, when not by fitting every code: "t-SNE fitted on a seeded subset of
        50,000 of the 1,000,000 points; the other 950,000 placed by their nearest fitted
        neighbours" ('' otherwise)."""
        if self.fitted is None:
            return ""
        n, f = len(self.coords), len(self.fitted)
        how = "by the fitted transform" if PLACEMENT.get(self.method) == "transform" else "by their nearest fitted neighbours"
        name = {"tsne": "t-SNE", "umap": "UMAP"}.get(self.method, self.method)
        return f"{name} fitted on a seeded subset of {f:,} of the {n:,} points; the other {n - f:,} placed {how}"

    def transform(self, z: np.ndarray, *, exact: bool = True) -> np.ndarray:
        """Codes [M, D] -> coordinates [M, dims].

        PCA is exact; t-SNE and UMAP use their estimator's transform, or, after a disk reload or
        with ``exact=False``, place each code at the distance-weighted mean of its nearest fitted
        codes' coordinates. The first umap transform on 70k points builds a search index and
        compiles numba code (over a minute on a busy 2-core box); the placement takes well under
        a second, which suits interactive use.
        """
        z = np.atleast_2d(np.asarray(z, np.float32))
        if self.pca_components is not None:
            return ((z - self.pca_mean) @ self.pca_components.T).astype(np.float32)
        if self.estimator is not None and exact:
            with torch_threads():  # umap's transform runs numba too (see _fit_umap)
                return np.asarray(self.estimator.transform(z), np.float32)
        if self._neighbours is None:  # built once: ~0.1 s for 70k codes, then queries are cheap
            self._neighbours = neighbour_index(self._fitted_rows(self.reference))
        return nearest_neighbour_placement(self._neighbours, self._fitted_rows(self.coords), z)

    def _fitted_rows(self, values: np.ndarray) -> np.ndarray:
        """The rows of ``values`` [N, ...] the estimator was fitted on (all of them when it was not
        fitted on a subset): new codes are placed among those, as the other rows were."""
        return values if self.fitted is None else values[self.fitted]

    def inverse_transform(self, coords: np.ndarray) -> np.ndarray:
        """Coordinates [M, dims] -> codes [M, D] in the span of the principal axes (PCA only)."""
        if self.pca_components is None:
            raise NotImplementedError(f"inverse_transform: only PCA is invertible, not {self.method}")
        coords = np.atleast_2d(np.asarray(coords, np.float32))
        return (coords @ self.pca_components + self.pca_mean).astype(np.float32)


def neighbour_index(reference: np.ndarray, k: int = NN_PLACEMENT_K, n_jobs: int | None = None) -> Any:
    """A fitted sklearn NearestNeighbors over the reference codes [N, D] (``n_jobs`` threads for
    its queries: a bulk placement uses every core, a click's one code needs none)."""
    from sklearn.neighbors import NearestNeighbors  # imported here: slow import

    return NearestNeighbors(n_neighbors=min(k, len(reference)), n_jobs=n_jobs).fit(reference)


def nearest_neighbour_placement(index: Any, coords: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Place codes z [M, D] at the inverse-distance-weighted mean of the coords [N, dims] of their
    nearest reference codes (``index`` from neighbour_index); a code equal to a fitted one lands
    on its own coordinates."""
    dist, idx = index.kneighbors(z)
    w = 1.0 / (dist + 1e-8)
    return ((w[..., None] * coords[idx]).sum(1) / w.sum(1, keepdims=True)).astype(np.float32)


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def _fit_pca(z: np.ndarray, dims: int, seed: int, progress: Progress | None,
             options: dict[str, Any]) -> Projection:
    """PCA via sklearn; with fewer latent dims than ``dims`` the extra axes are zero."""
    from sklearn.decomposition import PCA

    k = min(dims, z.shape[1], len(z))
    pca = PCA(**{"n_components": k, "random_state": seed} | options).fit(z)
    components = np.zeros((dims, z.shape[1]), np.float32)
    components[:k] = pca.components_
    mean = pca.mean_.astype(np.float32)
    coords = ((z - mean) @ components.T).astype(np.float32)
    return Projection("pca", dims, coords, z, pca_mean=mean, pca_components=components)


class _TsneProgress:
    """openTSNE callback: reports progress through all iterations (both phases), after the
    neighbour search that precedes them.

    openTSNE stops when a callback returns True, so this always returns False.
    """

    def __init__(self, progress: Progress | None, total_iters: int) -> None:
        self.progress, self.total, self.done = progress, total_iters, 0

    def __call__(self, iteration: int, error: float, embedding: np.ndarray) -> bool:
        self.done += TSNE_PROGRESS_EVERY
        _report(self.progress, TSNE_AFFINITY_SHARE + (1 - TSNE_AFFINITY_SHARE) * self.done / self.total,
                f"t-SNE: iteration {self.done}/{self.total}")
        return False


def _fit_tsne(z: np.ndarray, dims: int, seed: int, progress: Progress | None,
              options: dict[str, Any]) -> Projection:
    """openTSNE; "auto" picks Barnes-Hut below 10k points and FFT above, FFT being 2D-only."""
    from openTSNE import TSNE

    params = {"n_components": dims, "perplexity": min(TSNE_PERPLEXITY, (len(z) - 1) / 3),
              "negative_gradient_method": "auto" if dims == 2 else "bh",
              # below 10k points thread overhead dominates: measured ~2x slower with 2 threads
              # than 1 on 1.8k digits on a busy 2-core box
              "n_jobs": 1 if len(z) < TSNE_THREADS_FROM else N_JOBS,
              "n_iter": TSNE_ITERATIONS, "random_state": seed, "callbacks_every_iters": TSNE_PROGRESS_EVERY}
    tsne = TSNE(**params | options)
    tsne.callbacks = _TsneProgress(progress, tsne.early_exaggeration_iter + tsne.n_iter)
    embedding = tsne.fit(z)
    embedding.gradient_descent_params["callbacks"] = None  # later transforms: no progress
    return Projection("tsne", dims, np.asarray(embedding, np.float32), z, estimator=embedding)


class _TqdmToProgress:
    """A file for umap-learn's tqdm bar (format "{n}/{total}") that forwards it as progress."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def write(self, text: str) -> None:
        match = re.search(r"(\d+)/(\d+)", text)
        if match and int(match[2]) > 0:
            done = int(match[1]) / int(match[2])
            _report(self.progress, UMAP_GRAPH_SHARE + (1 - UMAP_GRAPH_SHARE) * done,
                    f"UMAP: epoch {match[1]}/{match[2]}")

    def flush(self) -> None:
        return None


def _fit_umap(z: np.ndarray, dims: int, seed: int, progress: Progress | None,
              options: dict[str, Any]) -> Projection:
    import umap

    bar = {"disable": False, "file": _TqdmToProgress(progress), "bar_format": "{n}/{total}",
           "mininterval": 0.5}
    params = {"n_components": dims, "n_neighbors": min(UMAP_NEIGHBORS, len(z) - 1), "init": "pca",
              "random_state": None, "transform_seed": seed, "n_jobs": N_JOBS, "tqdm_kwds": bar}
    reducer = umap.UMAP(**params | options)
    with torch_threads():  # numba's OpenMP layer would leave this server thread's torch on every core
        coords = reducer.fit_transform(z)
    reducer.tqdm_kwds = {"disable": True}  # later transforms must not report progress
    return Projection("umap", dims, np.asarray(coords, np.float32), z, estimator=reducer)


Fitter = Callable[[np.ndarray, int, int, Progress | None, dict[str, Any]], Projection]
FITTERS: dict[str, Fitter] = {
    "pca": _fit_pca, "tsne": _fit_tsne, "umap": _fit_umap}


def _check_inputs(latents: np.ndarray, method: str, dims: int) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; choose one of {METHODS}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    z = np.ascontiguousarray(latents, np.float32)
    if z.ndim != 2 or len(z) < (2 if method == "pca" else MIN_POINTS):
        raise ValueError(f"{method} needs latents [N, D] with enough points, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("latents contain NaN or inf; cannot project them")
    return z


def fit_rows(n: int, method: str, max_fit: int | None = None) -> np.ndarray | None:
    """The rows [F] (sorted, seeded) a ``method`` map of ``n`` codes is fitted on, or None for all:
    PCA always fits all (a fraction of a second at 1M); t-SNE and UMAP fit a subset above ``max_fit``
    (None: MAX_FIT_POINTS).

    Examples:
        >>> len(fit_rows(1_000_000, "umap")), fit_rows(1_000_000, "pca"), fit_rows(5_000, "tsne")
        (50000, None, None)
    """
    limit = MAX_FIT_POINTS if max_fit is None else max_fit
    if method not in LONG_METHODS or n <= limit:
        return None
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def fit_projection(latents: np.ndarray, method: str, dims: int = 2, seed: int = 0,
                   progress: Progress | None = None, *,
                   options: Mapping[str, Any] | None = None, max_fit: int | None = None) -> Projection:
    """Fit ``method`` on the codes [N, D] -> Projection with coords [N, dims] for every code.

    t-SNE and UMAP of more than ``max_fit`` codes (None: MAX_FIT_POINTS, 50,000) are fitted on a
    seeded subset of that many (``fit_rows``), and the other codes placed among them
    (``PLACEMENT``, in blocks of PLACE_BLOCK); ``Projection.fitted`` and ``Projection.note`` say so. ``progress(fraction,
    message)`` is called at 0 and 1, and in between for t-SNE / UMAP. ``options`` override the
    estimator's constructor arguments (e.g. t-SNE ``n_iter``).
    """
    z = _check_inputs(latents, method, dims)
    _report(progress, 0.0, f"{method}: projecting {len(z):,} points to {dims}D")
    rows = fit_rows(len(z), method, max_fit)
    if rows is None:
        projection = FITTERS[method](z, dims, seed, progress, dict(options or {}))
    else:
        share = lambda f, m: _report(progress, f * FIT_SHARE, f"{m} (fitting {len(rows):,} of {len(z):,})")  # noqa: E731
        fitted = FITTERS[method](z[rows], dims, seed, share, dict(options or {}))
        projection = Projection(method, dims, _place_rest(z, rows, fitted, progress), z, estimator=fitted.estimator,
                                fitted=rows)
    _report(progress, 1.0, f"{method}: done")
    return projection


def _place_rest(z: np.ndarray, rows: np.ndarray, fitted: Projection, progress: Progress | None) -> np.ndarray:
    """Coordinates [N, dims] of every code: the fitted ``rows`` where the fit put them, the others
    placed block by block (``PLACEMENT``)."""
    coords = np.empty((len(z), fitted.dims), np.float32)
    coords[rows] = fitted.coords
    rest = np.setdiff1d(np.arange(len(z)), rows, assume_unique=True)
    exact = PLACEMENT.get(fitted.method) == "transform"
    index = None if exact else neighbour_index(fitted.reference, n_jobs=N_JOBS)
    for start in range(0, len(rest), PLACE_BLOCK):
        block = rest[start:start + PLACE_BLOCK]
        if exact:
            coords[block] = fitted.transform(z[block])
        else:
            coords[block] = nearest_neighbour_placement(index, fitted.coords, z[block])
        done = start + len(block)
        _report(progress, FIT_SHARE + (1 - FIT_SHARE) * done / len(rest),
                f"{fitted.method}: placed {done:,} of the other {len(rest):,} points")
    return coords


def fingerprint(latents: np.ndarray) -> str:
    """A short content hash of the codes, so two different subsets of equal size never collide."""
    return hashlib.sha256(np.ascontiguousarray(latents, np.float32).tobytes()).hexdigest()[:16]


CacheKey = tuple[str, str, int, int, int, str]



class ProjectionCache:
    """Projections in memory (LRU, ``max_items``) and, when ``cache_dir`` is given, as .npz files.

    The key is (checkpoint key, method, dims, seed, N) plus a hash of the codes. Concurrent
    requests for one key are single-flight: the second waits for the first's result. Disk files
    hold arrays only and are read with ``allow_pickle=False``.
    """

    def __init__(self, cache_dir: Path | None = None, max_items: int = MAX_PROJECTIONS_IN_MEMORY,
                 max_disk_files: int = MAX_PROJECTION_FILES, max_disk_bytes: int = MAX_PROJECTION_BYTES) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.max_items = max_items
        self.max_disk_files, self.max_disk_bytes = max_disk_files, max_disk_bytes
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[CacheKey, Projection] = OrderedDict()
        self._locks = KeyedLocks()  # single flight per request key, and per checkpoint for long fits
        self._guard = threading.Lock()  # protects the dicts and counters, never held while fitting

    def get(self, key: str, latents: np.ndarray, method: str, dims: int, seed: int = 0,
            progress: Progress | None = None) -> Projection:
        """The projection of ``latents`` [N, D] for ``key`` (e.g. the checkpoint's sha256)."""
        z = _check_inputs(latents, method, dims)
        ck: CacheKey = (key, method, dims, seed, len(z), fingerprint(z))
        with self._locks.hold(ck):
            found = self._remember(ck) or self._load(ck, z)
            with self._guard:
                self.hits += found is not None
                self.misses += found is None
            if found is None:
                # t-SNE / UMAP take minutes: one such fit per checkpoint at a time, so a class of
                # students asking for both maps at once cannot pile long jobs onto the CPU.
                long_job = self._locks.hold((key,)) if method in LONG_METHODS else contextlib.nullcontext()
                with long_job:
                    found = fit_projection(z, method, dims, seed, progress)
                self._save(ck, found)
            self._store(ck, found)
            return found

    def _remember(self, ck: CacheKey) -> Projection | None:
        with self._guard:
            if ck in self._memory:
                self._memory.move_to_end(ck)
            return self._memory.get(ck)

    def _store(self, ck: CacheKey, projection: Projection) -> None:
        with self._guard:
            self._memory[ck] = projection
            self._memory.move_to_end(ck)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def path_for(self, ck: CacheKey) -> Path | None:
        """The .npz file of a cache key, or None without a cache folder."""
        if self.cache_dir is None:
            return None
        key, method, dims, seed, n, content = ck
        digest = hashlib.sha256(f"{key}|{content}".encode()).hexdigest()[:20]
        return self.cache_dir / f"{method}-{dims}d-seed{seed}-n{n}-{digest}.npz"

    def _save(self, ck: CacheKey, projection: Projection) -> None:
        path = self.path_for(ck)
        if path is None:
            return
        arrays = {"coords": projection.coords, "method": np.array(projection.method)}
        if projection.pca_components is not None:
            arrays |= {"pca_mean": projection.pca_mean, "pca_components": projection.pca_components}
        if projection.fitted is not None:
            arrays |= {"fitted": projection.fitted}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
        self._prune_disk(keep=path)

    def _prune_disk(self, keep: Path) -> None:
        """Drop the oldest cache files beyond max_disk_files or max_disk_bytes (never ``keep``)."""
        files = []
        for path in self.cache_dir.glob("*.npz"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another process pruned it
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        files.sort(reverse=True)  # newest first
        total = 0
        for rank, (_, size, path) in enumerate(files):
            total += size
            if path != keep and (rank >= self.max_disk_files or total > self.max_disk_bytes):
                path.unlink(missing_ok=True)

    def _load(self, ck: CacheKey, z: np.ndarray) -> Projection | None:
        path = self.path_for(ck)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable projection cache %s: %s", path, err)
            return None
        method, dims = ck[1], ck[2]
        if str(arrays.get("method")) != method or arrays.get("coords", np.empty(0)).shape != (len(z), dims):
            log.warning("ignoring projection cache %s: it does not match the request", path)
            return None
        fitted = arrays.get("fitted")
        if fitted is not None and not (fitted.ndim == 1 and fitted.dtype.kind in "iu" and len(fitted)
                                       and fitted.min() >= 0 and fitted.max() < len(z)):
            log.warning("ignoring projection cache %s: its fitted rows do not match the request", path)
            return None
        return Projection(method, dims, arrays["coords"], z, pca_mean=arrays.get("pca_mean"),
                          pca_components=arrays.get("pca_components"),
                          fitted=None if fitted is None else np.asarray(fitted, np.int64))
