"""Start a GMVAE's mixture from a clustering of its own codes, part-way through training.

A GMVAE trained from random component priors finds different partitions from different seeds
(on Fashion-MNIST, clustering accuracy 0.64 / 0.55 / 0.48 for seeds 0 / 1 / 2): once two classes
share a component, training rarely separates them again. N2D (McConville et al. 2020) showed that
an autoencoder's codes, embedded by UMAP and clustered by a Gaussian mixture, give a stable and
good partition. After a few epochs this module does that with the GMVAE's own posterior means (no
labels), then sets the mixture to match it:

- prior mean / variance of component k: mean and variance of the codes in cluster k (the
  aggregate posterior of the cluster: the variance of the means plus the mean posterior variance);
- q(y|x): the categorical head is fitted to the cluster assignments by logistic regression on the
  encoder's features (the encoder itself is not changed).

Training then goes on under the usual loss. This needs the mean-field posterior q(z|x)
(``z_given_y=False``): with q(z|x, y) the codes would depend on the very assignments being set.

That training pulls the components towards Gaussian clusters in z, which match the classes less well
than the clustering did (Fashion-MNIST: 0.01-0.04 lower accuracy by epoch 20), while the codes
themselves keep improving. So ``component_refit_at_end`` runs the same initialisation once more after
the last epoch: the final mixture is the clustering of the trained codes (docs/gmvae-clustering.md,
"The final refit").

The GMVAE's ``after_epoch`` hook calls ``during_training`` at those two moments; the trainer names no family.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaescope.training.metrics import float_batch
from vaescope.training.models.base import EpochEnd
from vaescope.training.models.gmvae import GMVAE
from vaescope.training.threads import torch_threads

CLUSTER_SAMPLE = 20_000  # codes embedded and clustered: enough for 10 clusters, ~1 min of UMAP on 1 core
UMAP_NEIGHBORS = 20  # N2D's setting
GMM_RESTARTS = 12  # mixture fits on the embedding; the most balanced one is kept
HEAD_MAX_ITER = 500  # L-BFGS iterations fitting q(y|x) to the clusters


@dataclass
class ComponentInit:
    """What the initialisation did, for the run's history."""

    sizes: list[int]  # codes per cluster in the sample
    head_agreement: float  # fraction of the sample where argmax q(y|x) matches its cluster after the fit


@torch.no_grad()
def encoder_features(model: GMVAE, images: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """(encoder features h [N, H], posterior means [N, D], posterior variances [N, D]) of uint8/float images."""
    hs, means, variances = [], [], []
    for batch in images.split(batch_size):
        h, post = model.features_and_posterior(float_batch(batch, model.device))
        hs.append(h.float())
        means.append(post.mean.float())
        variances.append(post.logvar.float().exp())
    return torch.cat(hs), torch.cat(means), torch.cat(variances)


def cluster_codes(codes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """N2D: UMAP of the codes to k dimensions, then a full-covariance Gaussian mixture. Labels [N].

    The mixture is fitted from GMM_RESTARTS starts and the most balanced partition (highest entropy
    of the cluster sizes) is kept: the GMVAE's prior p(y) is uniform, so among partitions of similar
    quality the one closest to that prior fits the model best. (Measured on the codes of two
    Fashion-MNIST GMVAEs, two UMAP seeds each: a single start gave clustering accuracy 0.54-0.69,
    0.60 on average; the most balanced of 12 starts gave 0.61, 0.62, 0.63 and 0.62. The likelihood
    did not pick well: its correlation with accuracy ranged from -0.73 to 0.11.)
    """
    import umap
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings(), torch_threads():  # numba would leave torch on every core
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # a seed: one thread
        embedded = umap.UMAP(n_components=k, n_neighbors=UMAP_NEIGHBORS, min_dist=0.0,
                             random_state=seed).fit_transform(codes)
    best, best_entropy = None, -np.inf
    for start in range(GMM_RESTARTS):
        labels = GaussianMixture(k, covariance_type="full", random_state=seed * GMM_RESTARTS + start
                                 ).fit(embedded).predict(embedded)
        sizes = np.bincount(labels, minlength=k) / len(labels)
        entropy = -(sizes[sizes > 0] * np.log(sizes[sizes > 0])).sum()
        if entropy > best_entropy:
            best, best_entropy = labels, entropy
    return best


def initialise_components(model: GMVAE, images: Tensor, seed: int) -> ComponentInit:
    """Cluster a seeded sample of ``images`` by their codes and set the mixture to those clusters."""
    if model.z_given_y:
        raise ValueError("component initialisation needs the mean-field GMVAE (--z-given-y no): with "
                         "q(z|x, y) the codes depend on the assignments being set")
    k = model.num_components
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), min(CLUSTER_SAMPLE, len(images)), replace=False))
    was_training = model.training
    model.eval()
    h, means, variances = encoder_features(model, images[torch.from_numpy(pick)])
    labels = torch.from_numpy(cluster_codes(means.cpu().numpy(), k, seed)).to(h.device)
    with torch.no_grad():
        for c in range(k):
            members = labels == c
            if members.any():  # an empty cluster keeps its old component
                model.prior_mean[c] = means[members].mean(0)
                var = means[members].var(0, unbiased=False) + variances[members].mean(0)
                model.prior_logvar[c] = var.clamp_min(1e-4).log()
    agreement = fit_head(model, h, labels)
    model.train(was_training)
    return ComponentInit(sizes=torch.bincount(labels, minlength=k).tolist(), head_agreement=agreement)


