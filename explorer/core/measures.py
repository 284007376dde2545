"""Numbers measured on loaded models, for the claims a lesson makes: nothing a lesson says is typed in.

Each function takes ``ModelEntry``s (a model and its encoded evaluation images) and returns plain
floats; the expensive ones are kept in ``entry.derived``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from vaescope.errors import InputError
from vaescope.explorer.core.codes import decode, index_code, prior_codes
from vaescope.explorer.core.dims import dim_info
from vaescope.explorer.core.interpolation import lerp
from vaescope.explorer.core.store import ModelEntry

PROBE_SAMPLES = 500  # prior samples the pixel classifier judges
PATH_STEPS = 16


def _images(entry: ModelEntry) -> tuple[np.ndarray, np.ndarray]:
    if not entry.has_points or entry.latents.images is None or not entry.latents.has_labels:
        raise InputError(f"{entry.name} has no labelled evaluation images to measure with")
    known = entry.latents.labels >= 0
    return entry.latents.float_images(known).reshape(int(known.sum()), -1), entry.latents.labels[known]


@dataclass(frozen=True)
class Probe:
    """A digit classifier that looks at the most similar real images: the NEIGHBOURS nearest
    evaluation images (pixel distance) of the even rows vote. It is *sure* of an image when at
    least SURE of them agree."""

    model: KNeighborsClassifier
    accuracy: float  # on the odd rows
    sure_share: float  # the share of the odd rows (real images) it is sure of


NEIGHBOURS, SURE = 10, 8


def pixel_probe(entry: ModelEntry) -> Probe:
    """The nearest-neighbour probe of the model's evaluation images; kept in ``entry.derived``."""
    if entry.derived.pixel_probe is None:
        x, y = _images(entry)
        fit = KNeighborsClassifier(NEIGHBOURS).fit(x[0::2], y[0::2])
        held_x, held_y = x[1::2], y[1::2]
        sure = fit.predict_proba(held_x).max(1) >= SURE / NEIGHBOURS
        entry.derived.pixel_probe = Probe(fit, float(fit.score(held_x, held_y)), float(sure.mean()))
    return entry.derived.pixel_probe


@dataclass(frozen=True)
class SampleVerdict:
    """What the probe makes of a model's prior samples."""

    sure_share: float  # the share of samples it is sure of (real images: the probe's own sure_share)
    classes_seen: int  # how many classes are the vote of at least 2% of the samples
    top_share: float  # the share of the samples given the most common class
    top_class: int  # that class


def judge_prior_samples(entry: ModelEntry, probe: Probe, n: int = PROBE_SAMPLES, seed: int = 0) -> SampleVerdict:
    """Decode n prior samples of ``entry`` and let ``probe`` classify them."""
    images = decode(entry, prior_codes(entry, n, seed), None).reshape(n, -1)
    probs = probe.model.predict_proba(images)
    share = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / n
    return SampleVerdict(float((probs.max(1) >= SURE / NEIGHBOURS).mean()), int((share >= 0.02).sum()),
                         float(share.max()), int(probe.model.classes_[share.argmax()]))


def first_of_class(entry: ModelEntry, label: int) -> int:
    """The first evaluation image of class ``label``."""
    found = np.flatnonzero(entry.latents.labels == label)
    if not len(found):
        raise InputError(f"{entry.name} has no evaluation image of class {label}")
    return int(found[0])


def path_gap(entry: ModelEntry, start: int, end: int, steps: int = PATH_STEPS) -> float:
    """How far the straight path between two images' codes strays from the data: the largest
    distance of a path point to its nearest evaluation code, over the typical distance between an
    evaluation code and its nearest neighbour (about 1: the path stays among the data)."""
    codes = entry.latents.mean
    derived = entry.derived
    if derived.code_tree is None:
        derived.code_tree = cKDTree(codes)
    tree = derived.code_tree
    if derived.neighbour_distance is None:
        derived.neighbour_distance = float(np.median(tree.query(codes, k=2)[0][:, 1]))
    typical = derived.neighbour_distance
    path = lerp(index_code(entry, start).z, index_code(entry, end).z, steps)
    return float(tree.query(path, k=1)[0].max() / max(typical, 1e-12))


def typical_path_gap(entry: ModelEntry, pairs: int = 200, seed: int = 0) -> float:
    """The median ``path_gap`` over ``pairs`` seeded random pairs of evaluation images of different
    classes: how far a typical straight walk strays from the data."""
    labels = entry.latents.labels
    rng = np.random.default_rng(seed)
    found = [(int(i), int(j)) for i, j in rng.integers(0, len(labels), (4 * pairs, 2)) if labels[i] != labels[j]]
    return float(np.median([path_gap(entry, i, j) for i, j in found[:pairs]]))


