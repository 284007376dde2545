"""Denoising autoencoder (Vincent et al. 2008, 2010): rebuild the clean x from a corrupted x̃.

Training draws x̃ ~ P(x̃|x) (``training/corruption.py``: Gaussian noise, masking or salt-and-pepper,
with a level), encodes x̃ and scores the reconstruction against the clean x. To undo the
corruption the model must learn what digits look like, not just copy pixels; its codes for x̃ and
x end up close. The backbone is the plain AE's, so the two compare directly.

Like dropout, the corruption is a training-time transform: in eval mode ``loss`` encodes the clean
x, so a DAE's validation and test numbers read the same as an AE's. To score denoising, corrupt
the input yourself (``corrupt``) and compare ``decode(encode(x̃).mean)`` with x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from vaescope.contract import LossOutput
from vaescope.training.config import ConfigError, FamilyOptions, TrainConfig
from vaescope.training.corruption import CORRUPTIONS, check_corruption, corrupt
from vaescope.training.models.ae import AE
from vaescope.training.models.base import register


@dataclass
class DAEOptions(FamilyOptions):
    # Gaussian noise is the worked digits tutorial's corruption; masking is Vincent et al.'s
    corruption: str = field(default="gaussian", metadata={"help": f"input corruption: {', '.join(CORRUPTIONS)}"})
    # 0.3: strong enough that copying the input is a bad strategy, weak enough that digits stay legible
    corruption_level: float = field(default=0.3, metadata={
        "help": "noise sd (gaussian) or fraction of pixels hit (mask, salt-pepper), in [0, 1]"})

    def check(self) -> None:
        try:
            check_corruption(self.corruption, self.corruption_level)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@register("dae")
class DAE(AE):
    Options = DAEOptions
    showcase_rank = 5

    @classmethod
    def check_run(cls, options: FamilyOptions, train: TrainConfig) -> None:
        """No --corrupt: the DAE corrupts its input itself (its ``corruption`` option)."""
        if train.corrupt:
            raise ConfigError(f"--corrupt {train.corrupt} cannot be used with --model dae, which corrupts its input "
                              "itself: set its --corruption and --corruption-level instead")

    def _words(self) -> tuple[str, str, str]:
        o = self.options
        return (f"Denoising AE ({o.corruption} {o.corruption_level:g})",
                "A denoising autoencoder: trained to rebuild each clean image from a corrupted copy, it has to "
                "learn what the images look like, so it can also clean up noisy ones.", super()._words()[2])

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """-log p(x | z = f(x̃)) with x̃ ~ P(x̃|x) in training mode; f(x) in eval mode."""
        x_in = corrupt(x, self.options.corruption, self.options.corruption_level) if self.training else x
        recon = self.recon_nll(self.decode_logits(self.encode(x_in).mean), x if target is None else target).mean()
        return LossOutput(total=recon, recon=recon, kl=torch.zeros_like(recon))
