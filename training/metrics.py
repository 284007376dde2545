"""Evaluation on a held-out split: ELBO, KL per dimension, active units, IWAE NLL, probes, clustering.

All functions take tensors already in [0, 1] (or uint8 images converted batch by batch) and
return plain floats / lists so the results can go straight into a checkpoint's JSON metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from vaescope.training.models import LatentModel

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_d|x]) > 0.01


def float_batch(images: Tensor, device: torch.device) -> Tensor:
    """A batch of uint8 (0..255) or float images as float32 in [0, 1] on ``device``."""
    x = images.to(device, non_blocking=True)
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


@dataclass
class Encoded:
    """Posterior statistics of a whole split. Arrays are numpy, N rows."""

    mean: np.ndarray  # [N, D]
    logvar: np.ndarray  # [N, D]
    kl_per_dim: np.ndarray  # [N, D]
    recon: np.ndarray  # [N] -log p(x|z = posterior mean)
    recon_mse: np.ndarray  # [N] per-pixel mean squared error of decode(posterior mean)
    component_probs: np.ndarray | None  # [N, K] for a GMVAE


@torch.inference_mode()
def encode_split(model: LatentModel, images: Tensor, labels: Tensor | None, batch_size: int = 1024,
                 progress: Callable[[float, str], None] | None = None) -> Encoded:
    """Encode ``images`` [N, C, H, W] (uint8 or float) batch by batch on the model's device.

    ``progress(fraction, message)`` is called after every batch.
    """
    device = model.device
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("mean", "logvar", "kl", "recon", "mse", "probs")}
    for start in range(0, len(images), batch_size):
        x = float_batch(images[start:start + batch_size], device)
        y = None if labels is None else labels[start:start + batch_size].to(device)
        post = model.encode(x, y)
        parts["mean"].append(post.mean.float().cpu().numpy())
        parts["logvar"].append(post.logvar.float().cpu().numpy())
        parts["kl"].append(model.kl_per_dim(post).float().cpu().numpy())
        logits = model.decode_logits(post.mean, y)
        parts["recon"].append(model.recon_nll(logits, x).float().cpu().numpy())
        parts["mse"].append((torch.sigmoid(logits) - x).pow(2).flatten(1).mean(1).float().cpu().numpy())
        if post.component_probs is not None:
            parts["probs"].append(post.component_probs.float().cpu().numpy())
        if progress is not None:
            progress(min(1.0, (start + batch_size) / len(images)), "encoding the dataset")
    cat = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    return Encoded(cat["mean"], cat["logvar"], cat["kl"], cat["recon"], cat["mse"], cat["probs"])


@torch.inference_mode()
def component_assignments(model: LatentModel, images: Tensor, batch_size: int = 1024) -> np.ndarray:
    """argmax q(y|x) [N] of a mixture model (its condition is "component")."""
    if not model.condition.is_mixture:
        raise ValueError(f"a {model.family} has no mixture components to assign images to")
    parts = [model.encode(float_batch(images[start:start + batch_size], model.device)).component_probs
             for start in range(0, len(images), batch_size)]
    return torch.cat(parts).argmax(-1).cpu().numpy()


@torch.inference_mode()
def negative_elbo(model: LatentModel, images: Tensor, labels: Tensor | None, batch_size: int = 1024,
                  temperature: float | None = None) -> dict[str, float]:
    """Mean recon / KL / loss (= -ELBO with weight 1) over a split, with one posterior sample."""
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    for start in range(0, len(images), batch_size):
        x = float_batch(images[start:start + batch_size], model.device)
        y = None if labels is None else labels[start:start + batch_size].to(model.device)
        out = model.loss(x, y, kl_weight=1.0, temperature=temperature)
        for key, value in (("recon", out.recon), ("kl", out.kl)):
            sums[key] += float(value) * len(x)
    n = len(images)
    return {"recon": sums["recon"] / n, "kl": sums["kl"] / n, "loss": (sums["recon"] + sums["kl"]) / n}


@torch.inference_mode()
def iwae_nll(model: LatentModel, images: Tensor, labels: Tensor | None, k: int, batch_size: int = 64,
             generator_seed: int = 0) -> float:
    """Importance-weighted estimate of -log p(x) in nats (Burda et al. 2016), mean over images.

    log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)], tight as k grows.
    """
    torch.manual_seed(generator_seed)
    # keep k * batch decoder passes per step bounded so memory stays flat for any k
    batch = max(1, min(batch_size, 8192 // k))
    total = 0.0
    for start in range(0, len(images), batch):
        x = float_batch(images[start:start + batch], model.device)
        y = None if labels is None else labels[start:start + batch].to(model.device)
        log_w = model.log_importance_weights(x, y, k).float()  # [k, B]
        total += float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return -total / len(images)


def active_dims(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> np.ndarray:
    """[D] bool for posterior means [N, D]: dims whose mean varies across the data,
    Var_x(E[z_d|x]) > threshold (Burda et al. 2016). A collapsed dim's mean stays put for every x."""
    return np.asarray(means).var(axis=0) > threshold


