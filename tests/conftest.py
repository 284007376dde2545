"""Shared fixtures: tiny seeded checkpoints of every model family, trained in seconds on sklearn
digits by the real trainer (``vaescope.training.train.train``), so every number in them (history,
metrics, active units, cluster accuracy) is one a real run measured.

The models are 8x8 MLPs with a 4-d latent space, trained for 25 short epochs (about 300 Adam
steps): enough for reconstructions to resemble digits and for the explorer's code paths to see
real numbers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vaescope.training.checkpoint import CheckpointMeta, load_checkpoint
from vaescope.training.config import ModelConfig, TrainConfig
from vaescope.training.data import load_digits
from vaescope.training.models import LatentModel

MODEL_TYPES = ("ae", "vae", "cvae", "gmvae")
TINY_SHAPE = (1, 8, 8)
TINY_LATENT = 4
TINY_EPOCHS = 25  # of ~12 batches of 128 digits each: about 300 Adam steps


def tiny_config(model_type: str) -> ModelConfig:
    """An 8x8 MLP config with a 4-d latent space; conditional / mixture sizes from 10 digit classes."""
    return ModelConfig(model_type=model_type, image_shape=TINY_SHAPE, latent_dim=TINY_LATENT, arch="mlp",
                       hidden_dim=32, num_classes=10 if model_type == "cvae" else 0,
                       options={"components": 10} if model_type == "gmvae" else {})


def tiny_train_config(seed: int = 0, epochs: int = TINY_EPOCHS) -> TrainConfig:
    """The tiny runs' settings: no embedded sample and no record (the explorer reads the digits
    themselves), a small IWAE k, one CPU."""
    return TrainConfig(dataset="digits", epochs=epochs, batch_size=128, lr=1e-2, seed=seed, eval_k=10, record=0,
                       embed_sample=0, device="cpu")


def train_tiny(model_type: str, steps: int = 300, seed: int = 0) -> tuple[LatentModel, CheckpointMeta]:
    """Train a tiny ``model_type`` model with the real trainer (about ``steps`` Adam steps) and return
    it with its checkpoint's metadata, as ``load_checkpoint`` reads them back.

    One intra-op thread: these matrices are tiny, and extra threads only contend for the CPU.
    """
    from vaescope.training.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="vaescope-tiny-") as out:
            epochs = max(1, round(steps / 12))
            train(tiny_config(model_type), tiny_train_config(seed, epochs), out, dataset=load_digits(seed=seed),
                  show_progress=False)
            return load_checkpoint(Path(out) / "model.safetensors")
    finally:
        torch.set_num_threads(threads)


def make_checkpoint(path: Path, model_type: str, steps: int = 300, seed: int = 0) -> Path:
    """Train a tiny ``model_type`` model with the real trainer and put its checkpoint at ``path``."""
    from vaescope.training.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="vaescope-tiny-") as out:
            train(tiny_config(model_type), tiny_train_config(seed, max(1, round(steps / 12))), out,
                  dataset=load_digits(seed=seed), show_progress=False)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(out) / "model.safetensors", path)
    finally:
        torch.set_num_threads(threads)
    return Path(path)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium through Playwright, one per test module (the browser test files
    share it; each makes its own pages). Skipped where Playwright or Chromium is missing."""
    from serving import CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention folder with tiny-{ae,vae,cvae,gmvae}.safetensors (made once per run).

    Tests that add or break files copy it first (see ``checkpoint_dir``).
    """
    root = tmp_path_factory.mktemp("checkpoints")
    for model_type in MODEL_TYPES:
        make_checkpoint(root / f"tiny-{model_type}.safetensors", model_type)
    return root


@pytest.fixture
def checkpoint_dir(tiny_checkpoint_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny checkpoint folder."""
    dest = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoint_dir, dest)
    return dest


@pytest.fixture(scope="session")
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as (float32 images [300, 1, 8, 8], labels [300])."""
    data = load_digits(seed=0)
    return data.test.float_images().numpy(), data.test.labels.numpy()


# -- crafted safetensors files (checkpoints and resume states from outside) -------------------------
def read_safetensors_raw(path: Path) -> tuple[dict, dict, bytes]:
    """A safetensors file's (tensor table, metadata, data bytes), read without safetensors."""
    raw = Path(path).read_bytes()
    length = int.from_bytes(raw[:8], "little")
    table = json.loads(raw[8:8 + length])
    return table, table.pop("__metadata__", {}), raw[8 + length:]


def write_safetensors_raw(path: Path, table: dict, metadata: dict | None, data: bytes,
                          header_text: str | None = None) -> Path:
    """Write a safetensors file byte by byte: any table, metadata and data, valid or not.
    ``header_text`` replaces the JSON header entirely."""
    header = dict(table) if metadata is None else {"__metadata__": metadata, **table}
    text = (header_text if header_text is not None else json.dumps(header)).encode()
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + data)
    return Path(path)


def rewrite_metadata_json(path: Path, key: str, edit) -> Path:  # noqa: ANN001 - edit(dict) -> dict | None
    """Parse the JSON string under metadata ``key``, let ``edit`` change it (in place or by returning
    a new value), and write the file back with the same tensors."""
    table, metadata, data = read_safetensors_raw(path)
    value = json.loads(metadata[key])
    edited = edit(value)
    metadata[key] = json.dumps(value if edited is None else edited, allow_nan=True)
    return write_safetensors_raw(path, table, metadata, data)
