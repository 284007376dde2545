"""Typed configs for models and training runs.

Both configs round-trip through plain dicts (``to_dict`` / ``from_dict``) so they can live inside a
checkpoint's JSON metadata. Validation happens in ``__post_init__`` so a bad value fails where it is
made, with a message that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

from vaescope.errors import InputError

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
COMPONENT_INITS = ("random", "umap")


class ConfigError(InputError):
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


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass
class FamilyOptions(_DictMixin):
    """Base of a family's own hyper-parameters (its ``Options``): a dataclass whose fields are
    scalars (int / float / bool / str) with a comment-like ``metadata={"help": ...}``, which also
    becomes the help of the field's ``latent-train`` flag. Values are type-checked on creation and
    then by the subclass's ``check``, which raises ConfigError naming the option."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind, value = _SCALARS.get(str(f.type)), getattr(self, f.name)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise ConfigError(f"option {f.name} must be a {kind.__name__}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a value out of range; nothing to check by default."""


# Keys a format-1 checkpoint (and an older --config file) kept at the top of model_config; they are
# the GMVAE's options now (models/gmvae.py).
LEGACY_GMVAE_KEYS = {"num_components": "components", "categorical_weight": "categorical_weight",
                     "z_given_y": "z_given_y"}


@dataclass
class ModelConfig(_DictMixin):
    """What every family shares; a family's own hyper-parameters live in ``options``, checked by
    its ``Options`` dataclass (``models/<family>.py``), so adding a family never edits this file."""

    model_type: str = "vae"  # a registered family (training/models/__init__.py lists them)
    image_shape: tuple[int, int, int] = (1, 28, 28)  # [C, H, W] of the data, fixed by the dataset
    latent_dim: int = 16
    arch: str = "conv"  # conv for >= 16 px images; mlp is faster and fine for 8x8 digits
    hidden_dim: int = 256  # width of MLP layers and of the conv nets' dense bottleneck
    base_channels: int = 32  # conv width at full resolution, doubled at each downsampling
    num_classes: int = 0  # classes of the dataset (a class-conditional family needs them); 0 if unlabelled
    likelihood: str = "bernoulli"  # BCE is the standard choice for [0, 1] images
    gaussian_c: float = 0.05  # variance c of the Gaussian likelihood: recon = |x - x'|^2 / 2c
    beta: float = 1.0  # KL weight (Higgins et al. 2017); 1 is the plain ELBO; families without a KL ignore it
    options: dict[str, Any] = field(default_factory=dict)  # the family's own, see its Options

    def __post_init__(self) -> None:
        from vaescope.training.models import family  # the registry imports this module: import late

        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        _check(isinstance(self.model_type, str), f"model_type must be a string, got {self.model_type!r}")
        cls = family(self.model_type)  # raises ConfigError naming the registered families
        _check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        _check(self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        _check(len(self.image_shape) == 3 and all(v > 0 for v in self.image_shape),
               f"image_shape must be [C, H, W] with positive sizes, got {list(self.image_shape)}")
        _check(self.image_shape[0] in (1, 3), f"images must have 1 or 3 channels, got {self.image_shape[0]}")
        _check(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}")
        _check(self.hidden_dim >= 1 and self.base_channels >= 1, "hidden_dim and base_channels must be >= 1")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _check(self.gaussian_c > 0, f"gaussian_c must be > 0, got {self.gaussian_c}")
        _check(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")
        _check(isinstance(self.options, dict), f"options must be a JSON object, got {type(self.options).__name__}")
        self.options = cls.Options.from_dict(self.options).to_dict()  # defaults filled, values checked
        cls.check_config(self)

    def family_options(self) -> Any:
        """This config's options as its family's ``Options`` dataclass."""
        from vaescope.training.models import family

        return family(self.model_type).Options.from_dict(self.options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; a format-1 dict (the GMVAE's keys at the top) is upgraded."""
        data = dict(data)
        legacy = {LEGACY_GMVAE_KEYS[k]: data.pop(k) for k in list(data) if k in LEGACY_GMVAE_KEYS}
        if data.get("model_type") == "gmvae" and legacy:
            data["options"] = {**legacy, **data.get("options", {})}
        return super().from_dict(data)


@dataclass
class TrainConfig(_DictMixin):
    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # auto picks CUDA, then Apple's MPS, then the CPU
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
        _check(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
               f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}")
