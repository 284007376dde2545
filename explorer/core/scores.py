"""The two applications the lectures teach, for any model through the contract.

- Denoising: corrupt an image (``training/corruption.py``: Gaussian noise, masking, salt and
  pepper), let the model rebuild it, and measure how far each is from the clean image.
- Anomaly detection: data the model explains badly is unusual. The score per image is the
  negative ELBO at the posterior mean under the model's own likelihood (``vaescope.bounds``: a
  Bernoulli or Gaussian reconstruction cost plus the KL from the prior) for a model with a prior
  and a declared likelihood, and the reconstruction error otherwise. An out-of-distribution check
  scores a second dataset, resized to the model's images, and reports how well the score
  separates the two (AUROC).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vaescope.bounds import reconstruct
from vaescope.contract import likelihood_of
from vaescope.errors import InputError
from vaescope.explorer.core.codes import decoder_of
from vaescope.explorer.core.locks import KeyedLocks
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.corruption import CORRUPTIONS, check_corruption, corrupt

OOD_IMAGES = 2_000  # images of the second dataset scored for the out-of-distribution check
CURVE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
CURVE_IMAGES = 64  # test images averaged per point of the breakdown curve


@dataclass(frozen=True)
class ScoreKind:
    key: str  # "elbo", "recon" or "complexity": what ``score_images(..., score=key)`` computes
    name: str  # what the score is, for labels
    higher: str  # what a high score means

    @property
    def elbo(self) -> bool:
        return self.key == "elbo"


ELBO = "elbo"
RECON = "recon"
COMPLEXITY = "complexity"


def score_kinds(entry: ModelEntry) -> list[ScoreKind]:
    """The scores this model can be ranked by, the default first: its −ELBO when it has a prior and
    declares a likelihood (a log-likelihood is never guessed), then the reconstruction error, then
    the −ELBO corrected for input complexity (Serrà et al. 2020, "Input complexity and
    out-of-distribution detection with likelihood-based generative models": the model's code length
    in bits minus the image's PNG-compressed length, so that simple images stop looking likely)."""
    recon = ScoreKind(RECON, "reconstruction error", "the model rebuilds the image badly")
    likelihood = likelihood_of(entry.generator) if entry.generator is not None else None
    if not entry.has_prior or likelihood is None:
        return [recon]
    return [ScoreKind(ELBO, f"−ELBO (nats, {likelihood.name} likelihood)", "the model explains the image badly"),
            recon,
            ScoreKind(COMPLEXITY, "−ELBO minus PNG length (bits)",
                      "the model explains the image worse than a generic compressor does")]


def score_kind(entry: ModelEntry, score: str | None = None) -> ScoreKind:
    """The score ``score`` names among the model's (``score_kinds``), its default when None;
    InputError for one the model cannot give."""
    kinds = score_kinds(entry)
    if score is None:
        return kinds[0]
    found = next((k for k in kinds if k.key == score), None)
    if found is None:
        raise InputError(f"score {str(score)[:40]!r} is not one this model gives: {', '.join(k.key for k in kinds)}")
    return found


def png_bits(images: np.ndarray) -> np.ndarray:
    """The PNG-compressed length in bits [N] of uint8 images [N, C, H, W] (the input-complexity
    estimate of Serrà et al. 2020: a generic lossless compressor's code length)."""
    import io

    from PIL import Image

    out = np.empty(len(images), np.float64)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, format="PNG",
                                                                                           compress_level=9)
        out[i] = 8 * len(buffer.getvalue())
    return out


