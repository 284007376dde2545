"""A million points (issue #31, item 1): embeddings files of 1,000,000 rows are read row group by
row group (parquet) or streamed (npz), mapped whole (not a 70k subset), fitted on a seeded subset by
t-SNE / UMAP with every other row placed, drawn thinned by density above MAX_DRAWN_POINTS with every
ringed point kept, and refused in one sentence past the limits, before anything is allocated."""

from __future__ import annotations

import json
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.manifold import trustworthiness

from vaescope.explorer.core import figures, maps
from vaescope.explorer.core.embeddings import EmbeddingsError, read_embeddings, table_from_arrays
from vaescope.explorer.core.maps import add_highlights, draw_map, highlights_json
from vaescope.explorer.core.projection import ProjectionCache, fit_projection, fit_rows
from vaescope.explorer.core.store import ModelStore
from vaescope.limits import MAX_DRAWN_POINTS, MAX_EMBEDDING_FILE_ROWS, MAX_FIT_POINTS

MILLION, DIM = 1_000_000, 16


def clustered(n: int, d: int = DIM, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n codes [n, d] float32 in ``classes`` Gaussian clusters, and their labels [n]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(scale=4, size=(classes, d)).astype(np.float32)
    return (centres[labels] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32), labels


@pytest.fixture(scope="module")
def million() -> tuple[np.ndarray, np.ndarray]:
    return clustered(MILLION)


@pytest.fixture(scope="module")
def million_entry(million: tuple[np.ndarray, np.ndarray]):
    codes, labels = million
    store = ModelStore(None, torch.device("cpu"))
    store.add_embeddings("million", table_from_arrays(codes, labels=labels, class_names=[f"c{i}" for i in range(10)]))
    return store.open_name("million")


# -- reading ------------------------------------------------------------------------------------------
def test_a_million_row_parquet_file_is_read_row_group_by_row_group(tmp_path: Path, million, monkeypatch) -> None:
    codes, labels = million
    path = tmp_path / "million.parquet"
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), DIM)
    pq.write_table(pa.table({"vector": vectors, "label": pa.array(labels)}), path, row_group_size=125_000)
    asked: list[list[int]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - records what each read asks for
        asked.append(list(kwargs["row_groups"]))
        return iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    table = read_embeddings(path)
    assert table.latents.shape == (MILLION, DIM) and table.latents.dtype == np.float32
    assert np.array_equal(table.latents, codes) and np.array_equal(table.labels, labels)
    assert table.origin == "the 1,000,000 rows of million.parquet"
    # each column is read one row group at a time: 8 groups, for the vectors and for the labels
    assert asked == [[g] for g in range(8)] * 2


def test_a_million_row_npz_is_streamed_into_one_array(tmp_path: Path, million) -> None:
    """The codes are read in blocks straight into the result: numpy's peak is about the result, not
    a second copy of the file's array."""
    codes, labels = million
    path = tmp_path / "million.npz"
    np.savez(path, latents=codes, labels=labels)
    tracemalloc.start()
    try:
        table = read_embeddings(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = table.latents.nbytes + table.labels.nbytes  # 64 MB + 8 MB
    assert np.array_equal(table.latents, codes) and np.array_equal(table.labels, labels)
    assert peak < result + 48 * 2**20, f"reading took {peak / 2**20:.0f} MiB for a {result / 2**20:.0f} MiB result"


def declared_npz(path: Path, shape: tuple[int, ...], descr: str) -> Path:
    """An .npz whose latents header declares ``shape`` of ``descr`` and holds 16 bytes of data."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("latents.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16))
    return path


@pytest.mark.parametrize(("shape", "descr", "message"), [
    ((10**9, 16), "<f4", f"at most {MAX_EMBEDDING_FILE_ROWS:,} points"),
    ((MILLION, 16), "|O", "Python objects, which are never unpickled"),
    ((MILLION, 10**6), "<f4", "at most 2,000,000 points, 8192 dimensions"),
])
def test_past_the_limits_a_file_is_refused_in_one_sentence_before_anything_is_allocated(
        tmp_path: Path, shape: tuple[int, ...], descr: str, message: str) -> None:
    path = declared_npz(tmp_path / "declared.npz", shape, descr)
    tracemalloc.start()
    try:
        with pytest.raises(EmbeddingsError) as refused:
            read_embeddings(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(refused.value)
    assert text.startswith("declared.npz: ") and message in text and "\n" not in text
    assert peak < 4 * 2**20  # a refusal reads headers only


def test_nan_codes_in_a_million_rows_are_refused(tmp_path: Path, million) -> None:
    codes = million[0].copy()
    codes[987_654, 3] = np.nan
    np.savez(tmp_path / "nan.npz", latents=codes)
    with pytest.raises(EmbeddingsError, match=r"^nan.npz: latents contain NaN or infinite values$"):
        read_embeddings(tmp_path / "nan.npz")


# -- the map holds every row ----------------------------------------------------------------------------
def test_an_embeddings_map_holds_every_row_of_a_million_without_copying_them(million_entry) -> None:
    entry = million_entry
    assert len(entry.latents) == MILLION and entry.latents.mean is entry.model.table.latents  # no copy
    assert entry.data_origin == "the given embeddings"  # no "seeded subset" note
    view, figure = draw_map(entry, ProjectionCache(None), "pca")
    assert len(view.indices) == MILLION and view.projection.coords.shape == (MILLION, 2)
    drawn = [t for t in figure.data if t.customdata is not None]
    assert sum(len(t.customdata) for t in drawn) == len(view.drawn) <= MAX_DRAWN_POINTS
    assert "1,000,000 images" in figure.layout.title.text
    assert "drawing 200,000 of the 1,000,000 points" in figure.layout.title.text
    sent = figure.to_json()  # what gr.Plot sends: plotly's base64 typed arrays, float32 coordinates
    assert len(sent) < 5_000_000
    x = json.loads(sent)["data"][0]["x"]
    assert x["dtype"] == "f4" and "bdata" in x


def test_a_store_caps_an_embeddings_map_at_its_own_limit(million) -> None:
    codes, labels = million
    store = ModelStore(None, torch.device("cpu"), max_embedding_points=1_000)
    store.add_embeddings("capped", table_from_arrays(codes[:3_000], labels=labels[:3_000]))
    entry = store.open_name("capped")
    assert len(entry.latents) == 1_000 and "a seeded subset (seed 0) of 1,000 of them" in entry.data_origin
    assert ModelStore(None, torch.device("cpu")).max_points == 70_000  # a model's map: evaluation images


# -- t-SNE / UMAP: a subset fitted, the rest placed ---------------------------------------------------
def test_fit_rows_are_a_seeded_subset_for_tsne_and_umap_only() -> None:
    rows = fit_rows(MILLION, "tsne")
    assert len(rows) == MAX_FIT_POINTS and np.array_equal(rows, fit_rows(MILLION, "umap"))
    assert (np.diff(rows) > 0).all() and rows[-1] < MILLION
    assert fit_rows(MILLION, "pca") is None and fit_rows(MAX_FIT_POINTS, "umap") is None


def test_a_subset_fit_places_every_other_row_near_its_neighbours(tmp_path: Path) -> None:
    codes, _ = clustered(3_000, d=8, classes=5)
    seen: list[tuple[float, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        projection = fit_projection(codes, "tsne", max_fit=1_000, progress=lambda f, m: seen.append((f, m)))
    assert projection.coords.shape == (3_000, 2) and np.isfinite(projection.coords).all()
    assert len(projection.fitted) == 1_000 and np.array_equal(projection.fitted, fit_rows(3_000, "tsne", 1_000))
    placed = np.setdiff1d(np.arange(3_000), projection.fitted)
    assert trustworthiness(codes[placed], projection.coords[placed], n_neighbors=10) > 0.9
    assert projection.note == ("t-SNE fitted on a seeded subset of 1,000 of the 3,000 points; the other 2,000 "
                               "placed by their nearest fitted neighbours")
    assert seen[-2][1] == "tsne: placed 2,000 of the other 2,000 points" and seen[-1][0] == 1.0
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))  # progress only moves forward
    # a fitted code lands where the fit put it, and new codes among the fitted ones
    row = int(projection.fitted[7])
    assert np.allclose(projection.transform(codes[[row]], exact=False), projection.coords[row], atol=1e-4)
    # the disk cache keeps which rows were fitted
    cache = ProjectionCache(tmp_path)
    ck = ("k", "tsne", 2, 0, 3_000, "content")
    cache._save(ck, projection)
    reloaded = ProjectionCache(tmp_path)._load(ck, codes)
    assert np.array_equal(reloaded.fitted, projection.fitted) and reloaded.note == projection.note


def test_the_map_title_says_how_a_subset_fit_was_made(monkeypatch) -> None:
    codes, labels = clustered(3_000, d=8, classes=5)
    store = ModelStore(None, torch.device("cpu"))
    store.add_embeddings("codes", table_from_arrays(codes, labels=labels))
    monkeypatch.setattr("vaescope.explorer.core.projection.MAX_FIT_POINTS", 1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view, figure = draw_map(store.open_name("codes"), ProjectionCache(None), "tsne")
    assert "t-SNE fitted on a seeded subset of 1,000 of the 3,000 points" in figure.layout.title.text
    assert view.drawn is None and "drawing" not in figure.layout.title.text


# -- thinning for the browser ---------------------------------------------------------------------------
def test_decimation_thins_crowds_keeps_outliers_and_every_kept_row() -> None:
    rng = np.random.default_rng(0)
    crowd = rng.normal(0, 1, (300_000, 2))
    outliers = rng.uniform(30, 40, (500, 2))
    coords = np.concatenate([crowd, outliers]).astype(np.float32)
    keep = rng.choice(300_000, 5_000, replace=False)
    rows = figures.decimate(coords, 50_000, keep)
    assert len(rows) == 50_000 and (np.diff(rows) > 0).all()
    assert np.isin(keep, rows).all() and np.isin(np.arange(300_000, 300_500), rows).all()
    assert np.array_equal(rows, figures.decimate(coords, 50_000, keep))  # seeded: the same every time
    assert np.array_equal(figures.decimate(coords[:1_000], 50_000), np.arange(1_000))  # small maps: all


def test_every_ringed_point_of_a_thinned_map_is_drawn_and_clickable(million_entry) -> None:
    entry = million_entry
    matches = np.flatnonzero(entry.latents.labels == 3)[::97]  # 1,000-odd points of class c3
    neighbours = np.arange(500_000, 500_010)
    view, figure = draw_map(entry, ProjectionCache(None), "pca", keep=matches[:10])
    assert np.isin(matches[:10], view.indices[view.drawn]).all()  # kept by the drawing itself
    add_highlights(figure, view, {"matches": matches, "neighbours": neighbours})
    data = [t for t in figure.data if t.customdata is not None]
    clickable = np.concatenate([np.asarray(t.customdata) for t in data])
    assert np.isin(matches, clickable).all() and np.isin(neighbours, clickable).all()
    back = next(t for t in figure.data if t.name == "ringed points")
    assert len(back.customdata) == len(np.setdiff1d(np.concatenate([matches, neighbours]), view.indices[view.drawn]))
    colours = dict(zip(back.customdata.tolist(), back.marker.color, strict=True))
    c3 = next(t.marker.color for t in data if t.name == "c3")
    assert all(colours[int(i)] == c3 for i in matches if int(i) in colours)  # drawn in their class colour
    rings = json.loads(highlights_json(view, {"matches": matches}))
    assert len(rings["matches"]) == len(matches) and len(rings["neighbours"]) == 0


def test_maps_up_to_the_drawing_limit_are_drawn_whole(monkeypatch) -> None:
    codes, labels = clustered(2_000, d=4, classes=3)
    store = ModelStore(None, torch.device("cpu"))
    store.add_embeddings("small", table_from_arrays(codes, labels=labels))
    view, figure = draw_map(store.open_name("small"), ProjectionCache(None), "pca")
    assert view.drawn is None and sum(len(t.customdata) for t in figure.data if t.customdata is not None) == 2_000
    monkeypatch.setattr(maps, "MAX_DRAWN_POINTS", 500)
    view, figure = draw_map(store.open_name("small"), ProjectionCache(None), "pca")
    assert len(view.drawn) == 500 and "drawing 500 of the 2,000 points" in figure.layout.title.text
