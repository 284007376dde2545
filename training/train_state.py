"""The resume state: one file that holds everything ``--resume`` needs to reach the very weights an
uninterrupted run reaches, and the proof that it belongs with the model file beside it.

``train_state.safetensors`` holds the model's float32 weights, Adam's per-parameter state, the RNG
state, the number of finished epochs, the history, both configs and the training record so far
(``record.*`` tensors, as in the checkpoint; ``record.py``), so a resumed run continues it. So it never depends on
``model.safetensors``: the two are written one after the other (the model first), and a kill or a
full disk between the writes leaves a resume state one epoch behind the model file, from which the
resumed run trains that epoch again to the same weights. A missing model file is rebuilt.

A resume is all or nothing: the state is continued only when it belongs with the model file it would
overwrite. Both files name the run (``run_id``, drawn once when the run starts and kept by every
resume), and each carries a digest over its tensors and the metadata both hold (epoch, history,
model_config, train_config, run id):
- the state: ``tensors_sha256`` over its tensors and ``metadata_sha256`` over every other metadata
  value (``tensors_sha256`` included), so an edited epoch, history or config is refused; it also
  records the sha256 of the model file written just before it (``model_file_sha256``);
- the model file: a ``RUN_KEY`` entry in its safetensors metadata beside the checkpoint's own, with
  the run id, the ``metadata_sha256`` of the resume state on the disk when it was written
  (``state_before``; empty for a run's first epoch) and a digest over its weights and metadata.
``check_model_file`` accepts the model file written with the state (same run, same epoch and
history; its bytes may differ where the final save or an embedded sample rewrote it) or the one
written right after it (one epoch ahead, naming this state as ``state_before``), and refuses any
other pair, before anything is written, in one sentence naming the reason. The digests are no
signature: they stop mistakes and hand edits, not someone who recomputes them.

A resume state is read like a checkpoint: the header and every metadata value are checked
(``tensorfile``, ``checks``), the tensors' shapes and dtypes are compared with the model its config
describes before any is read, and every refusal is a ``TrainStateError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaescope.errors import InputError
from vaescope.limits import MAX_CHECKPOINT_BYTES, MAX_EPOCHS
from vaescope.training.checkpoint import (
    META_KEY,
    TRAIN_STATE_KEY,
    CheckpointError,
    parse_history,
    plan_model,
    read_metadata,
)
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
from vaescope.training.embedded import check_record_values, extra_specs, is_extra
from vaescope.training.tensorfile import (
    Header,
    TensorFileError,
    TensorSpec,
    check_tensors,
    encode,
    file_sha256,
    nonfinite,
    read_header,
    read_tensors,
    write_atomically,
)

# 3: a run id and a digest over the metadata pair the state with its model file; 2: the state holds
# the weights and both configs; 1 held only Adam's state
STATE_VERSION = 3
STATE_KEYS = ("state_version", "run_id", "epoch", "history", "model_config", "train_config", "model_file_sha256",
              "tensors_sha256", "metadata_sha256")
RUN_KEY = "latent_train_run"  # model.safetensors' metadata entry that names its run (the checkpoint's is META_KEY)
RUN_KEYS = ("run_id", "state_before", "digest")
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
    run_id: str  # drawn when the run started
    metadata_sha256: str  # the state's digest, which the next model file records as ``state_before``
    record: dict[str, Tensor] = field(default_factory=dict)  # the record.* tensors (none without a record)


@dataclass
class RunLink:
    """What ties a run folder's two files together while the run writes them: the run's id and the
    ``metadata_sha256`` of the resume state now on the disk, which the next model file records."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # from the OS: the seeded generators are untouched
    state_sha256: str = ""  # no state yet: a run's first model file follows none


# -- writing ------------------------------------------------------------------------------------
def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON (sorted keys, no spaces): the same for the values written
    and for the values a reader parses back."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def metadata_digest(meta: dict[str, Any]) -> str:
    """The resume state's ``metadata_sha256``: over every other metadata value, ``tensors_sha256``
    included, so over the tensors too."""
    return json_digest({k: v for k, v in meta.items() if k != "metadata_sha256"})


