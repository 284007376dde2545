"""explorer.projection: PCA / t-SNE / UMAP quality, PCA inversion, and the projection cache."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness

import vaescope.explorer.core.projection as projection
from vaescope.explorer.core.projection import Projection, ProjectionCache, fit_projection

# Half-length schedules keep the suite fast (UMAP's 200 epochs are its own choice above 10k
# points); trustworthiness stays ~0.99 either way. A fresh process also pays ~15 s of numba
# compilation on the first UMAP fit.
OPTIONS = {"tsne": {"n_iter": 250, "early_exaggeration_iter": 125}, "umap": {"n_epochs": 200}}


def subspace_latents(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """n codes [n, d] lying in a random k-dimensional affine subspace of R^d."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # [k, d] orthonormal rows
    return (rng.normal(size=(n, k)) * [3.0, 1.0, 0.5][:k] @ basis + rng.normal(size=d)).astype(np.float32)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data.astype(np.float32)  # [1797, 64] raw pixels


@pytest.fixture(scope="module")
def nonlinear(digits: np.ndarray) -> dict[str, tuple[Projection, list]]:
    """2D t-SNE and UMAP of digits, fitted once, with their progress reports."""
    out = {}
    for method in ("tsne", "umap"):
        calls: list[tuple[float, str]] = []
        p = fit_projection(digits, method, 2, seed=0, progress=lambda f, m, c=calls: c.append((f, m)),
                           options=OPTIONS[method])
        out[method] = (p, calls)
    return out


# -- PCA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_pca_inverse_round_trips_in_the_subspace(dims: int) -> None:
    z = subspace_latents(300, 8, dims)
    p = fit_projection(z, "pca", dims)
    assert p.coords.shape == (300, dims) and p.invertible
    np.testing.assert_allclose(p.transform(z), p.coords, atol=1e-5)
    np.testing.assert_allclose(p.inverse_transform(p.transform(z)), z, atol=1e-4)


def test_pca_inverse_of_new_coordinates_maps_back_to_them() -> None:
    p = fit_projection(subspace_latents(200, 6, 2), "pca", 2)
    clicked = np.array([[0.5, -1.0], [2.0, 0.3]], np.float32)  # "empty space" on the map
    np.testing.assert_allclose(p.transform(p.inverse_transform(clicked)), clicked, atol=1e-5)


def test_pca_3d_on_2d_latents_pads_a_zero_axis() -> None:
    z = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    p = fit_projection(z, "pca", 3)
    assert p.coords.shape == (50, 3)
    np.testing.assert_allclose(p.coords[:, 2], 0.0)
    np.testing.assert_allclose(p.inverse_transform(p.coords), z, atol=1e-5)


def test_pca_on_digits_in_3d(digits: np.ndarray) -> None:
    calls: list[tuple[float, str]] = []
    p = fit_projection(digits, "pca", 3, progress=lambda f, m: calls.append((f, m)))
    assert p.coords.shape == (len(digits), 3) and p.coords.dtype == np.float32
    assert np.var(p.coords, axis=0)[0] >= np.var(p.coords, axis=0)[2]  # sorted by variance
    assert calls[0][0] == 0.0 and calls[-1][0] == 1.0


# -- t-SNE / UMAP ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_nonlinear_projection_preserves_neighbourhoods(method: str, digits: np.ndarray,
                                                       nonlinear: dict) -> None:
    p, calls = nonlinear[method]
    assert p.coords.shape == (len(digits), 2)
    assert trustworthiness(digits, p.coords, n_neighbors=10) >= 0.9
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(fractions) > 3 and fractions == sorted(fractions)  # reports during the fit too
    assert not p.invertible
    with pytest.raises(NotImplementedError, match="only PCA"):
        p.inverse_transform(p.coords[:2])


def test_nearest_neighbour_placement_after_reload_lands_on_fitted_points(digits: np.ndarray,
                                                                         nonlinear: dict) -> None:
    fitted, _ = nonlinear["tsne"]
    reloaded = Projection("tsne", 2, fitted.coords, digits)  # what a disk reload gives: no estimator
    np.testing.assert_allclose(reloaded.transform(digits[:20]), fitted.coords[:20], atol=1e-3)
    placed = reloaded.transform(digits[:5] + 0.1)  # near a point -> near its coordinates
    spread = np.ptp(fitted.coords, axis=0).max()
    assert np.abs(placed - fitted.coords[:5]).max() < 0.05 * spread
    np.testing.assert_allclose(fitted.transform(digits[:5] + 0.1, exact=False), placed)


def test_tsne_transform_places_new_points_near_their_originals(digits: np.ndarray,
                                                               nonlinear: dict) -> None:
    p, _ = nonlinear["tsne"]
    placed = p.transform(digits[:5])
    spread = np.ptp(p.coords, axis=0).max()
    assert placed.shape == (5, 2)
    assert np.median(np.linalg.norm(placed - p.coords[:5], axis=1)) < 0.1 * spread


