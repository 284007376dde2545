"""The side-by-side view and the lessons' machinery without a browser: two models on the same
images, linked picks, every button on both sides, the rule that an answer computed while a side
changed models is dropped, factor colouring, and the measures lessons quote."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from vaescope.explorer.core import measures
from vaescope.explorer.core.compare import (
    ACTIONS,
    INTERPOLATION_STEPS,
    default_pair,
    interpolation_rows,
    posterior_rows,
    prior_rows,
    same_images,
    traversal_rows,
)
from vaescope.explorer.core.evaldata import EvalData
from vaescope.explorer.core.lessons import LESSONS, find, missing_models, sweep_names
from vaescope.explorer.core.maps import MapView, color_choices, map_colors, map_figure
from vaescope.explorer.core.projection import fit_projection
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.ui.app import build_app
from vaescope.explorer.ui.state import Session, SessionPair
from vaescope.training.config import ModelConfig
from vaescope.training.data import load_shapes
from vaescope.training.models import build_model


@pytest.fixture(scope="module")
def app(tiny_checkpoint_dir: Path):
    return build_app(tiny_checkpoint_dir, device="cpu")


def paired(app, a: str, b: str) -> SessionPair:
    pair = SessionPair()
    view = app.panels["compare"]
    view.sides["a"].load(a, pair)
    view.sides["b"].load(b, pair)
    view.bar.draw_both("pca", "class", "none", pair)
    return pair


def by_id(updates: dict) -> dict:
    return {component.elem_id: value for component, value in updates.items()}


def traces(box: str) -> dict:
    return json.loads(box)


def click(side: str, index: object) -> str:
    return json.dumps({"kind": "point", "side": side, "index": index})


def test_a_click_on_either_map_shows_that_image_through_both_models(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    bar = app.panels["compare"].bar
    ae, vae = (app.ctx.store.open_name(n) for n in ("tiny-ae.safetensors", "tiny-vae.safetensors"))
    assert same_images(ae, vae) is None
    out = by_id(bar.pick(click("b", 12), pair))
    assert "Test image #12" in out["compare-picked-info"] and pair.picks == [12]
    for side, entry in (("a", ae), ("b", vae)):
        placed = traces(out[f"compare-overlays-{side}"])["you are here"]
        expected = pair.side(side).view.projection.transform(entry.latents.mean[12:13])
        np.testing.assert_allclose(placed, expected, atol=1e-3)  # the same image, on each side's own map
        assert out[f"compare-recon-{side}"].size[0] >= 64  # an image, upscaled for the page
    bar.pick(click("a", 40), pair)
    assert by_id(bar.pick_index("a", 7, pair))["compare-picked-info"].endswith("#40 → #7 (what *Interpolate* joins).")
    assert pair.picks == [40, 7]  # the last two: what Interpolate joins


def test_every_button_answers_on_both_sides(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    bar = app.panels["compare"].bar
    bar.pick_index("a", 3, pair)
    bar.pick_index("a", 30, pair)
    for kind in ("samples", "interpolate", "traverse", "posterior", "denoise"):
        out = by_id(bar.actor(kind)(pair))
        for side, name in (("a", "tiny-ae"), ("b", "tiny-vae")):
            assert out[f"compare-result-{side}"].value is not None, kind
            assert out[f"compare-chart-{side}"].visible is False, kind  # no chart of an earlier press stays
            assert out[f"compare-note-{side}"].startswith(f"**{name}**"), (kind, out[f"compare-note-{side}"])
    path = traces(by_id(bar.actor("interpolate")(pair))["compare-overlays-b"])["path"]
    assert len(path) == INTERPOLATION_STEPS
    posterior = by_id(bar.actor("posterior")(pair))
    assert traces(posterior["compare-overlays-b"])["cloud"] and not traces(posterior["compare-overlays-a"])["cloud"]
    assert "deterministic" in posterior["compare-note-a"]  # the AE has no spread to sample
    samples = by_id(bar.actor("samples")(pair))  # no path of its own: the last pick stays marked, the path goes
    assert not traces(samples["compare-overlays-b"])["path"] and len(traces(samples["compare-overlays-b"])["you are here"]) == 1
    kl = by_id(bar.actor("kl")(pair))
    assert kl["compare-chart-b"].visible and "Active units" in kl["compare-note-b"]
    assert kl["compare-result-b"].value is None  # the samples grid of the press before is gone


def test_a_lesson_pressing_several_buttons_shows_every_answer(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    bar = app.panels["compare"].bar
    bar.pick_index("a", 3, pair)
    out = by_id(bar.act(["kl", "traverse"], pair))
    assert out["compare-chart-b"].visible and out["compare-result-b"].value is not None
    assert "Active units" in out["compare-note-b"] and "from test image #3" in out["compare-note-b"]


def test_an_answer_computed_while_a_side_changed_models_is_dropped(app, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaescope.explorer.ui import compare as compare_module

    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    view = app.panels["compare"]
    real = compare_module.answer

    def switch_meanwhile(kind, entry, picks):
        if entry.name == "tiny-vae.safetensors":
            view.sides["b"].load("tiny-cvae.safetensors", pair)  # another event switches side B
        return real(kind, entry, picks)

    monkeypatch.setattr(compare_module, "answer", switch_meanwhile)
    assert view.bar.actor("samples")(pair) == gr.skip()


def test_bad_clicks_are_ignored_and_out_of_range_ones_refused(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    bar = app.panels["compare"].bar
    for payload in ("[" * 100_000, "null", '{"kind": "point", "side": "c", "index": 1}', '{"kind": "xy"}'):
        assert bar.pick(payload, pair) == gr.skip()
    with pytest.raises(gr.Error, match="between 0 and"):
        bar.pick(click("a", 100000), pair)
    with pytest.raises(gr.Error, match="A map point must be a whole number"):
        bar.pick(click("b", "NaN"), pair)


def test_nothing_pressed_before_a_model_is_chosen_raises_an_error(app) -> None:
    """A button pressed before the models are there says, under each map, what to choose; drawing,
    clicking and an empty choice change nothing; none of them is an error toast."""
    view, empty = app.panels["compare"], SessionPair()
    for kind in ACTIONS:
        out = by_id(view.bar.actor(kind)(empty))  # the handler as the page calls it: no gr.Error
        for side in "ab":
            assert out[f"compare-note-{side}"] == f"Side {side.upper()} has no model yet: choose one in the list above its map."
            assert out[f"compare-result-{side}"].value is None and out[f"compare-chart-{side}"].visible is False
    assert view.bar.draw_both("pca", "class", "none", empty) == gr.skip()
    assert view.bar.draw_missing("pca", "class", "none", empty) == gr.skip()
    assert view.bar.pick(click("a", 3), empty) == gr.skip()
    assert by_id(view.sides["a"].load(None, empty)) == {"compare-note-a": "Choose a model for side A in the list above its map."}
    half = SessionPair()  # one side chosen: it answers, the other says what to choose
    view.sides["b"].load("tiny-vae.safetensors", half)
    out = by_id(view.bar.actor("samples")(half))
    assert out["compare-note-a"].startswith("Side A has no model yet") and out["compare-note-b"].startswith("**tiny-vae**")


def test_switching_one_side_clears_everything_it_showed(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    view = app.panels["compare"]
    view.bar.pick_index("a", 5, pair)
    view.bar.actor("denoise")(pair)
    out = by_id(view.sides["a"].load("tiny-gmvae.safetensors", pair))
    assert set(out) == {"compare-map-a", "compare-info-a", "compare-overlays-a", "compare-recon-a", "compare-note-a",
                        "compare-result-a", "compare-chart-a"}  # side B keeps what it shows
    assert out["compare-recon-a"].value is None and out["compare-recon-a"].label == "Through tiny-gmvae"
    assert out["compare-result-a"].value is None and out["compare-chart-a"].visible is False
    assert out["compare-note-a"] == "" and not any(traces(out["compare-overlays-a"]).values())
    assert "Drawing the map of tiny-gmvae" in json.dumps(out["compare-map-a"].to_plotly_json(), default=str)
    assert pair.a.view is None and pair.a.key == app.ctx.store.open_name("tiny-gmvae.safetensors").key


def test_a_side_that_cannot_load_keeps_its_model_and_says_why(app) -> None:
    pair = paired(app, "tiny-ae.safetensors", "tiny-vae.safetensors")
    out = by_id(app.panels["compare"].sides["a"].load("no-such.safetensors", pair))
    assert out["compare-model-a"].value == "tiny-ae.safetensors"  # the list names the model the side still has
    assert out["compare-note-a"].startswith("⚠️ Cannot load no-such.safetensors")
    assert pair.a.key == app.ctx.store.open_name("tiny-ae.safetensors").key


def test_both_maps_are_drawn_by_the_explore_maps_code(app) -> None:
    """A side's map and the Explore map of the same model and projection place every point alike."""
    pair = paired(app, "tiny-vae.safetensors", "tiny-ae.safetensors")
    side = app.panels["compare"].sides["a"].draw("pca", "class", "none", pair)
    session = Session()
    app.panels["models"].load_checkpoint("tiny-vae.safetensors", session)
    explore = app.panels["map"].draw_map("pca", 2, "class", "none", 0, 0, session)
    points = lambda figure: {t.name: (list(t.x), list(t.y)) for t in figure.data if t.customdata is not None}  # noqa: E731
    compare_map = side[app.panels["compare"].sides["a"].plot]
    assert points(compare_map) == points(explore[app.panels["map"].plot]) and points(compare_map)
    assert pair.a.view.indices.tolist() == session.view.indices.tolist()


