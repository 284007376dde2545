"""Model registry: one name per family, one contract (see ``base.py``)."""

from __future__ import annotations

from training.config import ModelConfig
from training.models.ae import AE
from training.models.base import LatentModel, LossOutput, Posterior
from training.models.cvae import CVAE
from training.models.gmvae import GMVAE
from training.models.vae import VAE

MODELS: dict[str, type[LatentModel]] = {"ae": AE, "vae": VAE, "cvae": CVAE, "gmvae": GMVAE}


def build_model(config: ModelConfig) -> LatentModel:
    """Instantiate the registered class for ``config.model_type``."""
    return MODELS[config.model_type](config)


__all__ = ["MODELS", "build_model", "LatentModel", "LossOutput", "Posterior", "ModelConfig"]
