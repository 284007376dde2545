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
from scipy.stats import rankdata as scipy_rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score
from torch import Tensor

from vaescope.training.models import LatentModel

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Var_x(E_q[z_d|x]) > 0.01 (the spread of the posterior means)


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
        decoded = model.decode(post.mean, y).float()  # through the contract: the same reading as the explorer's
        parts["recon"].append((-model.likelihood.log_prob(x, decoded)).float().cpu().numpy())
        parts["mse"].append((decoded - x).pow(2).flatten(1).mean(1).float().cpu().numpy())
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
             labelled: bool = True, probe_images: int = 10000, temperature: float | None = None,
             factors: Tensor | None = None, factor_names: tuple[str, ...] = ()) -> dict:
    """All metrics on the test split, as a JSON-ready dict (see docs/training.md, "Metrics"); with the test
    images' ground-truth ``factors`` [N, F] (named ``factor_names``), their MIG too."""
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
    if factors is not None and len(factor_names) == factors.shape[1]:
        score, per_factor = mig(enc.mean, factors.cpu().numpy())
        metrics["mig"] = score
        metrics["mig_per_factor"] = {name: float(v) for name, v in zip(factor_names, per_factor, strict=True)}
    return metrics


# -- disentanglement: the Mutual Information Gap ---------------------------------------------------

MIG_BINS = 20  # Chen et al. 2018 and disentanglement_lib discretise codes into 20 histogram bins


def discretize(values: np.ndarray, bins: int = MIG_BINS, binning: str = "equal_width") -> np.ndarray:
    """Integer bin labels [N, M] for the columns of ``values`` [N, M], each column on its own.

    A column with at most ``bins`` distinct values (a discrete factor such as shape) keeps one label
    per value. Any other column is cut into ``bins`` bins: ``"equal_width"`` (np.histogram's edges
    between the column's min and max, as in disentanglement_lib) or ``"quantile"`` (equal counts by
    rank; invariant to every strictly increasing transform of the column, not only affine ones).
    A constant column gets one label, so it carries no information.

    Examples
    --------
    >>> discretize(np.array([[2.0], [0.0], [2.0]])).ravel().tolist()  # discrete: one label per value
    [1, 0, 1]
    >>> discretize(np.linspace(0, 1, 6)[:, None], bins=2).ravel().tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if binning not in ("equal_width", "quantile"):
        raise ValueError(f"binning must be 'equal_width' or 'quantile', got {binning!r}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"discretize expects [N, M] values, got shape {list(values.shape)}")
    out = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        col = values[:, j]
        distinct, inverse = np.unique(col, return_inverse=True)
        if len(distinct) <= bins:
            out[:, j] = inverse
        elif binning == "equal_width":
            edges = np.histogram_bin_edges(col, bins)
            out[:, j] = np.digitize(col, edges[1:-1])  # 0..bins-1; the max falls in the last bin
        else:
            # ties share one rank ("average"), so equal values always share a bin
            ranks = scipy_rankdata(col, method="average") - 0.5
            out[:, j] = np.minimum((ranks * bins / len(col)).astype(np.int64), bins - 1)
    return out


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS,
                       binning: str = "equal_width") -> tuple[np.ndarray, np.ndarray]:
    """(I(z_d; v_k) [D, K], H(v_k) [K]) in nats, after ``discretize`` of codes [N, D] and factors [N, K]."""
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"need codes [N, D] and factors [N, K] with the same N, got {list(codes.shape)} "
                         f"and {list(factors.shape)}")
    z, v = discretize(codes, bins, binning), discretize(factors, bins, binning)
    mi = np.array([[mutual_info_score(v[:, k], z[:, d]) for k in range(v.shape[1])] for d in range(z.shape[1])])
    entropy = np.array([mutual_info_score(v[:, k], v[:, k]) for k in range(v.shape[1])])  # H(v) = I(v; v)
    return mi.reshape(z.shape[1], v.shape[1]), entropy


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS,
        binning: str = "equal_width") -> tuple[float, np.ndarray]:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

    For each ground-truth factor v_k: (I(z_j*; v_k) - I(z_j°; v_k)) / H(v_k), the gap between the two
    code dims with the most mutual information with it, normalised to [0, 1] by its entropy; the
    score is the mean over factors. This is the discretised estimator of disentanglement_lib: codes
    [N, D] (posterior means) are histogram-discretised into ``bins`` bins per dim, and so is every
    continuous factor (more than ``bins`` distinct values, e.g. scale, rotation, x, y), whose
    entropy H(v_k) is then that of its ``bins``-bin discretisation; a discrete factor (e.g. shape)
    is used as it is. With finite N the plug-in estimate is biased upwards by about
    (bins - 1)^2 / 2N nats, so unrelated codes score a little above 0.

    Returns ``(score, per_factor [K])``; a constant factor (zero entropy) gets NaN and is left out
    of the mean.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> factors = rng.uniform(size=(5000, 2))
    >>> score, per_factor = mig(factors[:, ::-1] * 3 + 1, factors)
    >>> score > 0.95
    True
    """
    mi, entropy = mutual_info_matrix(codes, factors, bins, binning)
    top2 = -np.sort(-np.vstack([mi, np.zeros((max(0, 2 - mi.shape[0]), mi.shape[1]))]), axis=0)[:2]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_factor = np.where(entropy > 0, (top2[0] - top2[1]) / entropy, np.nan)
    defined = per_factor[np.isfinite(per_factor)]
    return (float(defined.mean()) if len(defined) else float("nan")), per_factor
