"""Sparse autoencoder (Ng, "Sparse autoencoder", CS294A lecture notes, 2011).

The code is a layer of D sigmoid units, h = sigmoid(W f(x) + b) in (0, 1). A penalty keeps each
unit's mean activation over the batch, ρ̂_l = mean_b h_l(x_b), near a small target ρ:

    loss = E[-log p(x|h)] + weight * sum_l KL(ρ || ρ̂_l),
    KL(ρ || ρ̂) = ρ log(ρ / ρ̂) + (1 - ρ) log((1 - ρ) / (1 - ρ̂))   (two Bernoulli distributions).

Each unit then fires for few images, so the code can be wider than the input (overcomplete,
e.g. 64 or more units for 8x8 digits) without learning the identity. ``hidden_activations(x)``
[B, D] and ``mean_activations(x)`` [D] are what a diagnostics panel plots against ρ; since the
units are the code, ``encode(x).mean`` holds the same activations (so the explorer's encoded
latents already have them) and ``describe().details`` names ρ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vaescope.contract import Description, LossOutput, Posterior
from vaescope.training.config import ConfigError, FamilyOptions
from vaescope.training.models.ae import AE
from vaescope.training.models.base import register

EPS = 1e-6  # keeps the logs of the sparsity KL finite when a unit is always off or always on

SPARSE_PRIOR_NOTE = ("A sparse autoencoder has no prior: its codes are unit activations in (0, 1), mostly near 0, "
                     "so codes drawn from N(0, I) land where no image is encoded and decode to noise.")


def sparsity_kl(rho: float, rho_hat: Tensor) -> Tensor:
    """KL(Bernoulli(ρ) || Bernoulli(ρ̂_l)) per unit, for mean activations ρ̂ [D] -> [D], in nats."""
    rho_hat = rho_hat.clamp(EPS, 1 - EPS)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


@dataclass
class SparseAEOptions(FamilyOptions):
    # 0.05: Ng's lecture notes' value; each unit fires for about one image in twenty
    sparsity_target: float = field(default=0.05, metadata={"help": "target mean activation ρ of each unit, in (0, 1)"})
    # 1: on digits, 64 units reached a mean activation of 0.05 for ~4% more reconstruction error
    sparsity_weight: float = field(default=1.0, metadata={"help": "weight of sum_l KL(ρ || ρ̂_l) in the loss"})

    def check(self) -> None:
        if not 0 < self.sparsity_target < 1:
            raise ConfigError(f"sparsity_target must lie in (0, 1), got {self.sparsity_target}")
        if self.sparsity_weight < 0:
            raise ConfigError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")


@register("sparse-ae")
class SparseAE(AE):
    Options = SparseAEOptions
    showcase_rank = 7

    def _words(self) -> tuple[str, str, str]:
        rho = self.options.sparsity_target
        return (f"Sparse AE (ρ = {rho:g})",
                f"A sparse autoencoder: the average activation of each of its {self.config.latent_dim} code units "
                f"is held near a small target ({rho:g}), so each unit stays quiet for most images and the code "
                "can be wider than the image without simply copying it.", SPARSE_PRIOR_NOTE)

    def describe(self) -> Description:
        """The base description; its details name the target ρ (the code is the units, so a panel
        gets the activations from ``encode`` and ρ from here)."""
        base = super().describe()
        target = f"sigmoid code units, target mean activation ρ = {self.options.sparsity_target:g}"
        return dataclasses.replace(base, details=(*base.details, target),
                                   activation_target=float(self.options.sparsity_target))

    def hidden_activations(self, x: Tensor) -> Tensor:
        """The code units' activations h(x) in (0, 1) for images x [B, C, H, W] -> [B, D]."""
        return torch.sigmoid(self.head(self.encoder(x)))

    @torch.no_grad()
    def mean_activations(self, x: Tensor) -> Tensor:
        """Each unit's mean activation ρ̂_l over the images x [B, C, H, W] -> [D] (compare with ρ)."""
        return self.hidden_activations(x).mean(0)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """The point code h(x) [B, D]."""
        return Posterior.point(self.hidden_activations(x))

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Reconstruction + weight * sum_l KL(ρ || ρ̂_l), ρ̂ the batch-mean activations."""
        h = self.hidden_activations(x)
        recon = self.recon_nll(self.decode_logits(h), x if target is None else target).mean()
        rho_hat = h.float().mean(0)
        sparsity = sparsity_kl(self.options.sparsity_target, rho_hat).sum()
        return LossOutput(total=recon + self.options.sparsity_weight * sparsity, recon=recon,
                          kl=torch.zeros_like(recon),
                          extras={"sparsity_kl": sparsity.detach(), "mean_activation": rho_hat.mean().detach()})
