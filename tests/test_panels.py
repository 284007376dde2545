"""The explorer's panels and core views without a browser: start codes, slider bounds, what a slider
move recomputes and how it fails, the diagnostics, and the rule that every output belongs to the
session's current model."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from vaescope.errors import InputError
from vaescope.explorer.core import dims as dims_module
from vaescope.explorer.core.codes import decode, index_code, random_code
from vaescope.explorer.core.diagnostics import diagnostics, kl_panel
from vaescope.explorer.core.dims import SLIDERS, dim_info, nice_bounds, slider_bounds
from vaescope.explorer.core.maps import subsample
from vaescope.explorer.core.store import Derived, ModelStore
from vaescope.explorer.core.uploads import sketch_to_rgb
from vaescope.explorer.ui.app import build_app
from vaescope.explorer.ui.state import Session
from vaescope.training.data import FASHION_MNIST_SYSTEM_DIR


def test_sketch_to_rgb() -> None:
    assert sketch_to_rgb(None) is None and sketch_to_rgb({"composite": None}) is None
    blank = np.zeros((10, 10, 4), np.uint8)  # fully transparent canvas
    assert sketch_to_rgb({"composite": blank}) is None
    stroke = blank.copy()
    stroke[3:7, 4:6] = (0, 0, 0, 255)  # black ink
    rgb = sketch_to_rgb({"composite": stroke})
    assert rgb.shape == (10, 10, 3) and rgb[0, 0].tolist() == [255, 255, 255] and rgb[4, 4].tolist() == [0, 0, 0]


def test_nice_bounds_cover_the_value_on_a_round_grid() -> None:
    lo, hi, step = nice_bounds(-3.0, 3.0, 0.1234)
    assert (lo, hi) == (-3.0, 3.0) and step == pytest.approx(0.05)
    lo, hi, step = nice_bounds(-3.0, 3.0, 4.2)
    assert lo == -3.0 and hi >= 4.2
    assert round((hi - lo) / step) == pytest.approx((hi - lo) / step, abs=1e-6)


def test_subsample_is_seeded_and_optional() -> None:
    np.testing.assert_array_equal(subsample(10, 0), np.arange(10))
    a, b = subsample(1000, 100), subsample(1000, 100)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 100 and np.all(np.diff(a) > 0)


@pytest.fixture(scope="module")
def store(tiny_checkpoint_dir: Path) -> ModelStore:
    return ModelStore(tiny_checkpoint_dir, torch.device("cpu"))


@pytest.mark.parametrize("model_type", ["vae", "cvae"])
def test_start_codes(store: ModelStore, model_type: str) -> None:
    entry = store.open_name(f"tiny-{model_type}.safetensors")
    code = index_code(entry, 5)
    np.testing.assert_array_equal(code.z, entry.latents.mean[5])
    assert code.z is not code.z0 and "test image #5" in code.source and code.key == entry.key
    np.testing.assert_allclose(code.image, entry.latents.image(5))  # the chosen image travels with it
    label = int(entry.latents.labels[5])
    assert code.y == (label if model_type == "cvae" else None)
    assert entry.description.class_name(label) == str(label) and entry.description.class_name(-1) == "?"
    prior = random_code(entry, 3)
    assert prior.y == (3 if model_type == "cvae" else None) and "prior sample (seed" in prior.source
    assert prior.image is None
    assert decode(entry, np.stack([code.z, prior.z]), code.y).shape == (2, 1, 8, 8)
    with pytest.raises(InputError, match="between 0 and 299"):
        index_code(entry, 300)
    with pytest.raises(InputError, match="whole number"):
        index_code(entry, "seven")


@pytest.fixture(scope="module")
def app(tiny_checkpoint_dir: Path):
    return build_app(tiny_checkpoint_dir, device="cpu")


def switched(app, name: str) -> tuple[Session, object]:
    """A session that has switched to model ``name`` through the model panel (as a page does)."""
    session = Session()
    app.panels["models"].load_checkpoint(name, session)
    return session, app.ctx.store.open_name(name)


def test_slider_moves_reuse_the_dimension_order(app, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AE orders its dims by the spread of all its codes: computed once, not on every move."""
    session, entry = switched(app, "tiny-ae.safetensors")
    entry.derived = Derived()
    computed = []
    real = dims_module._dim_info
    monkeypatch.setattr(dims_module, "_dim_info", lambda e: computed.append(e.key) or real(e))
    traversal = app.panels["traversal"]
    slide = traversal.slider_handler(0)
    images = [slide(v, 0, session)[traversal.image] for v in (-1.0, 0.0, 1.0)]
    assert computed == [entry.key]
    assert len({im.tobytes() for im in images}) == 3  # every move still decodes its own image


