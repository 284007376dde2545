"""The map as an instrument, in the page's handlers (no browser): a click's nearest neighbours in
latent space, a search whose matches stay ringed across redraws, a lasso / box selection (its
summary, its mean decoded and traversed, its export, and ``app.selection()``), the map's density
and named clusters, and the decoded manifold grid; each request value checked, each result for a
model the session has left dropped."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from vaescope.explorer.core.embeddings import read_embeddings, table_from_arrays
from vaescope.explorer.core.maps import HIGHLIGHTS, density, find_clusters
from vaescope.explorer.core.neighbours import nearest
from vaescope.explorer.core.selection import MAX_SELECTION_CHARS, read_selection
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.ui.app import build_app
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_SELECTION

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


@pytest.fixture(scope="module")
def store(tiny_checkpoint_dir: Path) -> ModelStore:
    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"))
    rng = np.random.default_rng(0)
    store.add_embeddings("codes", table_from_arrays(rng.normal(size=(60, 4)), labels=rng.integers(0, 3, 60),
                                                    class_names=["ant", "bee", "cat"]))
    return store


@pytest.fixture(scope="module")
def app(store: ModelStore):
    return build_app(store=store)


def switched(app, name: str, draw: bool = True) -> tuple[Session, object]:
    """A session on model ``name`` (switched through the model panel), its 2D PCA map drawn."""
    session = Session()
    app.panels["models"].load_checkpoint(name, session)
    if draw:
        app.panels["map"].draw_map("pca", 2, "class", "none", 0, "z:0", session)
    return session, app.ctx.store.open_name(name)


def click(index: int) -> str:
    return json.dumps({"kind": "point", "index": index})


def lasso(indices: list) -> str:
    return json.dumps({"indices": indices})


def rings(out: dict, panel) -> dict[str, list]:
    return json.loads(out[panel.rings])


def trace(figure, name: str):
    return next(t for t in figure.data if t.name == name)


def pixels(update) -> np.ndarray:
    """The picture an image update shows (Gradio has already saved it as a file)."""
    from PIL import Image

    return np.asarray(Image.open(update.value["path"]))


# -- structure: density and clusters ----------------------------------------------------------------
def test_separated_blobs_are_found_and_named_by_their_majority_label() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], float)
    coords = np.concatenate([rng.normal(c, 0.6, (400, 2)) for c in centres])
    labels = np.repeat([0, 1, 2, 3], 400)
    labels[:40] = 1  # a tenth of the first blob carries another label: still named by its majority
    found = find_clusters(coords, labels, ["ant", "bee", "cat", "dog"])
    assert sorted(c.name for c in found) == ["ant (90%)", "bee (100%)", "cat (100%)", "dog (100%)"]
    for cluster in found:
        want = centres[["ant", "bee", "cat", "dog"].index(cluster.name.split()[0])]
        assert np.linalg.norm(cluster.centre - want) < 0.3
    unlabelled = find_clusters(coords, np.full(len(coords), -1), [])
    assert sorted(c.name for c in unlabelled) == [f"cluster {k} (100%)" for k in (1, 2, 3, 4)]
    assert find_clusters(rng.normal(size=(5, 2)), np.zeros(5, int), ["a"]) == []  # too few points to cluster
    xs, ys, z = density(coords)
    peak = np.unravel_index(z.argmax(), z.shape)
    assert min(np.linalg.norm([xs[peak[1]], ys[peak[0]]] - c) for c in centres) < 1.0  # the density peaks at a blob


def test_structure_is_drawn_on_a_2d_map_and_named_by_component_for_a_mixture(app) -> None:
    panel = app.panels["map"]
    session, entry = switched(app, "tiny-vae.safetensors")
    out = panel.draw_map("pca", 2, "class", "none", 0, "z:0", session, True)
    figure = out[panel.plot]
    contour = trace(figure, "density")
    assert contour.type == "contour" and contour.hoverinfo == "skip"  # never takes a click from a point
    names = [a.text for a in figure.layout.annotations]
    assert names and all(n.split(" (")[0] in entry.description.class_names or n.split(" (")[0].isdigit() for n in names)
    plain = panel.draw_map("pca", 2, "class", "none", 0, "z:0", session)[panel.plot]
    assert "density" not in [t.name for t in plain.data] and not plain.layout.annotations
    flat = panel.draw_map("pca", 3, "class", "none", 0, "z:0", session, True)
    assert "density" not in [t.name for t in flat[panel.plot].data]
    assert "density and clusters are drawn on 2D maps" in flat[panel.info]

    session, gmvae = switched(app, "tiny-gmvae.safetensors")
    figure = panel.draw_map("pca", 2, "class", "none", 0, "z:0", session, True)[panel.plot]
    names = [a.text for a in figure.layout.annotations]
    assert names and all(n.startswith("component ") for n in names), names


# -- nearest neighbours ------------------------------------------------------------------------------
def test_a_click_lists_its_nearest_neighbours_in_latent_space(app) -> None:
    panel = app.panels["map"]
    view = panel.neighbours
    session, entry = switched(app, "tiny-vae.safetensors")
    out = panel.pick(click(3), session, 5)
    want = nearest(entry.latents.mean, 3, 5)
    assert view.note in out and f"#{want.indices[0]} " in out[view.note] and "5 nearest neighbours" in out[view.note]
    assert out[view.strip].visible and out[view.strip].value is not None  # the strip of their images
    assert len(rings(out, panel)["neighbours"]) == 5 and rings(out, panel)["matches"] == []
    np.testing.assert_array_equal(session.highlights["neighbours"], want.indices)
    out = view.recount(12, session)  # another count for the same point
    assert len(rings(out, view)["neighbours"]) == 12 and "12 nearest neighbours" in out[view.note]
    for bad in (0, 101, "NaN", 2.5):
        with pytest.raises(gr.Error, match="Nearest neighbours must be a whole number between 1 and 100"):
            view.recount(bad, session)
    with pytest.raises(gr.Error, match="Nearest neighbours must be a whole number between 1 and 100"):
        panel.pick(click(3), session, 10_000)
    out = panel.pick(json.dumps({"kind": "xy", "x": 0.1, "y": -0.2}), session, 4)  # a decoded spot has neighbours too
    assert "of the decoded spot" in out[view.note] and len(rings(out, panel)["neighbours"]) == 4


def test_codes_without_images_list_their_neighbours_in_words(app) -> None:
    panel = app.panels["map"]
    session, entry = switched(app, "codes")
    out = panel.pick(click(7), session, 3)
    assert out[panel.neighbours.strip].visible is False
    note = out[panel.neighbours.note]
    assert "3 nearest neighbours" in note and any(f"({name})" in note for name in ("ant", "bee", "cat"))


# -- search ------------------------------------------------------------------------------------------
def test_a_search_rings_its_matches_and_they_stay_across_redraws(app) -> None:
    panel = app.panels["map"]
    search = panel.search
    session, entry = switched(app, "tiny-vae.safetensors")
    threes = int((entry.latents.labels == 3).sum())
    out = search.find("label:3", session)
    assert f"**{threes} points match** “label:3”" in out[search.note]
    assert len(rings(out, search)["matches"]) == threes
    out = search.find("3", session)  # a bare number names an image
    assert len(rings(out, search)["matches"]) == 1
    search.find("label:3", session)
    drawn = panel.draw_map("pca", 3, "class", "none", 0, "z:0", session)  # another projection: still ringed
    ringed = trace(drawn[panel.plot], "matches")
    assert len(ringed.x) == threes and ringed.z is not None and ringed.hoverinfo == "skip"
    assert len(rings(drawn, panel)["matches"][0]) == 3
    drawn = panel.draw_map("pca", 2, "class", "none", 50, "z:0", session)  # a subset shows the matches it holds
    shown = int(np.isin(np.flatnonzero(entry.latents.labels == 3), session.view.indices).sum())
    assert len(trace(drawn[panel.plot], "matches").x) == shown
    assert f"{shown} of them on this map" in search.find("label:3", session)[search.note]
    out = search.clear(session)
    assert out[search.query] == "" and rings(out, search)["matches"] == [] and "matches" not in session.highlights
    assert "Nothing matches “zebra”" in search.find("zebra", session)[search.note]
    with pytest.raises(gr.Error, match="at most 200 characters"):
        search.find("x" * 201, session)
    with pytest.raises(gr.Error, match="no column 'colour' to search"):
        search.find("colour=red", session)


def test_a_model_switch_clears_the_matches_and_the_selection(app) -> None:
    panel = app.panels["map"]
    session, _ = switched(app, "tiny-vae.safetensors")
    panel.search.find("label:3", session)
    panel.selection.select(lasso([1, 2, 3]), session)
    out = app.panels["models"].load_checkpoint("tiny-ae.safetensors", session)
    assert session.highlights == {} and session.selection is None
    assert json.loads(out[panel.rings]) == {name: [] for name in HIGHLIGHTS}
    assert out[panel.search.query] == "" and out[panel.selection.summary].startswith("**Selection.**")


# -- selection ---------------------------------------------------------------------------------------
def test_a_lasso_is_summarized_decoded_traversed_and_exported(app) -> None:
    panel, traversal = app.panels["map"], app.panels["traversal"]
    view = panel.selection
    session, entry = switched(app, "tiny-cvae.safetensors")
    chosen = [5, 9, 9, 40, 41, 120]
    out = view.select(lasso(chosen), session)
    labels = entry.latents.labels[[5, 9, 40, 41, 120]]
    assert out[view.summary].startswith("**5 points** selected on the map (tiny-cvae)")
    assert f"× {int(np.bincount(labels).argmax())}" in out[view.summary]
    mean = entry.latents.mean[[5, 9, 40, 41, 120]].mean(0)
    np.testing.assert_allclose(session.selection.mean_code, mean, rtol=1e-5)
    np.testing.assert_array_equal(app.selection().indices, [5, 9, 40, 41, 120])  # vs.explore's app says so too

    decoded = view.decode_mean(session)[view.mean_image]
    assert decoded.visible and decoded.value is not None
    out = view.traverse_mean(session)  # the traversal sliders start at the mean code
    assert "the mean code of 5 selected points" in out[traversal.note]
    np.testing.assert_allclose(session.code.z, mean, rtol=1e-5)
    assert session.code.y == int(np.bincount(labels).argmax())  # a CVAE decodes it as the selection's majority

    path = Path(view.export("csv", session)[view.file].value["path"])
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [int(r["index"]) for r in rows] == [5, 9, 40, 41, 120] and path.name.startswith("tiny-cvae-selection-5-")
    npz = Path(view.export("npz", session)[view.file].value["path"])
    reopened = read_embeddings(npz)  # an exported selection opens as an embeddings map
    np.testing.assert_allclose(reopened.latents, entry.latents.mean[[5, 9, 40, 41, 120]])
    import pyarrow.parquet as pq

    table = pq.read_table(view.export("parquet", session)[view.file].value["path"])
    assert table.column("index").to_pylist() == [5, 9, 40, 41, 120]
    with pytest.raises(gr.Error, match="exported as csv, parquet, npz"):
        view.export("xlsx", session)

    out = view.select(lasso([]), session)  # a double click clears it
    assert out[view.summary].startswith("**Selection.**") and session.selection is None and app.selection() is None
    with pytest.raises(gr.Error, match="Nothing is selected"):
        view.decode_mean(session)


@pytest.mark.parametrize("payload, match", [
    (lasso([0, 300]), "A selected point must be a whole number between 0 and 299, got 300"),
    (lasso([1, "NaN"]), "A selected point must be a whole number"),
    (lasso([1, True]), "A selected point must be a whole number"),
    (lasso([1.5]), "A selected point must be a whole number"),
    ('{"indices": 3}', "did not arrive as the page sends it"),
    ("[" * 100_000, "did not arrive as the page sends it"),
    (lasso(list(range(MAX_SELECTION + 1))), "at most 70,000 points"),
    ("x" * (MAX_SELECTION_CHARS + 1), "at most 70,000 points"),
])
def test_selections_from_outside_are_checked(app, payload: str, match: str) -> None:
    session, _ = switched(app, "tiny-vae.safetensors")
    with pytest.raises(gr.Error, match=match):
        app.panels["map"].selection.select(payload, session)
    assert session.selection is None


def test_a_whole_map_selection_is_read_within_the_limit() -> None:
    rows = read_selection(lasso(list(range(MAX_SELECTION))[::-1]), MAX_SELECTION)
    assert len(rows) == MAX_SELECTION and rows[0] == 0 and len(lasso(list(range(MAX_SELECTION)))) < MAX_SELECTION_CHARS


def test_the_matches_of_a_search_can_be_selected(app) -> None:
    panel = app.panels["map"]
    session, entry = switched(app, "tiny-vae.safetensors")
    out = panel.search.select_matches("label:2", session)
    twos = int((entry.latents.labels == 2).sum())
    assert out[panel.selection.summary].startswith(f"**{twos} points** matching “label:2”")
    assert f"{twos} × 2" in out[panel.selection.summary] and len(rings(out, panel)["matches"]) == twos
    with pytest.raises(gr.Error, match="Nothing to select"):
        panel.search.select_matches("zebra", session)


def test_a_selection_computed_for_the_previous_model_is_dropped(app, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaescope.explorer.ui import selection as selection_module

    session, _ = switched(app, "tiny-vae.safetensors")
    view = app.panels["map"].selection
    view.select(lasso([1, 2]), session)
    before = app.selection()
    real = selection_module.summarize
    monkeypatch.setattr(selection_module, "summarize", lambda *a: (session.begin_switch(), real(*a))[1])
    assert view.select(lasso([3, 4, 5]), session) == gr.skip()
    assert app.selection() is before and session.selection.indices.tolist() == [1, 2]


def test_embeddings_select_and_export_but_do_not_decode(app) -> None:
    panel, manifold = app.panels["map"], app.panels["manifold"]
    session = Session()
    out = app.panels["models"].load_checkpoint("codes", session)
    assert all(out[b].interactive is False for b in panel.selection.decoder_buttons())
    assert out[manifold.button].interactive is False and "no decoder" in out[manifold.note]
    panel.draw_map("pca", 2, "class", "none", 0, "z:0", session)
    summary = panel.selection.select(lasso([0, 1, 2, 3]), session)[panel.selection.summary]
    assert summary.startswith("**4 points**")
    path = panel.selection.export("csv", session)[panel.selection.file].value["path"]
    assert Path(path).read_text().startswith("index,label,class_name,z0,z1,z2,z3\n")
    out = app.panels["models"].load_checkpoint("tiny-vae.safetensors", session)
    assert all(out[b].interactive is True for b in panel.selection.decoder_buttons())
    assert out[manifold.button].interactive is True


# -- the decoded manifold ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-vae.safetensors", "tiny-ae.safetensors", "tiny-cvae.safetensors"])
def test_the_manifold_grid_sweeps_the_two_most_used_dimensions(app, name: str) -> None:
    from vaescope.explorer.core.dims import dim_info

    panel = app.panels["manifold"]
    session = Session()
    out = app.panels["models"].load_checkpoint(name, session)
    entry = app.ctx.store.open_name(name)
    order = dim_info(entry).order
    assert (out[panel.rows].value, out[panel.cols].value) == (int(order[0]), int(order[1]))
    assert [value for _, value in out[panel.rows].choices] == [int(d) for d in order]
    out = panel.decode_grid(int(order[0]), int(order[1]), 6, "mean", session)
    picture = pixels(out[panel.image])
    assert picture.shape[1] > 6 * 8 and picture.std() > 10  # six cells a row, and not one flat colour
    how = "the codes' mean and spread (no prior)" if "-ae" in name else "the prior's quantiles"
    assert how in out[panel.note] and "6 × 6 steps" in out[panel.note]
    assert ("decoded as class" in out[panel.note]) == ("cvae" in name)
    app.panels["traversal"].traverse_from_index(12, "z:0", "prior", session)  # the traversal's code as the base
    assert "the traversal's current code" in panel.decode_grid(0, 1, 3, "traversal", session)[panel.note]


def test_manifold_requests_outside_the_limits_are_refused(app) -> None:
    panel = app.panels["manifold"]
    session, _ = switched(app, "tiny-vae.safetensors", draw=False)
    with pytest.raises(gr.Error, match="Steps a side must be a whole number between 2 and 20, got 21"):
        panel.decode_grid(0, 1, 21, "mean", session)
    with pytest.raises(gr.Error, match="The rows' dimension must be a whole number between 0 and 3"):
        panel.decode_grid(4, 1, 5, "mean", session)
    with pytest.raises(gr.Error, match="two different dimensions"):
        panel.decode_grid(2, 2, 5, "mean", session)


def test_the_manifold_of_a_2d_latent_space_is_the_whole_plane() -> None:
    app = build_app(SHIPPED, device="cpu")
    session = Session()
    app.panels["models"].load_checkpoint("mnist/vae-2d.safetensors", session)
    out = app.panels["manifold"].decode_grid(0, 1, 8, "mean", session)
    assert "(the whole latent plane)" in out[app.panels["manifold"].note]
    picture = pixels(out[app.panels["manifold"].image])
    assert picture.shape[0] > 8 * 28 and picture.shape[1] > 8 * 28

    # the presenter layout: the same plane, 4 x 4 steps in cells of at least 128 px, and it says so
    from vaescope.explorer.ui.manifold import PRESENT_STEPS

    panel = app.panels["manifold"]
    full, shown = (panel.decode_grid(0, 1, 10, "mean", session, present) for present in (False, True))
    assert "4 × 4 steps (the whole latent plane) (presenter layout: 4 × 4 of the 10 steps chosen)" in shown[panel.note]
    assert "10 × 10 steps" in full[panel.note] and "presenter layout" not in full[panel.note]
    # the presenter layout hides the image's label: the note says what the rows and columns are
    assert "rows: z0, top to bottom · columns: z1 from" in shown[panel.note]
    big = pixels(shown[panel.image])
    assert PRESENT_STEPS == 4 and big.shape[0] // PRESENT_STEPS >= 128 and big.shape[0] < 720 - 104
    # the plane is the same, sampled more coarsely: both grids run from the prior's 5 % to 95 % quantiles
    from vaescope.explorer.core.manifold import grid_codes

    base = np.zeros(2, np.float32)
    coarse, fine = grid_codes(base, (0, 1), PRESENT_STEPS), grid_codes(base, (0, 1), 10)
    np.testing.assert_allclose(coarse[[0, -1]], fine[[0, -1]])