def test_the_view_opens_with_two_sensible_models(app, tiny_checkpoint_dir: Path) -> None:
    shipped = ["digits/ae.safetensors", "digits/vae.safetensors", "mnist/ae.safetensors", "mnist/vae.safetensors"]
    lessons = [m.models for m in LESSONS if len(m.models) == 2]
    unused = lambda: pytest.fail("the first model is not needed when a lesson's pair is listed")  # noqa: E731
    assert default_pair(shipped, lessons, unused) == ("mnist/ae.safetensors", "mnist/vae.safetensors")
    assert default_pair(["d/ae", "d/vae", "e/cvae"], lessons, lambda: "d/vae") == ("d/vae", "d/ae")  # a sibling
    assert default_pair(["runs/a/m", "runs/b/m"], [], lambda: "runs/b/m") == ("runs/b/m", "runs/a/m")
    assert default_pair(["only"], [], lambda: "only") == ("only", None)
    assert default_pair([], lessons, lambda: None) == (None, None)
    # the tiny folder has no lesson's models: its first model (tiny-vae, a VAE ranks first) and a sibling
    view = build_app(tiny_checkpoint_dir, device="cpu").panels["compare"]
    assert [side.model.value for side in view.sides.values()] == ["tiny-vae.safetensors", "tiny-ae.safetensors"]
    pair = SessionPair()  # the tab shown for the first time: each side loads its list's model, then both draw
    for side in view.sides.values():
        side.load_if_empty(side.model.value, pair)
    drawn = by_id(view.bar.draw_missing("pca", "class", "none", pair))
    assert {"compare-map-a", "compare-map-b"} <= set(drawn) and pair.a.view is not None and pair.b.view is not None
    assert view.sides["a"].load_if_empty("tiny-cvae.safetensors", pair) == gr.skip()  # shown again: nothing reloads
    assert view.bar.draw_missing("pca", "class", "none", pair) == gr.skip()


