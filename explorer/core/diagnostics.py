"""What the Diagnostics panel shows about a model: how much each latent dimension is used, how it
trained, its reconstructions beside its prior samples, with plain words on what each one means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from vaescope.explorer.core import figures
from vaescope.explorer.core.codes import prior_samples
from vaescope.explorer.core.dims import KL_DEAD, dim_info
from vaescope.explorer.core.maps import message_figure
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.metrics import ACTIVE_UNIT_THRESHOLD

# the diagnostics grids: GRID_ROWS rows of GRID_COLUMNS images in cells of at least GRID_PX (the
# smallest whole upscaling factor: 140 px for MNIST), so the two grids fit a 1280x720 projector side
# by side with their labels
GRID_PX, GRID_ROWS, GRID_COLUMNS = 128, 3, 4


@dataclass
class Diagnostics:
    """The panel's content for one model."""

    notes: str  # markdown
    kl_figure: go.Figure
    curves: go.Figure
    reconstructions: np.ndarray | None  # uint8 grid [H, W, 3]; None without evaluation images
    prior_grid: np.ndarray | None  # uint8 grid [H, W, 3]; None without a decoder


def grid_scale(images: np.ndarray, cell_px: int = GRID_PX) -> int:
    """Nearest-neighbour upscaling for grids: the smallest whole factor that makes a cell at least
    ``cell_px`` (small images, 8x8 digits, need it to be visible at all)."""
    return max(1, -(-cell_px // max(images.shape[-2:])))


def diagnostics(entry: ModelEntry) -> Diagnostics:
    if entry.generator is None:
        empty = message_figure("Precomputed embeddings: no model, so no KL to measure.")
        return Diagnostics(entry.description.prior_note, empty,
                           message_figure("Precomputed embeddings: no training history."), None, None)
    kl_fig, notes = kl_panel(entry)
    history = entry.history
    meaningless = entry.description.condition.history_without()
    history = [{k: v for k, v in row.items() if k not in meaningless} for row in history]
    curves = figures.training_curves(history) if history else message_figure("No training history in this model.")
    if history:
        curves.update_layout(title=f"{entry.name.removesuffix('.safetensors')} · training history")
    prior = prior_samples(entry, GRID_ROWS * GRID_COLUMNS)
    if entry.description.prior_note:
        notes.append(entry.description.prior_note)
    if entry.description.condition.class_choices(()):
        notes.append("The prior samples cycle through the classes: the n-th sample is decoded as class n mod "
                     f"{entry.description.condition.size}.")
    recon = recon_grid(entry)
    return Diagnostics("\n\n".join(notes), kl_fig, curves, recon,
                       _grid(entry, prior, nrow=GRID_COLUMNS))


def kl_panel(entry: ModelEntry) -> tuple[go.Figure, list[str]]:
    """The KL-per-dimension chart (or why there is none) and the note on which dimensions are used."""
    if not entry.has_points:
        return message_figure("How much each dimension is used needs evaluation images."), []
    info = dim_info(entry)
    active = info.active
    notes = [f"**Active units: {int(active.sum())} of {len(active)}.** A dimension is active when its code moves "
             f"from image to image (variance of the code's mean above {ACTIVE_UNIT_THRESHOLD})."]
    target = entry.description.activation_target
    if target is not None:  # the code is unit activations held near a target mean (a sparse AE)
        mean = entry.latents.mean.mean(0)
        figure = figures.activation_chart(mean, target)
        figure.update_layout(title=f"{entry.name.removesuffix('.safetensors')} · {figure.layout.title.text}")
        near = int((np.abs(mean - target) <= target).sum())
        notes.append(f"**Sparsity:** the {len(mean)} code units fire {mean.mean():.3f} of the time on average "
                     f"(target ρ = {target:g}); {near} of them lie within ρ of the target.")
        return figure, notes
    if info.kl is None:
        return message_figure("This model has no prior, so there is no KL to measure per dimension."), notes
    dead_but_active = [d for d in range(len(active)) if active[d] and info.kl[d] < KL_DEAD]
    if dead_but_active:
        notes.append(f"Dimensions {', '.join(f'z{d}' for d in dead_but_active)} count as active but carry almost "
                     f"no information (KL below {KL_DEAD} nats): their code moves, yet the model treats it as noise, "
                     "so their sliders change little or nothing.")
    notes.append("<details><summary>Details</summary>Active units follow Burda et al. (2016): "
                 f"Var_x E[z_d | x] > {ACTIVE_UNIT_THRESHOLD}. The KL per dimension is the mean over the test "
                 "images of KL(q(z_d | x) || p(z_d)), in nats.</details>")
    figure = figures.kl_bar_chart(info.kl, active, dead_below=KL_DEAD,
                                  names=[entry.description.dim_name(d) for d in range(len(info.kl))])
    figure.update_layout(title=f"{entry.name.removesuffix('.safetensors')} · {figure.layout.title.text}")
    return figure, notes


def recon_grid(entry: ModelEntry, n: int = GRID_ROWS * GRID_COLUMNS // 2) -> np.ndarray | None:
    """Up to n evaluation images and their reconstructions from the posterior mean, as a uint8 grid
    [H, W, 3] of GRID_COLUMNS columns: each image followed by its reconstruction (columns 1, 3: the
    images; 2, 4: the reconstructions). None without images."""
    if not entry.has_points:
        return None
    latents, model, description = entry.latents, entry.model, entry.description
    n = min(n, len(latents))
    x = latents.float_images(slice(0, n))
    with torch.inference_mode():
        xt = torch.from_numpy(x).to(model.device)
        yt = description.condition.from_labels(torch.from_numpy(latents.labels[:n]).to(model.device))
        r = model.decode(model.encode(xt, yt).mean, yt).float().cpu().numpy()
    pairs = np.stack([x, r], axis=1).reshape(2 * n, *x.shape[1:])  # image, its reconstruction, ...
    return _grid(entry, pairs, nrow=GRID_COLUMNS)


def _grid(entry: ModelEntry, images: np.ndarray, nrow: int) -> np.ndarray:
    """A grid of the model's images, drawn the way the model says (a sequence as a line)."""
    pictures = figures.pictures(images, figures.Drawing.of(entry.description), cell=True)
    return figures.image_grid(pictures, nrow=nrow, scale=grid_scale(pictures))
