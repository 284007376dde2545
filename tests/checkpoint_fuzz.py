"""Property-based fuzzing of checkpoints and resume states from outside (hypothesis).

Every property writes a crafted file and reads it the way the explorer and latent-train do. A
read must either succeed (the file was valid after all; the weights are then finite) or raise the
one error type of its kind, CheckpointError or TrainStateError, with a one-line message naming the
file. Any other exception (TypeError, KeyError, RecursionError, MemoryError, ...) fails.

Run as a script, it does the same under a hard address-space cap (``resource.RLIMIT_AS``) a few
hundred megabytes above what the interpreter already maps, and reports the peak resident memory it
reached: ``tests/test_checkpoint_fuzz.py`` uses that to show that no crafted file of a few hundred
bytes can make a read cost gigabytes.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from conftest import read_safetensors_raw, tiny_config, write_safetensors_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaescope.training.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from vaescope.training.config import TrainConfig
from vaescope.training.models import build_model
from vaescope.training.train_state import (
    TrainStateError,
    load_train_state,
    peek_train_state,
    save_train_state,
)

WORK = Path(tempfile.mkdtemp(prefix="vaescope-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

# -- values a hostile file may hold ---------------------------------------------------------------
# Sizes around every limit, and far beyond: what decides an allocation if nothing checks it.
SIZES = st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 255, 256, 257, 1000, 1001, 1024, 1025, 4096, 4097, 5000,
                         5001, 10**6, 10**6 + 1, 2**31, 2**32, 2**53 + 1, 2**63, 2**64, 10**30])
SHAPES = st.sampled_from([[1, 8, 8], [3, 8, 8], [3, 256, 256], [3, 257, 257], [1, 10**6, 1], [3, 10**5, 10**5],
                          [0, 8, 8], [1, 8], [1, 8, 8, 8], [1.5, 8, 8], [True, 8, 8]])
SCALARS = st.one_of(st.none(), st.booleans(), SIZES, st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.just("x" * 5000), st.sampled_from(["vae", "gmvae", "cvae", "ae", "mlp", "conv", "auto", "digits"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                    max_leaves=10)
VALUES = st.one_of(JSON, SHAPES, st.just([[[[[[[[[[[]]]]]]]]]]]), st.just(["c"] * 2000))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and list indices) into a JSON value, containers included."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            found += _paths(item, (*prefix, i))
    return found


def _mutate(value: Any, path: tuple, op: str, new: Any) -> Any:
    """A deep copy of ``value`` with the item at ``path`` replaced, deleted, or given a new key."""
    value = json.loads(json.dumps(value))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent[last], dict):
        parent[last]["unexpected_key"] = new
    else:
        parent[last] = new
    return value


@st.composite
def mutations(draw: st.DrawFn, base: Any) -> Any:
    """``base`` (a JSON value) with one to three items replaced, deleted or extended."""
    value = base
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(value)
        if not paths:
            break
        value = _mutate(value, draw(st.sampled_from(paths)), draw(st.sampled_from(["replace", "delete", "add"])),
                        draw(VALUES))
    return value


# -- the files mutated --------------------------------------------------------------------------
@cache
def base_checkpoint(model_type: str) -> Path:
    """A valid tiny checkpoint of ``model_type`` (untrained: the values do not matter here)."""
    torch.manual_seed(0)
    config = tiny_config(model_type)
    meta = CheckpointMeta(model_config=config, train_config=TrainConfig(epochs=2).to_dict(),
                          dataset={"name": "digits", "image_shape": [1, 8, 8], "class_names": list("0123456789"),
                                   "value_range": [0.0, 1.0], "factor_names": []},
                          history=[{"epoch": 1, "train_loss": 40.0, "val_loss": 39.0, "seconds": 0.1,
                                    "component_init": {"sizes": [1, 2], "seconds": 0.5}}],
                          metrics={"elbo": -39.0, "kl_per_dim": [0.1] * 4, "active_units": 2, "note": "x"})
    return save_checkpoint(WORK / f"base-{model_type}.safetensors", build_model(config), meta)


@cache
def base_train_state() -> Path:
    """A valid resume state after one Adam step of a tiny VAE."""
    torch.manual_seed(0)
    config = tiny_config("vae")
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.loss(torch.rand(4, 1, 8, 8)).total.backward()
    opt.step()
    path = WORK / "base-state.safetensors"
    save_train_state(path, model, opt, 1, [{"epoch": 1, "train_loss": 1.0}], config, TrainConfig(epochs=2),
                     "0" * 64, torch.device("cpu"))
    return path


def _scratch(name: str) -> Path:
    return Path(tempfile.mkstemp(prefix=name, suffix=".safetensors", dir=WORK)[1])


def check_checkpoint(path: Path) -> str:
    """Read ``path`` as the listing and the loader do; returns "ok" or "refused", and raises
    AssertionError for any other outcome."""
    try:
        read_metadata(path)
        model, _ = load_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return "refused"
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values())
    return "ok"


def check_train_state(path: Path) -> str:
    try:
        peek_train_state(path)
        load_train_state(path)
    except TrainStateError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return "refused"
    return "ok"


# -- the properties -----------------------------------------------------------------------------
@st.composite
def mutated_checkpoints(draw: st.DrawFn) -> Path:
    table, metadata, data = read_safetensors_raw(base_checkpoint(draw(st.sampled_from(["vae", "gmvae", "cvae"]))))
    meta = draw(mutations(json.loads(metadata["vaescope"])))
    metadata["vaescope"] = json.dumps(meta, allow_nan=True)
    return write_safetensors_raw(_scratch("meta"), table, metadata, data)


@st.composite
def crafted_headers(draw: st.DrawFn) -> Path:
    """A base checkpoint's metadata with a tensor table that is mutated or made up, over random data."""
    table, metadata, data = read_safetensors_raw(base_checkpoint("vae"))
    if draw(st.booleans()):
        table = draw(mutations(table))
        data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    else:
        table = draw(st.dictionaries(st.sampled_from(["head.weight", "head.bias", "x", ""]), st.fixed_dictionaries({
            "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "F128", ""]), JSON),
            "shape": st.one_of(st.lists(SIZES, max_size=4), JSON),
            "data_offsets": st.one_of(st.lists(st.one_of(SIZES, st.integers(0, 512)), max_size=3), JSON)}),
            max_size=3))
        data = draw(st.binary(max_size=512))
    return write_safetensors_raw(_scratch("header"), table, metadata, data)


