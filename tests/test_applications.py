"""The two applications, for any model: denoising (corrupt, rebuild, measure) and anomaly detection
(score, percentiles, the most and least typical images, an out-of-distribution AUROC)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image
from serving import serving

from vaescope.explorer.core import scores
from vaescope.explorer.core.store import Derived, ModelStore
from vaescope.explorer.ui.app import build_app


@pytest.fixture(scope="module")
def store(tiny_checkpoint_dir: Path) -> ModelStore:
    return ModelStore(tiny_checkpoint_dir, torch.device("cpu"))


def test_auroc_is_one_for_a_clean_split_and_a_half_for_none() -> None:
    assert scores.auroc(np.array([1.0, 2, 3]), np.array([4.0, 5, 6])) == 1.0
    assert scores.auroc(np.array([4.0, 5, 6]), np.array([1.0, 2, 3])) == 0.0
    rng = np.random.default_rng(0)
    same = scores.auroc(rng.normal(size=5000), rng.normal(size=5000))
    assert abs(same - 0.5) < 0.03
    assert scores.percentile(np.arange(100.0), 90.5) == 91.0


def test_a_vae_scores_its_images_by_the_elbo_at_the_posterior_mean(store: ModelStore, digits_test) -> None:
    entry = store.open_name("tiny-vae.safetensors")
    images, labels = digits_test
    got = scores.score_images(entry, images[:50])
    model = entry.model
    with torch.no_grad():  # the model's own Bernoulli likelihood on its logits, and its KL
        x = torch.from_numpy(images[:50])
        post = model.encode(x)
        want = model.recon_nll(model.decode_logits(post.mean), x) + model.kl_per_dim(post).sum(1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-3)
    assert scores.score_kind(entry).name == "−ELBO (nats, Bernoulli likelihood)"


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


@pytest.mark.parametrize("name", ["digits/collapse-no-warmup", "digits/collapse-warmup", "waveforms/vrae"])
def test_a_gaussian_model_is_scored_by_its_own_gaussian_elbo(name: str) -> None:
    """The shipped Gaussian-likelihood models: the anomaly score is their own -ELBO at the posterior
    mean, written out by hand from the Gaussian's formula with the variance in the file's config."""
    store = ModelStore(SHIPPED, torch.device("cpu"))
    entry = store.open_name(f"{name}.safetensors")
    model = entry.model
    assert model.config.likelihood == "gaussian" and scores.score_kind(entry).name == "−ELBO (nats, Gaussian likelihood)"
    images = entry.latents.images[:40]
    got = scores.score_images(entry, images)
    c = model.config.gaussian_c
    with torch.no_grad():
        x = torch.from_numpy(images.astype(np.float32) / 255)
        post = model.encode(x)
        mean = model.decode(post.mean)
        d = x[0].numel()
        recon = ((x - mean) ** 2).flatten(1).sum(1) / (2 * c) + 0.5 * d * np.log(2 * np.pi * c)
        want = recon + model.kl_per_dim(post).sum(1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)
    bernoulli = -(x * mean.clamp(1e-6, 1 - 1e-6).log() + (1 - x) * (1 - mean).clamp(1e-6, 1).log()).flatten(1).sum(1)
    assert not np.allclose(got, (bernoulli + model.kl_per_dim(post).sum(1)).numpy(), rtol=1e-2)  # not a Bernoulli


def test_a_model_that_declares_no_likelihood_is_scored_by_reconstruction_error(store: ModelStore) -> None:
    """A log-likelihood is never guessed: a model with a prior but no ``likelihood`` is ranked by its
    reconstruction error, and the label says so."""
    from vaescope.bounds import negative_elbo

    entry = store.open_name("tiny-vae.safetensors")

    class NoLikelihood:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            if name == "likelihood":
                raise AttributeError(name)
            return getattr(self.inner, name)

    bare = type(entry)(**{**entry.__dict__, "model": NoLikelihood(entry.model), "derived": Derived()})
    assert scores.score_kind(bare).name == "reconstruction error"
    images = entry.latents.images[:10]
    x = torch.from_numpy(images.astype(np.float32) / 255)
    with torch.no_grad():
        want = ((entry.model.decode(entry.model.encode(x).mean) - x) ** 2).flatten(1).mean(1)
    np.testing.assert_allclose(scores.score_images(bare, images), want.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="declares no likelihood"):
        negative_elbo(bare.model, x)


def test_an_autoencoder_scores_by_reconstruction_error(store: ModelStore, digits_test) -> None:
    entry = store.open_name("tiny-ae.safetensors")
    got = scores.score_images(entry, digits_test[0][:20])
    assert scores.score_kind(entry).name == "reconstruction error" and (got >= 0).all() and (got < 0.25).all()


def test_shapes_are_out_of_distribution_for_a_digits_vae(store: ModelStore) -> None:
    """Generated shapes, shrunk to 8x8, are unusual to a digits VAE: the score tells them apart."""
    entry = store.open_name("tiny-vae.safetensors")
    assert "shapes" in scores.ood_datasets(entry) and "digits" not in scores.ood_datasets(entry)
    outside = scores.score_images(entry, scores.ood_images("shapes", (1, 8, 8)))
    assert len(outside) == scores.OOD_IMAGES
    assert scores.auroc(scores.test_scores(entry), outside) > 0.8
    # the same images, scored once per model and dataset; the complexity score only when asked for
    elbo_only = scores.ood_scores(entry, "shapes", keys=("elbo",))
    assert set(entry.derived.ood_scores[("shapes", "None")]) == {"elbo", "recon"}  # one pass gives both
    np.testing.assert_allclose(elbo_only["elbo"], outside)
    every = scores.ood_scores(entry, "shapes")
    assert set(every) == {"elbo", "recon", "complexity"} and every["elbo"] is elbo_only["elbo"]
    assert not scores.ood_images("shapes", (1, 8, 8)).flags.writeable  # shared: nobody may change it


def test_denoising_a_test_image_and_the_breakdown_curve(store: ModelStore) -> None:
    entry = store.open_name("tiny-vae.safetensors")
    clean = entry.latents.image(3)
    result = scores.denoise(entry, clean, "salt-pepper", 0.3, seed=1)
    assert result.corrupted.shape == result.rebuilt.shape == clean.shape
    assert result.corrupted_error > 0.05 and result.rebuilt_error < result.corrupted_error  # it helps
    assert scores.denoise(entry, clean, "mask", 0.0).corrupted_error == 0.0
    levels, corrupted, rebuilt = scores.breakdown_curve(entry, "gaussian")
    assert levels[0] == 0.0 and corrupted[0] == 0.0 and corrupted == sorted(corrupted)
    assert rebuilt[-1] < corrupted[-1]  # at heavy noise the rebuild is still closer than the noise
    with pytest.raises(scores.InputError, match="level must lie in"):
        scores.denoise(entry, clean, "gaussian", 2.0)


def test_the_panels_through_the_page(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    with serving(build_app(tiny_checkpoint_dir, device="cpu", default_checkpoint="tiny-vae.safetensors")) as url:
        client = Client(url, verbose=False)
        client.predict("tiny-vae.safetensors", api_name="/load_checkpoint")
        clean, noisy, rebuilt, note = client.predict(4, "gaussian", 0.4, api_name="/denoise_index")
        assert all(Path(p).is_file() for p in (clean, noisy, rebuilt))
        assert note.startswith("**tiny-vae** · test image #4") and "squared error per pixel" in note
        again = client.predict("mask", 0.6, api_name="/denoise")[3]
        assert "test image #4" in again and "mask at level 0.6" in again  # the same image, corrupted anew
        note, histogram, typical, unusual = client.predict(api_name="/anomaly_scores")
        assert note.startswith("**tiny-vae** · 300 test images · −ELBO (nats, Bernoulli likelihood)")
        assert "most unusual" in unusual["label"]
        png = tmp_path / "blob.png"
        Image.fromarray(np.full((20, 20), 255, np.uint8)).save(png)
        said = client.predict(handle_file(str(png)), api_name="/anomaly_upload")
        assert re.search(r"more unusual than \*\*\d+ %\*\* of the test images", said), said
        histogram, compare = client.predict("shapes", api_name="/anomaly_compare")
        assert "AUROC" in compare and "shapes images" in compare
        # the chooser: each score ranks by itself, and a comparison gives every score's AUROC
        note = client.predict("recon", api_name="/anomaly_scores")[0]
        assert note.startswith("**tiny-vae** · 300 test images · reconstruction error")
        _, compare = client.predict("shapes", "complexity", api_name="/anomaly_compare")
        areas = re.findall(r"(−ELBO[^:]*|reconstruction error|−ELBO minus PNG length \(bits\)): \**(\d\.\d{3})", compare)
        assert compare.startswith("**tiny-vae** · AUROC") and "by −ELBO minus PNG length" in compare
        assert "By the other scores: −ELBO (nats, Bernoulli likelihood): " in compare, compare
        assert "reconstruction error: " in compare and len(areas) >= 2, compare
        with pytest.raises(Exception, match="is not in the list of choices"):  # Gradio's own check, one sentence
            client.predict("shapes", "nonsense", api_name="/anomaly_compare")
        plot = json.loads(histogram["plot"])
        assert [t["name"] for t in plot["data"]] == ["test images", "shapes (resized)"]
