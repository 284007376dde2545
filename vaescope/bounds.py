"""Measures of how well a model explains images, written against the contract alone.

Each is a function of the model's posterior (``encode``), its KL from its own prior
(``kl_per_dim``) and its declared likelihood (``likelihood``): nothing here asks which family a model
is, so training metrics, the explorer's scores and the lessons compute the same numbers.

- ``negative_elbo``: -log p(x | z = posterior mean) + KL(q(z|x) || p(z)) per image, in nats (the
  ELBO's reconstruction term at the posterior mean: the deterministic score the explorer ranks by).
- ``reconstruction_error``: the mean squared error per pixel of decode(posterior mean).

Examples:
    >>> import torch
    >>> from vaescope.training.config import ModelConfig
    >>> from vaescope.training.models import build_model
    >>> model = build_model(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, arch="mlp"))
    >>> negative_elbo(model, torch.rand(3, 1, 8, 8)).shape
    torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaescope.contract import Likelihood, likelihood_of


@dataclass(frozen=True)
class Reconstruction:
    """One batch through the model at the posterior mean."""

    decoded: Tensor  # decode(mean) [B, C, H, W], pixel means in [0, 1]
    kl: Tensor  # KL(q(z|x) || p(z)) [B] in nats (zeros for a model without a prior)


@torch.inference_mode()
def reconstruct(model: object, x: Tensor, condition: Tensor | None = None) -> Reconstruction:
    """x [B, C, H, W] in [0, 1] -> its reconstruction at the posterior mean and its KL [B]."""
    post = model.encode(x, condition)  # type: ignore[attr-defined]
    decoded = model.decode(post.mean, condition).float()  # type: ignore[attr-defined]
    kl = model.kl_per_dim(post).float().sum(-1)  # type: ignore[attr-defined]
    return Reconstruction(decoded, kl)


def negative_elbo(model: object, x: Tensor, condition: Tensor | None = None,
                  likelihood: Likelihood | None = None) -> Tensor:
    """-log p(x | z = E_q[z]) + KL(q(z|x) || p(z)) [B] in nats, under the model's own likelihood
    (or ``likelihood``). ValueError for a model that declares none: its log-likelihood is unknown."""
    found = likelihood if likelihood is not None else likelihood_of(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} declares no likelihood, so its ELBO is unknown; "
                         "score it by reconstruction_error")
    rec = reconstruct(model, x, condition)
    return -found.log_prob(x, rec.decoded) + rec.kl


def reconstruction_error(model: object, x: Tensor, condition: Tensor | None = None) -> Tensor:
    """Mean squared error per pixel [B] of decode(posterior mean) against x."""
    rec = reconstruct(model, x, condition)
    return (rec.decoded - x.float()).pow(2).flatten(1).mean(1)
