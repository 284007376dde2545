"""Hierarchical VAE with two stochastic layers (as the two-layer models of Burda et al. 2016).

Generative model, top down:   p(z2) = N(0, I),  p(z1|z2) = N(mu_p(z2), sigma_p(z2)^2),  p(x|z1).
Inference, bottom up:         q(z1|x) = N(mu_1(x), sigma_1(x)^2),  q(z2|z1) = N(mu_2(z1), sigma_2(z1)^2).

The ELBO, estimated with one ancestral sample z1 ~ q(z1|x), z2 ~ q(z2|z1):

    E[-log p(x|z1)] + E[log q(z1|x) - log p(z1|z2)] + E[KL(q(z2|z1) || N(0, I))],

the middle term as -H(q(z1|x)) (analytic) - log p(z1|z2) (sampled), the last one analytic given z1.
z1 (``bottom_dim``, close to the pixels) holds the detail; z2 (``top_dim``) only what helps
predict z1, a coarser summary (on digits, a linear probe reads the class from a 2-d z2 about 0.6-0.7
of the time, from a 6-d z1 about 0.9).

The code of the contract is the concatenation [z1, z2] [B, D1 + D2], D1 + D2 = ``latent_dim``,
described by two ``LatentGroup`` s, z1 first. **z1 is the default group** for maps and sliders:
``decode`` reads z1 only (p(x|z1)), so moving a z1 slider changes the image directly. Moving z2
changes the image through p(z1|z2): ``fill_group(z, "z2")`` replaces z1 by its conditional mean
E[z1|z2], and ``fill_group(z, "z1")`` fills z2 with E_q[z2|z1], so a view that moves one layer
fills the other with its conditional mean.

``encode`` returns a diagonal Gaussian over [z1, z2]: q(z1|x), and q(z2|z1) at z1 = E[z1|x]
(the true q(z1, z2|x) is not jointly Gaussian); ``kl_per_dim`` is likewise evaluated at those
means. The loss and the IWAE weights sample the layers in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vaescope.contract import (
    LOG_2PI,
    Description,
    LatentGroup,
    LossOutput,
    Posterior,
    gaussian_log_prob,
)
from vaescope.training.config import ConfigError, FamilyOptions, ModelConfig
from vaescope.training.models.base import LatentModel, register
from vaescope.training.models.nets import ImageDecoder, ImageEncoder

GROUPS = ("z1", "z2")  # bottom (default for maps and sliders), top


def _gaussian_head(d_in: int, hidden: int, d_out: int) -> nn.Module:
    """A small MLP giving (mean, logvar) [B, 2 * d_out] of a conditional Gaussian layer."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * d_out))


def _split(params: Tensor) -> tuple[Tensor, Tensor]:
    mean, logvar = params.chunk(2, dim=-1)
    return mean, logvar.clamp(-12, 8)  # clamp keeps exp() finite under AMP


@dataclass
class HVAEOptions(FamilyOptions):
    # a small top layer: it only has to describe z1; on digits a 2-of-8 top layer stayed active
    # more reliably than a 4-of-8 one
    top_dim: int = field(default=0, metadata={"help": "size of the top layer z2 (0: a quarter of latent-dim, "
                                                      "at least 1); the bottom layer z1 gets the rest"})

    def check(self) -> None:
        if self.top_dim < 0:
            raise ConfigError(f"top_dim must be >= 0, got {self.top_dim}")


