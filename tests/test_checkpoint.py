"""Checkpoints: round trip, atomic writes, and a specific error for every kind of bad file."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from vaescope.training import tensorfile
from vaescope.training.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    WriteError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from vaescope.training.config import ModelConfig
from vaescope.training.models import build_model


def make_model(latent_dim: int = 3):
    cfg = ModelConfig(model_type="vae", image_shape=(1, 8, 8), arch="mlp", latent_dim=latent_dim, hidden_dim=32)
    torch.manual_seed(0)
    model = build_model(cfg)
    meta = CheckpointMeta(model_config=cfg, train_config={"epochs": 1},
                          dataset={"name": "digits", "image_shape": [1, 8, 8], "class_names": list("0123456789")},
                          history=[{"epoch": 1, "val_loss": 30.0}], metrics={"elbo": -30.0})
    return model, meta


@pytest.fixture
def good(tmp_path):
    model, meta = make_model()
    return save_checkpoint(tmp_path / "good.safetensors", model, meta), model


def test_metadata_round_trip_is_self_describing(good) -> None:
    path, _ = good
    meta = read_metadata(path)
    assert meta.model_type == "vae" and meta.model_config.latent_dim == 3
    assert meta.dataset["class_names"][3] == "3"
    assert meta.history == [{"epoch": 1, "val_loss": 30.0}] and meta.metrics == {"elbo": -30.0}
    # Readable with safetensors alone, as plain JSON.
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        raw = json.loads(fh.metadata()["vaescope"])
    assert raw["format_version"] == 2 and raw["train_config"] == {"epochs": 1}


def _full_disk_after(monkeypatch, fraction: float) -> None:
    """The disk fills up after ``fraction`` of a file's bytes are written: the write raises ENOSPC."""
    def write_part(fh, data: bytes) -> None:
        fh.write(data[: int(len(data) * fraction)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensorfile, "_write_all", write_part)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_a_full_disk_keeps_the_previous_checkpoint(good, monkeypatch, fraction) -> None:
    path, model = good
    before = path.read_bytes()
    _full_disk_after(monkeypatch, fraction)
    with pytest.raises(WriteError, match="no space left on the disk; the file that was there is kept") as info:
        save_checkpoint(path, model, read_metadata(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def _expect(path, pattern: str) -> None:
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_file(good) -> None:
    path, _ = good
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "truncated or corrupt")


def test_random_bytes(tmp_path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    _expect(path, "truncated or corrupt")


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _expect(path, "empty")


def test_missing_file(tmp_path) -> None:
    _expect(tmp_path / "nope.safetensors", "not found")


def test_safetensors_without_our_metadata(tmp_path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    _expect(path, "without vaescope metadata")


def _rewrite_meta(path, edit) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        raw = json.loads(fh.metadata()["vaescope"])
    edit(raw, tensors)
    save_file(tensors, str(path), metadata={"vaescope": json.dumps(raw)})


def test_future_format_version(good) -> None:
    path, _ = good
    _rewrite_meta(path, lambda raw, t: raw.update(format_version=99))
    _expect(path, "format_version 99 is not supported")


def test_missing_metadata_key(good) -> None:
    path, _ = good
    _rewrite_meta(path, lambda raw, t: raw.pop("dataset"))
    _expect(path, r"lacks key\(s\) \['dataset'\]")


def test_config_that_does_not_match_the_tensors(good) -> None:
    path, _ = good
    _rewrite_meta(path, lambda raw, t: raw["model_config"].update(latent_dim=5))
    _expect(path, "has shape .* but the config needs")


def test_missing_tensor(good) -> None:
    path, _ = good
    _rewrite_meta(path, lambda raw, t: t.pop(next(iter(t))))
    _expect(path, "missing")


def test_unknown_config_value(good) -> None:
    path, _ = good
    _rewrite_meta(path, lambda raw, t: raw["model_config"].update(model_type="diffusion"))
    _expect(path, "invalid model_config")


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickle_checkpoints_are_refused_and_never_run(tmp_path, suffix) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Payload(str(marker))}, fh)
    with pytest.raises(CheckpointError, match="pickle.*safetensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_renamed_to_safetensors_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    _expect(path, "truncated or corrupt")
    assert not marker.exists()


def test_half_precision_copy_loads_as_float32(tmp_path) -> None:
    model, meta = make_model()
    full = save_checkpoint(tmp_path / "full.safetensors", model, meta)
    half = save_checkpoint(tmp_path / "half.safetensors", model, meta, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, model.state_dict()[key], atol=2e-3), key


def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    """An atomic write goes through a private temporary file, but the file it leaves is readable as
    any other new file would be (0666 less the umask), not 0600."""
    import os

    from vaescope.training.tensorfile import write_atomically

    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "a.bin", b"x")
        os.umask(0o077)
        write_atomically(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
