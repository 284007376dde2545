"""Typed configs for models and training runs.

Both configs round-trip through plain dicts (``to_dict`` / ``from_dict``) so they can live inside a
checkpoint's JSON metadata. Validation happens in ``__post_init__`` so a bad value fails where it is
made, with a message that names the field.

Neither names a family: a family's hyper-parameters are its ``Options`` (``models/<family>.py``),
and the keys older files kept elsewhere say themselves where they moved
(``FamilyOptions.FROM_MODEL_CONFIG`` / ``FROM_TRAIN_CONFIG``), so old checkpoints, resume states
and ``--config`` files are read into today's layout.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from vaescope import limits
from vaescope.training.checks import (
    ConfigError,
    Range,
    as_bool,
    as_choice,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    check_json,
    only_keys,
)

__all__ = ["ARCHS", "BINARIZE", "DISPLAYS", "LIKELIHOODS", "ConfigError", "FamilyOptions", "ModelConfig",
           "TrainConfig", "auto_arch", "check_run_options", "moved_train_keys"]

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
DISPLAYS = ("image", "line")  # how the data is drawn: images, or sequences as lines (waveforms)
BINARIZE = ("none", "dynamic", "static")  # --binarize: see TrainConfig
CONV_MIN_SIDE = 16  # the conv nets need square images of at least this side (--arch auto)
IMAGE_SIZES = (8, 16, 28, 32, 64, 128)  # folder: datasets are resized to one of these
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def typed_value(value: Any, kind: str, where: str, bounds: Range | None) -> Any:
    """``value`` checked against a dataclass field's annotation ``kind`` (and ``bounds`` for a
    number); ints given for a float become floats. Raises ConfigError naming ``where``."""
    if kind == "int":
        return as_int(value, where, bounds)
    if kind == "float":
        return as_float(value, where, bounds)
    if kind == "bool":
        return as_bool(value, where)
    if kind == "str":
        return as_str(value, where)
    if kind.startswith("tuple[int"):
        items = as_list(value, where, kind.count("int"))
        return tuple(as_int(v, f"{where}[{i}]", bounds) for i, v in enumerate(items))
    if kind.startswith("dict"):
        check_json(as_dict(value, where), where, finite=True)
        return value
    return value


class _DictMixin:
    """Round trip through plain dicts, with every field's type and range checked on creation."""

    RANGES: ClassVar[dict[str, Range]] = {}  # a number field's bounds (each names its limit)
    DEFAULT_RANGE: ClassVar[Range | None] = None  # the bounds of a number field not in RANGES
    PREFIX: ClassVar[str] = ""  # put before a field's name in messages

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``: a JSON object whose keys are this class's fields (unknown keys are
        refused, missing ones take their defaults)."""
        data = as_dict(data, cls.__name__)
        only_keys(data, cls.__name__, (f.name for f in dataclasses.fields(cls)))  # type: ignore[arg-type]
        return cls(**data)

    def _check_fields(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            bounds = self.RANGES.get(f.name, self.DEFAULT_RANGE)
            setattr(self, f.name, typed_value(getattr(self, f.name), str(f.type), self.PREFIX + f.name, bounds))


@dataclass
class FamilyOptions(_DictMixin):
    """Base of a family's own hyper-parameters (its ``Options``): a dataclass whose fields are
    scalars (int / float / bool / str) with a comment-like ``metadata={"help": ...}``, which also
    becomes the help of the field's ``latent-train`` flag. Values are type-checked on creation (and
    numbers bounded by ``limits.MAX_OPTION_MAGNITUDE`` unless the family's ``RANGES`` say more),
    then by the subclass's ``check``, which raises ConfigError naming the option."""

    DEFAULT_RANGE: ClassVar[Range | None] = Range(-limits.MAX_OPTION_MAGNITUDE, limits.MAX_OPTION_MAGNITUDE)
    PREFIX: ClassVar[str] = "option "
    # Where older files kept some of these options (each is read into ``options`` on loading):
    # a format-1 model_config's top-level key -> the option's name,
    FROM_MODEL_CONFIG: ClassVar[dict[str, str]] = {}
    # and the options a train config held before they became the family's (TrainConfig.from_dict).
    FROM_TRAIN_CONFIG: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self._check_fields()
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a value out of range; nothing to check by default."""

    @classmethod
    def checked_value(cls, name: str, value: Any) -> Any:
        """``value`` checked as option ``name`` alone (its type and range), as ``__post_init__``
        checks it; ConfigError naming the option otherwise."""
        kind = {f.name: str(f.type) for f in dataclasses.fields(cls)}[name]
        return typed_value(value, kind, cls.PREFIX + name, cls.RANGES.get(name, cls.DEFAULT_RANGE))


def _families() -> dict[str, Any]:
    from vaescope.training.models import FAMILIES  # the registry imports this module: import late

    return FAMILIES


def moved_train_keys() -> dict[str, type[FamilyOptions]]:
    """Keys a train config held before they became a family's options: key -> that ``Options``."""
    return {key: cls.Options for cls in _families().values() for key in cls.Options.FROM_TRAIN_CONFIG}