def test_interpolation_rows_run_from_one_code_to_the_other(tiny_checkpoint_dir: Path) -> None:
    entry = ModelStore(tiny_checkpoint_dir, torch.device("cpu")).open_name("tiny-vae.safetensors")
    rows = interpolation_rows(entry, 2, 9, steps=6)
    assert rows.images.shape == (6, 1, 8, 8) and rows.codes.shape == (6, 4)
    np.testing.assert_allclose(rows.codes[[0, -1]], entry.latents.mean[[2, 9]], atol=1e-6)
    traversal = traversal_rows(entry, 2)
    assert traversal.images.shape == (4 * 9, 1, 8, 8) and len(traversal.row_labels) == 4
    posterior = posterior_rows(entry, 2, n=16)
    spread = posterior.codes.std(0)
    np.testing.assert_allclose(spread, entry.latents.std[2], rtol=0.6)  # z = mu + sigma * eps
    grid = prior_rows(store_entry(tiny_checkpoint_dir, "tiny-gmvae.safetensors"))
    assert len(grid.row_labels) == 10 and grid.images.shape[0] == 10 * 8  # a row per component


def store_entry(folder: Path, name: str):
    return ModelStore(folder, torch.device("cpu")).open_name(name)


# -- factor colouring -------------------------------------------------------------------------------
def test_maps_colour_by_the_true_factors_of_data_that_has_them() -> None:
    data = load_shapes(seed=0)
    model = build_model(ModelConfig(model_type="vae", image_shape=(1, 32, 32), latent_dim=4, arch="mlp",
                                    hidden_dim=16)).eval()
    model.class_names = data.info.class_names
    store = ModelStore(None, torch.device("cpu"))
    test = data.test
    store.add_model("shapes-vae", model, EvalData(test.images.numpy()[:300], test.labels.numpy()[:300], "shapes",
                                                  test.factors.numpy()[:300], data.info.factor_names))
    entry = store.open_name("shapes-vae")
    values = [v for _, v in color_choices(entry)]
    assert [v for v in values if v.startswith("factor:")] == [f"factor:{i}" for i in range(5)]
    projection = fit_projection(entry.latents.mean, "pca", 2)
    view = MapView(entry.key, projection, np.arange(300), "pca", "factor:0")
    colour, kind, names, _ = map_colors(entry, view)
    assert kind == "categorical" and names == ["square", "ellipse", "triangle"]  # the factor is the class
    np.testing.assert_array_equal(colour, test.labels.numpy()[:300])
    view = MapView(entry.key, projection, np.arange(300), "pca", "factor:1")
    colour, kind, _, _ = map_colors(entry, view)
    assert kind == "continuous"
    np.testing.assert_allclose(colour, test.factors.numpy()[:300, 1])  # scale, as stored
    assert "true factor: scale" in map_figure(entry, view, "none").layout.title.text


