"""VAE (Kingma & Welling 2014) with a diagonal Gaussian posterior and a N(0, I) prior.

beta-VAE (Higgins et al. 2017) is this model with ``beta != 1``; the KL warm-up lives in the
trainer's schedule, not here.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaescope.training.config import ModelConfig
from vaescope.training.models.base import LatentModel, Posterior
from vaescope.training.models.nets import ImageDecoder, ImageEncoder


class VAE(LatentModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = ImageEncoder(config)
        self.head = nn.Linear(config.hidden_dim, 2 * config.latent_dim)  # -> (mean, logvar)
        self.decoder = ImageDecoder(config, config.latent_dim)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] -> q(z|x) with mean / logvar [B, D]."""
        mean, logvar = self.head(self.encoder(x)).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8))  # clamp keeps exp() finite under AMP

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)
