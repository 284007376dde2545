"""Model registry: one name per family, one contract (see ``base.py``)."""

from __future__ import annotations

from vaescope.training.config import ModelConfig
from vaescope.training.models.ae import AE
from vaescope.training.models.base import LatentModel, LossOutput, Posterior
from vaescope.training.models.cvae import CVAE
from vaescope.training.models.gmvae import GMVAE
from vaescope.training.models.vae import VAE

MODELS: dict[str, type[LatentModel]] = {"ae": AE, "vae": VAE, "cvae": CVAE, "gmvae": GMVAE}


def build_model(config: ModelConfig) -> LatentModel:
    """Instantiate the registered class for ``config.model_type``."""
    return MODELS[config.model_type](config)


__all__ = ["MODELS", "build_model", "LatentModel", "LossOutput", "Posterior", "ModelConfig"]