@st.composite
def damaged_bytes(draw: st.DrawFn) -> Path:
    """A valid file with bytes overwritten (mostly in the header) and perhaps cut short."""
    raw = bytearray(base_checkpoint("vae").read_bytes())
    header_end = 8 + int.from_bytes(raw[:8], "little")
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.one_of(st.integers(0, header_end - 1), st.integers(0, len(raw) - 1)))
        raw[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    path = _scratch("bytes")
    path.write_bytes(bytes(raw))
    return path


@st.composite
def raw_metadata_texts(draw: st.DrawFn) -> Path:
    table, metadata, data = read_safetensors_raw(base_checkpoint("vae"))
    depth = draw(st.integers(1, 200_000))
    metadata["vaescope"] = draw(st.one_of(st.text(max_size=200), st.just("[" * depth + "]" * depth),
                                          st.just('{"a":' * depth + "0" + "}" * depth), st.just("[" * depth)))
    return write_safetensors_raw(_scratch("text"), table, metadata, data)


@st.composite
def mutated_train_states(draw: st.DrawFn) -> Path:
    table, metadata, data = read_safetensors_raw(base_train_state())
    meta = draw(mutations(json.loads(metadata["train_state"])))
    metadata["train_state"] = json.dumps(meta, allow_nan=True)
    if draw(st.booleans()):
        table = draw(mutations(table))
    return write_safetensors_raw(_scratch("state"), table, metadata, data)


def bombs() -> dict[str, Path]:
    """Files of a few hundred bytes to a few kilobytes whose metadata or header, trusted, would
    make a reader allocate gigabytes: each must be refused before anything is allocated."""
    table, metadata, data = read_safetensors_raw(base_checkpoint("gmvae"))
    meta = json.loads(metadata["vaescope"])
    edits: dict[str, Callable[[dict], None]] = {
        "latent_dim": lambda m: m["model_config"].update(latent_dim=10**9),
        "hidden_dim": lambda m: m["model_config"].update(hidden_dim=10**9),
        "image_side": lambda m: m["model_config"].update(image_shape=[3, 10**5, 10**5]),
        "thin_image": lambda m: m["model_config"].update(image_shape=[1, 1, 10**8], arch="mlp"),
        "components": lambda m: m["model_config"]["options"].update(components=10**6),
        "widths_together": lambda m: m["model_config"].update(image_shape=[3, 256, 256], hidden_dim=4096,
                                                               latent_dim=1024),
    }
    found = {}
    for name, edit in edits.items():
        bomb = json.loads(json.dumps(meta))
        edit(bomb)
        bomb["dataset"]["image_shape"] = bomb["model_config"]["image_shape"]  # consistent, so only a limit refuses it
        found[name] = write_safetensors_raw(WORK / f"bomb-{name}.safetensors", {}, {"vaescope": json.dumps(bomb)}, b"")
    big = {"head.weight": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}}
    found["declared_tensor"] = write_safetensors_raw(WORK / "bomb-tensor.safetensors", big, metadata, b"\0" * 64)
    found["header_length"] = WORK / "bomb-header.safetensors"
    found["header_length"].write_bytes((2**40).to_bytes(8, "little") + b"{}")
    return found


