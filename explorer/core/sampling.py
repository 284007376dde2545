"""Sampling images of one class from any model family, and decoding a code under every class.

How the class is used depends on what the model offers (capabilities, not its Python class):
- conditional (CVAE): decode z ~ N(0, T^2 I) with the class label;
- a mixture prior (GMVAE): z ~ N(mu_k, T^2 sigma_k^2) for the component k matched to the class;
- neither (VAE / AE): z ~ N(mu_c, T^2 Sigma_c), a Gaussian fitted to that class's posterior means.
T is the temperature: it scales the standard deviation, so T < 1 trades variety for typicality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from vaescope.training.metrics import cluster_mapping
from vaescope.training.models import LatentModel

if TYPE_CHECKING:  # loading.py depends on the model stack; the samplers only read its fields
    from vaescope.explorer.loading import LatentsCache

RIDGE = 1e-4  # added to each class covariance: keeps Cholesky defined for tiny or flat classes


def class_gaussians(means: np.ndarray, labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per known class c (label >= 0): (mu [D], cov [D, D] + RIDGE * I) of the posterior means [N, D]."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in np.unique(labels[labels >= 0]):
        x = np.asarray(means[labels == c], np.float64)
        cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True)) + RIDGE * np.eye(x.shape[1])
        out[int(c)] = (x.mean(axis=0), cov)
    return out


def component_to_class(component_probs: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """One-to-one component -> class map [K] -> classes, from q(y|x) [N, K] and labels [N].

    Hungarian matching (scipy's linear_sum_assignment) on the component x class count matrix of
    the labelled points (label >= 0), each point counted under its most probable component.
    Components left unmatched (K > classes) are absent from the map.
    """
    known = labels >= 0
    if not known.any():
        return {}
    assignments = np.asarray(component_probs)[known].argmax(axis=1)
    return cluster_mapping(assignments, np.asarray(labels)[known].astype(np.int64),
                           component_probs.shape[1])


def _noise(n: int, d: int, seed: int) -> np.ndarray:
    """Standard normal noise [n, D] from a seeded CPU torch.Generator (same numbers on any device)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, d, generator=gen, dtype=torch.float64).numpy()


def _cvae_codes(model: LatentModel, c: int, n: int, seed: int, t: float) -> tuple[np.ndarray, str]:
    if not 0 <= c < model.config.num_classes:
        raise ValueError(f"class {c} out of range 0..{model.config.num_classes - 1}")
    z = t * _noise(n, model.config.latent_dim, seed)
    return z, f"CVAE: decoded z ~ N(0, {t:g}² I) with the class label {c}"


def _matched_component(model: LatentModel, c: int, latents: LatentsCache | None) -> tuple[int, str]:
    """The component for class c: Hungarian match on the latents' q(y|x), else identity."""
    probs = None if latents is None else latents.component_probs
    if probs is None or not (latents.labels >= 0).any():
        if not 0 <= c < model.num_components:
            raise ValueError(f"class {c} out of range 0..{model.num_components - 1} (identity mapping)")
        return c, "identity class -> component mapping (no labelled latents to match with)"
    matched = [k for k, cls in component_to_class(probs, latents.labels).items() if cls == c]
    if not matched:
        raise ValueError(f"class {c} matches none of the {model.num_components} mixture components")
    return matched[0], "matched to the class by Hungarian matching of q(y|x) on the labelled data"


def _gmvae_codes(model: LatentModel, c: int, n: int, seed: int, t: float,
                 latents: LatentsCache | None) -> tuple[np.ndarray, str]:
    k, how = _matched_component(model, c, latents)
    mu = model.prior_mean[k].detach().cpu().double().numpy()  # p(z|y=k) = N(mu_k, sigma_k^2)
    sd = (0.5 * model.prior_logvar[k]).exp().detach().cpu().double().numpy()
    z = mu + t * sd * _noise(n, mu.shape[0], seed)
    return z, f"GMVAE: sampled mixture component {k} for class {c} ({how}), sd x {t:g}"


def _gaussian_codes(model: LatentModel, c: int, n: int, seed: int, t: float,
                    latents: LatentsCache | None) -> tuple[np.ndarray, str]:
    kind = model.config.model_type.upper()
    if latents is None:
        raise ValueError(f"a {kind} has no class input: sampling a class needs the encoded dataset "
                         "(latents with labels) to fit a Gaussian to that class's posterior means")
    gaussians = class_gaussians(latents.mean, latents.labels)
    if c not in gaussians:
        raise ValueError(f"class {c} has no labelled points in the encoded dataset; "
                         f"known classes: {sorted(gaussians)}")
    mu, cov = gaussians[c]
    z = mu + t * _noise(n, mu.shape[0], seed) @ np.linalg.cholesky(cov).T
    count = int((latents.labels == c).sum())
    return z, f"{kind}: z ~ N(mu_c, {t:g}² Sigma_c) fitted on the {count} encoded points of class {c}"


def class_codes(model: LatentModel, class_index: int, n: int, seed: int, temperature: float,
                latents: LatentsCache | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Codes for class ``class_index``: (z float32 [n, D], decoder labels int64 [n] or None, note)."""
    c, t = int(class_index), float(temperature)
    if model.is_conditional:
        z, note = _cvae_codes(model, c, n, seed, t)
        return z.astype(np.float32), np.full(n, c, np.int64), note
    if model.num_components > 0:
        z, note = _gmvae_codes(model, c, n, seed, t, latents)
    else:
        z, note = _gaussian_codes(model, c, n, seed, t, latents)
    return z.astype(np.float32), None, note


@torch.no_grad()
def decode(model: LatentModel, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Codes [n, D] (and labels [n] for a CVAE) -> images float32 [n, C, H, W] in [0, 1]."""
    zt = torch.as_tensor(z, dtype=torch.float32, device=model.device)
    yt = None if y is None else torch.as_tensor(y, dtype=torch.long, device=model.device)
    return model.decode(zt, yt).float().cpu().numpy()


def sample_class(model: LatentModel, class_index: int, n: int, seed: int, temperature: float,
                 latents: LatentsCache | None) -> tuple[np.ndarray, str]:
    """n images of one class: (float32 [n, C, H, W] in [0, 1], a one-line note of how).

    Raises ValueError for a VAE / AE without ``latents`` or a class the model cannot produce.
    """
    z, y, note = class_codes(model, class_index, n, seed, temperature, latents)
    return decode(model, z, y), note


def decode_under_every_class(model: LatentModel, z: np.ndarray) -> np.ndarray:
    """One code z [D] (or [1, D]) decoded with each class label -> [num_classes, C, H, W] (CVAE)."""
    if not model.is_conditional:
        raise ValueError("decoding under every class needs a conditional model (a CVAE)")
    k = model.config.num_classes
    codes = np.repeat(np.asarray(z, np.float32).reshape(1, -1), k, axis=0)
    return decode(model, codes, np.arange(k))
