"""Self-describing checkpoints: one ``.safetensors`` file, no pickle, atomic writes.

The tensors are the model's state dict. The header's metadata holds one JSON string under the key
``vaescope`` with the format version, the model config, the train config, the dataset block, the
training history and the final metrics, so a model can be rebuilt from the file alone.

A checkpoint comes from outside, so reading one checks everything before anything is built or
allocated (the limits are in ``vaescope.limits``):
1. the file: a regular ``.safetensors`` file, not empty, at most ``MAX_CHECKPOINT_BYTES``;
2. the safetensors header: at most ``MAX_HEADER_BYTES``, and its byte ranges tile the file
   (``tensorfile.read_header``);
3. the metadata: parsed with a depth cap, every value of the expected type and within its limit
   (``ModelConfig`` / ``TrainConfig`` for the configs, the schemas below for the rest);
4. the model: built on the ``meta`` device, which gives every parameter its shape but no memory,
   to count its parameters against ``MAX_PARAMETERS`` and its condition against ``MAX_CLASSES``;
5. the tensors: the header's names, shapes and dtypes against that model's, before any is read;
   the optional embedded sample and training record (``sample.*``, ``record.*``; see
   ``embedded.py``) against the limits, the model's image shape and latent size, and each other;
6. the weights, once read: NaN or infinite values are refused (and bad sample or record values,
   when those are read: ``read_sample``, ``read_record``).
Every refusal is a ``CheckpointError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaescope.errors import InputError
from vaescope.limits import (
    MAX_CHECKPOINT_BYTES,
    MAX_CLASS_NAME_CHARS,
    MAX_CLASSES,
    MAX_HISTORY_EPOCHS,
    MAX_LATENT_DIM,
    MAX_PARAMETERS,
)
from vaescope.training.checks import (
    ConfigError,
    Range,
    as_choice,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    check_json,
    only_keys,
    parse_json,
    shown,
)
from vaescope.training.config import ModelConfig, TrainConfig
from vaescope.training.embedded import (
    RECORD_CODES,
    RECORD_NAMES,
    SAMPLE_IMAGES,
    SAMPLE_NAMES,
    Record,
    check_record_values,
    check_sample_values,
    extra_specs,
    is_extra,
    sample_tensors,
)
from vaescope.training.models import LatentModel, build_model
from vaescope.training.tensorfile import (
    Header,
    TensorFileError,
    TensorSpec,
    WriteError,
    check_tensors,
    encode,
    nonfinite,
    read_header,
    read_tensors,
    write_atomically,
)

__all__ = ["CHECKPOINT_NAME", "FORMAT_VERSION", "META_KEY", "TRAIN_STATE_KEY", "TRAIN_STATE_NAME", "CheckpointError",
           "CheckpointMeta", "Record", "WriteError", "embed_sample", "load_checkpoint", "parse_history", "plan_model",
           "read_extras", "read_metadata", "read_record", "read_sample", "save_checkpoint"]

FORMAT_VERSION = 2  # 2: a family's own hyper-parameters live in model_config["options"]
READABLE_VERSIONS = (1, 2)  # a format-1 model_config is upgraded on read (ModelConfig.from_dict)
META_KEY = "vaescope"
REQUIRED_KEYS = ("format_version", "model_type", "model_config", "train_config", "dataset", "history", "metrics")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
# A latent-train run folder holds the checkpoint and, beside it, the optimizer and RNG state for
# --resume. That second file is safetensors too but no model, so the explorer must tell them apart.
CHECKPOINT_NAME = "model.safetensors"
TRAIN_STATE_NAME = "train_state.safetensors"
TRAIN_STATE_KEY = "train_state"  # the resume state's metadata key (a checkpoint's is META_KEY)

DATASET_KEYS = ("name", "image_shape", "class_names", "value_range", "factor_names", "display")
DISPLAYS = ("image", "line")  # how the data is drawn: images, or sequences as lines (waveforms)
# Numbers latent-train writes into a history record and into the final metrics; a file may leave
# any out, or hold null (an autoencoder has no ELBO), but never another type.
HISTORY_NUMBERS = ("train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "kl_weight",
                   "temperature", "seconds", "val_cluster_accuracy")
METRIC_NUMBERS = ("elbo", "recon", "kl", "nll_iwae", "probe_accuracy", "cluster_accuracy", "nmi", "mig")
METRIC_COUNTS = ("active_units", "latent_dim", "test_images", "nll_k", "nll_images")


class CheckpointError(InputError):
    """A checkpoint cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class CheckpointMeta:
    """Everything in a checkpoint besides the weights."""

    model_config: ModelConfig
    train_config: dict[str, Any]
    dataset: dict[str, Any]  # name, image_shape [C, H, W], class_names, value_range
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def model_type(self) -> str:
        return self.model_config.model_type

    @property
    def showcase_rank(self) -> int:
        """How early this model should be shown to a first-time visitor (its family's rank)."""
        from vaescope.training.models import family

        return family(self.model_type).showcase_rank

    def to_json(self) -> str:
        return json.dumps({
            "format_version": self.format_version, "model_type": self.model_type,
            "model_config": self.model_config.to_dict(), "train_config": self.train_config,
            "dataset": self.dataset, "history": self.history, "metrics": self.metrics,
        }, allow_nan=True)


