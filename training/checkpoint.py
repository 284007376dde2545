"""Self-describing checkpoints: one ``.safetensors`` file, no pickle, atomic writes.

The tensors are the model's state dict. The header's metadata holds one JSON string under the key
``vaescope`` with the format version, the model config, the train config, the dataset block, the
training history and the final metrics, so a model can be rebuilt from the file alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vaescope.errors import InputError
from vaescope.training.config import ConfigError, ModelConfig
from vaescope.training.models import LatentModel, build_model

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


def save_checkpoint(path: str | os.PathLike, model: LatentModel, meta: CheckpointMeta,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` and ``meta`` to ``path`` atomically (temp file in the same folder + rename).

    A crash mid-write leaves any earlier file at ``path`` untouched. ``dtype=torch.float16`` halves
    the file (used for the shipped models); loading casts back to the model's float32 parameters.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype and v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: meta.to_json()})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(path, (
            f"'{path.suffix}' files are Python pickles (torch.save), which can run arbitrary code "
            "when loaded, so vaescope refuses them. Checkpoints are '.safetensors' files: tensors "
            "plus JSON metadata. Re-train with latent-train, or convert a state dict you trust "
            "with safetensors.torch.save_file."))
    if path.stat().st_size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes); the write that made it did not finish")


def read_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """Parse and validate a checkpoint's metadata without loading its weights."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None
    raw = header.get(META_KEY)
    if raw is None and TRAIN_STATE_KEY in header:
        raise CheckpointError(path, "this is latent-train's resume state (optimizer and RNG state for "
                                    f"--resume), not a model; open {CHECKPOINT_NAME} in the same run folder")
    if raw is None:
        raise CheckpointError(path, f"a safetensors file without vaescope metadata (no '{META_KEY}' key); "
                                    "it was not written by latent-train")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"metadata is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "metadata JSON is not an object")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(path, f"format_version {version!r} is not supported (this vaescope reads "
                                    f"versions {list(READABLE_VERSIONS)}); upgrade vaescope or re-train")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(path, f"metadata lacks key(s) {missing}")
    try:
        config = ModelConfig.from_dict(data["model_config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(path, f"invalid model_config: {exc}") from None
    return CheckpointMeta(model_config=config, train_config=data["train_config"], dataset=data["dataset"],
                          history=data["history"], metrics=data["metrics"])


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[LatentModel, CheckpointMeta]:
    """Rebuild the model from the file alone. Raises ``CheckpointError`` on any problem."""
    path = Path(path)
    meta = read_metadata(path)
    model = build_model(meta.model_config, (meta.dataset or {}).get("class_names") or ())
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = set(fh.keys())
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                raise CheckpointError(path, f"tensors do not match the {meta.model_type} config: "
                                            f"missing {missing[:5]}, unexpected {unexpected[:5]}")
            state = {}
            for key, ref in expected.items():
                tensor = fh.get_tensor(key)
                if tensor.shape != ref.shape:
                    raise CheckpointError(path, f"tensor '{key}' has shape {list(tensor.shape)} but the "
                                                f"config needs {list(ref.shape)}")
                state[key] = tensor
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(path, f"cannot read tensors (truncated or corrupt?): {exc}") from None
    model.load_state_dict(state)
    return model.to(device).eval(), meta
