"""Adversarial autoencoder (Makhzani et al. 2015): a discriminator, instead of a KL term, makes the
codes' aggregate distribution q(z) = E_x q(z|x) match a prior p(z).

Three players share one loss and one optimizer step (the trainer calls ``loss`` once per batch):
- the autoencoder (encoder + decoder) minimises the reconstruction error;
- the discriminator D tells prior samples z_p ~ p(z) (label 1) from codes z = f(x) (label 0):
  BCE(D(z_p), 1) + BCE(D(z.detach()), 0). The codes are detached, so this term trains D only;
- the encoder fools D: BCE(D(z), 1), computed through ``torch.func.functional_call`` with D's
  parameters detached, so this term trains the encoder only (the non-saturating GAN loss,
  Goodfellow et al. 2014).
Each parameter thus receives only its own player's gradient from ``total.backward()``, which is
what Makhzani et al.'s alternating phases give, in one step. Once q(z) matches p(z), codes drawn
from the prior land where images are encoded and decode to images, unlike a plain AE's.

The encoder is deterministic (the paper's first variant), so the posterior is a point and the
model has no ELBO. The prior is N(0, I), or with ``prior mixture`` an equal-weight mixture of
``prior_components`` Gaussians (sd ``MIXTURE_SD``) whose means are fixed, seeded points on a
sphere of radius ``MIXTURE_RADIUS``; the model's condition is then "component": ``sample(n, k)``
draws component k, and ``encode`` reports p(k|z) under the prior as the responsibilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vaescope.contract import Condition, GaussianMixture, LossOutput, Posterior
from vaescope.training.config import ConfigError, FamilyOptions, ModelConfig
from vaescope.training.models.base import LatentModel, on_default_device, register, seeded_normal
from vaescope.training.models.nets import ImageDecoder, ImageEncoder

PRIORS = ("normal", "mixture")
MIXTURE_RADIUS = 4.0  # component means lie this far from the origin: ten on a circle are 5 sds apart
MIXTURE_SD = 0.5
MIXTURE_SEED = 0  # the means are a fixed function of (K, D): the same in every run and checkpoint


def mixture_means(k: int, d: int) -> Tensor:
    """K seeded points on the sphere of radius MIXTURE_RADIUS in R^D [K, D] (evenly spaced on a
    circle when D = 2, as in Makhzani et al.'s figures)."""
    if d == 2:
        angle = 2 * math.pi * torch.arange(k, device="cpu") / k
        return MIXTURE_RADIUS * torch.stack([angle.cos(), angle.sin()], -1)
    directions = seeded_normal(k, d, seed=MIXTURE_SEED)
    return MIXTURE_RADIUS * directions / directions.norm(dim=-1, keepdim=True)


@dataclass
class AAEOptions(FamilyOptions):
    prior: str = field(default="normal", metadata={"help": "the prior the codes are matched to: normal or mixture"})
    prior_components: int = field(default=10, metadata={"help": "Gaussians in the mixture prior (prior mixture)"})
    # 1: on digits the codes then matched the prior well enough for prior samples to read as digits
    adversarial_weight: float = field(default=1.0, metadata={"help": "weight of the encoder's fool-D term"})

    def check(self) -> None:
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior_components < 2:
            raise ConfigError(f"prior_components must be >= 2, got {self.prior_components}")
        if self.adversarial_weight < 0:
            raise ConfigError(f"adversarial_weight must be >= 0, got {self.adversarial_weight}")


@register("aae")
class AAE(LatentModel):
    Options = AAEOptions
    showcase_rank = 4

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d, h = config.latent_dim, config.hidden_dim
        self.encoder = ImageEncoder(config)
        self.head = nn.Linear(h, d)
        self.decoder = ImageDecoder(config, d)
        self.discriminator = nn.Sequential(nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2),
                                           nn.Linear(h, 1))
        self.mixture = self.options.prior == "mixture"
        if self.mixture:
            self.register_buffer("prior_means", on_default_device(mixture_means(self.options.prior_components, d)))

    @property
    def condition(self) -> Condition:
        return Condition("component", self.options.prior_components) if self.mixture else Condition()

    def _words(self) -> tuple[str, str, str]:
        prior = (f"a mixture of {self.options.prior_components} Gaussians" if self.mixture
                 else "a standard normal")
        return (f"AAE ({'mixture' if self.mixture else 'normal'} prior)",
                f"An adversarial autoencoder: a second network learns to tell its codes from draws of {prior}, "
                "and the encoder learns to fool it, so codes drawn from the prior decode to plausible images.", "")

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """The point code f(x) [B, D]; with a mixture prior, p(k|z) [B, K] as the responsibilities."""
        z = self.head(self.encoder(x))
        return Posterior.point(z, self._responsibilities(z) if self.mixture else None)

    def _responsibilities(self, z: Tensor) -> Tensor:
        """p(k|z) under the equal-weight mixture prior [B, K]."""
        return (-(z[:, None] - self.prior_means).pow(2).sum(-1) / (2 * MIXTURE_SD**2)).softmax(-1)

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """N(0, I), or the mixture of the fixed means with sd MIXTURE_SD."""
        if not self.mixture:
            return super().prior_log_prob(z)
        return GaussianMixture(self.prior_means, torch.full_like(self.prior_means, 2 * math.log(MIXTURE_SD))).log_prob(z)

    def prior_transform(self, eps: Tensor, components: Tensor | None = None) -> Tensor:
        """N(0, I): the noise; the mixture: its component's mean plus MIXTURE_SD times the noise."""
        if not self.mixture:
            return eps
        assert components is not None, "a mixture prior needs the components"
        return self.prior_means[components] + MIXTURE_SD * eps

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        """Zeros [B, D]: a point posterior has no density to compare with the prior."""
        return torch.zeros_like(posterior.mean)

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Reconstruction + the discriminator's loss (on detached codes) + the encoder's adversarial
        loss (through a detached copy of D); see the module docstring."""
        z = self.encode(x).mean
        recon = self.recon_nll(self.decode_logits(z), x if target is None else target).mean()
        z_prior = self.sample(len(x)).to(z.dtype)
        real, fake = self.discriminator(z_prior), self.discriminator(z.detach())
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fooled = functional_call(self.discriminator, frozen, (z,))
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        total = recon + self.options.adversarial_weight * g_loss + d_loss
        with torch.no_grad():
            d_accuracy = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
        return LossOutput(total=total, recon=recon, kl=torch.zeros_like(recon),
                          extras={"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "d_accuracy": d_accuracy})
