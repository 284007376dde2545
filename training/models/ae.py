"""Deterministic autoencoder: the baseline whose latent space has no prior.

Its "posterior" is a point (zero variance, zero KL), so sampling z ~ N(0, I) lands wherever the
codes happen not to be, and the decoded prior samples are mostly noise: the point of comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaescope.training.config import ModelConfig
from vaescope.training.models.base import LossOutput, Posterior
from vaescope.training.models.vae import VAE


class AE(VAE):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.hidden_dim, config.latent_dim)  # a code, no variance

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        mean = self.head(self.encoder(x))
        return Posterior(mean, torch.full_like(mean, float("-inf")), deterministic=True)

    def loss(self, x: Tensor, y: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None) -> LossOutput:
        """Reconstruction only."""
        recon = self.recon_nll(self.decode_logits(self.encode(x).mean), x).mean()
        return LossOutput(total=recon, recon=recon, kl=torch.zeros_like(recon))