def test_bad_requests_are_refused() -> None:
    z = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="unknown projection"):
        fit_projection(z, "isomap")
    with pytest.raises(ValueError, match="dims"):
        fit_projection(z, "pca", 4)
    with pytest.raises(ValueError, match="NaN"):
        fit_projection(np.full((10, 3), np.nan), "pca")


# -- cache ----------------------------------------------------------------------------------------
def test_cache_hit_on_second_call_returns_identical_coords() -> None:
    cache, z = ProjectionCache(), subspace_latents(100, 5, 2)
    first = cache.get("ckpt", z, "pca", 2)
    second = cache.get("ckpt", z, "pca", 2)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.coords, second.coords)
    cache.get("ckpt", z, "pca", 3)  # other dims
    cache.get("ckpt", z[:50], "pca", 2)  # other N
    cache.get("other", z, "pca", 2)  # other checkpoint
    assert (cache.hits, cache.misses) == (1, 4)


def test_disk_cache_survives_a_new_instance(tmp_path) -> None:
    z = subspace_latents(120, 6, 2)
    first = ProjectionCache(tmp_path).get("sha-abc", z, "pca", 2, seed=3)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as data:  # arrays only: loads without pickle
        assert set(data.files) >= {"coords", "method"}
    fresh = ProjectionCache(tmp_path)
    again = fresh.get("sha-abc", z, "pca", 2, seed=3)
    assert (fresh.hits, fresh.misses) == (1, 0)
    np.testing.assert_array_equal(again.coords, first.coords)
    np.testing.assert_allclose(again.inverse_transform(again.coords), z, atol=1e-4)


def test_unreadable_disk_entry_is_recomputed(tmp_path) -> None:
    z = subspace_latents(60, 4, 2)
    cache = ProjectionCache(tmp_path)
    cache.get("k", z, "pca", 2)
    next(tmp_path.glob("*.npz")).write_bytes(b"not a zip file")
    fresh = ProjectionCache(tmp_path)
    fresh.get("k", z, "pca", 2)
    assert (fresh.hits, fresh.misses) == (0, 1)


def test_single_flight_computes_once_for_concurrent_requests(monkeypatch) -> None:
    computed = []
    real_fit = projection.fit_projection

    def slow_fit(*args, **kwargs):
        computed.append(1)
        time.sleep(0.3)  # long enough for the second thread to arrive while the first computes
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(projection, "fit_projection", slow_fit)
    cache, z = ProjectionCache(), subspace_latents(80, 4, 2)
    results: list[Projection] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", z, "pca", 2)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert results[0] is results[1]


def test_long_jobs_run_one_per_checkpoint_at_a_time(monkeypatch) -> None:
    """t-SNE and UMAP of one checkpoint never fit together; another checkpoint's fit is not held up."""
    spans: dict[str, tuple[float, float]] = {}

    def timed_fit(z, method, dims, seed=0, progress=None, **kwargs):
        start = time.perf_counter()
        time.sleep(0.3)
        spans[threading.current_thread().name] = (start, time.perf_counter())
        return projection.Projection.__new__(projection.Projection)

    monkeypatch.setattr(projection, "fit_projection", timed_fit)
    cache, z = ProjectionCache(), subspace_latents(60, 4, 2)
    jobs = {"a-tsne": ("ckpt-a", "tsne"), "a-umap": ("ckpt-a", "umap"), "b-umap": ("ckpt-b", "umap")}
    threads = [threading.Thread(target=cache.get, args=(key, z, method, 2), name=name)
               for name, (key, method) in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert set(spans) == set(jobs)
    assert not overlap("a-tsne", "a-umap")
    assert overlap("b-umap", "a-tsne") or overlap("b-umap", "a-umap")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="numba's change shows only with 2+ cores")
def test_umap_leaves_torch_threads_as_it_found_them(digits: np.ndarray) -> None:
    """numba's OpenMP layer sets the calling thread's OpenMP count to every core; torch shares it.
    A server thread that drew a UMAP map must keep --torch-threads for the slider decodes it runs next."""
    seen = {}

    def draw_then_count() -> None:  # a fresh thread, as a server worker: its own OpenMP settings
        torch.set_num_threads(1)
        p = fit_projection(digits[:300], "umap", 2, seed=0, options=OPTIONS["umap"])
        seen["after fit"] = torch.get_num_threads()
        p.transform(digits[300:310])
        seen["after transform"] = torch.get_num_threads()

    worker = threading.Thread(target=draw_then_count)
    worker.start()
    worker.join()
    assert seen == {"after fit": 1, "after transform": 1}
