"""The contract every model answers, so the explorer never branches on a model's class.

- ``encode(x, y=None) -> Posterior``
- ``decode(z, y=None) -> [B, C, H, W]`` pixel means in [0, 1]
- ``sample(n, condition=None, generator=None) -> [n, C, H, W]``
- ``loss(x, y=None, *, kl_weight=None, temperature=None) -> LossOutput``
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaescope.training.config import ModelConfig

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dim. Shapes broadcast; returns [...]."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) / logvar.exp()).sum(-1)


@dataclass
class Posterior:
    """A diagonal Gaussian q(z|x) [B, D], with the prior it is measured against.

    ``prior_mean`` / ``prior_logvar`` default to N(0, I); a GMVAE sets them to the chosen
    component's learned prior p(z|y). A deterministic posterior (the AE) has zero variance and no KL.
    """

    mean: Tensor
    logvar: Tensor
    prior_mean: Tensor | None = None
    prior_logvar: Tensor | None = None
    component_probs: Tensor | None = None  # GMVAE q(y|x) [B, K]
    deterministic: bool = False

    @property
    def std(self) -> Tensor:
        """[B, D]; zero for a deterministic posterior."""
        return torch.zeros_like(self.mean) if self.deterministic else (0.5 * self.logvar).exp()

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draw z = mean + std * eps (Kingma & Welling 2014). [B, D]"""
        if self.deterministic:
            return self.mean
        if generator is None:  # randn_like: the same draws, and torch.compile traces it with a dynamic batch size
            eps = torch.randn_like(self.mean)
        else:
            eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def prior(self) -> tuple[Tensor, Tensor]:
        """(mean, logvar) [B, D] of the prior this posterior is measured against; N(0, I) by default."""
        pm = torch.zeros_like(self.mean) if self.prior_mean is None else self.prior_mean
        plv = torch.zeros_like(self.logvar) if self.prior_logvar is None else self.prior_logvar
        return pm, plv

    def kl_per_dim(self) -> Tensor:
        """Analytic KL(q || prior) per latent dimension [B, D], in nats."""
        if self.deterministic:
            return torch.zeros_like(self.mean)
        pm, plv = self.prior()
        return 0.5 * (plv - self.logvar + (self.logvar.exp() + (self.mean - pm).pow(2)) / plv.exp() - 1)

    def kl(self) -> Tensor:
        """KL(q || prior) summed over dimensions [B]."""
        return self.kl_per_dim().sum(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) for z [..., B, D] -> [..., B]."""
        return gaussian_log_prob(z, self.mean, self.logvar)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) under this posterior's prior, for z [..., B, D] -> [..., B]."""
        return gaussian_log_prob(z, *self.prior())


@dataclass(frozen=True)
class LossOutput:
    """Batch-mean loss terms in nats per image. ``total`` is what the optimiser minimises."""

    total: Tensor
    recon: Tensor
    kl: Tensor  # unweighted KL (all latent terms), so recon + kl is the negative ELBO
    extras: dict[str, Tensor] = field(default_factory=dict)


class LatentModel(nn.Module):
    """Base class: the Gaussian-posterior VAE maths shared by the AE, VAE and CVAE.

    Subclasses provide ``encode`` and ``decode_logits``; everything else follows.
    """

    is_conditional: bool = False
    num_components: int = 0

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    # -- the contract -------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:  # pragma: no cover
        raise NotImplementedError

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:  # pragma: no cover
        """[B, D] -> pre-sigmoid outputs [B, C, H, W]."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """[B, D] -> pixel means [B, C, H, W] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, y))

    def prior_sample(self, n: int, condition: int | None, generator: torch.Generator | None) -> Tensor:
        """z ~ p(z) [n, D]; N(0, I) unless a subclass has a richer prior."""
        return torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, condition: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw n images from the model's prior [n, C, H, W]."""
        z = self.prior_sample(n, condition, generator)
        return self.decode(z, self.condition_labels(n, condition))

    def condition_labels(self, n: int, condition: int | None) -> Tensor | None:
        """Labels [n] for the decoder of a conditional model; None otherwise."""
        return None

    def loss(self, x: Tensor, y: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None) -> LossOutput:
        """Negative ELBO: E_q[-log p(x|z)] + w * KL(q(z|x) || p(z)), w = beta unless scheduled."""
        post = self.encode(x, y)
        logits = self.decode_logits(post.sample(), y)
        recon = self.recon_nll(logits, x).mean()
        kl = post.kl().mean()
        w = self.config.beta if kl_weight is None else kl_weight
        return LossOutput(total=recon + w * kl, recon=recon, kl=kl)

    def forward(self, x: Tensor, y: Tensor | None = None, kl_weight: float | None = None,
                temperature: float | None = None) -> LossOutput:
        """``loss`` under the name DistributedDataParallel wraps."""
        return self.loss(x, y, kl_weight=kl_weight, temperature=temperature)

    # -- shared maths ---------------------------------------------------------------------------
    def recon_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) per image [B] (or [..., B] for leading sample dims), in nats.

        Bernoulli: binary cross-entropy on logits. Gaussian with fixed variance c:
        |x - x'|^2 / 2c + D/2 log(2 pi c), so the value is a true NLL usable for IWAE.
        """
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        else:
            c = self.config.gaussian_c
            nll = (torch.sigmoid(logits) - x).pow(2) / (2 * c) + 0.5 * math.log(2 * math.pi * c)
        return nll.flatten(-3).sum(-1)

    def log_importance_weights(self, x: Tensor, y: Tensor | None, k: int) -> Tensor:
        """log p(x, z_i) - log q(z_i|x) for k posterior samples [k, B] (the IWAE bound's terms)."""
        post = self.encode(x, y)
        z = post.mean + post.std * torch.randn(k, *post.mean.shape, device=x.device)  # [k, B, D]
        logits = self.decode_logits(z.flatten(0, 1), None if y is None else y.repeat(k))
        log_px = -self.recon_nll(logits.unflatten(0, (k, x.shape[0])), x)
        return log_px + post.prior_log_prob(z) - post.log_prob(z)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