def active_units(means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of active dims (``active_dims``) of posterior means [N, D]."""
    return int(active_dims(means, threshold).sum())


def probe_accuracy(train_means: np.ndarray, train_labels: np.ndarray, test_means: np.ndarray,
                   test_labels: np.ndarray, seed: int = 0) -> float:
    """Accuracy of a logistic-regression probe fitted on train posterior means, scored on test."""
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit(train_means, train_labels)
    return float(probe.score(test_means, test_labels))


def cluster_mapping(assignments: np.ndarray, labels: np.ndarray, num_clusters: int) -> dict[int, int]:
    """Best one-to-one cluster -> class map (Hungarian algorithm on the contingency table)."""
    num_classes = int(labels.max()) + 1
    counts = np.zeros((num_clusters, num_classes), dtype=np.int64)
    np.add.at(counts, (assignments, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def cluster_accuracy(assignments: np.ndarray, labels: np.ndarray, num_clusters: int) -> float:
    """Unsupervised clustering accuracy: fraction correct under the best cluster -> class matching."""
    mapping = cluster_mapping(assignments, labels, num_clusters)
    predicted = np.array([mapping.get(int(a), -1) for a in assignments])
    return float((predicted == labels).mean())


def evaluate(model: LatentModel, test_images: Tensor, test_labels: Tensor, *, train_images: Tensor | None = None,
             train_labels: Tensor | None = None, eval_k: int = 100, nll_images: int = 1000,
             labelled: bool = True, probe_images: int = 10000, temperature: float | None = None) -> dict:
    """All metrics on the test split, as a JSON-ready dict (see README "Metrics")."""
    model.eval()
    cond = model.condition.from_labels(test_labels)
    enc = encode_split(model, test_images, cond)
    elbo_terms = negative_elbo(model, test_images, cond, temperature=temperature)
    kl_dims = enc.kl_per_dim.mean(0)
    metrics: dict = {
        "elbo": -elbo_terms["loss"], "recon": elbo_terms["recon"], "kl": elbo_terms["kl"],
        "kl_per_dim": [float(v) for v in kl_dims], "active_units": active_units(enc.mean),
        "latent_dim": int(enc.mean.shape[1]), "test_images": len(test_images),
    }
    if not np.isfinite(enc.logvar).all():  # a deterministic AE: no posterior, so no ELBO or NLL
        metrics["elbo"] = None
    else:
        n = min(nll_images, len(test_images))
        metrics["nll_iwae"] = iwae_nll(model, test_images[:n], None if cond is None else cond[:n], eval_k)
        metrics["nll_k"], metrics["nll_images"] = eval_k, n
    labels = test_labels.cpu().numpy()
    # A probe needs two classes to tell apart: an unlabelled folder (one subfolder) has one.
    if labelled and train_images is not None and train_labels is not None and len(train_labels[:probe_images].unique()) >= 2:
        n = min(probe_images, len(train_images))
        tr = encode_split(model, train_images[:n], model.condition.from_labels(train_labels[:n]))
        metrics["probe_accuracy"] = probe_accuracy(tr.mean, train_labels[:n].cpu().numpy(), enc.mean, labels)
    if enc.component_probs is not None and labelled:
        assign = enc.component_probs.argmax(1)
        metrics["cluster_accuracy"] = cluster_accuracy(assign, labels, enc.component_probs.shape[1])
        metrics["nmi"] = float(normalized_mutual_info_score(labels, assign))
    return metrics