@torch.inference_mode()
def score_table(entry: ModelEntry, images: np.ndarray, labels: np.ndarray | None = None,
                batch_size: int = 512, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The scores ``keys`` (every one the model gives, ``score_kinds``, when None), key -> [N], for
    images [N, C, H, W] (uint8, or float in [0, 1]); higher is more unusual. One pass through the
    model gives the reconstruction error and the −ELBO; the complexity correction also compresses
    every image, so it is computed only when asked for."""
    model, description = decoder_of(entry, "score images with"), entry.description
    given = [kind.key for kind in score_kinds(entry)]
    wanted = given if keys is None else [key for key in given if key in keys]
    likelihood = likelihood_of(model) if ELBO in given else None
    x_all = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    parts: dict[str, list[np.ndarray]] = {RECON: [], ELBO: []}
    for start in range(0, len(x_all), batch_size):
        x = torch.from_numpy(x_all[start:start + batch_size]).to(model.device)
        y = None if labels is None else description.condition.from_labels(
            torch.from_numpy(labels[start:start + batch_size]).to(model.device))
        rec = reconstruct(model, x, y)
        parts[RECON].append((rec.decoded - x).pow(2).flatten(1).mean(1).cpu().numpy())
        if likelihood is not None:
            parts[ELBO].append((-likelihood.log_prob(x, rec.decoded) + rec.kl).float().cpu().numpy())
    table = {key: np.concatenate(parts[key]) if parts[key] else np.zeros(0, np.float32)
             for key in (RECON, ELBO) if key in given}
    if COMPLEXITY in wanted:
        pixels = images if images.dtype == np.uint8 else (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)
        table[COMPLEXITY] = (table[ELBO].astype(np.float64) / np.log(2) - png_bits(pixels)).astype(np.float32)
    return table


def score_images(entry: ModelEntry, images: np.ndarray, labels: np.ndarray | None = None,
                 batch_size: int = 512, score: str | None = None) -> np.ndarray:
    """Anomaly scores [N] of images [N, C, H, W] (uint8, or float in [0, 1]); higher is more unusual.
    ``score``: one of the model's ``score_kinds`` keys (its default when None)."""
    key = score_kind(entry, score).key
    return score_table(entry, images, labels, batch_size, keys=(key,))[key]


_scoring = KeyedLocks()


def _kept_scores(kept: dict[str, np.ndarray], entry: ModelEntry, keys: tuple[str, ...],
                 images: Callable[[], tuple[np.ndarray, np.ndarray | None]]) -> dict[str, np.ndarray]:
    """The scores ``keys`` from ``kept``, the missing ones computed from ``images()`` (images,
    labels) and kept, with whatever else the same pass gave. Single flight per table: the events of
    one lesson ask at once, and the later ones wait for the first one's pass."""
    with _scoring.hold(id(kept)):
        missing = tuple(key for key in keys if key not in kept)
        if missing:
            found, labels = images()
            table = score_table(entry, found, labels, keys=missing)
            kept.update({key: values for key, values in table.items() if key not in kept})
        return {key: kept[key] for key in keys}


def test_scores(entry: ModelEntry, score: str | None = None) -> np.ndarray:
    """Scores [N] of the model's evaluation images, computed once per model and score."""
    key = score_kind(entry, score).key

    def images() -> tuple[np.ndarray, np.ndarray | None]:
        if not entry.has_points or entry.latents.images is None:
            raise InputError(f"no evaluation images to score: {entry.data_note or 'none were given'}")
        return entry.latents.images, entry.latents.labels

    return _kept_scores(entry.derived.anomaly_scores, entry, (key,), images)[key]


def ood_scores(entry: ModelEntry, name: str, data_dir: object = None,
               keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The scores ``keys`` (every one the model gives when None) of dataset ``name``'s images
    (``ood_images``), computed once per model, dataset and score."""
    keys = tuple(kind.key for kind in score_kinds(entry)) if keys is None else keys
    kept = entry.derived.ood_scores.setdefault((name, str(data_dir)), {})
    return _kept_scores(kept, entry, keys, lambda: (ood_images(name, entry.description.image_shape, data_dir), None))


def percentile(scores: np.ndarray, value: float) -> float:
    """The share of ``scores`` (in %) below ``value``: 99 means more unusual than 99 % of them."""
    return float((np.asarray(scores) < value).mean() * 100) if len(scores) else float("nan")


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve of the score telling ``outside`` (positive) from ``inside``: 1 is a
    perfect separation, 0.5 is chance (Mann-Whitney U, as sklearn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    if len(inside) == 0 or len(outside) == 0:
        raise InputError("the out-of-distribution check needs scores of both datasets")
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(truth, np.r_[inside, outside]))


def resize_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images [N, C, H, W] brought to ``shape`` [C, H, W] (greyscale / RGB, box or bilinear)."""
    from PIL import Image

    c, h, w = shape
    out = np.empty((len(images), c, h, w), np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        pil = pil.convert("L" if c == 1 else "RGB")
        shrinking = pil.size[0] > w
        pil = pil.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
        arr = np.asarray(pil)
        out[i] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return out


def ood_datasets(entry: ModelEntry, data_dir: object = None) -> list[str]:
    """The datasets this server has on disk that can serve as out-of-distribution data (not the
    model's own)."""
    from vaescope.training import data

    names = ["digits", "shapes"]
    root = data.Path(data_dir or data.DEFAULT_DATA_DIR).expanduser()
    names += [s.name for s in data.IDX_SOURCES if data._find_idx_files(s.search_dirs(root)) is not None]
    return [n for n in names if n != entry.dataset_name]


def preferred_ood(entry: ModelEntry, data_dir: object = None) -> str | None:
    """The out-of-distribution dataset to show first: Fashion-MNIST (the classic check for a
    digits model) when the server has it, else the first one there is."""
    others = ood_datasets(entry, data_dir)
    return "fashion-mnist" if "fashion-mnist" in others else (others[0] if others else None)


def ood_images(name: str, shape: tuple[int, int, int], data_dir: object = None) -> np.ndarray:
    """Up to OOD_IMAGES test images of dataset ``name`` (one this server knows) resized to ``shape``;
    read-only, read once per dataset, shape and folder."""
    from vaescope.training import data

    if name not in data.DATASETS:
        raise InputError(f"{name!r} is not a dataset this server knows")
    return _resized_test_images(name, tuple(int(v) for v in shape), None if data_dir is None else str(data_dir))


@functools.lru_cache(maxsize=4)
def _resized_test_images(name: str, shape: tuple[int, int, int], data_dir: str | None) -> np.ndarray:
    from vaescope.training import data

    try:
        found = data.load_dataset(name, data_dir=data_dir)
    except data.DatasetError as exc:
        raise InputError(f"{name} is not on this server: {exc}") from None
    images = found.test.images.numpy()
    if len(images) > OOD_IMAGES:
        images = images[np.sort(np.random.default_rng(0).choice(len(images), OOD_IMAGES, replace=False))]
    resized = resize_images(images, shape)
    resized.flags.writeable = False
    return resized


# -- denoising ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Denoised:
    clean: np.ndarray  # [C, H, W] in [0, 1]
    corrupted: np.ndarray
    rebuilt: np.ndarray
    corrupted_error: float  # mean squared error per pixel, to the clean image
    rebuilt_error: float


@torch.inference_mode()
def denoise(entry: ModelEntry, clean: np.ndarray, kind: str, level: float, seed: int = 0,
            label: int | None = None) -> Denoised:
    """Corrupt one clean image [C, H, W] in [0, 1], rebuild it from its code, and measure both."""
    try:
        check_corruption(kind, level)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    model, description = decoder_of(entry, "denoise with"), entry.description
    x = torch.from_numpy(np.asarray(clean, np.float32)[None]).to(model.device)
    noisy = corrupt(x, kind, float(level), torch.Generator(model.device).manual_seed(int(seed)))
    y = description.condition.for_class(label, 1, model.device)
    rebuilt = model.decode(model.encode(noisy, y).mean, y).float()
    error = lambda a: float((a - x).pow(2).mean())  # noqa: E731
    return Denoised(clean, noisy[0].cpu().numpy(), rebuilt[0].cpu().numpy(), error(noisy), error(rebuilt))


@torch.inference_mode()
def breakdown_curve(entry: ModelEntry, kind: str, seed: int = 0) -> tuple[list[float], list[float], list[float]]:
    """Over CURVE_LEVELS: (levels, mean error of the corrupted images, mean error of the model's
    rebuilds) on up to CURVE_IMAGES evaluation images: where the model stops helping."""
    if kind not in CORRUPTIONS:
        raise InputError(f"corruption must be one of {CORRUPTIONS}")
    if not entry.has_points or entry.latents.images is None:
        raise InputError("the breakdown curve needs evaluation images")
    model, description = entry.model, entry.description
    n = min(CURVE_IMAGES, len(entry.latents))
    x = torch.from_numpy(entry.latents.float_images(slice(0, n))).to(model.device)
    y = description.condition.from_labels(torch.from_numpy(entry.latents.labels[:n]).to(model.device))
    corrupted, rebuilt = [], []
    for level in CURVE_LEVELS:
        noisy = corrupt(x, kind, level, torch.Generator(model.device).manual_seed(int(seed)))
        out = model.decode(model.encode(noisy, y).mean, y).float()
        corrupted.append(float((noisy - x).pow(2).mean()))
        rebuilt.append(float((out - x).pow(2).mean()))
    return list(CURVE_LEVELS), corrupted, rebuilt
