"""Figure 3: latent maps of 70k x 16 codes (PCA, UMAP, t-SNE) and the projection cache.

The codes are Fashion-MNIST (train + test) encoded by the shipped VAE, or, before one is shipped,
70k synthetic 16-d codes in 10 Gaussian clusters. Each method of ``vaescope.explorer.core.projection`` is timed
against the plain library call on the same points; UMAP's layout quality is compared by
trustworthiness (k = 10) on one fixed random sample of 5k points. sklearn's t-SNE is too slow for
70k points on a small machine, so above 10k points it is timed on a 10k subsample and its 70k time
is extrapolated as N log N (labelled as such), unless that predicts <= 10 minutes.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Figure, Row, at_most, median, repeat, shipped_fmnist, timed

FULL_POINTS, QUICK_POINTS = 70_000, 5_000
TRUST_SAMPLE, TRUST_K = 5_000, 10
TSNE_CAP, SKLEARN_LIMIT_S = 10_000, 600.0
WARMUP_POINTS = 4_200  # above umap-learn's 4096-point switch to approximate neighbours (pynndescent)
TARGETS_S = {"pca": 1.0, "umap": 60.0, "tsne": 120.0, "cache": 0.5}
Fit = Callable[[np.ndarray], np.ndarray]  # codes [N, D] -> coordinates [N, 2]


def fmnist_codes(path: Path, n: int) -> np.ndarray:
    """Posterior means [n, D] of n Fashion-MNIST images (train + test, a seeded subset if n < 70k)."""
    import torch

    from vaescope.training.checkpoint import load_checkpoint
    from vaescope.training.data import load_dataset

    data = load_dataset("fashion-mnist", image_size=28)
    images = torch.cat([data.train.images, data.test.images])
    if n < len(images):
        images = images[np.sort(np.random.default_rng(0).choice(len(images), n, replace=False))]
    model = load_checkpoint(path, torch.device("cpu"))[0]
    with torch.inference_mode():
        means = [model.encode(x.float() / 255, model.condition.for_class(0, len(x))).mean
                 for x in images.split(1024)]
    return torch.cat(means).float().numpy()


def codes(n: int) -> tuple[np.ndarray, str]:
    """n latent codes [n, 16] and where they came from."""
    shipped = shipped_fmnist()
    if shipped:
        return fmnist_codes(shipped[0], n), f"Fashion-MNIST encoded by {shipped[0].name} (shipped)"
    from sklearn.datasets import make_blobs

    z, _ = make_blobs(n_samples=n, n_features=16, centers=10, random_state=0)
    return z.astype(np.float32), "synthetic: make_blobs, 10 centres in 16-d (no shipped checkpoint yet)"


def trust(z: np.ndarray, coords: np.ndarray, sample: np.ndarray) -> float:
    from sklearn.manifold import trustworthiness

    return float(trustworthiness(z[sample], coords[sample], n_neighbors=TRUST_K))


def fits() -> dict[str, Fit]:
    """The explorer's projections and their plain-library baselines, as codes -> coords."""
    import umap
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from vaescope.explorer.core.projection import fit_projection

    ours = {m: (lambda z, m=m: fit_projection(z, m).coords) for m in ("pca", "umap", "tsne")}
    return ours | {"pca_base": lambda z: PCA(2).fit_transform(z),
                   "umap_base": lambda z: umap.UMAP().fit_transform(z),
                   "tsne_base": lambda z: TSNE().fit_transform(z)}