def _model_file_digest(run_id: str, state_before: str, checkpoint: dict[str, Any], weights_sha256: str) -> str:
    """The model file's digest: its run block, its weights and the metadata the resume state holds
    too (``checkpoint``: its parsed ``META_KEY`` JSON). Its sample is left out, so ``embed_sample``,
    which keeps the weights and the metadata byte for byte, keeps the file paired."""
    return json_digest({"run_id": run_id, "state_before": state_before, "epoch": len(checkpoint["history"]),
                        "history": checkpoint["history"], "model_config": checkpoint["model_config"],
                        "train_config": checkpoint["train_config"], "weights_sha256": weights_sha256})


def model_file_run_entry(link: RunLink, checkpoint_json: str, weights: dict[str, Tensor]) -> dict[str, str]:
    """The ``RUN_KEY`` metadata entry of the model file whose ``META_KEY`` JSON is ``checkpoint_json``
    and whose state dict is ``weights``, written while ``link``'s state is on the disk."""
    digest = _model_file_digest(link.run_id, link.state_sha256, json.loads(checkpoint_json), tensors_digest(weights))
    return {RUN_KEY: json.dumps({"run_id": link.run_id, "state_before": link.state_sha256, "digest": digest})}


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
                     model_file_sha256: str, device: torch.device, record: dict[str, Tensor] | None = None,
                     run_id: str | None = None) -> str:
    """Write the resume state after ``epoch`` finished epochs, atomically (WriteError on failure,
    with the previous state left as it was). ``record``: the training record's tensors so far;
    ``run_id``: the run's (None: a run of its own). Returns the state's ``metadata_sha256``."""
    tensors = {f"model.{k}": _stored(v) for k, v in model.state_dict().items()}
    index = {p: i for i, p in enumerate(model.parameters())}
    for param, values in opt.state.items():
        if not values:  # a parameter the optimizer has not stepped yet
            continue
        for name in ADAM_STATE:
            tensors[f"optim.{index[param]}.{name}"] = _stored(torch.as_tensor(values[name]))
    tensors |= _rng_tensors(device)
    tensors |= {name: _stored(t) for name, t in (record or {}).items() if name.startswith("record.")}
    meta = {"state_version": STATE_VERSION, "run_id": run_id or RunLink().run_id, "epoch": epoch,
            "history": history, "model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
            "model_file_sha256": model_file_sha256, "tensors_sha256": tensors_digest(tensors)}
    meta["metadata_sha256"] = metadata_digest(meta)
    write_atomically(path, encode(tensors, {TRAIN_STATE_KEY: json.dumps(meta, allow_nan=True)}))
    return meta["metadata_sha256"]


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
    run_id: str
    metadata_sha256: str


def _hex(value: Any, where: str, digits: int) -> str:
    """A lowercase hexadecimal string of exactly ``digits`` digits (a run id, a sha256)."""
    text = as_str(value, where, digits)
    if not re.fullmatch(f"[0-9a-f]{{{digits}}}", text):
        raise ConfigError(f"{where} must be {digits} hexadecimal digits, got {shown(text)}")
    return text


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
    digests = {key: _hex(meta[key], key, 64) for key in ("model_file_sha256", "tensors_sha256", "metadata_sha256")}
    run_id = _hex(meta["run_id"], "run_id", 32)
    model_config = _config(ModelConfig, meta["model_config"], "model_config")
    train_config = _config(TrainConfig, meta["train_config"], "train_config")
    if metadata_digest(meta) != digests["metadata_sha256"]:  # after the checks above, which name a bad value
        raise ConfigError("the metadata differs from the digest recorded when the state was written: "
                          "the file was altered or damaged")
    return header, _Meta(epoch, history, model_config, train_config, run_id=run_id, **digests)


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
                      model_file_sha256=meta.model_file_sha256, run_id=meta.run_id,
                      metadata_sha256=meta.metadata_sha256, record=record)


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


# -- the model file beside it -------------------------------------------------------------------
@dataclass
class _ModelFile:
    """What a resume needs of the model file beside the state: its run block, its metadata as
    parsed from its JSON, and the digest its weights and metadata have now."""

    run_id: str
    state_before: str
    digest: str  # as recorded
    actual: str  # as computed from the file now
    checkpoint: dict[str, Any]  # the META_KEY JSON, parsed (checked by read_metadata)
    model_config: ModelConfig
    train_config: TrainConfig


