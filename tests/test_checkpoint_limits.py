"""Checkpoints from outside: every value type-checked, every size checked against vaescope.limits
before anything is built or allocated, and every refusal one CheckpointError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import read_safetensors_raw, rewrite_metadata_json, tiny_config, write_safetensors_raw

from vaescope import limits
from vaescope.training.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    plan_model,
    read_metadata,
    save_checkpoint,
)
from vaescope.training.config import ConfigError, ModelConfig, TrainConfig
from vaescope.training.models import FAMILIES, build_model


def _save(path: Path, model_type: str = "vae") -> Path:
    torch.manual_seed(0)
    config = tiny_config(model_type)
    meta = CheckpointMeta(model_config=config, train_config=TrainConfig(epochs=2).to_dict(),
                          dataset={"name": "digits", "image_shape": [1, 8, 8], "class_names": list("0123456789"),
                                   "value_range": [0.0, 1.0], "factor_names": []},
                          history=[{"epoch": 1, "train_loss": 40.0, "val_loss": 39.0}],
                          metrics={"elbo": -39.0, "kl_per_dim": [0.1] * 4, "active_units": 2})
    return save_checkpoint(path, build_model(config), meta)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _save(tmp_path / "good.safetensors")


@pytest.fixture
def good_gmvae(tmp_path: Path) -> Path:
    return _save(tmp_path / "gmvae.safetensors", "gmvae")


def refused(path: Path, fragment: str) -> str:
    """Both the listing's read and the full load refuse ``path`` with a CheckpointError whose one
    line names the file and contains ``fragment``; returns the message."""
    for read in (read_metadata, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert fragment in message, message
    return message


def _set(*keys: str | int, value: object):  # noqa: ANN202 - an edit for rewrite_metadata_json
    def edit(meta: dict) -> None:
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


# (path in the metadata, value, what the refusal says)
BAD_VALUES = [
    (("model_config", "latent_dim"), 10**9, "latent_dim must be <= 1024"),
    (("model_config", "latent_dim"), "4", "latent_dim must be an integer, got '4'"),
    (("model_config", "latent_dim"), True, "latent_dim must be an integer, got True"),
    (("model_config", "latent_dim"), 4.0, "latent_dim must be an integer, got 4.0"),
    (("model_config", "latent_dim"), None, "latent_dim must be an integer, got None"),
    (("model_config", "hidden_dim"), 10**12, "hidden_dim must be <= 4096"),
    (("model_config", "base_channels"), 10**6, "base_channels must be <= 256"),
    (("model_config", "image_shape"), [3, 100_000, 100_000], "image_shape[1] must be <= 256"),
    (("model_config", "image_shape"), [2, 8, 8], "images must have 1 or 3 channels, got 2"),
    (("model_config", "image_shape"), [1, 8], "image_shape must be [C, H, W]"),
    (("model_config", "image_shape"), "8x8", "image_shape must be a list"),
    (("model_config", "image_shape"), [[1], 8, 8], "image_shape[0] must be an integer"),
    (("model_config", "num_classes"), -1, "num_classes must be >= 0"),
    (("model_config", "beta"), "NaN", "beta must be a float"),
    (("model_config", "beta"), float("inf"), "beta must be a finite number"),
    (("model_config", "model_type"), ["vae"], "model_type must be a string"),
    (("model_config", "model_type"), "../../etc/passwd", "model_type must be one of"),
    (("model_config", "options"), {"components": 10**9}, "unknown key(s) ['components']"),
    (("model_config", "options"), [], "options must be a JSON object"),
    (("model_config",), [], "model_config must be a JSON object"),
    (("model_type",), "gmvae", "model_type 'gmvae' differs from model_config's 'vae'"),
    (("format_version",), "2", "format_version '2' is not supported"),
    (("format_version",), 2.0, "format_version 2.0 is not supported"),
    (("format_version",), True, "format_version True is not supported"),
    (("history",), {"epoch": 1}, "history must be a list"),
    (("history",), [1], "history[0] must be a JSON object"),
    (("history", 0, "epoch"), -3, "history[0].epoch must be >= 1"),
    (("history", 0, "epoch"), 1.5, "history[0].epoch must be an integer"),
    (("history", 0, "val_loss"), "low", "history[0].val_loss must be a float"),
    (("history",), [{"epoch": 1}] * (limits.MAX_HISTORY_EPOCHS + 1), "history has 5001 entries; the limit is 5000"),
    (("metrics",), "good", "metrics must be a JSON object"),
    (("metrics", "elbo"), {"v": 1}, "metrics.elbo must be a float"),
    (("metrics", "kl_per_dim"), ["a"], "metrics.kl_per_dim[0] must be a float"),
    (("metrics", "active_units"), -1, "metrics.active_units must be >= 0"),
    (("metrics", "note"), "x" * 100_000, "metrics.note is 100000 characters long; the limit is 4096"),
    (("metrics", "deep"), json.loads("[" * 20 + "]" * 20), "metadata is nested 22 levels deep; the limit is 8"),
    (("dataset",), None, "dataset must be a JSON object"),
    (("dataset", "class_names"), [1, 2], "dataset.class_names[0] must be a string"),
    (("dataset", "class_names"), ["x" * 1000] * 10, "dataset.class_names[0] is 1000 characters long; the limit is 256"),
    (("dataset", "class_names"), ["c"] * 20_000, "dataset.class_names has 20000 entries; the limit is 1000"),
    (("dataset", "image_shape"), [3, 8, 8], "dataset.image_shape [3, 8, 8] differs from model_config's [1, 8, 8]"),
    (("dataset", "value_range"), [1.0, 0.0], "dataset.value_range must be [low, high] with low < high"),
    (("dataset", "data_dir"), "/etc", "dataset: unknown key(s) ['data_dir']"),
    (("train_config", "lr"), -1.0, "invalid train_config: lr must be > 0"),
    (("train_config", "epochs"), 10**30, "invalid train_config: epochs must be <= 5000"),
    (("train_config",), "fast", "invalid train_config: TrainConfig must be a JSON object"),
    (("surprise",), 1, "metadata: unknown key(s) ['surprise']"),
]


@pytest.mark.parametrize(("keys", "value", "fragment"), BAD_VALUES, ids=[f"{'.'.join(map(str, k))}={str(v)[:20]}"
                                                                          for k, v, _ in BAD_VALUES])
def test_a_malformed_metadata_value_is_refused_by_name(good, keys, value, fragment) -> None:
    rewrite_metadata_json(good, "vaescope", _set(*keys, value=value))
    refused(good, fragment)


def test_a_missing_key_and_a_key_given_twice(good) -> None:
    rewrite_metadata_json(good, "vaescope", lambda meta: meta.pop("history") and None)
    refused(good, "metadata: lacks key(s) ['history']")
    table, metadata, data = read_safetensors_raw(_save(good))
    metadata["vaescope"] = '{"format_version": 2, "format_version": 2}'
    refused(write_safetensors_raw(good, table, metadata, data), "key 'format_version' appears twice in one object")


@pytest.mark.parametrize(("text", "fragment"), [
    ("[" * 100_000 + "]" * 100_000, "metadata is nested 100000 levels deep; the limit is 8"),
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested 50000 levels deep"),
    ("not json", "metadata is not valid JSON"),
    ("[1, 2]", "metadata must be a JSON object"),
    ("9" * 5000, "metadata is not valid JSON"),
])
def test_metadata_that_is_not_a_json_object(good, text, fragment) -> None:
    table, metadata, data = read_safetensors_raw(good)
    refused(write_safetensors_raw(good, table, {"vaescope": text}, data), fragment)


@pytest.mark.parametrize(("model_type", "options", "fragment"), [
    ("gmvae", {"components": 10**6}, "describes a model of 73,007,784 parameters"),  # within the option bound, over the parameters
    ("gmvae", {"components": 5000}, "conditioned on 5,000 classes or components; the limit is 1000"),
    ("gmvae", {"components": 10**9}, "option components must be <= 1000000"),
    ("gmvae", {"components": -5}, "components and categorical_weight must be >= 0"),
    ("gmvae", {"categorical_weight": float("nan")}, "must be a finite number"),
])
def test_family_options_are_bounded_before_anything_is_built(good_gmvae, model_type, options, fragment) -> None:
    rewrite_metadata_json(good_gmvae, "vaescope", _set("model_config", "options", value=options))
    refused(good_gmvae, fragment)


def test_widths_within_each_limit_but_too_many_parameters_together(good) -> None:
    """Every field within its own limit, but an MLP on 256x256 RGB with 4096 units has 1.6 G
    parameters (6.4 GB): the count on the meta device refuses it, and nothing was allocated."""
    def huge(meta: dict) -> None:
        meta["model_config"].update(image_shape=[3, 256, 256], hidden_dim=4096, latent_dim=1024)
        meta["dataset"]["image_shape"] = [3, 256, 256]
    rewrite_metadata_json(good, "vaescope", huge)
    refused(good, "the limit is 50,000,000 (vaescope.limits.MAX_PARAMETERS)")


def test_the_planned_model_has_no_memory_and_refuses_past_the_limit() -> None:
    planned = plan_model(ModelConfig(model_type="vae", image_shape=(3, 128, 128), latent_dim=64))
    assert {p.device.type for p in planned.parameters()} == {"meta"}
    with pytest.raises(ConfigError, match="describes a model of .* parameters"):
        plan_model(ModelConfig(model_type="vae", image_shape=(3, 256, 256), arch="mlp", hidden_dim=4096))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_builds_on_the_meta_device(name: str) -> None:
    """The loader counts parameters on the meta device before allocating: a family whose
    constructor cannot run there could not be loaded, so every registered family is tried."""
    config = ModelConfig(model_type=name, image_shape=(1, 28, 28), num_classes=10)
    planned = plan_model(config)
    assert sum(p.numel() for p in planned.parameters()) == sum(p.numel() for p in build_model(config).parameters())


def test_planning_every_family_leaves_torch_s_compiler_unimported() -> None:
    """A random draw or any arithmetic on the meta device imports torch's compiler (1.6 s on the
    first model a server opens): families compute their fixed initial values on the CPU. Checked in
    a fresh interpreter, where nothing imported it before."""
    import subprocess
    import sys

    script = ("import sys\nfrom vaescope.training.checkpoint import plan_model\n"
              "from vaescope.training.config import ModelConfig\nfrom vaescope.training.models import FAMILIES\n"
              "for name in sorted(FAMILIES):\n"
              "    for latent in (2, 8):\n"
              "        plan_model(ModelConfig(model_type=name, image_shape=(1, 28, 28), num_classes=10, latent_dim=latent))\n"
              "        assert 'torch._dynamo' not in sys.modules, name\n"
              "print(len(FAMILIES))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) >= 11


# -- the safetensors header ---------------------------------------------------------------------
def _with_table(good: Path, edit) -> Path:  # noqa: ANN001
    table, metadata, data = read_safetensors_raw(good)
    edit(table)
    return write_safetensors_raw(good, table, metadata, data)


def test_a_declared_shape_the_file_does_not_hold(good) -> None:
    def huge(table: dict) -> None:
        table["head.weight"]["shape"] = [2**31, 2**31]
    refused(_with_table(good, huge), "declares shape [2147483648, 2147483648] F32 (18,446,744,073,709,551,616 bytes)")


def test_an_unknown_dtype_and_a_wrong_one(good, tmp_path) -> None:
    refused(_with_table(good, lambda t: t["head.weight"].update(dtype="F128")), "has dtype 'F128'")
    other = _save(tmp_path / "other.safetensors")
    table, metadata, data = read_safetensors_raw(other)
    entry = table["head.bias"]
    start, end = entry["data_offsets"]
    entry["dtype"], entry["shape"] = "I32", [end - start >> 2]  # same bytes, read as integers
    refused(write_safetensors_raw(other, table, metadata, data), "tensor 'head.bias' is I32 but the config needs one of")


def test_overlapping_and_truncated_tensor_data(good, tmp_path) -> None:
    def overlap(table: dict) -> None:
        first = min(table.values(), key=lambda e: e["data_offsets"][0])
        for entry in table.values():
            if entry is not first and entry["data_offsets"][0] == first["data_offsets"][1]:
                entry["data_offsets"] = [v - 4 for v in entry["data_offsets"]]
    refused(_with_table(good, overlap), "(overlapping or misplaced tensors)")
    other = _save(tmp_path / "other.safetensors")
    other.write_bytes(other.read_bytes()[:-100])
    refused(other, "(truncated or corrupt?)")
    other.write_bytes(_save(other).read_bytes() + b"\0" * 16)
    refused(other, "has trailing bytes")


@pytest.mark.parametrize(("prefix", "fragment"), [
    ((2**40).to_bytes(8, "little"), "the header declares 1,099,511,627,776 bytes; the limit is 4,194,304"),
    ((5000).to_bytes(8, "little") + b"{}", "the header declares 5,000 bytes but the file has only 10"),
    (b"\x01\x02", "too short for a safetensors header"),
])
def test_header_lengths_are_checked_before_reading(tmp_path, prefix, fragment) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(prefix)
    refused(path, fragment)


def test_a_header_with_too_many_tensors(good) -> None:
    table, metadata, _ = read_safetensors_raw(good)
    many = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(2000)}
    refused(write_safetensors_raw(good, many, metadata, b"\0" * 2000), "has 2001 keys; the limit is 1025")


def test_a_file_over_the_size_limit_is_not_opened(tmp_path) -> None:
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:  # sparse: takes no disk
        fh.truncate(limits.MAX_CHECKPOINT_BYTES + 1)
    refused(path, "the limit is 1,073,741,824")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weights_holding_nan_or_inf_are_refused(tmp_path, bad) -> None:
    config = tiny_config("vae")
    model = build_model(config)
    with torch.no_grad():
        model.head.bias[1] = bad
    meta = CheckpointMeta(model_config=config, train_config={}, dataset={"name": "digits"})
    path = save_checkpoint(tmp_path / "nan.safetensors", model, meta)
    assert read_metadata(path).model_type == "vae"  # the listing reads no weights
    with pytest.raises(CheckpointError, match=r"tensor\(s\) \['head.bias'\] hold NaN or infinite values"):
        load_checkpoint(path)


def test_a_resume_state_or_a_foreign_file_is_named_for_what_it_is(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "state.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"train_state": "{}"})
    refused(path, "this is latent-train's resume state")


def test_shipped_checkpoints_of_both_formats_load() -> None:
    from vaescope.training.checkpoint import READABLE_VERSIONS

    versions = {}
    for path in sorted(Path("assets/checkpoints").rglob("*.safetensors")):
        model, meta = load_checkpoint(path)
        assert model.describe().latent_dim == meta.model_config.latent_dim, path
        versions[path.name] = meta.format_version
    assert set(versions.values()) <= set(READABLE_VERSIONS)
    # format 1 (family hyper-parameters at the top of model_config) is still read from real shipped files
    assert 1 in versions.values() and 2 in versions.values(), versions


def test_a_checkpoint_dir_entry_that_is_not_a_file(tmp_path) -> None:
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    refused(folder, "not a regular file")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")