PROPERTIES: dict[str, tuple[Callable[[st.DrawFn], Path], Callable[[Path], str]]] = {
    "checkpoint metadata": (mutated_checkpoints, check_checkpoint),
    "safetensors header": (crafted_headers, check_checkpoint),
    "damaged bytes": (damaged_bytes, check_checkpoint),
    "metadata text": (raw_metadata_texts, check_checkpoint),
    "resume state": (mutated_train_states, check_train_state),
}


def run_property(name: str, max_examples: int, derandomize: bool = True) -> dict[str, int]:
    """Run one property for ``max_examples`` files; returns how many were read and refused."""
    strategy, check = PROPERTIES[name]
    outcomes = {"ok": 0, "refused": 0}

    @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def prop(path: Path) -> None:
        try:
            outcomes[check(path)] += 1
        finally:
            path.unlink(missing_ok=True)

    prop()
    return outcomes


# -- memory-capped run ----------------------------------------------------------------------------
def _vm_size() -> int:
    """This process's virtual memory size in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def main(argv: list[str]) -> int:
    """``checkpoint_fuzz.py EXAMPLES CAP_MB fixed|random``: the bombs and every property under
    RLIMIT_AS = what is mapped now + CAP_MB; prints one JSON line with the outcomes and the peak RSS
    growth. ``fixed`` makes hypothesis draw the same examples every run."""
    import resource

    examples, cap_mb, fixed = int(argv[0]), int(argv[1]), argv[2] == "fixed"
    torch.set_num_threads(1)
    for name in PROPERTIES:  # warm up: first reads import and initialise everything once
        run_property(name, 2)
    baseline = _peak_rss()
    cap = _vm_size() + cap_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    refused = sum(check_checkpoint(path) == "refused" for path in bombs().values())
    outcomes = {name: run_property(name, examples, derandomize=fixed) for name in PROPERTIES}
    print(json.dumps({"bombs_refused": refused, "outcomes": outcomes,
                      "peak_rss_growth_mb": math.ceil((_peak_rss() - baseline) / 2**20)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