def test_evaluation_factors_must_match_the_images() -> None:
    with pytest.raises(ValueError, match="factors must be"):
        EvalData(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4), "x", np.zeros((3, 2)), ("a", "b"))


# -- measures -------------------------------------------------------------------------------------
def test_measures_on_known_cases(tiny_checkpoint_dir: Path) -> None:
    vae = store_entry(tiny_checkpoint_dir, "tiny-vae.safetensors")
    probe = measures.pixel_probe(vae)
    assert probe.accuracy > 0.85  # a pixel classifier of 8x8 digits
    verdict = measures.judge_prior_samples(vae, probe, n=200)
    assert 0 < verdict.top_share <= 1 and 1 <= verdict.classes_seen <= 10
    i = measures.first_of_class(vae, 3)
    assert vae.latents.labels[i] == 3 and (vae.latents.labels[:i] != 3).all()
    assert measures.path_gap(vae, i, i) == 0  # a path that stays on a test code
    assert measures.path_gap(vae, i, measures.first_of_class(vae, 0)) > 0


def test_variance_kept_is_pcas_for_a_pca_reconstruction(tiny_checkpoint_dir: Path) -> None:
    """Reconstructions that are PCA's own keep exactly PCA's share of the variance; the tiny AE's
    keep less than its images' total and more than nothing."""
    entry = store_entry(tiny_checkpoint_dir, "tiny-ae.safetensors")
    x = entry.latents.float_images(slice(None)).reshape(len(entry.latents), -1)
    d = entry.description.latent_dim
    pca = PCA(d).fit(x)
    kept, best = measures.variance_kept(entry), measures.pca_variance_kept(entry)
    assert best == pytest.approx(pca.explained_variance_ratio_.sum(), abs=1e-6) and 0 < kept < 1
    original = entry.latents.recon_error
    try:
        entry.latents.recon_error = ((pca.inverse_transform(pca.transform(x)) - x) ** 2).mean(1)
        assert measures.variance_kept(entry) == pytest.approx(best, abs=1e-5)
    finally:
        entry.latents.recon_error = original


