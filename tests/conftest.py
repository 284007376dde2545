"""Shared fixtures: tiny seeded checkpoints of every model family, trained in seconds on sklearn digits.

The models are 8x8 MLPs with a 4-d latent space, trained for a few dozen Adam steps: enough for
reconstructions to resemble digits and for the explorer's code paths to see real numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vaescope.training.checkpoint import CheckpointMeta, save_checkpoint
from vaescope.training.config import ModelConfig, TrainConfig
from vaescope.training.data import load_digits
from vaescope.training.metrics import active_units
from vaescope.training.models import LatentModel, build_model

MODEL_TYPES = ("ae", "vae", "cvae", "gmvae")
TINY_SHAPE = (1, 8, 8)
TINY_LATENT = 4


def tiny_config(model_type: str) -> ModelConfig:
    """An 8x8 MLP config with a 4-d latent space; conditional / mixture sizes from 10 digit classes."""
    return ModelConfig(model_type=model_type, image_shape=TINY_SHAPE, latent_dim=TINY_LATENT, arch="mlp",
                       hidden_dim=32, num_classes=10 if model_type == "cvae" else 0,
                       options={"components": 10} if model_type == "gmvae" else {})


def train_tiny(model_type: str, steps: int = 300, seed: int = 0) -> tuple[LatentModel, CheckpointMeta]:
    """Build and train a tiny model on digits with Adam; returns it with checkpoint metadata.

    One intra-op thread: these matrices are tiny, and extra threads only contend for the CPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_tiny(model_type, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train_tiny(model_type: str, steps: int, seed: int) -> tuple[LatentModel, CheckpointMeta]:
    torch.manual_seed(seed)
    data = load_digits(seed=seed)
    model = build_model(tiny_config(model_type))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_all, y_all = data.train.float_images(), data.train.labels
    gen = torch.Generator().manual_seed(seed)
    history = []
    per_epoch = max(1, steps // 3)
    for step in range(steps):
        idx = torch.randint(len(x_all), (128,), generator=gen)
        out = model.loss(x_all[idx], y_all[idx], temperature=1.0)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        if (step + 1) % per_epoch == 0:
            history.append({"epoch": len(history) + 1, "train_loss": out.total.item(),
                            "train_recon": out.recon.item(), "train_kl": out.kl.item(),
                            "val_loss": out.total.item() * 1.05, "val_recon": out.recon.item() * 1.05,
                            "val_kl": out.kl.item()})
    model.eval()
    with torch.no_grad():
        test = model.loss(data.test.float_images(), data.test.labels, temperature=1.0)
        means = model.encode(data.test.float_images(), data.test.labels).mean.numpy()
    metrics = {"elbo": -float(test.recon + test.kl), "recon": float(test.recon), "kl": float(test.kl),
               "nll_iwae": float(test.recon + test.kl) - 0.5,
               "active_units": active_units(means)}
    if model_type == "gmvae":
        metrics.update(cluster_accuracy=0.42, nmi=0.31)
    meta = CheckpointMeta(model_config=model.config,
                          train_config=TrainConfig(dataset="digits", epochs=3, seed=seed).to_dict(),
                          dataset=data.info.to_dict(), history=history, metrics=metrics)
    return model, meta


def make_checkpoint(path: Path, model_type: str, steps: int = 300, seed: int = 0) -> Path:
    """Train a tiny ``model_type`` model and save it at ``path`` (a .safetensors file)."""
    model, meta = train_tiny(model_type, steps=steps, seed=seed)
    return save_checkpoint(path, model, meta)


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
