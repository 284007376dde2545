"""VAE (Kingma & Welling 2014) with a diagonal Gaussian posterior and a N(0, I) prior.

beta-VAE (Higgins et al. 2017) is this model with ``beta != 1``; the KL warm-up lives in the
trainer's schedule, not here.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaescope.contract import Posterior
from vaescope.training.config import ModelConfig
from vaescope.training.models.base import LatentModel, register
from vaescope.training.models.nets import ImageDecoder, ImageEncoder


@register("vae")
class VAE(LatentModel):
    showcase_rank = 0
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = ImageEncoder(config)
        self.head = nn.Linear(config.hidden_dim, 2 * config.latent_dim)  # -> (mean, logvar)
        self.decoder = ImageDecoder(config, config.latent_dim)

    def _words(self) -> tuple[str, str, str]:
        beta = self.config.beta
        title = "VAE" if beta == 1 else f"β-VAE (β = {beta:g})"
        summary = ("A variational autoencoder: each image becomes a small cloud of codes, pulled towards a "
                   "standard normal prior, so codes drawn from that prior decode to plausible images.")
        if beta > 1:
            summary += " A β above 1 pulls harder, trading sharp reconstructions for a smoother, simpler code."
        return title, summary, ""

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] -> q(z|x) with mean / logvar [B, D]."""
        mean, logvar = self.head(self.encoder(x)).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8))  # clamp keeps exp() finite under AMP

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(z)