# -- lessons ---------------------------------------------------------------------------------------
def test_every_lesson_has_a_unique_link_and_names_what_it_needs() -> None:
    names = [lesson.name for lesson in LESSONS]
    assert len(names) == len(set(names)) >= 9
    assert find("ae-vs-vae").title.startswith("AE vs VAE") and find("nope") is None and find(None) is None
    for lesson in LESSONS:
        assert len(lesson.models) in (1, 2) and all(m.endswith(".safetensors") for m in lesson.models)
    assert missing_models(find("ae-vs-vae"), ["mnist/ae.safetensors"]) == ["mnist/vae.safetensors"]
    assert sweep_names(["shapes/beta-1.safetensors", "digits/vae.safetensors", "shapes/beta-vae.safetensors",
                        "shapes/beta-0.5.safetensors"]) == ["shapes/beta-1.safetensors", "shapes/beta-0.5.safetensors"]


def test_a_lesson_that_is_unknown_or_lacks_its_models_says_so(app) -> None:
    lessons = app.panels["lessons"]
    unknown = by_id(lessons.start("no-such-lesson"))
    assert "No lesson is called" in unknown["lesson-banner"] and "ae-vs-vae" in unknown["lesson-banner"]
    missing = by_id(lessons.start("ae-vs-vae"))  # the tiny folder has none of the shipped models
    assert "needs mnist/ae.safetensors" in missing["lesson-banner"]
    assert lessons.words("ae-vs-vae", False) == gr.skip()  # nor words, nor a side-by-side view to open
    assert lessons.open_compare("ae-vs-vae", SessionPair()) == gr.skip()
    assert lessons.start("")[lessons.banner_group].visible is False  # no ?lesson=: no banner


# -- the training timeline ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained for 2 epochs on digits with a record of 60 test images, and a copy without it."""
    from vaescope.training.config import TrainConfig
    from vaescope.training.data import load_digits
    from vaescope.training.train import model_config_for, train

    folder = tmp_path_factory.mktemp("recorded")
    data = load_digits(seed=0)
    cfg = model_config_for(data, model_type="vae", arch="mlp", latent_dim=4, hidden_dim=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, TrainConfig(dataset="digits", epochs=2, record=60, eval_k=2), folder / "run", dataset=data,
              show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return folder / "run"


def test_the_timeline_plays_every_recorded_moment(recorded_run: Path) -> None:
    from vaescope.explorer.core.timeline import frame_labels, training_timeline
    from vaescope.training.checkpoint import read_record

    record = read_record(recorded_run / "model.safetensors")
    assert record.codes.shape[1:] == (60, 4) and list(record.epochs) == [0, 0.25, 0.5, 0.75, 1, 2]
    entry = ModelStore(recorded_run, torch.device("cpu")).open_name("model.safetensors")
    figure, words = training_timeline(entry)
    frames = figure.layout.meta["frames"]  # where the page script finds them (Gradio drops figure.frames)
    assert len(frames) == len(record.epochs) and "6 recorded moments" in words and not figure.frames
    assert [f["name"] for f in frames] == ["start", "epoch 0.25", "epoch 0.5", "epoch 0.75", "epoch 1", "epoch 2"]

    def values(x) -> np.ndarray:  # noqa: ANN001 - plotly sends arrays as base64 typed arrays
        import base64

        return np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]) if isinstance(x, dict) else np.asarray(x)

    points = sum(len(values(t["x"])) for t in frames[-1]["data"])
    assert points == 60  # every recorded image in every frame
    first = np.concatenate([values(t["x"]) for t in frames[0]["data"]])
    assert not np.allclose(first, np.concatenate([values(t["x"]) for t in frames[-1]["data"]]))  # they move
    assert frame_labels([0, 5, 5, 6])[2] == "epoch 5 (after initialising the mixture)"  # labels stay unique


