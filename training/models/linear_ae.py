"""Linear autoencoder: one linear map in, one linear map out, squared error.

With a linear encoder and decoder and a squared-error loss, every minimum spans the same
subspace as PCA's top-D components (Baldi & Hornik 1989; Bourlard & Kamp 1988): the decoder's
columns are a basis of the principal subspace, though not the principal axes themselves (any
invertible mixing of them reconstructs as well). It is the lectures' bridge from PCA to
autoencoders, and the baseline that shows what the non-linear families add.

The likelihood is always Gaussian (squared error / 2c, with ``gaussian_c`` from the config),
whatever ``likelihood`` says: the PCA equivalence holds for squared error only. The loss uses the
decoder's raw linear output; ``decode`` (the contract's pixel means) clips it to [0, 1], which can
only bring a reconstruction closer to an image in [0, 1]. ``arch`` and ``hidden_dim`` are unused.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from vaescope.contract import Description, Gaussian, Likelihood, LossOutput, Posterior
from vaescope.training.config import ModelConfig
from vaescope.training.models.ae import AE_PRIOR_NOTE
from vaescope.training.models.base import LatentModel, register

LOGIT_EPS = 1e-6  # decode_logits = logit(clipped output); sigmoid gives the clipped output back


@register("linear-ae")
class LinearAE(LatentModel):
    showcase_rank = 6
    has_prior = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, h, w = config.image_shape
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, config.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(config.latent_dim, c * h * w), nn.Unflatten(1, (c, h, w)))

    def _words(self) -> tuple[str, str, str]:
        return ("Linear AE",
                "A linear autoencoder trained with squared error: its codes span the same directions as "
                "PCA's top components, so it shows what PCA does, written as an autoencoder.",
                AE_PRIOR_NOTE)

    def describe(self) -> Description:
        return dataclasses.replace(super().describe(), details=("linear", "Gaussian likelihood (squared error)"))

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] -> the point code W_e x + b_e [B, D]."""
        return Posterior.point(self.encoder(x))

    def decode_linear(self, z: Tensor) -> Tensor:
        """The decoder's raw output W_d z + b_d [B, C, H, W] (unclipped: what the loss sees)."""
        return self.decoder(z)

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """logit of the output clipped to [0, 1], so ``decode`` = clip(W_d z + b_d, 0, 1)."""
        return torch.logit(self.decode_linear(z).clamp(0, 1), eps=LOGIT_EPS)

    @property
    def likelihood(self) -> Likelihood:
        """Gaussian whatever the config says: the PCA equivalence holds for squared error only."""
        return Gaussian(self.config.gaussian_c)

    def recon_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        """Gaussian -log p(x|z) per image [B] of the clipped output (the metrics' reading)."""
        return self._gaussian_nll(torch.sigmoid(logits), x)

    def _gaussian_nll(self, mean: Tensor, x: Tensor) -> Tensor:
        c = self.config.gaussian_c
        return ((mean - x).pow(2) / (2 * c) + 0.5 * math.log(2 * math.pi * c)).flatten(-3).sum(-1)

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Squared error of the raw linear reconstruction, as a Gaussian NLL in nats per image."""
        recon = self._gaussian_nll(self.decode_linear(self.encode(x).mean), x if target is None else target).mean()
        return LossOutput(total=recon, recon=recon, kl=torch.zeros_like(recon))
