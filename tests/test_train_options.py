"""latent-train's data options: --corrupt KIND:LEVEL (a denoising model of any family) and
--binarize dynamic|static (binarised MNIST-like data, NLL measured as in the literature)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaescope.training import train as train_mod
from vaescope.training.checkpoint import read_metadata, read_sample
from vaescope.training.cli import main
from vaescope.training.config import ConfigError, TrainConfig
from vaescope.training.corruption import corrupt
from vaescope.training.data import BINARIZE_TEST_SEED, binarize, binarized, load_dataset
from vaescope.training.train import model_config_for, train


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset("digits")


def _config(digits, model_type="vae", **train_options):
    mcfg = model_config_for(digits, model_type=model_type, arch="mlp", latent_dim=8, hidden_dim=64)
    tcfg = TrainConfig(**{"dataset": "digits", "epochs": 2, "lr": 3e-3, "eval_k": 5, "record": 0, "embed_sample": 0,
                          **train_options})
    return mcfg, tcfg


def _capture_forward(monkeypatch) -> list[dict]:
    """Every training step's (input, target) as the model's forward receives them, and a fixed
    epoch order (all images in order, every epoch) so that epochs can be compared batch by batch."""
    seen: list[dict] = []
    original = train_mod.LatentModel.forward

    def forward(self, x, condition=None, kl_weight=None, temperature=None, target=None):
        seen.append({"x": x.detach().clone(), "target": None if target is None else target.detach().clone()})
        return original(self, x, condition, kl_weight, temperature, target)

    monkeypatch.setattr(train_mod.LatentModel, "forward", forward)
    monkeypatch.setattr(train_mod, "_epoch_order", lambda n, seed, epoch, ctx: torch.arange(n))
    return seen


# -- --corrupt --------------------------------------------------------------------------------------
def test_corrupt_feeds_corrupted_inputs_and_scores_the_clean_images(digits, tmp_path, monkeypatch) -> None:
    seen = _capture_forward(monkeypatch)
    mcfg, tcfg = _config(digits, corrupt="mask:0.5", epochs=1)
    train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False, evaluate_at_end=False)
    first = seen[0]
    clean = digits.train.float_images()[:128]
    assert torch.equal(first["target"], clean)
    erased = (first["x"] == 0) & (clean > 0)
    assert 0.4 < erased.sum() / (clean > 0).sum() < 0.6  # about half of the ink masked
    assert torch.equal(first["x"][~erased], clean[~erased])
    assert read_metadata(tmp_path / "model.safetensors").train_config["corrupt"] == "mask:0.5"
    seen.clear()
    mcfg, tcfg = _config(digits, epochs=1)
    train(mcfg, tcfg, tmp_path / "plain", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert seen[0]["target"] is None and torch.equal(seen[0]["x"], clean)


@pytest.mark.slow
def test_a_denoising_vae_cleans_noisy_digits_better_than_a_plain_vae(digits, tmp_path) -> None:
    """Two 8-d MLP VAEs on digits, 150 epochs, seed 0, one with --corrupt gaussian:0.5. On the test
    split with N(0, 0.5^2) noise (clipped to [0, 1]; the noisy images are 0.118 per-pixel MSE from
    the clean ones), decode(encode(noisy).mean) is, in per-pixel MSE from the clean images: plain
    0.0540, denoising 0.0466 (0.86x); seed 1: 0.0565 and 0.0472 (0.84x). On clean inputs the plain
    VAE reconstructs better (0.0265 vs 0.0386): the denoising one spends capacity on the noise."""
    x = digits.test.float_images()
    noisy = corrupt(x, "gaussian", 0.5, torch.Generator().manual_seed(123))
    errors = {}
    for name, option in (("plain", ""), ("denoising", "gaussian:0.5")):
        mcfg, tcfg = _config(digits, corrupt=option, epochs=150)
        model = train(mcfg, tcfg, tmp_path / name, dataset=digits, show_progress=False, evaluate_at_end=False).model
        with torch.no_grad():
            errors[name] = float((model.eval().decode(model.encode(noisy).mean) - x).pow(2).mean())
    assert errors["denoising"] < 0.92 * errors["plain"], errors
    assert errors["denoising"] < 0.5 * float((noisy - x).pow(2).mean())


def test_corrupt_is_refused_for_the_dae_and_when_malformed(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "digits", "--model", "dae", "--corrupt", "gaussian:0.3", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "cannot be used with --model dae, which corrupts its input itself" in err[-1]
    assert "--corruption" in err[-1]
    for bad, message in (("gaussian", "expected KIND:LEVEL"), ("blur:0.3", "corruption must be one of"),
                         ("mask:1.5", "level must lie in [0, 1]")):
        with pytest.raises(SystemExit):
            main(["--corrupt", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match="expected KIND:LEVEL"):
        TrainConfig(corrupt="noise")


# -- --binarize -------------------------------------------------------------------------------------
def test_binarize_draws_bernoulli_pixels() -> None:
    grey = torch.tensor([0, 64, 128, 255], dtype=torch.uint8).repeat(20_000).reshape(-1, 1, 2, 2)
    binary = binarize(grey, torch.Generator().manual_seed(0))
    assert binary.dtype == torch.uint8 and set(binary.unique().tolist()) <= {0, 255}
    ones = (binary == 255).float().mean(0).flatten()
    torch.testing.assert_close(ones, torch.tensor([0.0, 64 / 255, 128 / 255, 1.0]), atol=0.01, rtol=0)
    assert torch.equal(binary, binarize(grey, torch.Generator().manual_seed(0)))


def test_the_test_split_is_binarised_alike_for_every_run(digits) -> None:
    runs = {seed: binarized(digits, "static", seed) for seed in (0, 1)}
    assert torch.equal(runs[0].test.images, runs[1].test.images)
    assert torch.equal(runs[0].test.images, binarized(digits, "dynamic", 5).test.images)
    assert torch.equal(runs[0].test.images, binarize(digits.test.images, torch.Generator().manual_seed(BINARIZE_TEST_SEED)))
    assert not torch.equal(runs[0].train.images, runs[1].train.images)  # static: each seed its own draw
    assert set(runs[0].train.images.unique().tolist()) == {0, 255}
    assert torch.equal(binarized(digits, "dynamic", 0).train.images, digits.train.images)  # drawn per batch
    assert binarized(digits, "none", 0) is digits


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_training_sees_binary_images_fresh_or_fixed(digits, tmp_path, monkeypatch, mode) -> None:
    seen = _capture_forward(monkeypatch)
    mcfg, tcfg = _config(digits, binarize=mode, embed_sample=50)
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    per_epoch = len(seen) // 2
    first, second = seen[0]["x"], seen[per_epoch]["x"]  # the same 128 images in epochs 1 and 2
    assert set(first.unique().tolist()) == {0.0, 1.0}
    grey = digits.train.float_images()[:128]
    assert not first[grey == 0].any() and first[grey == 1].all()  # Bernoulli(0) = 0, Bernoulli(1) = 1
    assert torch.equal(first, second) == (mode == "static")
    metrics = result.metrics
    assert metrics["nll_images"] == 300  # the whole test split
    assert metrics["nll_protocol"] == (f"IWAE bound, k=5, on the first 300 test images binarised once (Bernoulli of "
                                       f"the grey levels, seed 0); trained on {mode} binarisation")
    assert read_metadata(tmp_path / "model.safetensors").metrics["nll_protocol"] == metrics["nll_protocol"]
    # the embedded sample and the record keep the grey images the explorer shows (with or without the dataset)
    from vaescope.training.checkpoint import read_sample

    images, labels, _ = read_sample(tmp_path / "model.safetensors")
    assert len(set(np.unique(images).tolist())) > 2  # grey levels, not {0, 255}
    grey = {tuple(row) for row in digits.test.images.flatten(1).tolist()}
    assert all(tuple(row) in grey for row in images.reshape(len(images), -1).tolist())


def test_binarize_needs_the_bernoulli_likelihood(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "digits", "--likelihood", "gaussian", "--binarize", "dynamic", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--binarize dynamic needs --likelihood bernoulli" in capsys.readouterr().err.strip().splitlines()[-1]


def _idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _mnist_like(folder: Path, n_train: int = 400, n_test: int = 120) -> None:
    """Four IDX files of 28x28 grey blobs (a bright disc per image, at a position set by its label)."""
    rng = np.random.default_rng(0)
    grid = np.mgrid[0:28, 0:28]
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        centres = np.stack([6 + 2 * labels, 14 + rng.integers(-3, 4, n)], 1)
        dist = np.sqrt(((grid[None] - centres[:, :, None, None]) ** 2).sum(1))
        images = np.clip(255 * (1.5 - dist / 4), 0, 255)
        _idx(folder / f"{stem}-images-idx3-ubyte", images)
        _idx(folder / f"{stem}-labels-idx1-ubyte", labels)


def test_binarised_mnist_like_run_and_its_evaluation_agree(tmp_path, capsys) -> None:
    """latent-train --binarize dynamic on MNIST-like IDX files: the NLL covers the whole binarised
    test split, and python -m vaescope.training.evaluate reproduces it from the checkpoint alone."""
    from vaescope.training.evaluate import main as evaluate_main

    data_dir = tmp_path / "data"
    (data_dir / "mnist").mkdir(parents=True)
    _mnist_like(data_dir / "mnist")
    out = tmp_path / "run"
    assert main(["--dataset", "mnist", "--data-dir", str(data_dir), "--binarize", "dynamic", "--arch", "mlp",
                 "--latent-dim", "4", "--hidden-dim", "32", "--epochs", "1", "--eval-k", "10", "--record", "0",
                 "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["nll_images"] == 120 and "binarised once" in line["nll_protocol"]
    images, _, _ = read_sample(out / "model.safetensors")  # the sample keeps the grey test images
    assert images.shape == (120, 1, 28, 28) and len(set(np.unique(images).tolist())) > 2
    assert evaluate_main([str(out / "model.safetensors"), "--eval-k", "10", "--nll-images", "120",
                          "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["nll_protocol"] == line["nll_protocol"]
    assert again["nll_iwae"] == pytest.approx(line["nll_iwae"], rel=1e-6)