def check_model_file(state_path: Path, state: TrainState, model_path: Path,
                     may_change: Iterable[str] = ()) -> str | None:
    """Whether the resume state at ``state_path`` (``state``, as loaded) belongs with the model file
    at ``model_path``, which the resumed run overwrites. Returns a note to show (the model file is
    missing, or is not byte for byte the one written with the state) or None; raises TrainStateError
    with the reason when they do not belong together. ``may_change``: the train config's fields a
    resume may change (they may differ between the two files).

    Accepted: no model file (the state is self-sufficient); the model file written with the state
    (same run, same epoch and history, a valid digest); the one written right after it, one epoch
    ahead, which records this state's ``metadata_sha256`` (the run stopped between its two writes)."""
    epoch = state.epoch
    if not os.path.lexists(model_path):
        return (f"note: {model_path} is missing (the run stopped between its two writes?); continuing from the "
                f"resume state after epoch {epoch}, which reaches the same weights")

    def refuse(problem: str) -> TrainStateError:
        return TrainStateError(state_path, f"cannot resume: {problem}")

    found = _read_model_file(model_path, refuse)
    if found.run_id != state.run_id:
        raise refuse(f"the resume state belongs to another run than {model_path} (run {state.run_id}, not "
                     f"{found.run_id}; copied from another run folder?), which is left as it was")
    if found.actual != found.digest:
        raise refuse(f"{model_path}'s metadata or weights differ from the digest recorded when the run wrote it: "
                     "the file was altered")
    if found.model_config.to_dict() != state.model_config.to_dict():
        raise refuse(f"the resume state was made for another model config than {model_path}")
    ours, theirs = state.train_config.to_dict(), found.train_config.to_dict()
    changed = sorted(k for k in ours if k not in tuple(may_change) and ours[k] != theirs[k])
    if changed:
        raise refuse(f"the train config differs from {model_path}'s in {changed}")
    history = found.checkpoint["history"]
    if len(history) not in (epoch, epoch + 1):
        raise refuse(f"the resume state is after epoch {epoch} but {model_path} of the same run is after epoch "
                     f"{len(history)}; only the model file written with the state, or the one written right after "
                     "it (one epoch ahead), can be continued")
    for i, (a, b) in enumerate(zip(state.history, history, strict=False)):
        if json_digest(a) != json_digest(b):
            raise refuse(f"the history of the resume state differs from {model_path}'s at epoch {i + 1}")
    if len(history) == epoch + 1 and found.state_before != state.metadata_sha256:
        raise refuse(f"{model_path} is one epoch ahead but was not written after this resume state "
                     "(the state was replaced or altered)")
    if file_sha256(model_path) == state.model_file_sha256:
        return None
    return (f"note: {model_path} is not the one saved with the resume state (the run stopped between its two "
            f"writes?); continuing from the resume state after epoch {epoch}, which reaches the same weights")


def _read_model_file(path: Path, refuse: Callable[[str], TrainStateError]) -> _ModelFile:
    """The model file's run block, metadata and current digest; ``refuse(problem)`` is raised for a
    file that cannot be read or carries no valid run block."""
    move = f"move it out of {path.parent} to resume from the state alone"
    try:
        meta = read_metadata(path)  # every check a checkpoint gets, before any tensor is read
        header = read_header(path)
        weights = read_tensors(path, header, [name for name in header.tensors if not is_extra(name)])
        checkpoint = parse_json(header.metadata[META_KEY], "metadata")
    except CheckpointError as exc:
        raise refuse(f"{path} cannot be read: {exc.problem}; {move}") from None
    except (InputError, OSError, KeyError) as exc:
        raise refuse(f"{path} cannot be read: {exc}; {move}") from None
    raw = header.metadata.get(RUN_KEY)
    if raw is None:
        raise refuse(f"{path} names no run (written by an older vaescope, saved again, or copied from elsewhere), "
                     f"so nothing shows it belongs with this resume state; {move}")
    try:
        block = as_dict(parse_json(raw, f"'{RUN_KEY}'"), f"'{RUN_KEY}'", len(RUN_KEYS))
        only_keys(block, f"'{RUN_KEY}'", RUN_KEYS, RUN_KEYS)
        run_id, digest = _hex(block["run_id"], "run_id", 32), _hex(block["digest"], "digest", 64)
        state_before = "" if block["state_before"] == "" else _hex(block["state_before"], "state_before", 64)
        train_config = TrainConfig.from_dict(meta.train_config)
    except ConfigError as exc:
        raise refuse(f"{path} has an invalid run block ({exc}); {move}") from None
    actual = _model_file_digest(run_id, state_before, checkpoint, tensors_digest(weights))
    return _ModelFile(run_id, state_before, digest, actual, checkpoint, meta.model_config, train_config)