@dataclass
class ModelConfig(_DictMixin):
    """What every family shares; a family's own hyper-parameters live in ``options``, checked by
    its ``Options`` dataclass (``models/<family>.py``), so adding a family never edits this file.
    Every size is bounded by ``vaescope.limits``, so a config read from a file cannot ask for more."""

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
    # How the data is drawn, set from the dataset: "image", or "line" for a sequence stored as
    # [1, T, 1] (the waveforms), which a grid of pixels would show as a thin strip.
    display: str = "image"

    RANGES: ClassVar[dict[str, Range]] = {
        "image_shape": Range(1, limits.MAX_IMAGE_SIDE), "latent_dim": Range(1, limits.MAX_LATENT_DIM),
        "hidden_dim": Range(1, limits.MAX_HIDDEN_DIM), "base_channels": Range(1, limits.MAX_BASE_CHANNELS),
        "num_classes": Range(0, limits.MAX_CLASSES), "gaussian_c": Range(*limits.GAUSSIAN_C_RANGE),
        "beta": Range(0, limits.MAX_WEIGHT),
    }

    def __post_init__(self) -> None:
        from vaescope.training.models import family  # the registry imports this module: import late

        self._check_fields()
        as_str(self.model_type, "model_type", 100)
        cls = family(self.model_type)  # raises ConfigError naming the registered families
        as_choice(self.arch, "arch", ARCHS)
        as_choice(self.likelihood, "likelihood", LIKELIHOODS)
        as_choice(self.display, "display", DISPLAYS)
        _check(len(self.image_shape) == 3, f"image_shape must be [C, H, W], got {list(self.image_shape)}")
        c, h, w = self.image_shape
        _check(c in (1, 3), f"images must have 1 or 3 channels, got {c}")
        # The conv nets mirror a square grid (models/nets.py); an MLP takes any shape.
        _check(self.arch == "mlp" or h == w, f"arch conv needs square images, got {h}x{w}; use arch mlp")
        self.options = cls.Options.from_dict(self.options).to_dict()  # defaults filled, values checked
        cls.check_config(self)

    def family_options(self) -> Any:
        """This config's options as its family's ``Options`` dataclass."""
        from vaescope.training.models import family

        return family(self.model_type).Options.from_dict(self.options)

    def with_moved_options(self, train: TrainConfig) -> ModelConfig:
        """This config with the values that an older train config held for options of this family
        (``train.moved_options``: a checkpoint, resume state or --config file written before they
        moved); those of other families are dropped, as the trainer then ignored them."""
        from vaescope.training.models import family

        names = {f.name for f in dataclasses.fields(family(self.model_type).Options)}
        moved = {k: v for k, v in train.moved_options.items() if k in names}
        if not moved:
            return self
        return dataclasses.replace(self, options=self.options | moved)  # checked again

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; a format-1 dict (family options at the top) is upgraded."""
        return super().from_dict(cls._upgraded(data))

    @classmethod
    def _upgraded(cls, data: Any) -> dict[str, Any]:
        """``data`` with a format-1 config's top-level family keys moved into ``options`` (those of
        another family than its own are dropped: format 1 wrote every key for every family)."""
        data = dict(as_dict(data, "model_config"))
        families = _families()
        legacy = {k: data.pop(k) for k in list(data)
                  if any(k in c.Options.FROM_MODEL_CONFIG for c in families.values())}
        model_type = data.get("model_type", cls.model_type)
        known = isinstance(model_type, str) and model_type in families  # else refused by the caller's checks
        own = families[model_type].Options.FROM_MODEL_CONFIG if known else {}
        kept = {own[k]: v for k, v in legacy.items() if k in own}
        if kept:
            data["options"] = {**kept, **as_dict(data.get("options", {}), "options")}
        return data

    @classmethod
    def check_partial(cls, data: dict[str, Any]) -> None:
        """Check a model config that lacks what the dataset decides (image shape, classes): every
        key known, every value of its type and range, the family registered and its options valid.
        latent-train runs this before it spends time loading the dataset. ``arch`` may be "auto"."""
        from vaescope.training.models import family

        data = cls._upgraded(data)
        only_keys(data, "model", (f.name for f in dataclasses.fields(cls)))
        kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if not (key == "arch" and value == "auto"):
                typed_value(value, kinds[key], key, cls.RANGES.get(key))
        choices = {"arch": (*ARCHS, "auto"), "likelihood": LIKELIHOODS, "display": DISPLAYS}
        for key in choices.keys() & data.keys():
            as_choice(data[key], key, choices[key])
        family(as_str(data.get("model_type", cls.model_type), "model_type", 100)).Options.from_dict(
            data.get("options", {}))


@dataclass
class TrainConfig(_DictMixin):
    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # auto picks CUDA, then Apple's MPS, then the CPU
    warmup_epochs: int = 0  # linear KL warm-up (Bowman et al. 2016) against posterior collapse
    eval_k: int = 100  # importance samples for the IWAE NLL bound (Burda et al. 2016)
    data_dir: str = "~/.cache/vaescope/data"
    image_size: int = 64  # folder: datasets are resized to this square size
    amp: bool = True  # mixed precision, used only on CUDA
    # torch.compile the training step. Off by default: on the 2-core CPU it made the 16-d conv VAE
    # and GMVAE slower, about 0.8x the eager images/s, after ~10 s of compiling
    # (benchmarks/throughput.py). Its gain on a GPU is unmeasured here.
    compile: bool = False
    # Test images embedded in the checkpoint (sample.images / labels / factors), so the explorer can
    # draw a map without the dataset; -1: latent-train's default for the image size
    # (embedded.default_sample_size: all up to 10,000 for <= 32x32 px, 2,000 up to 64x64, none
    # above); 0: none.
    embed_sample: int = -1
    # Fixed test images whose posterior means are recorded at initialisation, at 1/4, 1/2 and 3/4
    # of the first epoch and after every epoch (record.* tensors; training/record.py); 0: off.
    # 2,000 points of a 16-d code over 20 epochs take 1.5 MB.
    record: int = 2000
    # "KIND:LEVEL" (training/corruption.py): the inputs are corrupted and the loss reconstructs
    # the clean images (a denoising VAE / AE of any family); "" for none.
    corrupt: str = ""
    # Binarised data for the Bernoulli likelihood, as in the NLL literature on MNIST: "dynamic" draws
    # Bernoulli(pixel) afresh for every batch, "static" once for the training set (seeded); the test
    # split is binarised once with a fixed seed either way (data.BINARIZE_TEST_SEED). "none": grey.
    binarize: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the checkpoint

    RANGES: ClassVar[dict[str, Range]] = {
        "epochs": Range(1, limits.MAX_EPOCHS), "batch_size": Range(1, limits.MAX_BATCH_SIZE),
        "lr": Range(0, limits.MAX_LR, lo_open=True), "seed": Range(0, limits.MAX_SEED),
        "warmup_epochs": Range(0, limits.MAX_EPOCHS), "eval_k": Range(1, limits.MAX_EVAL_K),
        "image_size": Range(1, limits.MAX_IMAGE_SIDE),
        "embed_sample": Range(-1, limits.MAX_SAMPLE_IMAGES), "record": Range(0, limits.MAX_RECORD_POINTS),
    }
    NLL_IMAGES: ClassVar[Range] = Range(1, limits.MAX_NLL_IMAGES)  # extra["nll_images"], --nll-images

    def __post_init__(self) -> None:
        self._check_fields()
        # Values an older train config held for options that are a family's now (from_dict sets
        # them; ModelConfig.with_moved_options puts them where they belong). Not a field: never written.
        self.moved_options: dict[str, Any] = {}
        _check(self.image_size in IMAGE_SIZES,
               f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))}, got {self.image_size}")
        _check(DEVICE_PATTERN.fullmatch(self.device) is not None,
               f"device must be auto, cpu, cuda[:N] or mps, got {self.device[:40]!r}")
        if "nll_images" in self.extra:
            as_int(self.extra["nll_images"], "extra.nll_images", self.NLL_IMAGES)
        as_choice(self.binarize, "binarize", BINARIZE)
        if self.corrupt:
            self.corruption()  # raises ConfigError for a bad KIND:LEVEL

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``. Keys that older train configs held for what are a family's
        options now (``moved_train_keys``) are checked by that family's ``Options`` and kept aside
        in ``moved_options``, so every checkpoint and resume state written before still reads."""
        data = dict(as_dict(data, cls.__name__))
        owners = moved_train_keys()
        moved = {key: owners[key].checked_value(key, data.pop(key)) for key in list(data) if key in owners}
        config = super().from_dict(data)
        config.moved_options = moved
        return config

    def corruption(self) -> tuple[str, float] | None:
        """``corrupt`` as (kind, level), or None when the inputs are left as they are."""
        if not self.corrupt:
            return None
        from vaescope.training.corruption import parse_corruption

        try:
            return parse_corruption(self.corrupt)
        except ValueError as exc:
            raise ConfigError(f"corrupt: {exc}") from None


