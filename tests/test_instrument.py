"""The map as an instrument, its core: exact nearest neighbours in latent space (checked against
scikit-learn), search and filter, a selection's summary and its export (read back, the npz as an
embeddings file), and the decoded manifold grid."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from vaescope.errors import InputError
from vaescope.explorer.core import neighbours as neighbours_module
from vaescope.explorer.core.codes import decode
from vaescope.explorer.core.embeddings import read_embeddings
from vaescope.explorer.core.manifold import grid_codes
from vaescope.explorer.core.neighbours import nearest
from vaescope.explorer.core.selection import export, search, summarize
from vaescope.explorer.core.store import ModelStore

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32)


@pytest.mark.parametrize("block", [neighbours_module.BLOCK_ROWS, 7, 1000])
def test_nearest_neighbours_are_scikit_learns(codes: np.ndarray, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours_module, "BLOCK_ROWS", block)
    exact = NearestNeighbors(n_neighbors=11, algorithm="brute").fit(codes)
    want_d, want_i = exact.kneighbors(codes[[17]])
    found = nearest(codes, 17, 10)  # a row: itself left out
    np.testing.assert_array_equal(found.indices, want_i[0, 1:])
    np.testing.assert_allclose(found.distances, want_d[0, 1:], rtol=1e-5)
    query = codes[17] + 0.01
    want_i = exact.kneighbors(query[None], n_neighbors=5, return_distance=False)[0]
    np.testing.assert_array_equal(nearest(codes, query, 5).indices, want_i)  # a code: every row counts


def test_neighbour_requests_outside_the_limits_are_refused(codes: np.ndarray) -> None:
    with pytest.raises(InputError, match="between 1 and 100, got 101"):
        nearest(codes, 0, 101)
    with pytest.raises(InputError, match="point 5000 is not among the 5,000 points"):
        nearest(codes, 5000, 3)
    with pytest.raises(InputError, match="must have 8 values, got 3"):
        nearest(codes, np.zeros(3), 3)
    assert len(nearest(codes[:3], 0, 10).indices) == 2  # fewer points than asked: all the others


def test_search_by_index_label_class_name_and_column() -> None:
    labels = np.array([0, 1, 2, 1, -1, 2])
    names = ("T-shirt", "Shirt", "Sneaker")
    assert search("#4", labels, names).tolist() == [4] and search("99", labels, names).tolist() == []
    assert search("label:1", labels, names).tolist() == [1, 3]
    assert search("shirt", labels, names).tolist() == [1, 3]  # the exact name wins over T-shirt
    assert search("SHIRT", labels, names).tolist() == [1, 3]
    assert search("sne", labels, names).tolist() == [2, 5]  # a part of a name
    assert search("boot", labels, names).tolist() == [] and search("", labels, names).tolist() == []
    meta = {"split": np.array(["a", "b", "a", "a", "b", "b"])}
    assert search("split = b", labels, names, meta).tolist() == [1, 4, 5]
    with pytest.raises(InputError, match="no column 'colour' to search"):
        search("colour=red", labels, names, meta)
    with pytest.raises(InputError, match="at most 200 characters"):
        search("x" * 201, labels, names)


def test_a_selection_summary_and_its_export_round_trip(codes: np.ndarray, tmp_path: Path) -> None:
    labels = np.arange(len(codes)) % 3 - (np.arange(len(codes)) % 7 == 0)  # some -1
    names = ("a", "b, with a comma", 'c "quoted"')
    chosen = np.array([9, 3, 3, 40, 41, 42, 0])
    sel = summarize(chosen, codes, labels, names)
    assert sel.size == 6 and sel.indices.tolist() == [0, 3, 9, 40, 41, 42]
    assert sum(c for _, c in sel.label_counts) == 6 and sel.label_counts[0][1] >= sel.label_counts[-1][1]
    np.testing.assert_allclose(sel.mean_code, codes[sel.indices].mean(0), rtol=1e-5)
    rows = list(csv.DictReader(io.StringIO(export(sel, codes, labels, names, "csv").decode())))
    assert [int(r["index"]) for r in rows] == sel.indices.tolist()
    assert [r["class_name"] for r in rows] == [("?" if labels[i] < 0 else names[labels[i]]) for i in sel.indices]
    np.testing.assert_allclose([[float(r[f"z{d}"]) for d in range(8)] for r in rows], codes[sel.indices], rtol=1e-6)
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(export(sel, codes, labels, names, "parquet")))
    assert table.column("index").to_pylist() == sel.indices.tolist()
    np.testing.assert_allclose(np.stack(table.column("code").to_numpy(zero_copy_only=False)), codes[sel.indices])
    path = tmp_path / "selection.npz"
    path.write_bytes(export(sel, codes, labels, names, "npz"))
    reopened = read_embeddings(path)  # an exported selection opens as an embeddings map
    np.testing.assert_array_equal(reopened.latents, codes[sel.indices])
    assert reopened.class_names == names
    with pytest.raises(InputError, match="the selection is empty"):
        summarize(np.zeros(0, int), codes, labels, names)
    with pytest.raises(InputError, match="exported as csv, parquet, npz"):
        export(sel, codes, labels, names, "xlsx")


def test_the_manifold_grid_spans_the_prior_quantiles_and_decodes_a_2d_vae() -> None:
    codes = grid_codes(np.full(4, 0.5, np.float32), (1, 3), 5)
    assert codes.shape == (25, 4) and (codes[:, [0, 2]] == 0.5).all()
    ticks = np.unique(codes[:, 1])
    np.testing.assert_allclose(ticks, -ticks[::-1], atol=1e-6)  # symmetric about the prior's mean
    assert ticks[0] == pytest.approx(-1.6449, abs=1e-3)
    with pytest.raises(InputError, match="two different dimensions"):
        grid_codes(np.zeros(4), (1, 1), 5)
    with pytest.raises(InputError, match="2 to 20 steps"):
        grid_codes(np.zeros(4), (0, 1), 21)
    entry = ModelStore(SHIPPED, torch.device("cpu")).open_name("mnist/vae-2d.safetensors")
    images = decode(entry, grid_codes(np.zeros(2, np.float32), (0, 1), 6), None)
    assert images.shape == (36, 1, 28, 28)
    corners = images[[0, 5, 30, 35]].reshape(4, -1)
    assert min(np.abs(a - b).mean() for k, a in enumerate(corners) for b in corners[k + 1:]) > 0.02  # the plane changes
