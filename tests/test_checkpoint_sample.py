"""The embedded evaluation sample and the training record in a checkpoint: their format, every
check the loader makes on them, ``read_sample`` / ``read_record``, ``embed_sample`` and ``vs.save``."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_safetensors_raw, write_safetensors_raw

import vaescope as vs
from vaescope.errors import InputError
from vaescope.limits import MAX_RECORD_FRAMES, MAX_SAMPLE_IMAGES
from vaescope.training import checkpoint as checkpoint_mod
from vaescope.training import tensorfile
from vaescope.training.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    WriteError,
    embed_sample,
    load_checkpoint,
    read_extras,
    read_metadata,
    read_record,
    read_sample,
    save_checkpoint,
)
from vaescope.training.config import ModelConfig
from vaescope.training.data import load_digits
from vaescope.training.embedded import Record, default_sample_size, subset_indices
from vaescope.training.models import build_model

SHIPPED = Path("assets/checkpoints/digits/vae.safetensors")  # float16 weights


def make_model(latent_dim: int = 3, factor_names: tuple[str, ...] = ()):
    cfg = ModelConfig(model_type="vae", image_shape=(1, 8, 8), arch="mlp", latent_dim=latent_dim, hidden_dim=32,
                      num_classes=10)
    torch.manual_seed(0)
    model = build_model(cfg, tuple("0123456789"))
    dataset = {"name": "digits", "image_shape": [1, 8, 8], "class_names": list("0123456789")}
    if factor_names:
        dataset["factor_names"] = list(factor_names)
    meta = CheckpointMeta(model_config=cfg, train_config={"epochs": 1}, dataset=dataset,
                          history=[{"epoch": 1, "val_loss": 30.0}], metrics={"elbo": -30.0})
    return model, meta


def sample(n: int = 5, factors: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tensors = {"sample.images": torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8),
               "sample.labels": torch.arange(n, dtype=torch.int64) % 10}
    if factors:
        tensors["sample.factors"] = torch.rand(n, factors, generator=gen)
    return tensors


def record(frames: int = 4, n: int = 6, d: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return Record(torch.randn(frames, n, d, generator=gen).half().numpy(), np.arange(n) % 10,
                  np.linspace(0, 2, frames).astype(np.float32), np.arange(n) * 3).to_tensors()


def write(tmp_path, extra, name="m.safetensors", **model_args) -> Path:
    model, meta = make_model(**model_args)
    return save_checkpoint(tmp_path / name, model, meta, extra=extra)


def edit_table(path: Path, edit) -> Path:  # noqa: ANN001 - edit(table, data) -> (table, data)
    """Rewrite the file with an edited tensor table (and data bytes), byte by byte."""
    table, metadata, data = read_safetensors_raw(path)
    table, data = edit(table, data)
    return write_safetensors_raw(path, table, metadata, data)


def _never_read(monkeypatch) -> None:
    """Make any tensor read fail the test: a refusal must come from the header alone."""
    def fail(*args, **kwargs):
        raise AssertionError("a tensor was read before the header was refused")

    monkeypatch.setattr(checkpoint_mod, "read_tensors", fail)


# -- round trip ---------------------------------------------------------------------------------
def test_sample_and_record_round_trip_and_the_model_ignores_them(tmp_path) -> None:
    extra = sample(5, factors=2) | record()
    path = write(tmp_path, extra, factor_names=("a", "b"))
    images, labels, factors = read_sample(path)
    assert images.dtype == np.uint8 and images.shape == (5, 1, 8, 8)
    assert np.array_equal(images, extra["sample.images"].numpy())
    assert labels.dtype == np.int64 and np.array_equal(labels, np.arange(5))
    assert factors.dtype == np.float32 and np.array_equal(factors, extra["sample.factors"].numpy())
    rec = read_record(path)
    assert rec.codes.dtype == np.float16 and rec.codes.shape == (4, 6, 3)
    assert np.array_equal(rec.codes, extra["record.codes"].numpy())
    assert np.array_equal(rec.epochs, np.linspace(0, 2, 4).astype(np.float32))
    assert np.array_equal(rec.indices, np.arange(6) * 3) and np.array_equal(rec.labels, np.arange(6) % 10)
    model, _ = load_checkpoint(path)
    plain = write(tmp_path, {}, name="plain.safetensors")
    same, _ = load_checkpoint(plain)
    assert set(model.state_dict()) == set(same.state_dict())  # no sample or record tensor in the model
    assert all(torch.equal(model.state_dict()[k], same.state_dict()[k]) for k in same.state_dict())
    assert read_sample(plain) is None and read_record(plain) is None


def test_read_sample_reads_only_the_sample(tmp_path, monkeypatch) -> None:
    path = write(tmp_path, sample(4) | record())
    names: list[list[str]] = []
    real = checkpoint_mod.read_tensors
    monkeypatch.setattr(checkpoint_mod, "read_tensors", lambda p, h, n: names.append(list(n)) or real(p, h, n))
    read_sample(path)
    read_record(path)
    assert names == [["sample.images", "sample.labels"], ["record.codes", "record.labels", "record.epochs",
                                                          "record.indices"]]


# -- refusals from the header alone -------------------------------------------------------------
def _retype(name: str, dtype: str, itemsize: int):
    def edit(table, data):
        entry = table[name]
        start, end = entry["data_offsets"]
        count = (end - start) // {"U8": 1, "I64": 8, "F32": 4, "F16": 2}[entry["dtype"]]
        new = bytes(count * itemsize)
        shift = len(new) - (end - start)
        for other in table.values():
            if other["data_offsets"][0] >= end:
                other["data_offsets"] = [other["data_offsets"][0] + shift, other["data_offsets"][1] + shift]
        entry["dtype"], entry["data_offsets"] = dtype, [start, start + len(new)]
        return table, data[:start] + new + data[end:]
    return edit


def _drop(name: str):
    def edit(table, data):
        start, end = table.pop(name)["data_offsets"]
        for other in table.values():
            if other["data_offsets"][0] >= end:
                other["data_offsets"] = [other["data_offsets"][0] - (end - start), other["data_offsets"][1] - (end - start)]
        return table, data[:start] + data[end:]
    return edit


@pytest.mark.parametrize("extra, edit, problem", [
    (sample(5), _retype("sample.images", "F32", 4), "'sample.images' is F32 but the config needs one of \\['U8'\\]"),
    (sample(5), _retype("sample.labels", "I32", 4), "'sample.labels' is I32"),
    (sample(5), _drop("sample.labels"), "holds \\['sample.images'\\] but not \\['sample.labels'\\]"),
    (sample(5), _drop("sample.images"), "holds \\['sample.labels'\\] but not \\['sample.images'\\]"),
    (record(), _drop("record.epochs"), "these tensors come together"),
    (record(), _retype("record.codes", "F32", 4), "'record.codes' is F32 but the config needs one of \\['F16'\\]"),
])
def test_wrong_dtypes_and_missing_partners_are_refused_before_reading(tmp_path, monkeypatch, extra, edit,
                                                                      problem) -> None:
    path = edit_table(write(tmp_path, extra), edit)
    _never_read(monkeypatch)
    for reader in (load_checkpoint, read_sample, read_record, read_metadata):
        with pytest.raises(CheckpointError, match=problem) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_sizes_that_disagree_are_refused(tmp_path, monkeypatch) -> None:
    model, meta = make_model()
    cases = {
        "labels of another N": sample(5) | {"sample.labels": torch.zeros(4, dtype=torch.int64)},
        "images of another shape": {"sample.images": torch.zeros(2, 1, 8, 7, dtype=torch.uint8),
                                    "sample.labels": torch.zeros(2, dtype=torch.int64)},
        "factors without factor names": sample(3, factors=2),
        "codes of another latent size": record(d=5),
        "record labels of another N": record() | {"record.labels": torch.zeros(2, dtype=torch.int64)},
        "epochs of another E": record() | {"record.epochs": torch.zeros(3)},
    }
    problems = {"labels of another N": "'sample.labels' has shape \\[4\\] but the config needs \\[5\\]",
                "images of another shape": "sample.images are \\[1, 8, 7\\] but the model's images are \\[1, 8, 8\\]",
                "factors without factor names": "sample.factors but its dataset block names 0 factors",
                "codes of another latent size": "record.codes holds 5-d codes but the model's are 3-d",
                "record labels of another N": "'record.labels' has shape \\[2\\] but the config needs \\[6\\]",
                "epochs of another E": "'record.epochs' has shape \\[3\\] but the config needs \\[4\\]"}
    for what, extra in cases.items():
        path = tmp_path / f"{what}.safetensors"
        path.write_bytes(tensorfile.encode({k: v.contiguous() for k, v in model.state_dict().items()} | extra,
                                           {checkpoint_mod.META_KEY: meta.to_json()}))
        with monkeypatch.context() as m:
            _never_read(m)
            with pytest.raises(CheckpointError, match=problems[what]):
                load_checkpoint(path)


def test_limits_are_checked_from_the_declared_shapes(tmp_path, monkeypatch) -> None:
    """A header declaring more images or frames than the limits is refused without reading (the
    declared sizes are those of the bytes in the file, so the file is made that large, sparsely)."""
    model, meta = make_model()
    base = {k: v.contiguous() for k, v in model.state_dict().items()}
    too_many = MAX_SAMPLE_IMAGES + 1
    big = {"sample.images": torch.zeros(too_many, 1, 8, 8, dtype=torch.uint8),
           "sample.labels": torch.zeros(too_many, dtype=torch.int64)}
    path = tmp_path / "big.safetensors"
    path.write_bytes(tensorfile.encode(base | big, {checkpoint_mod.META_KEY: meta.to_json()}))
    _never_read(monkeypatch)
    with pytest.raises(CheckpointError, match=f"holds {too_many:,} images .* the limits are 1 to 20,000 images"):
        read_sample(path)
    frames = MAX_RECORD_FRAMES + 1
    long = record() | {"record.codes": torch.zeros(frames, 6, 3, dtype=torch.float16),
                       "record.epochs": torch.zeros(frames)}
    path.write_bytes(tensorfile.encode(base | long, {checkpoint_mod.META_KEY: meta.to_json()}))
    with pytest.raises(CheckpointError, match=f"holds {frames:,} frames of 6 points; the limits are 1 to 1,024"):
        read_record(path)


def test_unknown_sample_or_record_tensors_are_refused(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    model, meta = make_model()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()} | sample(3) | {"sample.extra": torch.zeros(3)}
    path.write_bytes(tensorfile.encode(tensors, {checkpoint_mod.META_KEY: meta.to_json()}))
    with pytest.raises(CheckpointError, match="unexpected .*sample.extra"):
        load_checkpoint(path)


@pytest.mark.parametrize("extra, problem", [
    (sample(3) | {"sample.labels": torch.tensor([0, -2, 1])}, "sample.labels holds -2"),
    (sample(3) | {"sample.labels": torch.tensor([0, 10, 1])}, "sample.labels holds 10 but the dataset has 10 classes"),
    (record() | {"record.epochs": torch.tensor([0.0, 1.0, 0.5, 2.0])}, "record.epochs must be finite, >= 0 and in"),
    (record() | {"record.codes": torch.full((4, 6, 3), float("nan"), dtype=torch.float16)},
     "record.codes holds NaN"),
    (record() | {"record.indices": -torch.ones(6, dtype=torch.int64)}, "record.indices holds negative"),
])
def test_bad_values_are_refused_when_read(tmp_path, extra, problem) -> None:
    path = write(tmp_path, extra)
    load_checkpoint(path)  # the model itself is fine: the loader never reads these
    reader = read_sample if "sample.images" in extra else read_record
    with pytest.raises(CheckpointError, match=problem):
        reader(path)


def test_nan_factors_are_refused(tmp_path) -> None:
    extra = sample(3, factors=2)
    extra["sample.factors"][1, 0] = float("nan")
    path = write(tmp_path, extra, factor_names=("a", "b"))
    with pytest.raises(CheckpointError, match="sample.factors holds NaN"):
        read_sample(path)


# -- embed_sample ---------------------------------------------------------------------------------
def test_embed_sample_keeps_the_weights_metadata_and_record_byte_for_byte(tmp_path) -> None:
    path = tmp_path / "vae.safetensors"
    shutil.copy(SHIPPED, path)
    table, metadata, data = read_safetensors_raw(path)
    test = load_digits().test
    embed_sample(path, test.images, test.labels)
    images, labels, factors = read_sample(path)
    assert np.array_equal(images, test.images.numpy()) and np.array_equal(labels, test.labels.numpy())
    assert factors is None
    new_table, new_metadata, new_data = read_safetensors_raw(path)
    assert new_metadata == metadata
    weights = {name: entry for name, entry in table.items() if not name.startswith("sample.")}
    for name, entry in weights.items():  # every weight keeps its stored dtype (float16) and bytes
        assert new_table[name]["dtype"] == entry["dtype"] == "F16"
        a, b = entry["data_offsets"]
        c, d = new_table[name]["data_offsets"]
        assert data[a:b] == new_data[c:d]
    model, _ = load_checkpoint(path)
    original, _ = load_checkpoint(SHIPPED)
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in model.state_dict().items())
    # replace: a smaller sample, unknown labels
    embed_sample(path, test.images[:7])
    images, labels, _ = read_sample(path)
    assert images.shape[0] == 7 and (labels == -1).all()
    # a record present is kept
    with_record = write(tmp_path, record(), name="rec.safetensors")
    embed_sample(with_record, test.images[:2], test.labels[:2])
    assert read_record(with_record).codes.shape == (4, 6, 3) and read_sample(with_record)[0].shape[0] == 2
    embed_sample(with_record, None)  # removes the sample
    assert read_sample(with_record) is None and read_record(with_record) is not None


@pytest.mark.parametrize("images, labels, problem", [
    (np.zeros((3, 1, 8, 8), np.float32), None, "the sample must be uint8 images \\[N, 1, 8, 8\\], got float32"),
    (np.zeros((3, 1, 28, 28), np.uint8), None, "got uint8 \\[3, 1, 28, 28\\]"),
    (np.zeros((3, 1, 8, 8), np.uint8), np.zeros(2, np.int64), "labels must be integers \\[N\\] = \\[3\\]"),
    (np.zeros((3, 1, 8, 8), np.uint8), np.array([0, 1, 12]), "sample.labels holds 12 but the dataset has 10"),
    (np.zeros((0, 1, 8, 8), np.uint8), None, "a sample holds 1 to 20,000 images"),
])
def test_embed_sample_refuses_a_bad_sample_and_keeps_the_file(tmp_path, images, labels, problem) -> None:
    path = tmp_path / "vae.safetensors"
    shutil.copy(SHIPPED, path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=problem) as info:
        embed_sample(path, images, labels)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_embed_sample_on_a_full_disk_keeps_the_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "vae.safetensors"
    shutil.copy(SHIPPED, path)
    before = path.read_bytes()

    def full(fh, data):
        fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensorfile, "_write_all", full)
    with pytest.raises(WriteError, match="no space left on the disk"):
        embed_sample(path, load_digits().test.images)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_embed_sample_checks_the_written_file_before_renaming_it(tmp_path, monkeypatch) -> None:
    path = tmp_path / "vae.safetensors"
    shutil.copy(SHIPPED, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_mod, "encode", lambda tensors, metadata: b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        embed_sample(path, load_digits().test.images)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_embed_sample_refuses_a_broken_checkpoint(tmp_path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(SHIPPED.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        embed_sample(path, load_digits().test.images)


# -- vs.save --------------------------------------------------------------------------------------
def test_vs_save_writes_a_checkpoint_with_its_sample(tmp_path) -> None:
    model = vs.load(SHIPPED, device="cpu")
    test = load_digits().test
    out = vs.save(model, tmp_path / "digits-vae.safetensors", images=test.float_images(), labels=test.labels)
    images, labels, _ = read_sample(out)
    assert np.array_equal(images, test.images.numpy()) and np.array_equal(labels, test.labels.numpy())
    again = vs.load(out, device="cpu")
    assert again.meta.metrics == model.meta.metrics and again.meta.dataset == model.meta.dataset
    x = test.float_images()[:5]
    assert torch.allclose(again.encode(x).mean, model.encode(x).mean)
    # [N, H, W] uint8, no labels
    out = vs.save(model, tmp_path / "b.safetensors", images=test.images[:, 0].numpy())
    assert (read_sample(out)[1] == -1).all()
    # no images: no sample
    assert read_sample(vs.save(model, tmp_path / "c.safetensors")) is None


def test_vs_save_a_model_without_metadata(tmp_path) -> None:
    model, _ = make_model()
    out = vs.save(model, tmp_path / "m.safetensors", images=np.zeros((4, 1, 8, 8), np.uint8), labels=[1, 2, 3, -1])
    meta = read_metadata(out)
    assert meta.dataset["name"] == "unknown" and meta.dataset["class_names"] == list("0123456789")
    assert list(read_sample(out)[1]) == [1, 2, 3, -1]


def test_vs_save_takes_a_seeded_subset_above_the_limit(tmp_path) -> None:
    model, _ = make_model()
    n = MAX_SAMPLE_IMAGES + 50
    images = np.arange(n, dtype=np.int64)[:, None, None, None].repeat(64, 1).reshape(n, 1, 8, 8) % 256
    labels = np.arange(n) % 256 % 10  # each image's label is its value's last digit
    out = vs.save(model, tmp_path / "m.safetensors", images=images.astype(np.uint8), labels=labels)
    got, got_labels, _ = read_sample(out)
    assert len(got) == MAX_SAMPLE_IMAGES
    assert np.array_equal(got[:, 0, 0, 0] % 10, got_labels)  # images and labels stay paired


def test_vs_save_refusals(tmp_path) -> None:
    model, _ = make_model()
    with pytest.raises(InputError, match="vs.save writes vaescope's own models"):
        vs.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="labels must give one label per image"):
        vs.save(model, tmp_path / "x.safetensors", images=np.zeros((3, 1, 8, 8), np.uint8), labels=[1])
    with pytest.raises(InputError, match="the sample must be uint8 images \\[N, 1, 8, 8\\]"):
        vs.save(model, tmp_path / "x.safetensors", images=np.zeros((3, 1, 28, 28), np.uint8))
    assert not (tmp_path / "x.safetensors").exists()


# -- the default size and the subsets -------------------------------------------------------------
def test_default_sample_size_and_nested_subsets() -> None:
    assert default_sample_size((1, 8, 8), 300) == 300
    assert default_sample_size((1, 28, 28), 10_000) == 10_000
    assert default_sample_size((3, 32, 32), 60_000) == 10_000
    assert default_sample_size((1, 64, 1), 2_000) == 2_000  # waveforms
    assert default_sample_size((3, 64, 64), 5_000) == 2_000
    assert default_sample_size((3, 128, 128), 5_000) == 0
    small, large = subset_indices(1000, 50, seed=3), subset_indices(1000, 400, seed=3)
    assert set(small) <= set(large) and list(small) == sorted(small) and len(set(large)) == 400
    assert list(subset_indices(10, 50, seed=0)) == list(range(10))


def test_read_extras_copies_sample_and_record_into_a_float16_copy(tmp_path) -> None:
    extra = sample(5, factors=2) | record()
    path = write(tmp_path, extra, factor_names=("a", "b"))
    got = read_extras(path)
    assert set(got) == set(extra) and all(torch.equal(got[k], extra[k]) for k in extra)
    model, meta = load_checkpoint(path)
    small = save_checkpoint(tmp_path / "small.safetensors", model, meta, dtype=torch.float16, extra=got)
    assert np.array_equal(read_sample(small)[2], extra["sample.factors"].numpy())
    assert np.array_equal(read_record(small).codes, extra["record.codes"].numpy())
    assert read_extras(write(tmp_path, {}, name="plain.safetensors")) == {}
    with pytest.raises(ValueError, match="'model.x' is not a sample or record tensor name"):
        save_checkpoint(tmp_path / "bad.safetensors", model, meta, extra={"model.x": torch.zeros(1)})