# -- writing ------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: LatentModel, meta: CheckpointMeta,
                    dtype: torch.dtype | None = None, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` and ``meta`` to ``path`` atomically (temp file in the same folder + rename).

    A crash or a full disk mid-write leaves any earlier file at ``path`` untouched and raises
    ``WriteError`` (an OSError) in one line. ``dtype=torch.float16`` halves the file (used for the
    shipped models); loading casts back to the model's float32 parameters. ``extra`` holds the
    embedded sample and training record tensors (``embedded.py``), written as they are.
    """
    path = Path(path)
    write_atomically(path, checkpoint_bytes(model, meta, dtype, extra))
    return path


def checkpoint_bytes(model: LatentModel, meta: CheckpointMeta, dtype: torch.dtype | None = None,
                     extra: dict[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of the checkpoint file of ``model`` and ``meta`` (what ``save_checkpoint`` writes),
    with the ``extra`` tensors (sample, record) beside the state dict and the ``metadata`` entries
    beside ``META_KEY`` (latent-train's run block, ``train_state.RUN_KEY``; the loader reads only
    ``META_KEY``, ``embed_sample`` keeps them)."""
    if META_KEY in (metadata or {}):
        raise ValueError(f"{META_KEY!r} is the checkpoint's own metadata entry")
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    for name, value in (extra or {}).items():
        if not is_extra(name) or name in tensors:
            raise ValueError(f"{name!r} is not a sample or record tensor name")
        tensors[name] = value.detach().cpu().contiguous()
    return encode(tensors, {META_KEY: meta.to_json(), **(metadata or {})})


def embed_sample(path: str | os.PathLike, images: Any, labels: Any = None, factors: Any = None) -> Path:
    """Add an evaluation sample to the checkpoint at ``path``, or replace the one it has, without
    retraining: the weights (in their stored precision), the metadata and any training record are
    kept byte for byte. ``images=None`` removes the sample.

    ``images``: uint8 [N, C, H, W] (numpy or torch), the checkpoint's image shape, 1 to
    ``MAX_SAMPLE_IMAGES`` images and at most ``MAX_SAMPLE_BYTES``; ``labels``: ints [N], -1 for
    unknown (None: all unknown); ``factors``: floats [N, F], F the dataset block's factor_names.

    The new file is written beside the old one, read back through every check and only then
    renamed over it, so a failure at any point leaves the old file as it was. Raises
    ``CheckpointError`` naming the file and the problem (a bad checkpoint or a bad sample), or
    ``WriteError``.

    Examples:
        >>> from vaescope.training.data import load_dataset
        >>> test = load_dataset("digits").test
        >>> embed_sample("model.safetensors", test.images, test.labels)  # doctest: +SKIP
        >>> images, labels, factors = read_sample("model.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    meta, planned, header = _open(path)
    keep = [name for name in header.tensors if not name.startswith("sample.")]
    tensors = _read(path, header, keep)
    if images is not None:
        try:
            tensors |= sample_tensors(images, labels, factors, image_shape=meta.model_config.image_shape,
                                      factor_count=len(meta.dataset.get("factor_names", ())),
                                      num_classes=len(meta.dataset.get("class_names", ())))
        except InputError as exc:
            raise CheckpointError(path, f"cannot embed this sample: {exc}") from None

    def readable(written: Path) -> None:
        _open(written)
        read_sample(written)

    write_atomically(path, encode(tensors, dict(header.metadata)), check=readable)
    return path


# -- the model a config describes ---------------------------------------------------------------
def plan_model(config: ModelConfig, class_names: tuple[str, ...] | list[str] = ()) -> LatentModel:
    """The model ``config`` describes, built on the ``meta`` device: every parameter has its shape
    but no memory. Raises ConfigError when it has more than ``MAX_PARAMETERS`` parameters or a
    condition (classes, components) larger than ``MAX_CLASSES``, or when its family cannot build it.

    latent-train calls it before training and the loader before reading any tensor, so no config
    can make either allocate beyond the limits.
    """
    try:
        with torch.device("meta"):
            model = build_model(config, class_names)
        condition_size = model.describe().condition.size
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a family's code run on a config from outside: any failure is a refusal
        raise ConfigError(f"the {config.model_type} family cannot be built from this config "
                          f"({type(exc).__name__}: {shown(str(exc), 120)})") from None
    count = sum(t.numel() for t in model.state_dict().values())
    if count > MAX_PARAMETERS:
        raise ConfigError(f"the config describes a model of {count:,} parameters; the limit is {MAX_PARAMETERS:,} "
                          "(vaescope.limits.MAX_PARAMETERS): make the model smaller")
    if condition_size > MAX_CLASSES:
        raise ConfigError(f"the model is conditioned on {condition_size:,} classes or components; "
                          f"the limit is {MAX_CLASSES}")
    return model


def expected_tensors(planned: LatentModel) -> dict[str, TensorSpec]:
    """Name -> spec of every tensor a checkpoint of ``planned`` holds (floats in any stored precision)."""
    return {name: TensorSpec.like(t) for name, t in planned.state_dict().items()}


# -- reading ------------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    try:
        exists, regular = path.exists(), path.is_file()
        size = path.stat().st_size if regular else 0
    except (OSError, ValueError) as exc:  # no permission, a name too long, a NUL byte in the name
        raise CheckpointError(path, f"cannot read the file: {getattr(exc, 'strerror', None) or exc}") from None
    if not exists:
        raise CheckpointError(path, "file not found")
    if not regular:
        raise CheckpointError(path, "not a regular file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(path, (
            f"'{path.suffix}' files are Python pickles (torch.save), which can run arbitrary code "
            "when loaded, so vaescope refuses them. Checkpoints are '.safetensors' files: tensors "
            "plus JSON metadata. Re-train with latent-train, or convert a state dict you trust "
            "with safetensors.torch.save_file."))
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes); the write that made it did not finish")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(path, f"the file is {size:,} bytes; the limit is {MAX_CHECKPOINT_BYTES:,}")


def _open(path: Path) -> tuple[CheckpointMeta, LatentModel, Header]:
    """Check the file, its header, its metadata and its tensor table; returns the metadata, the
    planned (meta-device) model and the header. Raises CheckpointError for any problem."""
    _check_file(path)
    try:
        header = read_header(path)
    except TensorFileError as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc.strerror or exc}") from None
    raw = header.metadata.get(META_KEY)
    if raw is None and TRAIN_STATE_KEY in header.metadata:
        raise CheckpointError(path, "this is latent-train's resume state (optimizer and RNG state for "
                                    f"--resume), not a model; open {CHECKPOINT_NAME} in the same run folder")
    if raw is None:
        raise CheckpointError(path, f"a safetensors file without vaescope metadata (no '{META_KEY}' key); "
                                    "it was not written by latent-train")
    try:
        meta = parse_meta(parse_json(raw, "metadata"))
        planned = plan_model(meta.model_config, meta.dataset.get("class_names", ()))
        config = meta.model_config
        extras = extra_specs(header.tensors, config.image_shape, config.latent_dim,
                             len(meta.dataset.get("factor_names", ())))
        check_tensors(header, expected_tensors(planned) | extras, "the config")
    except InputError as exc:
        raise CheckpointError(path, str(exc)) from None
    return meta, planned, header


def _read(path: Path, header: Header, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a checked header, every failure a CheckpointError."""
    try:
        return read_tensors(path, header, names)
    except TensorFileError as exc:
        raise CheckpointError(path, f"{exc} (truncated or corrupt?)") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc.strerror or exc}") from None


def read_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """Parse and validate a checkpoint's metadata and tensor table without loading its weights."""
    return _open(Path(path))[0]


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[LatentModel, CheckpointMeta]:
    """Rebuild the model from the file alone. Raises ``CheckpointError`` on any problem."""
    path = Path(path)
    meta, planned, header = _open(path)
    model = build_model(meta.model_config, meta.dataset.get("class_names", ()))
    state = _read(path, header, list(planned.state_dict()))  # the model's tensors only, never the sample
    broken = nonfinite(state)
    if broken:
        raise CheckpointError(path, f"tensor(s) {broken[:5]} hold NaN or infinite values: the weights are broken "
                                    "(did training diverge?); use an earlier checkpoint or re-train")
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def read_sample(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The checkpoint's embedded evaluation sample, or None when it has none:
    (images uint8 [N, C, H, W], labels int64 [N] (-1 unknown), factors float32 [N, F] or None),
    F = ``len(read_metadata(path).dataset["factor_names"])``.

    The whole file is checked as ``load_checkpoint`` checks it, then only the sample's tensors are
    read (never the weights). Raises ``CheckpointError`` naming the file and the problem.
    """
    path = Path(path)
    meta, _, header = _open(path)
    if SAMPLE_IMAGES not in header.tensors:
        return None
    tensors = _read(path, header, [name for name in SAMPLE_NAMES if name in header.tensors])
    try:
        check_sample_values(tensors, len(meta.dataset.get("class_names", ())))
    except InputError as exc:
        raise CheckpointError(path, str(exc)) from None
    factors = tensors.get("sample.factors")
    return tensors[SAMPLE_IMAGES].numpy(), tensors["sample.labels"].numpy(), None if factors is None else factors.numpy()


def read_record(path: str | os.PathLike) -> Record | None:
    """The checkpoint's training record (``embedded.Record``: codes float16 [E, N, D], labels [N],
    epochs float32 [E], test-split indices [N]), or None when it has none. Checked like
    ``read_sample``; only the record's tensors are read. Raises ``CheckpointError``."""
    path = Path(path)
    meta, _, header = _open(path)
    if RECORD_CODES not in header.tensors:
        return None
    tensors = _read(path, header, list(RECORD_NAMES))
    try:
        check_record_values(tensors, len(meta.dataset.get("class_names", ())))
    except InputError as exc:
        raise CheckpointError(path, str(exc)) from None
    return Record.from_tensors(tensors)


def read_extras(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The checkpoint's sample and record tensors as stored (``sample.*``, ``record.*``; empty when
    it has neither), checked like ``read_sample`` and ``read_record``: what
    ``save_checkpoint(..., extra=...)`` takes to write them into another file, e.g. a float16 copy.

    Examples:
        >>> model, meta = load_checkpoint("runs/digits-vae/model.safetensors")  # doctest: +SKIP
        >>> save_checkpoint("small.safetensors", model, meta, dtype=torch.float16,
        ...                 extra=read_extras("runs/digits-vae/model.safetensors"))  # doctest: +SKIP
    """
    path = Path(path)
    meta, _, header = _open(path)
    tensors = _read(path, header, [name for name in header.tensors if is_extra(name)])
    num_classes = len(meta.dataset.get("class_names", ()))
    try:
        if SAMPLE_IMAGES in tensors:
            check_sample_values(tensors, num_classes)
        if RECORD_CODES in tensors:
            check_record_values(tensors, num_classes)
    except InputError as exc:
        raise CheckpointError(path, str(exc)) from None
    return tensors


# -- the metadata's schema ----------------------------------------------------------------------
def parse_meta(data: Any) -> CheckpointMeta:
    """The checkpoint metadata JSON (already parsed) as a CheckpointMeta; every value type-checked.
    Raises ConfigError naming the first bad value."""
    data = as_dict(data, "metadata", 50)
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_VERSIONS:
        raise ConfigError(f"format_version {shown(version)} is not supported (this vaescope reads versions "
                          f"{list(READABLE_VERSIONS)}); upgrade vaescope or re-train")
    only_keys(data, "metadata", REQUIRED_KEYS, REQUIRED_KEYS)
    model_type = as_str(data["model_type"], "model_type", 100)
    try:
        config = ModelConfig.from_dict(data["model_config"])
    except ConfigError as exc:
        raise ConfigError(f"invalid model_config: {exc}") from None
    if model_type != config.model_type:
        raise ConfigError(f"model_type {shown(model_type)} differs from model_config's {config.model_type!r}")
    return CheckpointMeta(model_config=config, train_config=parse_train_config(data["train_config"]),
                          dataset=parse_dataset_block(data["dataset"], config), history=parse_history(data["history"]),
                          metrics=parse_metrics(data["metrics"]), format_version=version)


def parse_train_config(value: Any) -> dict[str, Any]:
    """A stored train config: checked as a TrainConfig (types, ranges, no unknown keys), kept as given."""
    try:
        TrainConfig.from_dict(value)
    except ConfigError as exc:
        raise ConfigError(f"invalid train_config: {exc}") from None
    return value


def parse_dataset_block(value: Any, config: ModelConfig) -> dict[str, Any]:
    """The dataset block: a name, and optionally the image shape (which must be the model's), class
    names (as many as the model's classes, when it has any), value range and factor names."""
    block = as_dict(value, "dataset", 50)
    only_keys(block, "dataset", DATASET_KEYS, ("name",))
    as_str(block["name"], "dataset.name")
    if "image_shape" in block:
        shape = [as_int(v, "dataset.image_shape", Range(1, 2**31)) for v in as_list(block["image_shape"], "dataset.image_shape", 3)]
        if shape != list(config.image_shape):
            raise ConfigError(f"dataset.image_shape {shape} differs from model_config's {list(config.image_shape)}")
    if "class_names" in block:
        names = as_list(block["class_names"], "dataset.class_names", MAX_CLASSES)
        for i, name in enumerate(names):
            as_str(name, f"dataset.class_names[{i}]", MAX_CLASS_NAME_CHARS)
        if config.num_classes and len(names) != config.num_classes:
            raise ConfigError(f"dataset.class_names has {len(names)} names but the model has "
                              f"{config.num_classes} classes")
    if "value_range" in block:
        bounds = [as_float(v, "dataset.value_range") for v in as_list(block["value_range"], "dataset.value_range", 2)]
        if len(bounds) != 2 or bounds[0] >= bounds[1]:
            raise ConfigError(f"dataset.value_range must be [low, high] with low < high, got {bounds}")
    if "factor_names" in block:
        for i, name in enumerate(as_list(block["factor_names"], "dataset.factor_names", 64)):
            as_str(name, f"dataset.factor_names[{i}]", MAX_CLASS_NAME_CHARS)
    if "display" in block and as_choice(block["display"], "dataset.display", DISPLAYS) != config.display:
        raise ConfigError(f"dataset.display {block['display']!r} differs from model_config's {config.display!r}")
    return block


def _optional_number(record: dict[str, Any], key: str, where: str) -> None:
    if record.get(key) is not None:
        as_float(record[key], f"{where}.{key}", finite=False)  # a diverged value is still a number


def parse_history(value: Any, where: str = "history") -> list[dict[str, Any]]:
    """Per-epoch records: at most ``MAX_HISTORY_EPOCHS`` JSON objects, each epoch a positive int
    and each known loss a number (or null); other keys are free-form but bounded JSON."""
    records = as_list(value, where, MAX_HISTORY_EPOCHS)
    for i, record in enumerate(records):
        at = f"{where}[{i}]"
        check_json(as_dict(record, at, 100), at, depth=1)
        if "epoch" in record:
            as_int(record["epoch"], f"{at}.epoch", Range(1, MAX_HISTORY_EPOCHS))
        for key in HISTORY_NUMBERS:
            _optional_number(record, key, at)
    return records


def parse_metrics(value: Any) -> dict[str, Any]:
    """Final metrics: a JSON object whose known numbers are numbers (or null), counts are
    non-negative ints and ``kl_per_dim`` is a list of at most ``MAX_LATENT_DIM`` numbers."""
    metrics = as_dict(value, "metrics", 200)
    check_json(metrics, "metrics", depth=1)
    for key in METRIC_NUMBERS:
        _optional_number(metrics, key, "metrics")
    for key in METRIC_COUNTS:
        if metrics.get(key) is not None:
            as_int(metrics[key], f"metrics.{key}", Range(0, 2**40))
    if metrics.get("kl_per_dim") is not None:
        for i, v in enumerate(as_list(metrics["kl_per_dim"], "metrics.kl_per_dim", MAX_LATENT_DIM)):
            as_float(v, f"metrics.kl_per_dim[{i}]", finite=False)
    return metrics
