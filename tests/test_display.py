"""The waveforms dataset in the registry, the "line" display from the dataset to the model's
description (checkpoints and ONNX bundles included), and ``--arch auto``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import rewrite_metadata_json

import vaescope as vs
from vaescope.contract import ContractError, Description
from vaescope.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_metadata,
    read_record,
    read_sample,
)
from vaescope.training.cli import main
from vaescope.training.config import ConfigError, ModelConfig, auto_arch
from vaescope.training.data import DatasetError, DatasetInfo, dataset_names, load_dataset
from vaescope.training.models import build_model
from vaescope.training.train import model_config_for


@pytest.fixture(scope="module")
def waveform_run(tmp_path_factory) -> dict:
    """One epoch of latent-train on the waveforms with the defaults (arch auto, the default sample
    and record)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("waves")
    code = main(["--dataset", "waveforms", "--model", "vae", "--latent-dim", "4", "--hidden-dim", "32",
                 "--epochs", "1", "--eval-k", "5", "--nll-images", "50", "--out", str(out), "--quiet"])
    assert code == 0
    return {"path": out / "model.safetensors"}


def test_waveforms_are_registered_and_drawn_as_lines() -> None:
    assert "waveforms" in dataset_names()
    data = load_dataset("waveforms", seed=3)
    assert data.info.display == "line" and data.info.image_shape == (1, 64, 1)
    assert data.info.factor_names == ("shape", "frequency", "phase", "amplitude")
    assert data.test.factors.shape == (2000, 4) and data.train.images.dtype == torch.uint8
    assert data.info.to_dict()["display"] == "line"
    assert load_dataset("digits").info.to_dict()["display"] == "image"
    with pytest.raises(DatasetError, match="display must be one of"):
        DatasetInfo("x", (1, 8, 8), (), display="bars")


def test_the_display_reaches_the_model_config_and_its_description() -> None:
    waves = model_config_for(load_dataset("waveforms"), arch="mlp", latent_dim=3, hidden_dim=16)
    assert waves.display == "line" and build_model(waves).describe().display == "line"
    digits = model_config_for(load_dataset("digits"), arch="mlp", latent_dim=3, hidden_dim=16)
    assert digits.display == "image" and build_model(digits).describe().display == "image"
    with pytest.raises(ConfigError, match="display must be one of"):
        ModelConfig(image_shape=(1, 8, 8), arch="mlp", display="bars")
    with pytest.raises(ContractError, match="display must be 'image' or 'line'"):
        Description(family="x", title="x", summary="x", image_shape=(1, 8, 8), latent_dim=2, display="bars")
    assert ModelConfig.from_dict({"image_shape": [1, 8, 8], "arch": "mlp"}).display == "image"  # older files


def test_a_waveform_checkpoint_says_line_and_carries_its_factors(waveform_run) -> None:
    path = waveform_run["path"]
    meta = read_metadata(path)
    assert meta.dataset["display"] == "line" and meta.model_config.display == "line"
    assert meta.model_config.arch == "mlp"  # auto: the waveforms [1, 64, 1] are no square image
    model, _ = load_checkpoint(path)
    assert model.describe().display == "line"
    images, labels, factors = read_sample(path)  # the default sample: all 2,000 test sequences
    test = load_dataset("waveforms").test
    assert images.shape == (2000, 1, 64, 1) and np.array_equal(images, test.images.numpy())
    assert np.array_equal(labels, test.labels.numpy()) and np.array_equal(factors, test.factors.numpy())
    assert read_record(path).codes.shape[1:] == (2000, 4)


def test_a_block_whose_display_differs_from_the_model_is_refused(waveform_run, tmp_path) -> None:
    path = tmp_path / "edited.safetensors"
    path.write_bytes(waveform_run["path"].read_bytes())
    rewrite_metadata_json(path, "vaescope", lambda meta: meta["dataset"].update(display="image"))
    with pytest.raises(CheckpointError, match="dataset.display 'image' differs from model_config's 'line'"):
        load_checkpoint(path)


def test_an_onnx_bundle_keeps_the_display(waveform_run, tmp_path) -> None:
    model = vs.load(waveform_run["path"], device="cpu")
    images, labels, _ = read_sample(waveform_run["path"])
    bundle = vs.export(model, tmp_path / "waves-bundle.safetensors", images=images[:20], labels=labels[:20])
    assert vs.load(bundle).describe().display == "line"
    from safetensors import safe_open

    with safe_open(str(bundle), framework="pt") as fh:
        assert json.loads(fh.metadata()["vaescope_bundle"])["description"]["display"] == "line"


@pytest.mark.parametrize("shape, arch", [((1, 28, 28), "conv"), ((3, 64, 64), "conv"), ((1, 16, 16), "conv"),
                                         ((1, 8, 8), "mlp"), ((1, 64, 1), "mlp"), ((1, 32, 16), "mlp"),
                                         ((1, 1, 64), "mlp")])
def test_arch_auto(shape, arch) -> None:
    assert auto_arch(shape) == arch
    ModelConfig(image_shape=shape, arch=auto_arch(shape), latent_dim=2)  # always a config that builds