@register("hvae")
class HVAE(LatentModel):
    Options = HVAEOptions
    showcase_rank = 5

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.top_dim, self.bottom_dim = self.layer_sizes(config)
        d1, d2, h = self.bottom_dim, self.top_dim, config.hidden_dim
        self.encoder = ImageEncoder(config)
        self.q1 = nn.Linear(h, 2 * d1)  # q(z1|x)
        self.q2 = _gaussian_head(d1, h, d2)  # q(z2|z1)
        self.p1 = _gaussian_head(d2, h, d1)  # p(z1|z2)
        self.decoder = ImageDecoder(config, d1)  # p(x|z1)

    @staticmethod
    def layer_sizes(config: ModelConfig) -> tuple[int, int]:
        """(top D2, bottom D1) for ``config``."""
        top = config.options.get("top_dim") or max(1, config.latent_dim // 4)
        return top, config.latent_dim - top

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        top, bottom = cls.layer_sizes(config)
        if top < 1 or bottom < 1:
            raise ConfigError(f"an hvae needs latent_dim >= 2 and 1 <= top_dim < latent_dim (got latent_dim "
                              f"{config.latent_dim}, top_dim {top})")

    def _words(self) -> tuple[str, str, str]:
        return (f"Hierarchical VAE (z1: {self.bottom_dim}, z2: {self.top_dim})",
                "A VAE with two layers of codes: the bottom one (z1) describes the image in detail, and the top "
                "one (z2) describes z1, so it holds a coarser summary of the image.", "")

    def describe(self) -> Description:
        """The base description with the two layers as latent groups, z1 (the default) first."""
        groups = (LatentGroup("z1", 0, self.bottom_dim), LatentGroup("z2", self.bottom_dim, self.top_dim))
        return dataclasses.replace(super().describe(), latent_groups=groups)

    # -- the layers -------------------------------------------------------------------------------
    def split_code(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """[B, D1 + D2] -> (z1 [B, D1], z2 [B, D2])."""
        return z[..., :self.bottom_dim], z[..., self.bottom_dim:]

    def q_z1(self, x: Tensor) -> Posterior:
        return Posterior(*_split(self.q1(self.encoder(x))))

    def q_z2(self, z1: Tensor) -> Posterior:
        return Posterior(*_split(self.q2(z1)))

    def p_z1(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """p(z1|z2) (mean, logvar) [..., D1]."""
        return _split(self.p1(z2))

    def fill_group(self, z: Tensor, keep: str) -> Tensor:
        """z [B, D1 + D2] with the layer other than ``keep`` replaced by its conditional mean:
        keep "z2" -> z1 = E_p[z1|z2]; keep "z1" -> z2 = E_q[z2|z1]."""
        z1, z2 = self.split_code(z)
        if keep == "z2":
            return torch.cat([self.p_z1(z2)[0], z2], -1)
        if keep == "z1":
            return torch.cat([z1, self.q_z2(z1).mean], -1)
        raise ValueError(f"keep must be one of {GROUPS}, got {keep!r}")

    # -- the contract -----------------------------------------------------------------------------
    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """q(z1|x) and q(z2|z1 = E[z1|x]) as one diagonal Gaussian over [z1, z2] [B, D1 + D2]."""
        q1 = self.q_z1(x)
        q2 = self.q_z2(q1.mean)
        return Posterior(torch.cat([q1.mean, q2.mean], -1), torch.cat([q1.logvar, q2.logvar], -1))

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """p(x|z1) for codes [B, D1 + D2] (z2 is not read: it acts through z1)."""
        return self.decoder(self.split_code(z)[0])

    def prior_transform(self, eps: Tensor, components: Tensor | None = None) -> Tensor:
        """Ancestral draw [n, D1 + D2] from noise: z2 = eps2 (N(0, t^2 I)), then z1 = mu(z2) +
        sigma(z2) * eps1, so the temperature scales both layers' spread."""
        z2 = eps[:, self.bottom_dim:]
        mean, logvar = self.p_z1(z2)
        return torch.cat([mean + (0.5 * logvar).exp() * eps[:, :self.bottom_dim], z2], -1)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z2) + log p(z1 | z2) for codes [.., D1 + D2]: the hierarchy's own density."""
        z1, z2 = self.split_code(z)
        top = gaussian_log_prob(z2, torch.zeros_like(z2), torch.zeros_like(z2))
        return top + gaussian_log_prob(z1, *self.p_z1(z2))

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        """[B, D1 + D2]: KL(q(z1|x) || p(z1|z2)) at z2 = its posterior mean, then KL(q(z2|z1) || N(0, I))."""
        mean1, mean2 = self.split_code(posterior.mean)
        logvar1, logvar2 = self.split_code(posterior.logvar)
        kl1 = Posterior(mean1, logvar1).kl_per_dim(*self.p_z1(mean2))
        return torch.cat([kl1, Posterior(mean2, logvar2).kl_per_dim()], -1)

    # -- the training side ------------------------------------------------------------------------
    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Negative ELBO with one ancestral sample; ``kl`` is the sum of both layers' terms."""
        q1 = self.q_z1(x)
        z1 = q1.sample()
        q2 = self.q_z2(z1)
        z2 = q2.sample()
        recon = self.recon_nll(self.decoder(z1), x if target is None else target).mean()
        entropy1 = 0.5 * (LOG_2PI + 1 + q1.logvar).sum(-1)  # H(q(z1|x)), analytic
        kl1 = (-entropy1 - gaussian_log_prob(z1, *self.p_z1(z2))).mean()
        kl2 = q2.kl().mean()
        w = self.config.beta if kl_weight is None else kl_weight
        return LossOutput(total=recon + w * (kl1 + kl2), recon=recon, kl=kl1 + kl2,
                          extras={"kl_z1": kl1.detach(), "kl_z2": kl2.detach()})

    def log_importance_weights(self, x: Tensor, condition: Tensor | None, k: int) -> Tensor:
        """log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), k ancestral samples [k, B]."""
        q1 = self.q_z1(x)
        z1 = q1.mean + q1.std * torch.randn(k, *q1.mean.shape, device=x.device)  # [k, B, D1]
        q2 = self.q_z2(z1)
        z2 = q2.sample()  # [k, B, D2]
        logits = self.decoder(z1.flatten(0, 1)).unflatten(0, (k, x.shape[0]))
        log_px = -self.recon_nll(logits, x)
        return log_px + self.prior_log_prob(torch.cat([z1, z2], -1)) - q1.log_prob(z1) - q2.log_prob(z2)
