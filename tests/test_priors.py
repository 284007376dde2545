"""The prior is in the contract: every family hands out a Prior object (None for an AE) whose
samples are the model's own and whose density is the family's (N(0, I), a GMVAE's or mixture AAE's
mixture, a hierarchical VAE's p(z2) p(z1 | z2)), and the IWAE bound uses it."""

from __future__ import annotations

import math

import pytest
import torch

from vaescope.contract import GaussianMixture, StandardNormal, gaussian_log_prob, prior_of
from vaescope.training.config import ModelConfig
from vaescope.training.models import build_model


def model(family: str, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(model_type=family, image_shape=(1, 8, 8), latent_dim=4, arch="mlp", hidden_dim=16,
                         num_classes=10, options=options)
    return build_model(config, [str(i) for i in range(10)]).eval()


def test_an_autoencoder_has_no_prior_and_a_vae_a_standard_normal() -> None:
    assert prior_of(model("ae")) is None
    prior = prior_of(model("vae"))
    z = torch.randn(5, 4)
    torch.testing.assert_close(prior.log_prob(z), StandardNormal(4).log_prob(z))
    torch.testing.assert_close(prior.log_prob(z), -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1))


def test_a_gmvae_prior_is_its_mixture() -> None:
    gmvae = model("gmvae", components=3)
    prior = prior_of(gmvae)
    assert isinstance(prior, GaussianMixture) and prior.components == 3
    z = torch.randn(7, 4)
    parts = torch.stack([gaussian_log_prob(z, gmvae.prior_mean[k], gmvae.prior_logvar[k]) for k in range(3)], -1)
    torch.testing.assert_close(prior.component_log_prob(z), parts)
    torch.testing.assert_close(prior.log_prob(z), torch.logsumexp(parts, -1) - math.log(3))
    with torch.no_grad():
        drawn = prior.sample(4000, component=1, generator=torch.Generator().manual_seed(0))
        own = gmvae.sample(4000, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(drawn.mean(0), gmvae.prior_mean[1].detach(), atol=0.1, rtol=0)
    torch.testing.assert_close(drawn.mean(0), own.mean(0), atol=0.1, rtol=0)


def test_a_hierarchical_prior_is_p_z2_times_p_z1_given_z2() -> None:
    hvae = model("hvae")
    prior = prior_of(hvae)
    z = torch.randn(6, 4)
    z1, z2 = hvae.split_code(z)
    with torch.no_grad():
        want = gaussian_log_prob(z2, torch.zeros_like(z2), torch.zeros_like(z2)) + gaussian_log_prob(z1, *hvae.p_z1(z2))
        torch.testing.assert_close(prior.log_prob(z), want)


def test_a_mixture_aae_prior_is_its_fixed_mixture() -> None:
    aae = model("aae", prior="mixture", prior_components=4)
    z = aae.prior_means[:2].clone()  # at two of the means: the density is that of a mixture peak
    want = torch.logsumexp(torch.stack([gaussian_log_prob(z, m, torch.full_like(m, 2 * math.log(0.5)))
                                        for m in aae.prior_means], -1), -1) - math.log(4)
    torch.testing.assert_close(prior_of(aae).log_prob(z), want)


@pytest.mark.parametrize("family", ["vae", "hvae"])
def test_the_iwae_weights_use_the_models_prior(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net = model(family)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(1)
    with torch.no_grad():
        base = net.log_importance_weights(x, None, 5)
    monkeypatch.setattr(type(net), "prior_log_prob", lambda self, z: torch.zeros(z.shape[:-1]))
    torch.manual_seed(1)
    with torch.no_grad():
        flat = net.log_importance_weights(x, None, 5)
    assert not torch.allclose(base, flat)  # the prior's density is in the bound
