"""Deterministic autoencoder: the baseline whose latent space has no prior.

Its "posterior" is a point (zero variance, zero KL), so sampling z ~ N(0, I) lands wherever the
codes happen not to be, and the decoded prior samples are mostly noise: the point of comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaescope.contract import LossOutput, Posterior
from vaescope.training.config import ModelConfig
from vaescope.training.models.base import register
from vaescope.training.models.vae import VAE

AE_PRIOR_NOTE = ("An autoencoder has no prior: nothing decides where its codes lie, so codes drawn from "
                 "N(0, I) land away from where the encoder puts images, and decode to smudged, tangled strokes "
                 "more often than to clean digits.")


@register("ae")
class AE(VAE):
    showcase_rank = 3
    has_prior = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.hidden_dim, config.latent_dim)  # a code, no variance

    def _words(self) -> tuple[str, str, str]:
        return ("AE", "A plain autoencoder: each image is squeezed into one code and rebuilt from it; nothing "
                      "organises where the codes lie.", AE_PRIOR_NOTE)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        return Posterior.point(self.head(self.encoder(x)))

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Reconstruction only (of ``target``, default ``x``)."""
        recon = self.recon_nll(self.decode_logits(self.encode(x).mean), x if target is None else target).mean()
        return LossOutput(total=recon, recon=recon, kl=torch.zeros_like(recon))
