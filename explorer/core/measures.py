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
from vaescope.explorer.core.compare import INTERPOLATION_STEPS, KL_DEAD
from vaescope.explorer.core.dims import dim_info
from vaescope.explorer.core.interpolation import lerp
from vaescope.explorer.core.store import ModelEntry

PROBE_SAMPLES = 500  # prior samples the pixel classifier judges
PATH_STEPS = INTERPOLATION_STEPS  # the walk's steps: the same as the strips the lesson shows


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


def path_gaps(entry: ModelEntry, start: int, end: int, steps: int = PATH_STEPS) -> np.ndarray:
    """How far each of the ``steps`` points of the straight walk between two images' codes lies from
    the data [steps]: its distance to the nearest evaluation code, over the typical distance between
    an evaluation code and its nearest neighbour (about 1: the point is among the data)."""
    codes = entry.latents.mean
    derived = entry.derived
    if derived.code_tree is None:
        derived.code_tree = cKDTree(codes)
    tree = derived.code_tree
    if derived.neighbour_distance is None:
        derived.neighbour_distance = float(np.median(tree.query(codes, k=2)[0][:, 1]))
    path = lerp(index_code(entry, start).z, index_code(entry, end).z, steps)
    return tree.query(path, k=1)[0] / max(derived.neighbour_distance, 1e-12)


def path_gap(entry: ModelEntry, start: int, end: int, steps: int = PATH_STEPS) -> float:
    """How far the straight walk between two images' codes strays from the data: the largest of its
    ``path_gaps``."""
    return float(path_gaps(entry, start, end, steps).max())


def _random_pairs(entry: ModelEntry, pairs: int, seed: int) -> list[tuple[int, int]]:
    """``pairs`` seeded random pairs of evaluation images of different classes."""
    labels = entry.latents.labels
    rng = np.random.default_rng(seed)
    found = [(int(i), int(j)) for i, j in rng.integers(0, len(labels), (4 * pairs, 2)) if labels[i] != labels[j]]
    return found[:pairs]


WALK_PAIRS = 200  # random pairs the interpolation lesson measures its walks over


def typical_path_gap(entry: ModelEntry, pairs: int = WALK_PAIRS, seed: int = 0) -> float:
    """The median ``path_gap`` over ``pairs`` seeded random pairs of evaluation images of different
    classes: how far a typical straight walk strays from the data."""
    return float(np.median([path_gap(entry, i, j) for i, j in _random_pairs(entry, pairs, seed)]))


def clearest_walk(a: ModelEntry, b: ModelEntry, pairs: int = WALK_PAIRS, seed: int = 0) -> tuple[int, int]:
    """Of ``typical_path_gap``'s random pairs (the same images in both models), the pair whose walk
    strays furthest from the data in ``a`` relative to ``b``: where ``a``'s holes show best. Kept in
    ``a.derived`` (a lesson's words, chart and screen all ask for it)."""
    key = (b.key, pairs, seed)
    if key not in a.derived.walks:
        found = _random_pairs(a, pairs, seed)
        a.derived.walks[key] = max(found, key=lambda p: path_gap(a, *p) / max(path_gap(b, *p), 1e-9))
    return a.derived.walks[key]


def prior_ball(entry: ModelEntry, share: float = 0.95) -> tuple[float, float, float]:
    """Where the prior N(0, I) draws fall against the codes: (the radius that holds ``share`` of the
    draws, the share of the evaluation codes within it, the codes' mean distance from the origin).
    In D dimensions the draws' squared length is chi-squared with D degrees of freedom."""
    from scipy.stats import chi2

    norms = np.linalg.norm(entry.latents.mean.astype(np.float64), axis=1)
    radius = float(np.sqrt(chi2.ppf(share, entry.latents.mean.shape[1])))
    return radius, float((norms <= radius).mean()), float(norms.mean())


def used_units(entry: ModelEntry) -> int:
    """The dimensions the KL chart (``figures.kl_bar_chart``) counts as used: the code moves with the
    image (``active_units``) and carries at least ``KL_DEAD`` nats; without a KL, the active ones."""
    info = dim_info(entry)
    return int((info.active & (info.kl >= KL_DEAD)).sum()) if info.kl is not None else int(info.active.sum())


DENOISE_DRAWS = 5  # noise draws the denoising lesson averages over


@dataclass(frozen=True)
class DenoiseScore:
    """Mean squared error per pixel over every evaluation image, one value per noise draw."""

    noisy: np.ndarray  # [draws] the corrupted inputs' error
    rebuilt: np.ndarray  # [draws] the model's rebuilds' error
    images: int


def denoise_score(entry: ModelEntry, kind: str, level: float, draws: int = DENOISE_DRAWS) -> DenoiseScore:
    """Corrupt every evaluation image ``draws`` times (seeds 0, 1, ...: the same noise for every model
    of the same images) and rebuild each from the code of its corrupted copy."""
    import torch

    from vaescope.training.corruption import corrupt

    if not entry.has_points or entry.latents.images is None:
        raise InputError(f"{entry.name} has no evaluation images to corrupt")
    model, n = entry.model, len(entry.latents)
    noisy, rebuilt = np.zeros(draws), np.zeros(draws)
    with torch.inference_mode():
        for start in range(0, n, 512):
            block = slice(start, min(n, start + 512))
            x = torch.from_numpy(entry.latents.float_images(block)).to(model.device)
            y = entry.description.condition.from_labels(torch.from_numpy(entry.latents.labels[block]).to(model.device))
            for seed in range(draws):
                generator = torch.Generator(model.device).manual_seed(seed * 1_000_003 + start)
                dirty = corrupt(x, kind, level, generator)
                out = model.decode(model.encode(dirty, y).mean, y).float()
                noisy[seed] += float((dirty - x).pow(2).sum()) / x[0].numel()
                rebuilt[seed] += float((out - x).pow(2).sum()) / x[0].numel()
    return DenoiseScore(noisy / n, rebuilt / n, n)


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