def test_a_checkpoint_without_a_record_says_how_to_get_one(tiny_checkpoint_dir: Path) -> None:
    from vaescope.errors import InputError
    from vaescope.explorer.core.timeline import training_timeline

    with pytest.raises(InputError, match="latent-train --record"):
        training_timeline(store_entry(tiny_checkpoint_dir, "tiny-vae.safetensors"))


def test_a_checkpoint_whose_dataset_is_missing_maps_its_embedded_sample(tiny_checkpoint_dir: Path,
                                                                       tmp_path: Path) -> None:
    """A checkpoint that names a dataset this server lacks (MNIST, say) draws its map from the images
    it carries, and says so; without a sample it has no map."""
    from vaescope.training.checkpoint import embed_sample, load_checkpoint, save_checkpoint
    from vaescope.training.data import load_digits

    model, meta = load_checkpoint(tiny_checkpoint_dir / "tiny-vae.safetensors")
    meta.dataset = {**meta.dataset, "name": "kmnist"}  # an IDX dataset nobody installed here
    served = tmp_path / "served"
    save_checkpoint(served / "bare.safetensors", model, meta)
    carried = save_checkpoint(served / "carried.safetensors", model, meta)
    test = load_digits(seed=0).test
    embed_sample(carried, test.images[:120], test.labels[:120])
    store = ModelStore(served, torch.device("cpu"), data_dir=tmp_path / "no-data")
    bare, entry = store.open_name("bare.safetensors"), store.open_name("carried.safetensors")
    assert not bare.has_points and "not on this server" in bare.data_note
    assert entry.has_points and len(entry.latents) == 120 and "120 images embedded in the file" in entry.data_origin
    np.testing.assert_array_equal(entry.latents.labels, test.labels[:120].numpy())
    np.testing.assert_array_equal(entry.latents.images, test.images[:120].numpy())


def test_a_shapes_run_stores_its_mig_and_the_explorer_measures_the_same(tmp_path: Path) -> None:
    """Training on data with ground-truth factors stores the MIG (overall and per factor) with the
    metrics; the explorer's own measure on the same test images agrees (what a lesson quotes)."""
    from vaescope.training.config import TrainConfig
    from vaescope.training.train import model_config_for, train

    data = load_shapes(seed=0)
    cfg = model_config_for(data, model_type="vae", arch="mlp", latent_dim=4, hidden_dim=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg, TrainConfig(dataset="shapes", epochs=1, eval_k=2, record=0, embed_sample=0,
                                        batch_size=256), tmp_path / "run", dataset=data, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    metrics = result.metrics
    assert 0 <= metrics["mig"] <= 1 and set(metrics["mig_per_factor"]) == set(data.info.factor_names)
    entry = ModelStore(tmp_path / "run", torch.device("cpu")).open_name("model.safetensors")
    assert entry.metrics["mig"] == pytest.approx(metrics["mig"])
    live, per_factor = measures.factor_mig(entry)
    assert live == pytest.approx(metrics["mig"], abs=1e-4)
    assert per_factor["shape"] == pytest.approx(metrics["mig_per_factor"]["shape"], abs=1e-4)
