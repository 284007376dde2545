"""Typed configs for models and training runs.

Both configs round-trip through plain dicts (``to_dict`` / ``from_dict``) so they can live inside a
checkpoint's JSON metadata. Validation happens in ``__post_init__`` so a bad value fails where it is
made, with a message that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

MODEL_TYPES = ("ae", "vae", "cvae", "gmvae")
ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
COMPONENT_INITS = ("random", "umap")


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message names the field."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        _check(not unknown, f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**data)


@dataclass
class ModelConfig(_DictMixin):
    model_type: str = "vae"
    image_shape: tuple[int, int, int] = (1, 28, 28)  # [C, H, W] of the data, fixed by the dataset
    latent_dim: int = 16
    arch: str = "conv"  # conv for >= 16 px images; mlp is faster and fine for 8x8 digits
    hidden_dim: int = 256  # width of MLP layers and of the conv nets' dense bottleneck
    base_channels: int = 32  # conv width at full resolution, doubled at each downsampling
    num_classes: int = 0  # CVAE conditioning size; 0 for unconditional models
    num_components: int = 0  # GMVAE mixture size K; 0 means "number of classes"
    likelihood: str = "bernoulli"  # BCE is the standard choice for [0, 1] images
    gaussian_c: float = 0.05  # variance c of the Gaussian likelihood: recon = |x - x'|^2 / 2c
    beta: float = 1.0  # KL weight (Higgins et al. 2017); 1 is the plain ELBO
    # GMVAE only: weight of the per-image part E_x KL(q(y|x) || q(y)) of the categorical KL; the
    # balance part KL(q(y) || uniform) keeps weight 1. 1 is the plain ELBO; < 1 allows confident
    # cluster assignments (see models/gmvae.py).
    categorical_weight: float = 1.0
    # GMVAE only: True gives q(z|x, y), whose network sees the component y; False gives the mean-field
    # q(z|x) (as in VaDE, Jiang et al. 2017), so y can only explain z through the mixture p(z|y) and
    # the clusters are those of the mixture (see models/gmvae.py).
    z_given_y: bool = True

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        _check(self.model_type in MODEL_TYPES, f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        _check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        _check(self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        _check(len(self.image_shape) == 3 and all(v > 0 for v in self.image_shape),
               f"image_shape must be [C, H, W] with positive sizes, got {list(self.image_shape)}")
        _check(self.image_shape[0] in (1, 3), f"images must have 1 or 3 channels, got {self.image_shape[0]}")
        _check(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}")
        _check(self.hidden_dim >= 1 and self.base_channels >= 1, "hidden_dim and base_channels must be >= 1")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _check(self.gaussian_c > 0, f"gaussian_c must be > 0, got {self.gaussian_c}")
        _check(self.categorical_weight >= 0, f"categorical_weight must be >= 0, got {self.categorical_weight}")
        _check(self.num_classes >= 0 and self.num_components >= 0, "num_classes / num_components must be >= 0")
        if self.model_type == "cvae":
            _check(self.num_classes >= 2, "a cvae needs num_classes >= 2 (a labelled dataset)")
        if self.model_type == "gmvae":
            if self.num_components == 0:
                self.num_components = self.num_classes
            _check(self.num_components >= 2, "a gmvae needs num_components >= 2 (set --components)")


@dataclass
class TrainConfig(_DictMixin):
    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # auto picks CUDA when present
    warmup_epochs: int = 0  # linear KL warm-up (Bowman et al. 2016) against posterior collapse
    # GMVAE Gumbel-softmax temperature, annealed exponentially from start to end over the run
    # (Jang et al. 2017 anneal towards ~0.5; lower is closer to one-hot but noisier gradients).
    temperature_start: float = 1.0
    temperature_end: float = 0.5
    # GMVAE only: "random" keeps the initial mixture; "umap" re-initialises it after
    # ``component_init_epoch`` epochs from a clustering of the codes (training/component_init.py).
    component_init: str = "random"
    component_init_epoch: int = 3
    # GMVAE with component_init "umap": cluster the codes once more after the last epoch and set the
    # mixture to that clustering, so the final components are those of the trained codes.
    component_refit_at_end: bool = False
    eval_k: int = 100  # importance samples for the IWAE NLL bound (Burda et al. 2016)
    data_dir: str = "~/.cache/vaescope/data"
    image_size: int = 64  # folder: datasets are resized to this square size
    amp: bool = True  # mixed precision, used only on CUDA
    # torch.compile the training step. Off by default: on the 2-core CPU it made the 16-d conv VAE
    # and GMVAE slower, about 0.8x the eager images/s, after ~10 s of compiling
    # (benchmarks/throughput.py). Its gain on a GPU is unmeasured here.
    compile: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the checkpoint

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        _check(self.temperature_start > 0 and self.temperature_end > 0, "temperatures must be > 0")
        _check(self.component_init in COMPONENT_INITS,
               f"component_init must be one of {COMPONENT_INITS}, got {self.component_init!r}")
        _check(self.component_init_epoch >= 1, f"component_init_epoch must be >= 1, got {self.component_init_epoch}")
        _check(not self.component_refit_at_end or self.component_init != "random",
               "component_refit_at_end (--component-refit-at-end) re-runs the component initialisation: "
               "also set component_init to umap (--component-init umap)")
        _check(self.eval_k >= 1, f"eval_k must be >= 1, got {self.eval_k}")
        _check(self.image_size in (8, 16, 28, 32, 64, 128), f"image_size must be one of 8, 16, 28, 32, 64, 128, got {self.image_size}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device must be auto, cpu or cuda[:N], got {self.device!r}")