def fit_head(model: GMVAE, h: Tensor, labels: Tensor) -> float:
    """Logistic regression (scikit-learn, on standardised features) of ``labels`` [N] on the
    encoder features ``h`` [N, H], written into q(y|x)'s linear head so it takes raw features.
    Returns the fraction of rows whose argmax q(y|x) matches its label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, targets = h.cpu().numpy(), labels.cpu().numpy()
    scaler = StandardScaler().fit(features)
    fit = LogisticRegression(max_iter=HEAD_MAX_ITER).fit(scaler.transform(features), targets)
    weight = fit.coef_ / scaler.scale_  # [K, H]: w . (h - mean) / scale = (w / scale) . h - ...
    bias = fit.intercept_ - weight @ scaler.mean_
    head = model.y_head
    with torch.no_grad():
        full_w = torch.zeros_like(head.weight)
        full_b = torch.full_like(head.bias, -1e4)  # a component no code was assigned to stays unused
        full_w[fit.classes_] = torch.as_tensor(weight, dtype=full_w.dtype, device=full_w.device)
        full_b[fit.classes_] = torch.as_tensor(bias, dtype=full_b.dtype, device=full_b.device)
        head.weight.copy_(full_w)
        head.bias.copy_(full_b)
        return float((head(h).argmax(-1) == labels).float().mean())


def during_training(model: GMVAE, end: EpochEnd, refit: bool) -> dict[str, Any]:
    """Set ``model``'s mixture from its codes at the end of epoch ``end.epoch`` of a run (the first
    initialisation, or the final ``refit``); returns the epoch's history entry, ``component_init``
    or ``component_refit`` (sizes, the head's agreement, seconds). The main process clusters and
    fits; Adam's moments of the changed parameters are dropped and, under DDP, the other ranks
    receive the new values (``end.replaced``)."""
    end.before_change()  # the record keeps the codes from before the mixture is set from them
    started = time.perf_counter()
    done = initialise_components(model, end.images, end.seed) if end.main else None
    end.replaced([model.prior_mean, model.prior_logvar, *model.y_head.parameters()])
    if done is None:
        return {}
    seconds = time.perf_counter() - started
    end.log(f"components {'refitted' if refit else 'initialised'} from a UMAP + GMM clustering in {seconds:.0f}s: "
            f"sizes {done.sizes}, q(y|x) agrees with it on {done.head_agreement:.1%}")
    return {"component_refit" if refit else "component_init": {
        "sizes": done.sizes, "head_agreement": round(done.head_agreement, 4), "seconds": round(seconds, 1)}}
