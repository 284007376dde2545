"""Sampling images of one class from any model, and decoding a code under every class.

How a class is used depends on what the model's ``Condition`` says, never on its family:
- "class" (the decoder takes the class, e.g. a CVAE): codes from the prior, decoded with the class;
- "component" (a mixture prior, e.g. a GMVAE): codes from the mixture component matched to the
  class by the labelled evaluation images (Hungarian matching);
- "none": codes from a Gaussian fitted to that class's posterior means, z ~ N(mu_c, T^2 Sigma_c).
T is the temperature: it scales the spread, so T < 1 trades variety for typicality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaescope.errors import InputError
from vaescope.explorer.core.codes import decode, prior_codes
from vaescope.explorer.core.latents import LatentsCache
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.metrics import cluster_mapping

RIDGE = 1e-4  # added to each class covariance: keeps Cholesky defined for tiny or flat classes


@dataclass(frozen=True)
class ClassSample:
    """Codes [n, D] for one class, the class the decoder takes (or None), and how, in words."""

    z: np.ndarray
    decoder_class: int | None
    note: str
    details: str  # the same in the notation of the papers, for the page's "details"


def class_gaussians(means: np.ndarray, labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per known class c (label >= 0): (mu [D], cov [D, D] + RIDGE * I) of the posterior means [N, D]."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in np.unique(labels[labels >= 0]):
        x = np.asarray(means[labels == c], np.float64)
        cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True)) + RIDGE * np.eye(x.shape[1])
        out[int(c)] = (x.mean(axis=0), cov)
    return out


def component_to_class(component_probs: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """One-to-one component -> class map from q(k|x) [N, K] and labels [N].

    Hungarian matching (scipy's linear_sum_assignment) on the component x class count matrix of
    the labelled points (label >= 0), each point counted under its most probable component.
    Components left unmatched (K > classes) are absent from the map.
    """
    known = labels >= 0
    if not known.any():
        return {}
    assignments = np.asarray(component_probs)[known].argmax(axis=1)
    return cluster_mapping(assignments, np.asarray(labels)[known].astype(np.int64), component_probs.shape[1])


def component_names(entry: ModelEntry) -> list[str]:
    """A name per mixture component: "component k ≈ <its matched class>" when labelled images say,
    else "component k"."""
    size = entry.description.condition.size
    latents = entry.latents
    matched: dict[int, int] = {}
    if latents is not None and latents.component_probs is not None and latents.has_labels:
        matched = component_to_class(latents.component_probs, latents.labels)
    return [f"component {k}" + (f" ≈ {entry.description.class_name(matched[k])}" if k in matched else "")
            for k in range(size)]


def _matched_component(entry: ModelEntry, c: int) -> tuple[int, str]:
    """The mixture component for class c: Hungarian match on the latents' q(k|x), else identity."""
    latents, size = entry.latents, entry.description.condition.size
    if latents is None or latents.component_probs is None or not latents.has_labels:
        if not 0 <= c < size:
            raise InputError(f"class {c} is out of range 0..{size - 1}")
        return c, "component number = class number (there are no labelled images to match with)"
    matched = [k for k, cls in component_to_class(latents.component_probs, latents.labels).items() if cls == c]
    if not matched:
        raise InputError(f"class {entry.description.class_name(c)} matches none of the {size} mixture components")
    return matched[0], "the component holding most images of this class (Hungarian matching on the labelled images)"


def _fitted_codes(latents: LatentsCache | None, c: int, n: int, seed: int, t: float,
                  class_name: str) -> tuple[np.ndarray, int]:
    if latents is None:
        raise InputError("this model has no class input: sampling a class needs labelled evaluation images, "
                         "to fit a Gaussian to that class's codes")
    gaussians = class_gaussians(latents.mean, latents.labels)
    if c not in gaussians:
        raise InputError(f"class {class_name} has no labelled evaluation images; known classes: {sorted(gaussians)}")
    mu, cov = gaussians[c]
    noise = torch.randn(n, mu.shape[0], generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return mu + t * noise.numpy() @ np.linalg.cholesky(cov).T, int((latents.labels == c).sum())


def class_codes(entry: ModelEntry, class_index: int, n: int, seed: int, temperature: float) -> ClassSample:
    """Codes for class ``class_index`` of a model, drawn the way its condition allows."""
    description = entry.description
    condition, c, t = description.condition, int(class_index), float(temperature)
    name = description.class_name(c)
    draw = condition.class_draw(c, name, lambda cls: _matched_component(entry, cls), t)
    if not draw.fitted:
        z = prior_codes(entry, n, seed, draw.component, t)
        return ClassSample(z, draw.decoder_class, draw.how, draw.formula)
    z, count = _fitted_codes(entry.latents, c, n, seed, t, name)
    return ClassSample(z.astype(np.float32), None,
                       f"the model has no class input: codes drawn from a Gaussian fitted to the codes of the "
                       f"{count} “{name}” images", f"z ~ N(mu_c, {t:g}² Sigma_c) over {count} posterior means")


def sample_class(entry: ModelEntry, class_index: int, n: int, seed: int, temperature: float
                 ) -> tuple[np.ndarray, ClassSample]:
    """n images of one class: (float32 [n, C, H, W] in [0, 1], how they were drawn)."""
    drawn = class_codes(entry, class_index, n, seed, temperature)
    return decode(entry, drawn.z, drawn.decoder_class), drawn


def decode_under_every_class(entry: ModelEntry, z: np.ndarray) -> np.ndarray:
    """One code z [D] decoded with each class label -> [classes, C, H, W] (a class-conditional model)."""
    classes = entry.description.condition.class_choices(entry.description.class_names)
    if not classes:
        raise InputError("only a model whose decoder takes the class (a CVAE) decodes one code under every class")
    return np.concatenate([decode(entry, z, c) for _, c in classes])
