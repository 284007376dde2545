"""Conditional VAE (Sohn et al. 2015): encoder and decoder both see the one-hot class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaescope.training.config import ModelConfig
from vaescope.training.models.base import LatentModel, Posterior
from vaescope.training.models.nets import ImageDecoder, ImageEncoder


class CVAE(LatentModel):
    is_conditional = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k = config.num_classes
        self.encoder = ImageEncoder(config)
        self.head = nn.Linear(config.hidden_dim + k, 2 * config.latent_dim)
        self.decoder = ImageDecoder(config, config.latent_dim + k)

    def _one_hot(self, y: Tensor | None, batch: int) -> Tensor:
        if y is None:
            raise ValueError("a CVAE needs class labels y [B] to encode and decode")
        return F.one_hot(y.long().reshape(batch), self.config.num_classes).float()

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        h = torch.cat([self.encoder(x), self._one_hot(y, x.shape[0])], dim=-1)
        mean, logvar = self.head(h).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8))

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(torch.cat([z, self._one_hot(y, z.shape[0])], dim=-1))

    def condition_labels(self, n: int, condition: int | None) -> Tensor:
        if condition is None:
            raise ValueError("CVAE.sample needs a class index as condition")
        if not 0 <= int(condition) < self.config.num_classes:
            raise ValueError(f"class {condition} out of range 0..{self.config.num_classes - 1}")
        return torch.full((n,), int(condition), dtype=torch.long, device=self.device)
