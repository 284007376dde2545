"""explorer.core.sampling: class samples drawn the way each model's condition allows (a class input,
a mixture component, or neither), through the contract."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from vaescope.errors import InputError
from vaescope.explorer.core.codes import decode
from vaescope.explorer.core.sampling import (
    RIDGE,
    class_codes,
    class_gaussians,
    component_names,
    component_to_class,
    decode_under_every_class,
    sample_class,
)
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.config import ModelConfig
from vaescope.training.models import build_model


def latents_stub(mean: np.ndarray, labels: np.ndarray, component_probs: np.ndarray | None = None):
    """The fields of a LatentsCache the samplers read."""
    return SimpleNamespace(mean=mean, labels=labels, component_probs=component_probs,
                           has_labels=bool((labels >= 0).any()), __len__=lambda: len(mean))


def entry(model, latents=None) -> ModelEntry:
    """A store entry for a model, with (stubbed) latents or none."""
    if model.class_names == ():
        model.class_names = tuple(str(i) for i in range(10))
    return ModelEntry("key", "test-model", model, model.describe(), latents, "" if latents is not None else "none")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target  # [N, 64] in [0, 1], [N]


@pytest.fixture(scope="module")
def probe(digits) -> LogisticRegression:
    """A pixel classifier that judges which digit an 8x8 image shows."""
    x, y = digits
    return LogisticRegression(max_iter=2000).fit(x, y)


@pytest.fixture(scope="module")
def cvae(digits):
    """A 4-d MLP CVAE trained for 400 Adam steps on digits (a few seconds on CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP trains many times faster on one thread on a busy box
    try:
        return train_cvae(*digits, steps=400)
    finally:
        torch.set_num_threads(threads)


def train_cvae(pixels: np.ndarray, targets: np.ndarray, steps: int):
    torch.manual_seed(0)
    x, y = torch.from_numpy(pixels).reshape(-1, 1, 8, 8), torch.from_numpy(targets)
    model = build_model(ModelConfig(model_type="cvae", image_shape=(1, 8, 8), arch="mlp", latent_dim=4,
                                    num_classes=10, hidden_dim=128))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        loss = model.loss(x[idx], y[idx]).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tiny_model(model_type: str, **extra):
    torch.manual_seed(0)
    return build_model(ModelConfig(model_type=model_type, image_shape=(1, 8, 8), arch="mlp",
                                   latent_dim=4, hidden_dim=16, **extra)).eval()


# -- CVAE -----------------------------------------------------------------------------------------
def test_cvae_samples_show_the_requested_class(cvae, probe) -> None:
    accuracies = []
    for c in range(10):
        images, how = sample_class(entry(cvae), c, 20, seed=c, temperature=1.0)
        assert images.shape == (20, 1, 8, 8) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1
        assert f"class label “{c}”" in how.note and how.decoder_class == c
        accuracies.append((probe.predict(images.reshape(20, -1)) == c).mean())
    assert np.mean(accuracies) >= 0.8, accuracies


def test_cvae_decodes_one_code_under_every_class(cvae, probe) -> None:
    images = decode_under_every_class(entry(cvae), np.zeros(4, np.float32))
    assert images.shape == (10, 1, 8, 8)
    assert (probe.predict(images.reshape(10, -1)) == np.arange(10)).mean() >= 0.8


def test_sampling_is_seeded_and_temperature_scales_the_spread(cvae) -> None:
    a, _ = sample_class(entry(cvae), 3, 8, seed=1, temperature=1.0)
    b, _ = sample_class(entry(cvae), 3, 8, seed=1, temperature=1.0)
    c, _ = sample_class(entry(cvae), 3, 8, seed=2, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    hot = class_codes(entry(cvae), 3, 500, seed=0, temperature=2.0)
    cold = class_codes(entry(cvae), 3, 500, seed=0, temperature=0.5)
    np.testing.assert_allclose(hot.z, 4 * cold.z, rtol=1e-5)  # same noise, sd x 2 vs x 0.5
    assert cold.decoder_class == 3


def test_cvae_rejects_a_class_out_of_range(cvae) -> None:
    with pytest.raises(InputError, match="out of range"):
        sample_class(entry(cvae), 10, 2, seed=0, temperature=1.0)
    with pytest.raises(InputError, match="decoder takes the class"):
        decode_under_every_class(entry(tiny_model("vae")), np.zeros(4))


# -- GMVAE ----------------------------------------------------------------------------------------
def test_component_to_class_recovers_a_known_permutation() -> None:
    rng = np.random.default_rng(0)
    perm = np.array([2, 0, 3, 1])  # component k holds class perm[k]
    labels = rng.integers(0, 4, 2000)
    components = np.argsort(perm)[labels]
    noisy = rng.random(2000) < 0.2  # 20% of points land in a random component
    components[noisy] = rng.integers(0, 4, noisy.sum())
    probs = np.full((2000, 4), 0.05)
    probs[np.arange(2000), components] = 0.85
    labels[:100] = -1  # unknown labels are ignored
    assert component_to_class(probs, labels) == {k: int(perm[k]) for k in range(4)}


def gmvae_with_separated_components():
    model = tiny_model("gmvae", options={"components": 3})
    with torch.no_grad():
        model.prior_mean.copy_(10 * torch.eye(3, 4))  # component k centred at 10 e_k
        model.prior_logvar.fill_(0.0)
    return model


def test_gmvae_samples_the_component_matched_to_the_class() -> None:
    model = gmvae_with_separated_components()
    perm = np.array([1, 2, 0])  # component k holds class perm[k]
    labels = np.repeat(np.arange(3), 50)
    probs = np.eye(3)[np.argsort(perm)[labels]]
    latents = latents_stub(np.zeros((150, 4), np.float32), labels, probs)
    model.class_names = ("zero", "one", "two")
    for c in range(3):
        k = int(np.argsort(perm)[c])
        drawn = class_codes(entry(model, latents), c, 400, seed=0, temperature=1.0)
        z = drawn.z
        assert drawn.decoder_class is None and f"component {k}" in drawn.note
        centre = model.prior_mean.detach().numpy()
        nearest = np.linalg.norm(z[:, None] - centre[None], axis=2).argmin(axis=1)
        assert (nearest == k).all()
        np.testing.assert_allclose(z.mean(0), centre[k], atol=0.2)
        images, _ = sample_class(entry(model, latents), c, 400, seed=0, temperature=1.0)
        np.testing.assert_allclose(images, decode(entry(model), z, None), atol=1e-6)
    # the components are named by the class they were matched to
    assert component_names(entry(model, latents)) == [f"component {k} ≈ {('zero', 'one', 'two')[perm[k]]}"
                                                      for k in range(3)]


def test_gmvae_without_latents_uses_the_identity_mapping() -> None:
    model = gmvae_with_separated_components()
    drawn = class_codes(entry(model), 2, 200, seed=0, temperature=0.0)
    assert "component 2" in drawn.note and "component number = class number" in drawn.note
    np.testing.assert_allclose(drawn.z, np.tile([0, 0, 10, 0], (200, 1)))  # T = 0: the component mean
    with pytest.raises(InputError, match="out of range"):
        class_codes(entry(model), 3, 2, seed=0, temperature=1.0)
    assert component_names(entry(model)) == ["component 0", "component 1", "component 2"]


# -- VAE / AE -------------------------------------------------------------------------------------
def test_class_gaussians_fit_mean_and_ridged_covariance() -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(300, 3))
    labels = np.repeat([0, 1, 2], 100)
    labels[0] = -1
    labels[1] = 7  # a class with a single point: covariance is the ridge alone
    fitted = class_gaussians(means, labels)
    assert sorted(fitted) == [0, 1, 2, 7]
    mu, cov = fitted[1]
    np.testing.assert_allclose(mu, means[100:200].mean(0))
    np.testing.assert_allclose(cov, np.cov(means[100:200], rowvar=False, bias=True) + RIDGE * np.eye(3))
    np.testing.assert_allclose(fitted[7][1], RIDGE * np.eye(3))


@pytest.mark.parametrize("model_type", ["vae", "ae"])
def test_unconditional_model_needs_latents(model_type: str) -> None:
    with pytest.raises(InputError, match="needs labelled evaluation images"):
        sample_class(entry(tiny_model(model_type)), 0, 4, seed=0, temperature=1.0)


@pytest.mark.parametrize("model_type", ["vae", "ae"])
def test_unconditional_codes_centre_on_the_class_mean(model_type: str) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0, 0, 0], [5.0, 5, 0, 0]])
    labels = np.repeat([0, 1], 200)
    means = (centres[labels] + 0.5 * rng.normal(size=(400, 4))).astype(np.float32)
    latents = latents_stub(means, labels)
    model = tiny_model(model_type)
    drawn = class_codes(entry(model, latents), 1, 1000, seed=0, temperature=1.0)
    z = drawn.z
    assert drawn.decoder_class is None and "codes of the 200 “1” images" in drawn.note
    np.testing.assert_allclose(z.mean(0), means[labels == 1].mean(0), atol=0.1)
    np.testing.assert_allclose(z.std(0), means[labels == 1].std(0), rtol=0.15)
    z0 = class_codes(entry(model, latents), 1, 3, seed=0, temperature=0.0).z
    np.testing.assert_allclose(z0, np.tile(means[labels == 1].mean(0), (3, 1)), atol=1e-5)
    images, _ = sample_class(entry(model, latents), 1, 5, seed=0, temperature=1.0)
    assert images.shape == (5, 1, 8, 8)
    with pytest.raises(InputError, match="no labelled evaluation images"):
        class_codes(entry(model, latents), 4, 3, seed=0, temperature=1.0)
