"""The model families: each one file that registers itself with ``@register`` (see ``base.py``).

Importing this package imports every family, which fills ``FAMILIES``; nothing else lists them.
"""

from __future__ import annotations

from vaescope.contract import LossOutput, Posterior
from vaescope.training.config import ModelConfig
from vaescope.training.models import (  # noqa: F401 - each registers its family
    aae,
    ae,
    contractive_ae,
    cvae,
    dae,
    gmvae,
    hvae,
    linear_ae,
    sparse_ae,
    vae,
    vrae,
)
from vaescope.training.models.base import FAMILIES, EpochEnd, LatentModel, family, register


def build_model(config: ModelConfig, class_names: tuple[str, ...] | list[str] = ()) -> LatentModel:
    """Instantiate the registered family of ``config.model_type``."""
    model = family(config.model_type)(config)
    model.class_names = tuple(str(c) for c in class_names)
    return model


__all__ = ["FAMILIES", "EpochEnd", "build_model", "family", "register", "LatentModel", "LossOutput", "Posterior",
           "ModelConfig"]