def widest_hole(a: ModelEntry, b: ModelEntry) -> tuple[int, int]:
    """Of the walks between the first images of two classes, the pair of images whose walk strays
    furthest from the data in ``a`` relative to ``b``: where ``a``'s holes show."""
    classes = [int(c) for c in np.unique(a.latents.labels[a.latents.labels >= 0])]
    firsts = {c: first_of_class(a, c) for c in classes}
    pairs = [(firsts[c], firsts[d]) for k, c in enumerate(classes) for d in classes[k + 1:]]
    return max(pairs, key=lambda p: path_gap(a, *p) / max(path_gap(b, *p), 1e-9))


def variance_kept(entry: ModelEntry) -> float:
    """The share of the evaluation images' variance that ``entry``'s reconstructions keep: 1 − the
    mean squared error over the pixel variance."""
    x, _ = _images(entry)
    return 1.0 - float(entry.latents.recon_error.mean()) / float(((x - x.mean(0)) ** 2).mean())


def pca_variance_kept(entry: ModelEntry) -> float:
    """The share PCA with as many components as ``entry``'s code has dimensions, fitted on these same
    evaluation images, keeps: the most any linear code of that size can keep of them."""
    x, _ = _images(entry)
    return float(PCA(min(entry.description.latent_dim, *x.shape)).fit(x).explained_variance_ratio_.sum())


def frame_separation(codes: np.ndarray, labels: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """How well each recorded frame's codes [E, N, D] separate the classes: the accuracy of a
    ``neighbours``-nearest-neighbour classifier, fitted on the even rows and scored on the odd ones,
    per frame [E]."""
    from sklearn.neighbors import KNeighborsClassifier

    known = np.asarray(labels) >= 0
    y = np.asarray(labels)[known]
    out = []
    for frame in np.asarray(codes, np.float32)[:, known]:
        fit = KNeighborsClassifier(neighbours).fit(frame[0::2], y[0::2])
        out.append(fit.score(frame[1::2], y[1::2]))
    return np.asarray(out)


def active_units(entry: ModelEntry) -> int:
    return int(dim_info(entry).active.sum())


def kl_total(entry: ModelEntry) -> float:
    """Mean KL(q(z|x) || p(z)) over the evaluation images, nats."""
    return float(entry.latents.kl.mean())


def factor_mig(entry: ModelEntry) -> tuple[float, dict[str, float]] | None:
    """The mutual information gap of the codes against the images' ground-truth factors, or None
    when the data has no factors."""
    latents = entry.latents
    if latents is None or latents.factors is None:
        return None
    if entry.derived.mig is None:
        from vaescope.training.metrics import mig

        score, per_factor = mig(latents.mean, latents.factors)
        entry.derived.mig = (float(score), {name: float(v) for name, v in zip(latents.factor_names, per_factor, strict=True)})
    return entry.derived.mig


OOD_IMAGES = 1_000  # evaluation images of each side scored for the likelihood lesson (a seeded subset)


def ood_aurocs(model: ModelEntry, other: ModelEntry) -> dict[str, float]:
    """How well each of ``model``'s anomaly scores (``scores.score_kinds``) tells ``other``'s
    evaluation images (resized to ``model``'s) from ``model``'s own: score key -> AUROC (1 perfect,
    0.5 chance, below 0.5 the other data looks *more* likely). On seeded subsets of OOD_IMAGES each;
    kept in ``model.derived``."""
    from vaescope.explorer.core.scores import auroc, resize_images, score_kinds, score_table

    key, kept = other.key, model.derived.ood_aurocs
    if key not in kept:
        for entry in (model, other):
            if not entry.has_points or entry.latents.images is None:
                raise InputError(f"{entry.name} has no evaluation images to score")

        def subset(entry: ModelEntry) -> np.ndarray:
            images = entry.latents.images
            if len(images) > OOD_IMAGES:
                images = images[np.sort(np.random.default_rng(0).choice(len(images), OOD_IMAGES, replace=False))]
            return images

        inside = score_table(model, subset(model))
        outside = score_table(model, resize_images(subset(other), model.description.image_shape))
        kept[key] = {kind.key: auroc(inside[kind.key], outside[kind.key]) for kind in score_kinds(model)}
    return kept[key]
