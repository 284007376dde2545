"""The resume state: one file that holds everything ``--resume`` needs to reach the very weights an
uninterrupted run reaches.

``train_state.safetensors`` holds the model's float32 weights, Adam's per-parameter state, the RNG
state, the number of finished epochs, the history, both configs and the training record so far
(``record.*`` tensors, as in the checkpoint; ``record.py``), so a resumed run continues it. So it never depends on
``model.safetensors``: the two are written one after the other (the model first), and a kill or a
full disk between the writes leaves a resume state one epoch behind the model file, from which the
resumed run trains that epoch again to the same weights. The metadata also records the sha256 of
the model file written with it (``model_file_sha256``), so a resume can say when the two differ,
and the sha256 of its own tensors (``tensors_sha256``), so a damaged or hand-edited state is
refused rather than trained on.

A resume state is read like a checkpoint: the header and every metadata value are checked
(``tensorfile``, ``checks``), the tensors' shapes and dtypes are compared with the model its config
describes before any is read, and every refusal is a ``TrainStateError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaescope.errors import InputError
from vaescope.limits import MAX_CHECKPOINT_BYTES, MAX_EPOCHS
from vaescope.training.checkpoint import META_KEY, TRAIN_STATE_KEY, parse_history, plan_model
from vaescope.training.checks import (
    ConfigError,
    Range,
    as_dict,
    as_int,
    as_str,
    only_keys,
    parse_json,
    shown,
)
from vaescope.training.config import ModelConfig, TrainConfig
from vaescope.training.embedded import check_record_values, extra_specs
from vaescope.training.tensorfile import (
    Header,
    TensorFileError,
    TensorSpec,
    check_tensors,
    encode,
    nonfinite,
    read_header,
    read_tensors,
    write_atomically,
)

STATE_VERSION = 2  # 2: the state holds the weights and both configs (1 held only Adam's state)
STATE_KEYS = ("state_version", "epoch", "history", "model_config", "train_config", "model_file_sha256",
              "tensors_sha256")
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # what torch.optim.Adam keeps per parameter
MAX_RNG_STATE_BYTES = 1 << 16  # a CPU generator's state is 5,056 bytes; CUDA's 16


class TrainStateError(InputError):
    """A resume state cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass
class TrainState:
    """A checked resume state, ready for ``restore``."""

    epoch: int  # epochs finished
    history: list[dict[str, Any]]
    model_config: ModelConfig
    train_config: TrainConfig
    weights: dict[str, Tensor]  # the model's state dict
    optimizer: dict[int, dict[str, Tensor]]  # parameter index -> Adam's state (absent: none yet)
    rng: dict[str, Tensor]  # "torch" (the CPU generator), "cuda" when trained on a GPU
    model_file_sha256: str  # of the model.safetensors written in the same epoch
    record: dict[str, Tensor] = field(default_factory=dict)  # the record.* tensors (none without a record)


# -- writing ------------------------------------------------------------------------------------
def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _stored(t: Tensor) -> Tensor:
    """A contiguous CPU copy, in the tensor's own dtype (the model's are what a fresh build holds)."""
    return t.detach().cpu().contiguous()


def _rng_tensors(device: torch.device) -> dict[str, Tensor]:
    rng = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":  # the model's sampling on a GPU draws from the GPU's generator
        rng["rng.cuda"] = torch.cuda.get_rng_state(device)
    return rng


def save_train_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int,
                     history: list[dict], model_config: ModelConfig, train_config: TrainConfig,
                     model_file_sha256: str, device: torch.device, record: dict[str, Tensor] | None = None) -> None:
    """Write the resume state after ``epoch`` finished epochs, atomically (WriteError on failure,
    with the previous state left as it was). ``record``: the training record's tensors so far."""
    tensors = {f"model.{k}": _stored(v) for k, v in model.state_dict().items()}
    index = {p: i for i, p in enumerate(model.parameters())}
    for param, values in opt.state.items():
        if not values:  # a parameter the optimizer has not stepped yet
            continue
        for name in ADAM_STATE:
            tensors[f"optim.{index[param]}.{name}"] = _stored(torch.as_tensor(values[name]))
    tensors |= _rng_tensors(device)
    tensors |= {name: _stored(t) for name, t in (record or {}).items() if name.startswith("record.")}
    meta = {"state_version": STATE_VERSION, "epoch": epoch, "history": history,
            "model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
            "model_file_sha256": model_file_sha256, "tensors_sha256": tensors_digest(tensors)}
    write_atomically(path, encode(tensors, {TRAIN_STATE_KEY: json.dumps(meta, allow_nan=True)}))


# -- reading ------------------------------------------------------------------------------------
def load_train_state(path: Path) -> TrainState:
    """Read and check the resume state at ``path``. Raises TrainStateError for a missing,
    truncated, damaged, hand-edited or foreign file, with what is wrong."""
    return _guarded(Path(path), _load)


def peek_train_state(path: Path) -> tuple[ModelConfig, TrainConfig, int]:
    """(model config, train config, epochs done) of the resume state at ``path``, from its checked
    header and metadata alone (``load_train_state`` checks the tensors too)."""
    _, meta = _guarded(Path(path), _read_meta)
    return meta.model_config, meta.train_config, meta.epoch


def _guarded(path: Path, read: Any) -> Any:
    """``read(path)``, with every refusal turned into a TrainStateError naming the file."""
    try:
        return read(path)
    except TensorFileError as exc:
        raise TrainStateError(path, f"not a readable resume state (truncated or corrupt?): {exc}") from None
    except InputError as exc:
        raise TrainStateError(path, str(exc)) from None
    except OSError as exc:
        raise TrainStateError(path, f"cannot read the file: {exc.strerror or exc}") from None


