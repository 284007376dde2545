"""Conditional VAE (Sohn et al. 2015): encoder and decoder both see the one-hot class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaescope.contract import Condition, Posterior
from vaescope.training.config import ConfigError, ModelConfig
from vaescope.training.models.base import LatentModel, register
from vaescope.training.models.nets import ImageDecoder, ImageEncoder


@register("cvae")
class CVAE(LatentModel):
    showcase_rank = 2
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k = config.num_classes
        self.encoder = ImageEncoder(config)
        self.head = nn.Linear(config.hidden_dim + k, 2 * config.latent_dim)
        self.decoder = ImageDecoder(config, config.latent_dim + k)

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        if config.num_classes < 2:
            raise ConfigError("a cvae needs num_classes >= 2 (a labelled dataset)")

    @property
    def condition(self) -> Condition:
        return Condition("class", self.config.num_classes)

    def _words(self) -> tuple[str, str, str]:
        return ("CVAE", "A conditional VAE: the class is handed to the encoder and the decoder, so the code only "
                        "has to hold what the class does not say (style, thickness, pose).", "")

    def _one_hot(self, y: Tensor | None, batch: int) -> Tensor:
        if y is None:
            raise ValueError("a CVAE needs class labels y [B] to encode and decode")
        return F.one_hot(y.long().reshape(batch), self.config.num_classes).float()

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        h = torch.cat([self.encoder(x), self._one_hot(condition, x.shape[0])], dim=-1)
        mean, logvar = self.head(h).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8))

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(torch.cat([z, self._one_hot(condition, z.shape[0])], dim=-1))