def time_fit(fit: Fit, z: np.ndarray, n: int, sample: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """(seconds, trustworthiness on ``sample`` or []) of ``n`` fits."""
    seconds, scores = [], []
    for _ in range(n):
        t, coords = timed(lambda: fit(z))
        seconds.append(t)
        if sample is not None:
            scores.append(trust(z, coords, sample))
    return seconds, scores


def explorer_fits(z: np.ndarray, method: str, folder: Path, n: int, n_hits: int,
                  sample: np.ndarray) -> dict[str, list[float]]:
    """``n`` fits through ``vaescope.explorer.core.projection`` (the first through a fresh ProjectionCache, as
    the app does), each scored by trustworthiness on ``sample``; then second calls that hit the
    memory cache, and calls from fresh caches that hit the .npz files on disk."""
    from vaescope.explorer.core.projection import ProjectionCache, fit_projection

    cache = ProjectionCache(folder)
    calls = [lambda: cache.get("bench", z, method, 2)] + [lambda: fit_projection(z, method)] * (n - 1)
    seconds, scores = [], []
    for call in calls:
        t, projection = timed(call)
        seconds.append(t)
        scores.append(trust(z, projection.coords, sample))
    memory = repeat(lambda: cache.get("bench", z, method, 2), n_hits, warmup=0)
    disk = [timed(lambda: ProjectionCache(folder).get("bench", z, method, 2))[0] for _ in range(n_hits)]
    return {"seconds": seconds, "trust": scores, "memory": memory, "disk": disk}


def tsne_baseline(z: np.ndarray, f: dict[str, Fit], n: int) -> dict[str, Any]:
    """sklearn t-SNE on all points, or on a 10k subsample with an N log N extrapolation."""
    if len(z) <= TSNE_CAP:
        return {"seconds": time_fit(f["tsne_base"], z, n)[0], "how": f"sklearn TSNE() on all {len(z)} points"}
    sub = z[np.random.default_rng(1).choice(len(z), TSNE_CAP, replace=False)]
    sk_sub, ours_sub = time_fit(f["tsne_base"], sub, n)[0], time_fit(f["tsne"], sub, n)[0]
    scale = len(z) * math.log(len(z)) / (TSNE_CAP * math.log(TSNE_CAP))
    predicted = median(sk_sub) * scale
    out = {"subsample": TSNE_CAP, "sklearn_subsample_s": sk_sub, "ours_subsample_s": ours_sub,
           "predicted_full_s": predicted}
    if predicted <= SKLEARN_LIMIT_S:
        return out | {"seconds": time_fit(f["tsne_base"], z, 1)[0], "how": f"sklearn TSNE() on all {len(z)} points"}
    return out | {"seconds": [predicted], "extrapolated": True,
                  "how": (f"EXTRAPOLATED: sklearn TSNE() timed on a {TSNE_CAP} subsample (n={n}), scaled by "
                          f"N log N to {len(z)} points (> {SKLEARN_LIMIT_S / 60:.0f} min, so not run)")}


def run(quick: bool) -> Figure:
    """Figure 3 rows: PCA, UMAP (+ trustworthiness), t-SNE and cache-hit times."""
    n_fast, n_heavy = (3, 1) if quick else (5, 3)
    z, source = codes(QUICK_POINTS if quick else FULL_POINTS)
    sample = np.sort(np.random.default_rng(0).choice(len(z), min(TRUST_SAMPLE, len(z)), replace=False))
    f = fits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn's n_jobs / sklearn's FutureWarnings
        # Untimed warm-up: numba compiles UMAP's code on first use, and pynndescent's only above
        # 4096 points (smaller inputs get exact neighbours), so warm up just above that size.
        for name, size in (("umap", WARMUP_POINTS), ("umap_base", WARMUP_POINTS), ("tsne", 1000)):
            f[name](z[:size])
        pca, pca_base = time_fit(f["pca"], z, n_fast)[0], time_fit(f["pca_base"], z, n_fast)[0]
        with tempfile.TemporaryDirectory(prefix="vaescope-bench-") as tmp:
            ours = {m: explorer_fits(z, m, Path(tmp), n_heavy, n_fast, sample) for m in ("umap", "tsne")}
        base_s, base_trust = time_fit(f["umap_base"], z, n_heavy, sample)
        sk = tsne_baseline(z, f, n_heavy)
    umap_s, umap_trust, tsne_s = ours["umap"]["seconds"], ours["umap"]["trust"], ours["tsne"]["seconds"]
    raw = {"pca_s": pca, "pca_sklearn_s": pca_base, "explorer": ours, "umap_default_s": base_s,
           "umap_default_trust": base_trust, "tsne_sklearn": sk}
    rows = [
        Row(f"PCA, {len(z):,} x {z.shape[1]}", median(pca), "s", n_fast, median(pca_base), "sklearn PCA(2)",
            f"<= {TARGETS_S['pca']:g} s", at_most(median(pca), TARGETS_S["pca"])),
        Row(f"UMAP, {len(z):,} points", median(umap_s), "s", n_heavy, median(base_s), "umap.UMAP() defaults",
            f"<= {TARGETS_S['umap']:g} s", at_most(median(umap_s), TARGETS_S["umap"])),
        Row(f"UMAP trustworthiness (k={TRUST_K}, {len(sample):,} sample)", median(umap_trust), "", n_heavy,
            median(base_trust), "umap.UMAP() defaults", ">= default − 0.01",
            median(umap_trust) >= median(base_trust) - 0.01),
        Row(f"t-SNE, {len(z):,} points", median(tsne_s), "s", n_heavy, median(sk["seconds"]),
            "sklearn TSNE()" + (" EXTRAPOLATED from 10k" if sk.get("extrapolated") else ""),
            f"<= {TARGETS_S['tsne']:g} s", at_most(median(tsne_s), TARGETS_S["tsne"]), note=sk["how"]),
    ]
    if "ours_subsample_s" in sk:
        rows.append(Row(f"t-SNE, same {TSNE_CAP:,}-point subsample", median(sk["ours_subsample_s"]), "s",
                        n_heavy, median(sk["sklearn_subsample_s"]), "sklearn TSNE(), measured"))
    for method, label in (("umap", "UMAP"), ("tsne", "t-SNE")):
        for where in ("memory", "disk"):
            hit = median(ours[method][where])
            rows.append(Row(f"{label} second call, {where} cache", hit, "s", n_fast, ours[method]["seconds"][0],
                            "first call (fit)", f"< {TARGETS_S['cache']:g} s", hit < TARGETS_S["cache"]))
    return Figure(rows, {"points": len(z), "latent_dim": z.shape[1], "source": source,
                         "tsne_trustworthiness_explorer": median(ours["tsne"]["trust"]), "raw": raw})
