"""Figure 6: nearest-neighbour queries in latent space at a million points.

vaescope's exact blocked brute force (``explorer/core/neighbours.py``) against scikit-learn's exact
``NearestNeighbors`` (a ball tree, built once) and pynndescent's approximate index (umap-learn's own
dependency; built once), with the approximate index's recall@10 against the exact answers. The
baseline of each query row is scikit-learn's exact query, measured in the same run. The approximate
index is built on all the codes (1,000,000 in the full run): its build takes minutes on 2 cores,
which is reason enough not to need one when exact search takes tens of milliseconds.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import Figure, Row, at_most, median, repeat

K = 10
TARGET_MS = 100.0  # a neighbour list should feel immediate after a click


def run(quick: bool) -> Figure:
    from pynndescent import NNDescent
    from sklearn.neighbors import NearestNeighbors

    from vaescope.explorer.core.neighbours import nearest

    n_points, dim, n_queries = (100_000, 16, 20) if quick else (1_000_000, 16, 50)
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(n_points, dim)).astype(np.float32)
    queries = rng.choice(n_points, n_queries, replace=False)

    ours = repeat(lambda: [nearest(codes, int(q), K) for q in queries[:5]], 3)
    ours_ms = median(ours) / 5 * 1000
    start = time.perf_counter()
    tree = NearestNeighbors(n_neighbors=K + 1).fit(codes)
    tree_build = time.perf_counter() - start
    theirs = repeat(lambda: [tree.kneighbors(codes[[q]]) for q in queries[:5]], 3)
    tree_ms = median(theirs) / 5 * 1000
    start = time.perf_counter()
    approx = NNDescent(codes, n_neighbors=30, random_state=0, n_jobs=-1)
    approx.prepare()
    approx_build = time.perf_counter() - start
    approx_ms = median(repeat(lambda: [approx.query(codes[[q]], k=K + 1) for q in queries[:5]], 3)) / 5 * 1000
    recall = []
    for q in queries:
        exact = set(nearest(codes, int(q), K).indices.tolist())
        found = [i for i in approx.query(codes[[q]], k=K + 1)[0][0].tolist() if i != q][:K]
        recall.append(len(exact & set(found)) / K)
    size = f"{n_points:,} x {dim}"
    rows = [
        Row(f"neighbour query, exact brute force (vaescope), {size}", ours_ms, "ms", 3, tree_ms,
            "scikit-learn exact query", f"<= {TARGET_MS:g} ms", at_most(ours_ms, TARGET_MS), note="no index"),
        Row(f"neighbour query, scikit-learn exact, {size}", tree_ms, "ms", 3,
            note=f"index built once in {tree_build:.1f} s"),
        Row(f"neighbour query, pynndescent approximate, {size}", approx_ms, "ms", 3, tree_ms,
            "scikit-learn exact query", note=f"index built once in {approx_build:.1f} s; recall@{K} "
                                             f"{np.mean(recall):.3f} over {len(queries)} queries"),
    ]
    return Figure(rows, {"recall_at_10": float(np.mean(recall)), "tree_build_s": tree_build,
                         "approx_build_s": approx_build})