def test_slider_failures_are_written_under_the_image(app, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The slider events skip the queue, where Gradio shows no error toast: the handler names the
    problem in the traversal note and leaves the image and the code where they are."""
    from vaescope.explorer.ui import traversal as traversal_module

    session, entry = switched(app, "tiny-vae.safetensors")
    traversal = app.panels["traversal"]
    slide = traversal.slider_handler(0)
    before = session.code
    out = slide(1.0, 0, session)
    assert out[traversal.image].size[0] >= 100 and not np.array_equal(session.code.z, before.z)
    assert out[traversal.note] == "**tiny-vae** · from test image #0 (class 4)"
    moved = session.code
    out = slide("NaN", 0, session)
    assert traversal.image not in out and out[traversal.note].startswith("**Cannot decode:** The slider value must be a number")
    assert session.code is moved

    def broken(*args: object) -> None:
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patched, caplog.at_level("ERROR", logger="vaescope.explorer"):
        patched.setattr(traversal_module, "decode", broken)
        out = slide(1.0, 0, session)
    assert traversal.image not in out and session.code is moved
    assert out[traversal.note] == "**Decoding failed** (RuntimeError: out of memory); the server log has the details."
    assert "slider 0 failed" in caplog.text and "out of memory" in caplog.text  # the traceback is logged
    out = slide(-1.0, 0, session)  # the next good move works and says where the code came from
    assert out[traversal.image].size[0] >= 100 and out[traversal.note].startswith("**tiny-vae** · from test image #0")


def test_a_slider_never_decodes_a_code_of_another_model(app) -> None:
    """A code that belongs to another model (a response that raced a switch) is replaced by the
    current model's own start code instead of reaching its decoder with the wrong shape."""
    session, _ = switched(app, "tiny-vae.safetensors")
    vae_code = session.code
    session, gmvae = switched(app, "tiny-gmvae.safetensors")
    session.code = vae_code  # as if a stale write had landed
    out = app.panels["traversal"].slider_handler(0)(0.5, 0, session)
    assert app.panels["traversal"].image in out and session.code.key == gmvae.key


def test_a_result_computed_for_the_previous_model_is_dropped(app, monkeypatch: pytest.MonkeyPatch) -> None:
    """The version rule: a handler that finishes after a switch began returns nothing and changes nothing."""
    from vaescope.explorer.ui import sampling as sampling_module
    from vaescope.explorer.ui import traversal as traversal_module

    session, vae = switched(app, "tiny-vae.safetensors")
    code = session.code

    def decode_then_switch(*args: object) -> np.ndarray:  # a switch lands while the decoder runs
        images = decode(*args)
        session.begin_switch()
        return images

    monkeypatch.setattr(traversal_module, "decode", decode_then_switch)
    assert app.panels["traversal"].slider_handler(0)(2.0, 0, session) == gr.skip()  # nothing updates
    assert session.code is code  # nothing written into the session either

    real = sampling_module.sample_class
    monkeypatch.setattr(sampling_module, "sample_class",
                        lambda *a, **k: (session.begin_switch(), real(*a, **k))[1])
    assert app.panels["sampling"].sample_class(3, 4, 0, 1.0, session) == gr.skip()
    monkeypatch.setattr(sampling_module, "sample_class", real)
    assert app.panels["sampling"].sample_class(3, 4, 0, 1.0, session) != {}  # no switch meanwhile: shown


def test_mixture_slider_bounds_sample_the_prior_once(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = store.open_name("tiny-gmvae.safetensors")
    entry.derived = Derived()
    model, draws = entry.model, []
    real = model.sample
    monkeypatch.setattr(model, "sample", lambda n, *a, **k: draws.append(n) or real(n, *a, **k))
    first = slider_bounds(entry, "prior")
    second = slider_bounds(entry, "prior")
    assert draws.count(dims_module.PRIOR_RANGE_SAMPLES) == 1 and first is second
    lo, hi = first
    assert np.all(lo < hi) and lo.shape == (entry.description.latent_dim,)


def test_a_standard_prior_gets_exact_three_sd_sliders(store: ModelStore) -> None:
    lo, hi = slider_bounds(store.open_name("tiny-vae.safetensors"), "prior")
    np.testing.assert_array_equal(lo, -3.0)
    np.testing.assert_array_equal(hi, 3.0)


@pytest.mark.parametrize("name, shown", [("tiny-vae.safetensors", False), ("tiny-gmvae.safetensors", True)])
def test_training_curves_show_the_temperature_only_for_a_mixture(store: ModelStore, monkeypatch: pytest.MonkeyPatch,
                                                                 name: str, shown: bool) -> None:
    """Older checkpoints (the shipped VAEs among them) recorded the Gumbel-softmax temperature for every
    model; a model without components never used it, so its diagnostics leave it out."""
    entry = store.open_name(name)
    history = [{"epoch": e, "train_loss": 30.0 - e, "kl_weight": 1.0, "temperature": 1.0 - 0.1 * e} for e in (1, 2)]
    monkeypatch.setattr(entry.meta, "history", history)
    curves = diagnostics(entry).curves
    assert {trace.name for trace in curves.data} == {"train_loss", "kl_weight"} | ({"temperature"} if shown else set())
    assert history[0]["temperature"] == 0.9  # the checkpoint's own record is left as it was


def _diagnostics_active_units(entry) -> int:
    note = kl_panel(entry)[1][0]
    assert note.startswith("**Active units: ")
    return int(note.split("**Active units: ")[1].split(" of ")[0])


@pytest.mark.parametrize("model_type", ["ae", "vae", "cvae", "gmvae"])
def test_diagnostics_count_the_active_units_of_the_model_card(store: ModelStore, model_type: str) -> None:
    """One definition everywhere (Burda et al.: Var_x E[z_d|x] > 0.01), an AE included: the
    diagnostics, the slider labels and the checkpoint's metric agree."""
    entry = store.open_name(f"tiny-{model_type}.safetensors")
    count = _diagnostics_active_units(entry)
    assert count == entry.meta.metrics["active_units"]
    assert count == int(dim_info(entry).active.sum())


def test_a_dimension_with_no_kl_is_marked_unused_even_when_its_code_moves(store: ModelStore) -> None:
    """Active units count a dimension whose mean moves; the KL says whether the model uses it. A
    student sees both: a dimension with KL under 0.01 nats is marked as changing nothing."""
    entry = store.open_name("tiny-vae.safetensors")
    info = dim_info(entry)
    from vaescope.explorer.core.dims import slider_label

    for d in range(entry.description.latent_dim):
        label = slider_label(info, d)
        assert (" · unused (changes nothing)" in label) == (info.kl[d] < dims_module.KL_DEAD)
        assert label.startswith(f"z{d} · KL {info.kl[d]:.2f}")


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


@pytest.mark.skipif(not Path(FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_shipped_gmvae_diagnostics_agree_with_its_model_card() -> None:
    """The shipped Fashion-MNIST GMVAE has two dims whose codes move with the image (variance 0.03 and
    0.05) while their KL to the matched component stays under 0.01 nats: active by Burda's count
    (15, as the model card says), and flagged as carrying almost no information."""
    entry = ModelStore(SHIPPED, torch.device("cpu")).open_name("fashion-mnist/gmvae.safetensors")
    assert entry.meta.metrics["active_units"] == 15
    assert _diagnostics_active_units(entry) == 15
    notes = kl_panel(entry)[1]
    assert any("count as active but carry almost no information" in n for n in notes)


def test_sixteen_sliders_page_through_wider_codes() -> None:
    assert SLIDERS == 16


def test_a_slider_never_waits_for_an_evicted_model(tiny_checkpoint_dir: Path) -> None:
    """With more models in use than the store keeps, a session whose model was evicted gets a
    'loading' note at once; the model comes back in the background and the next move decodes."""
    import time

    app = build_app(tiny_checkpoint_dir, device="cpu", max_models=1)
    session, vae = switched(app, "tiny-vae.safetensors")
    switched(app, "tiny-ae.safetensors")  # another tab evicts the VAE
    assert app.ctx.store.peek(vae.key) is None
    traversal = app.panels["traversal"]
    started = time.monotonic()
    out = traversal.slider_handler(0)(1.0, 0, session)
    assert time.monotonic() - started < 0.5 and "Loading the model" in out[traversal.note]
    deadline = time.monotonic() + 30
    while app.ctx.store.peek(vae.key) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    out = traversal.slider_handler(0)(1.0, 0, session)
    assert traversal.image in out and out[traversal.note].startswith("**tiny-vae**")


def test_request_values_from_outside_are_checked(app) -> None:
    session, _ = switched(app, "tiny-vae.safetensors")
    with pytest.raises(gr.Error, match=r"Max points \(0 for all\) must be a whole number between 0 and 2,000,000, got -5"):
        app.panels["map"].draw_map("pca", 2, "class", "none", -5, "z:0", session)
    assert app.panels["map"].pick("[" * 100_000, session) == gr.skip()  # no RecursionError, no update
    with pytest.raises(gr.Error, match="Steps must be a whole number between 3 and 15, got 10,000"):
        app.panels["traversal"].traversal_grid(10_000, 0, "prior", session)
    with pytest.raises(gr.Error, match="N must be a whole number between 1 and 64, got 1,000,000,000"):
        app.panels["sampling"].sample_class(3, 10**9, 0, 1.0, session)
    with pytest.raises(gr.Error, match="Steps must be a whole number between 2 and 32, got 1,000,000"):
        app.panels["interpolation"].interpolate(10**6, "linear", session)


def test_interpolation_never_waits_for_an_exact_umap_transform(app) -> None:
    """On a fresh UMAP (or t-SNE) map, an exact transform of new codes first builds a search index
    (over a minute on 70k codes): the path and the marker are placed by nearest fitted neighbours
    instead, and the strip comes at once."""
    import json as json_module

    from vaescope.explorer.core.maps import MapView
    from vaescope.explorer.core.projection import Projection, fit_projection

    class SlowEstimator:
        def transform(self, z: np.ndarray) -> np.ndarray:
            raise AssertionError("an exact transform was asked for")

    session, entry = switched(app, "tiny-vae.safetensors")
    pca = fit_projection(entry.latents.mean, "pca", 2)
    umap_like = Projection("umap", 2, pca.coords, entry.latents.mean, estimator=SlowEstimator())
    session.update(session.version, view=MapView(entry.key, umap_like, np.arange(len(entry.latents)), "umap", "class"))
    panel = app.panels["interpolation"]
    out = panel.interpolate(6, "linear", session)
    path = json_module.loads(out[panel.path_json])["points"]
    assert len(path) == 6 and all(len(p) == 2 for p in path)
    slid = app.panels["traversal"].slider_handler(0)(1.5, 0, session)
    assert len(json_module.loads(slid[app.panels["traversal"].marker])["points"]) >= 1


def test_sequences_are_drawn_as_lines() -> None:
    """A model whose contract says display "line" (waveforms) gets line plots: a constant sequence is
    a horizontal line at its height, a ramp climbs, and an "image" model's pictures are untouched."""
    from vaescope.explorer.core.figures import LINE_HEIGHT, line_pictures, pictures

    flat = np.full((1, 1, 32, 1), 0.75, np.float32)
    ramp = np.linspace(0, 1, 32, dtype=np.float32).reshape(1, 1, 32, 1)
    drawn = line_pictures(np.concatenate([flat, ramp]))
    assert drawn.shape == (2, 1, LINE_HEIGHT, 64) and drawn.max() == 1.0
    rows = np.flatnonzero(drawn[0, 0].max(1) > 0.5)
    assert abs(rows.mean() - (0.25 * (LINE_HEIGHT - 3) + 1)) < 1.5  # 0.75 sits a quarter from the top
    first, last = (np.flatnonzero(drawn[1, 0, :, c] > 0.5).mean() for c in (1, 62))
    assert first > LINE_HEIGHT - 5 and last < 5  # 0 at the bottom, 1 at the top
    images = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    assert pictures(images, "image") is images
    assert pictures(flat[0], "line").shape == (1, LINE_HEIGHT, 64)  # one image too


def test_the_presenter_traversal_grid_shows_the_most_used_rows_in_big_cells(app) -> None:
    """The presenter layout's grid: the page's three most used dimensions, at most seven steps,
    each cell at least STRIP_PX; the other layout keeps the whole page of rows and the steps asked."""
    import numpy as np
    from PIL import Image

    from vaescope.explorer.core.dims import page_dims
    from vaescope.explorer.ui.common import STRIP_PX
    from vaescope.explorer.ui.traversal import PRESENT_GRID_ROWS, PRESENT_GRID_STEPS

    session, entry = switched(app, "tiny-vae.safetensors")
    traversal = app.panels["traversal"]
    side = max(entry.description.image_shape[-2:])
    dims = page_dims(entry, "z:0")
    for present, rows, columns in ((False, len(dims), 9), (True, PRESENT_GRID_ROWS, PRESENT_GRID_STEPS)):
        out = traversal.traversal_grid(9, "z:0", "prior", session, present)
        picture = np.asarray(Image.open(out[traversal.grid_file]))  # the download: the picture shown
        label = out[traversal.grid_image].label
        names = [entry.description.dim_name(int(d)) for d in dims[:rows]]
        assert f"rows, top to bottom: {', '.join(names)} ·" in label, label
        assert ("presenter layout: the 3 most used, 7 steps" in label) == present
        cell = picture.shape[0] / rows  # the rows fill the picture's height
        assert cell >= STRIP_PX if present else cell < STRIP_PX, (present, picture.shape)
        assert picture.shape[1] >= columns * -(-STRIP_PX // side) * side if present else True
