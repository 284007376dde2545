"""explorer.views: slider bounds on a round grid, seeded subsets, and what a slider move recomputes."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from vaescope.explorer import views
from vaescope.explorer.codes import start_code
from vaescope.explorer.handlers import Handlers
from vaescope.explorer.loading import ModelStore
from vaescope.explorer.projection import ProjectionCache
from vaescope.explorer.views import SLIDERS, nice_bounds, subsample, traversal_view
from vaescope.training.data import FASHION_MNIST_SYSTEM_DIR


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


def test_slider_moves_reuse_the_dimension_order(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AE orders its dims by the variance of all its codes: computed once, not on every move."""
    entry = store.open_name("tiny-ae.safetensors")
    entry.memo.clear()
    computed = []
    real = views._dim_info
    monkeypatch.setattr(views, "_dim_info", lambda e: computed.append(e.key) or real(e))
    slide = Handlers(store, ProjectionCache(), None).slider_handler(0)
    code = start_code(entry, 0, "index", None)
    images = [slide(v, entry.key, code, 0)[0] for v in (-1.0, 0.0, 1.0)]
    assert computed == [entry.key]
    assert len({im.tobytes() for im in images}) == 3  # every move still decodes its own image


def test_slider_failures_are_written_under_the_image(store: ModelStore, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The slider events skip the queue, where Gradio shows no error toast: the handler names the
    problem in the traversal note (its third output) and leaves the image and the code where they
    are; the next good move puts the usual note back."""
    from vaescope.explorer import handlers

    entry = store.open_name("tiny-vae.safetensors")
    slide = Handlers(store, ProjectionCache(), None).slider_handler(0)
    code = start_code(entry, 0, "index", None)
    image, moved, note = slide(1.0, entry.key, code, 0)
    assert image.size[0] >= 100 and not np.array_equal(moved.z, code.z) and note == gr.skip()  # note kept
    stale = slide(1.0, "a-key-this-server-never-gave-out", code, 0)
    assert stale[0] == gr.skip() and np.array_equal(stale[1].z, code.z) and stale[1].note_shows_error
    assert stale[2] == "**Cannot decode:** That checkpoint is no longer available; pick it again in the dropdown."

    def broken(*args: object) -> None:
        raise RuntimeError("out of memory")

    with monkeypatch.context() as patched, caplog.at_level("ERROR", logger="vaescope.explorer.handlers"):
        patched.setattr(handlers, "decode", broken)
        image, failed, note = slide(1.0, entry.key, code, 0)
    assert image == gr.skip() and np.array_equal(failed.z, code.z) and failed.note_shows_error
    assert note == "**Decoding failed** (RuntimeError: out of memory); the server log has the details."
    assert "slider 0 failed" in caplog.text and "out of memory" in caplog.text  # the traceback is logged

    image, recovered, note = slide(-1.0, entry.key, failed, 0)
    assert image.size[0] >= 100 and not recovered.note_shows_error
    assert note == traversal_view(entry, code, 0, "prior")[2] == "From test image #0 (class 4)"
    assert slide(0.5, entry.key, recovered, 0)[2] == gr.skip()  # and is left alone after that


def test_mixture_slider_bounds_sample_the_prior_once(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = store.open_name("tiny-gmvae.safetensors")
    entry.memo.clear()
    model, draws = entry.loaded.model, []
    real = model.prior_sample
    monkeypatch.setattr(model, "prior_sample", lambda n, *a: draws.append(n) or real(n, *a))
    code = start_code(entry, 0, "index", None)
    first = traversal_view(entry, code, 0, "prior")
    second = traversal_view(entry, code, 0, "prior")
    assert draws.count(views.MIXTURE_RANGE_SAMPLES) == 1
    assert len(first) == len(second) == 3 + SLIDERS
    lo, hi = views.slider_bounds(entry, "prior")
    assert np.all(lo < hi) and lo.shape == (model.config.latent_dim,)


@pytest.mark.parametrize("name, shown", [("tiny-vae.safetensors", False), ("tiny-gmvae.safetensors", True)])
def test_training_curves_show_the_temperature_only_for_a_mixture(store: ModelStore, monkeypatch: pytest.MonkeyPatch,
                                                                 name: str, shown: bool) -> None:
    """Older checkpoints (the shipped VAEs among them) recorded the Gumbel-softmax temperature for every
    model; a model without components never used it, so its diagnostics leave it out."""
    entry = store.open_name(name)
    history = [{"epoch": e, "train_loss": 30.0 - e, "kl_weight": 1.0, "temperature": 1.0 - 0.1 * e} for e in (1, 2)]
    monkeypatch.setattr(entry.loaded.meta, "history", history)
    curves = views.diagnostics_view(entry)[2]
    assert {trace.name for trace in curves.data} == {"train_loss", "kl_weight"} | ({"temperature"} if shown else set())
    assert history[0]["temperature"] == 0.9  # the checkpoint's own record is left as it was


def _diagnostics_active_units(entry) -> int:
    note = views.kl_panel(entry)[1][0]
    assert note.startswith("**Active units:** ") and "Burda" in note
    return int(note.split("**")[2].split(" of ")[0])


@pytest.mark.parametrize("model_type", ["ae", "vae", "cvae", "gmvae"])
def test_diagnostics_count_the_active_units_of_the_model_card(store: ModelStore, model_type: str) -> None:
    """One definition everywhere (Burda et al.: Var_x E[z_d|x] > 0.01), an AE included: the
    diagnostics, the slider labels and the checkpoint's metric agree."""
    entry = store.open_name(f"tiny-{model_type}.safetensors")
    count = _diagnostics_active_units(entry)
    assert count == entry.loaded.meta.metrics["active_units"]
    assert count == int(views.dim_info(entry).active.sum())


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


@pytest.mark.skipif(not Path(FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_shipped_gmvae_diagnostics_agree_with_its_model_card() -> None:
    """The shipped Fashion-MNIST GMVAE has two dims whose codes move with the image (variance 0.03 and
    0.05) while their KL to the matched component stays under 0.01 nats; a KL threshold called them
    inactive and showed 13 where the model card says 15."""
    entry = ModelStore(SHIPPED, torch.device("cpu")).open_name("fashion-mnist/gmvae.safetensors")
    assert entry.loaded.meta.metrics["active_units"] == 15
    assert _diagnostics_active_units(entry) == 15
