"""Bundles carry the prior and the likelihood their model has: vs.export refuses a model whose own
sample() disagrees with the prior it would export (docs/adding-a-model.md's old advice), a bundle
whose prior graph was swapped is refused when opened, the likelihood travels in the metadata, and
a bundle is written with the usual file mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign_models import digits, trained
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

import vaescope as vs
from vaescope.bounds import negative_elbo
from vaescope.bundle import BUNDLE_KEY, PRIOR_CHECK_DRAWS, BundleError, load_bundle
from vaescope.contract import Gaussian
from vaescope.training.config import ModelConfig
from vaescope.training.models import family

SHIFT = 5.0
VAE = family("vae")


class SampleOnlyVAE(VAE):
    """A prior N(5, I) written the way the old guide said: ``sample`` overridden, nothing else."""

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        return super().sample(n, condition, temperature, generator) + SHIFT


class ShiftedVAE(VAE):
    """The same prior written the way the guide says now: ``prior_transform`` (and its KL)."""

    def prior_transform(self, eps: Tensor, components: Tensor | None = None) -> Tensor:
        return eps + SHIFT

    def kl_per_dim(self, posterior):  # noqa: ANN001, ANN201 - KL from N(SHIFT, I)
        return posterior.kl_per_dim(torch.full_like(posterior.mean, SHIFT))


def build(cls: type, **config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(ModelConfig(model_type="vae", image_shape=(1, 8, 8), latent_dim=3, arch="mlp", hidden_dim=16,
                           **config)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits()[2][:32]


def test_a_model_whose_sample_disagrees_with_its_exported_prior_is_not_written(tmp_path: Path, images) -> None:
    path = tmp_path / "sample-only.safetensors"
    with pytest.raises(BundleError, match=r"sample\(\) and the prior it exports disagree: over 4,096 draws, dimension "
                                          r"\d has mean 5\.\d+ and sd [01]\.\d+ from sample\(\) but mean -?0\.\d+ .*"
                                          r"defines prior_transform .*Not written"):
        vs.export(build(SampleOnlyVAE), path, images=images)
    assert not path.exists()


def test_a_prior_written_with_prior_transform_travels_in_the_bundle(tmp_path: Path, images) -> None:
    """The guide's way: the bundle's prior samples have the model's mean and covariance within
    sampling error (and the KL graph is the model's, so scores agree)."""
    model = build(ShiftedVAE)
    bundle, meta, _ = load_bundle(vs.export(model, tmp_path / "shifted.safetensors", images=images))
    n = PRIOR_CHECK_DRAWS
    want = model.sample(n, generator=torch.Generator().manual_seed(1)).detach().numpy()
    got = bundle.sample(n, generator=torch.Generator().manual_seed(2)).numpy()
    assert np.abs(got.mean(0) - SHIFT).max() < 6 / np.sqrt(n)
    np.testing.assert_allclose(got.mean(0), want.mean(0), atol=8 / np.sqrt(n))
    np.testing.assert_allclose(np.cov(got.T), np.cov(want.T), atol=0.15)
    np.testing.assert_allclose(meta.prior_moments[0], SHIFT, atol=6 / np.sqrt(n))
    with torch.no_grad():
        np.testing.assert_allclose(negative_elbo(bundle, images), negative_elbo(model, images), rtol=1e-4, atol=1e-3)


def _swap_tensor(path: Path, key: str, data: bytes) -> None:
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    tensors[key] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.slow
def test_a_bundle_whose_prior_graph_was_swapped_is_refused(tmp_path: Path, images) -> None:
    """Another model's prior graph put in a bundle (the metadata untouched) gives other codes on the
    recorded noise: refused when the bundle is opened."""
    plain = vs.export(build(VAE), tmp_path / "plain.safetensors", images=images)
    shifted = vs.export(build(ShiftedVAE), tmp_path / "shifted.safetensors", images=images)
    with safe_open(str(shifted), framework="pt") as fh:
        other_prior = fh.get_tensor("onnx.prior").numpy().tobytes()
    _swap_tensor(plain, "onnx.prior", other_prior)
    with pytest.raises(BundleError, match=r"its prior graph does not give the prior it was exported with \(dimension "
                                          r"\d: mean [45]\.\d+, recorded -?0\.\d+\): the prior graph was altered"):
        load_bundle(plain)


@pytest.mark.slow
def test_the_likelihood_travels_and_a_foreign_model_declares_none(tmp_path: Path, images) -> None:
    model = build(VAE, likelihood="gaussian", gaussian_c=0.1)
    bundle, meta, _ = load_bundle(vs.export(model, tmp_path / "gaussian.safetensors", images=images))
    assert bundle.likelihood == Gaussian(0.1) == meta.likelihood
    with torch.no_grad():
        np.testing.assert_allclose(negative_elbo(bundle, images), negative_elbo(model, images), rtol=1e-4, atol=1e-3)
    with safe_open(str(tmp_path / "gaussian.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()[BUNDLE_KEY])["likelihood"] == {"kind": "gaussian", "variance": 0.1}
    foreign, _, _ = load_bundle(vs.export(trained("examples"), tmp_path / "foreign.safetensors", images=images))
    assert foreign.likelihood is None


def test_a_bundle_is_written_with_the_usual_file_mode(tmp_path: Path, images) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path = vs.export(build(VAE), tmp_path / "mode.safetensors", images=images)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