@dataclass
class _Meta:
    epoch: int
    history: list[dict[str, Any]]
    model_config: ModelConfig
    train_config: TrainConfig
    model_file_sha256: str
    tensors_sha256: str


def _read_meta(path: Path) -> tuple[Header, _Meta]:
    if not path.is_file():
        raise ConfigError("no such file")
    size = path.stat().st_size
    if not 0 < size <= MAX_CHECKPOINT_BYTES:
        raise ConfigError(f"the file is {size:,} bytes; a resume state has between 1 and {MAX_CHECKPOINT_BYTES:,}")
    header = read_header(path)
    raw = header.metadata.get(TRAIN_STATE_KEY)
    if raw is None:
        what = "a model checkpoint" if META_KEY in header.metadata else "a safetensors file"
        raise ConfigError(f"this is {what}, not latent-train's resume state (no '{TRAIN_STATE_KEY}' metadata)")
    meta = as_dict(parse_json(raw, "the resume state's metadata"), "the resume state's metadata", 20)
    version = meta.get("state_version")
    if isinstance(version, bool) or version != STATE_VERSION:
        raise ConfigError(f"state_version {shown(version)}: this resume state was written by another version of "
                          "vaescope and cannot be continued; start the run again (its model.safetensors is "
                          "still a good checkpoint)")
    only_keys(meta, "the resume state's metadata", STATE_KEYS, STATE_KEYS)
    epoch = as_int(meta["epoch"], "epoch", Range(1, MAX_EPOCHS))
    history = parse_history(meta["history"])
    if len(history) != epoch:
        raise ConfigError(f"epoch is {epoch} but the history holds {len(history)} epochs")
    digests = {key: as_str(meta[key], key, 64) for key in ("model_file_sha256", "tensors_sha256")}
    return header, _Meta(epoch, history, _config(ModelConfig, meta["model_config"], "model_config"),
                         _config(TrainConfig, meta["train_config"], "train_config"), **digests)


def _load(path: Path) -> TrainState:
    header, meta = _read_meta(path)
    planned = plan_model(meta.model_config)
    records = {name: entry for name, entry in header.tensors.items() if name.startswith("record.")}
    record_specs = extra_specs(records, meta.model_config.image_shape, meta.model_config.latent_dim, 0)
    check_tensors(header, _expected(planned, header.tensors) | record_specs, "the model_config")
    tensors = read_tensors(path, header, list(header.tensors))
    if tensors_digest(tensors) != meta.tensors_sha256:
        raise ConfigError("the tensors differ from the digest recorded when the state was written: "
                          "the file was altered or damaged")
    _check_values(tensors)
    record = {k: v for k, v in tensors.items() if k.startswith("record.")}
    if record:
        check_record_values(record, 0)
    return TrainState(meta.epoch, meta.history, meta.model_config, meta.train_config,
                      weights={k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                      optimizer=_optimizer_state(tensors),
                      rng={k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")},
                      model_file_sha256=meta.model_file_sha256, record=record)


def _config(cls: type[ModelConfig] | type[TrainConfig], value: Any, where: str) -> Any:
    try:
        return cls.from_dict(value)
    except ConfigError as exc:
        raise ConfigError(f"invalid {where}: {exc}") from None


def _expected(planned: torch.nn.Module, present: dict[str, Any]) -> dict[str, TensorSpec]:
    """What the state's tensors must be: every weight; Adam's three tensors for each parameter that
    has any (a parameter has none before its first step, or after the GMVAE's component init); the
    CPU RNG state; and a GPU RNG state when there is one."""
    expected = {f"model.{k}": TensorSpec.like(t, exact=True) for k, t in planned.state_dict().items()}
    for i, param in enumerate(planned.parameters()):
        if any(f"optim.{i}.{name}" in present for name in ADAM_STATE):
            expected[f"optim.{i}.step"] = TensorSpec((), ("F32",))
            expected |= {f"optim.{i}.{name}": TensorSpec.like(param, exact=True) for name in ADAM_STATE[1:]}
    expected["rng.torch"] = TensorSpec(tuple(torch.get_rng_state().shape), ("U8",))
    cuda = present.get("rng.cuda")
    if cuda is not None:
        if len(cuda.shape) != 1 or cuda.nbytes > MAX_RNG_STATE_BYTES:
            raise ConfigError(f"rng.cuda must be at most {MAX_RNG_STATE_BYTES} bytes in one dimension, "
                              f"got shape {list(cuda.shape)}")
        expected["rng.cuda"] = TensorSpec(cuda.shape, ("U8",))
    return expected


def _check_values(tensors: dict[str, Tensor]) -> None:
    """Weights and moments finite; second moments and step counts non-negative; steps whole."""
    broken = nonfinite(tensors)
    if broken:
        raise ConfigError(f"tensor(s) {broken[:5]} hold NaN or infinite values")
    for name, t in tensors.items():
        if name.endswith((".exp_avg_sq", ".step")) and bool((t < 0).any()):
            raise ConfigError(f"tensor '{name}' holds negative values")
        if name.endswith(".step") and not bool((t == t.round()).all()):
            raise ConfigError(f"tensor '{name}' is not a whole number of steps")


def _optimizer_state(tensors: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return state


def restore(state: TrainState, model: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Put the state's weights into ``model``, its moments into ``opt`` (whose learning rate comes
    from the config) and its RNG state into torch's generators."""
    model.load_state_dict(state.weights)
    opt.load_state_dict({"state": state.optimizer, "param_groups": opt.state_dict()["param_groups"]})
    torch.set_rng_state(state.rng["torch"])
    if "cuda" in state.rng and device.type == "cuda":
        torch.cuda.set_rng_state(state.rng["cuda"], device)
