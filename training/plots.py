"""Image grids and loss curves written next to a checkpoint (torchvision + matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from vaescope.training.data import Dataset
from vaescope.training.models import LatentModel

GRID = 8


@torch.inference_mode()
def save_samples(model: LatentModel, path: Path, seed: int = 0) -> None:
    """8x8 prior samples; one row per class or mixture component when the model has a condition."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    groups = model.condition.size
    if groups:
        rows = [model.generate(GRID, condition=c, generator=gen) for c in range(groups)]
        images = torch.cat(rows)
    else:
        images = model.generate(GRID * GRID, generator=gen)
    save_image(images.float().cpu(), path, nrow=GRID, padding=2, pad_value=0.5)


@torch.inference_mode()
def save_reconstructions(model: LatentModel, data: Dataset, path: Path, n: int = 32) -> None:
    """Pairs of rows: test images, then their reconstructions from the posterior mean."""
    x = data.test.float_images()[:n].to(model.device)
    y = model.condition.from_labels(data.test.labels[:n].to(model.device))
    recon = model.decode(model.encode(x, y).mean, y)
    rows = [t for i in range(0, n, GRID) for t in (x[i:i + GRID], recon[i:i + GRID])]
    save_image(torch.cat(rows).float().cpu(), path, nrow=GRID, padding=2, pad_value=0.5)


def save_loss_curves(history: list[dict], path: Path) -> None:
    """Train and validation loss / recon / KL per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("loss", "recon", "kl"), strict=True):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation")
        ax.set_title({"loss": "loss (-ELBO)", "recon": "reconstruction", "kl": "KL"}[key])
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