def auto_arch(image_shape: tuple[int, ...]) -> str:
    """``--arch auto``: conv for square images of at least 16 px a side, else mlp (8x8 digits, and
    sequences such as the waveforms [1, T, 1], which the conv nets cannot take).

    Examples:
        >>> auto_arch((1, 28, 28)), auto_arch((1, 8, 8)), auto_arch((1, 64, 1))
        ('conv', 'mlp', 'mlp')
    """
    _, h, w = image_shape
    return "conv" if h == w >= CONV_MIN_SIDE else "mlp"


def check_run_options(model: dict[str, Any], cfg: TrainConfig) -> None:
    """The run options that depend on the model: the family's own rules (its ``check_run``, with
    its options; e.g. no ``corrupt`` for a family that corrupts its input itself), and
    ``binarize`` needs the Bernoulli likelihood. ``model`` is a model config's dict, which may lack
    what the dataset decides (latent-train checks before it reads the data). Raises ConfigError in
    one line."""
    from vaescope.training.models import family

    model = ModelConfig._upgraded(model)
    cls = family(as_str(model.get("model_type", ModelConfig.model_type), "model_type", 100))
    cls.check_run(cls.Options.from_dict(model.get("options", {})), cfg)
    likelihood = model.get("likelihood", ModelConfig.likelihood)
    if cfg.binarize != "none" and likelihood != "bernoulli":
        raise ConfigError(f"--binarize {cfg.binarize} needs --likelihood bernoulli (binarised pixels are Bernoulli "
                          f"draws), not {likelihood}")
