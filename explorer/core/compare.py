"""Two models side by side, on the same evaluation images: what each side shows for one request.

Each function takes one model's ``ModelEntry`` and returns plain arrays (images float32
[M, C, H, W] in [0, 1], codes [M, D]) plus words for the page; ``answer`` is the side-by-side
view's action bar in one function (an action's name -> the core function that answers it), called
once per side. Nothing here branches on a family: it asks the contract (a prior, classes,
components).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from vaescope.errors import InputError
from vaescope.explorer.core.codes import decode, decoder_of, index_code, item_noun, prior_codes
from vaescope.explorer.core.diagnostics import kl_panel
from vaescope.explorer.core.dims import dim_info
from vaescope.explorer.core.interpolation import lerp
from vaescope.explorer.core.sampling import component_names
from vaescope.explorer.core.scores import denoise
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.timeline import training_timeline

SAMPLE_COLUMNS = 8  # images per row of a prior-sample grid
SAMPLE_ROWS_MAX = 10  # rows: one per class or component, at most this many
TRAVERSAL_ROWS = 4  # the three most used dims and the least used one
TRAVERSAL_STEPS = 9
INTERPOLATION_STEPS = 8  # the walk between two picks (the interpolation lesson measures the same steps)
POSTERIOR_SAMPLES = 48  # codes drawn from q(z|x) for the reparameterisation view
KL_DEAD = 0.01  # nats: a dimension below this carries (almost) nothing
# one image's posterior samples on a map: a colour no class colouring uses, with a dark rim
CLOUD = {"symbol": "circle", "size": 9, "color": "rgba(255, 215, 0, 0.95)", "line": {"color": "black", "width": 1.5}}
DENOISE = ("gaussian", 0.5)  # the corruption the side-by-side view's denoise button applies
ACTIONS = {"samples": "Prior samples", "interpolate": "Interpolate the last two picks",
           "traverse": "Traverse from the pick", "posterior": "Posterior samples of the pick",
           "denoise": "Denoise the pick", "kl": "KL per dimension", "timeline": "Play the training"}


@dataclass(frozen=True)
class Rows:
    """Images [M, C, H, W] laid out ``columns`` a row, a label per row, and a note in words."""

    images: np.ndarray
    columns: int
    row_labels: list[str]
    note: str
    codes: np.ndarray | None = None  # [M, D] the codes decoded, when they belong on the map


def default_pair(names: Sequence[str], preferred: Sequence[Sequence[str]],
                 first: Callable[[], str | None]) -> tuple[str | None, str | None]:
    """The two models the side-by-side view opens with, among the listed ``names``:

    1. the first of the ``preferred`` pairs (the side-by-side lessons' models, in their order) whose
       two models are both listed: on the shipped models, lesson 1's mnist/ae and mnist/vae;
    2. else ``first()`` (the Explore page's first model) on side A and, on side B, the first other
       model by name in A's folder (on the shipped layout, a sibling on the same dataset), else the
       first other model listed;
    3. one model: it on side A, nothing on side B; none: nothing on either.

    ``first`` is called only when rule 1 finds no pair (it may read checkpoint headers).

    Examples:
        >>> default_pair(["mnist/ae.safetensors", "mnist/vae.safetensors", "x.safetensors"],
        ...              [("mnist/ae.safetensors", "mnist/vae.safetensors")], lambda: "x.safetensors")
        ('mnist/ae.safetensors', 'mnist/vae.safetensors')
        >>> default_pair(["d/ae", "d/vae", "e/vae"], [], lambda: "d/vae")
        ('d/vae', 'd/ae')
    """
    listed = list(names)
    for pair in preferred:
        if len(pair) == 2 and pair[0] != pair[1] and all(name in listed for name in pair):
            return pair[0], pair[1]
    if not listed:
        return None, None
    a = first()
    a = a if a in listed else listed[0]
    others = [name for name in listed if name != a]
    folder = PurePosixPath(a).parent
    siblings = [name for name in others if PurePosixPath(name).parent == folder]
    return a, (siblings or others or [None])[0]


@dataclass(frozen=True)
class Answer:
    """One model's answer to one action: words, and images (``rows``) or a chart (``figure``), and
    codes to place on that model's map by trace name ("path", "cloud", "you are here")."""

    kind: str  # the action (a key of ACTIONS)
    note: str
    rows: Rows | None = None
    figure: go.Figure | None = None
    overlay: dict[str, Any] = field(default_factory=dict)


def answer(kind: str, entry: ModelEntry, picks: Sequence[int]) -> Answer:
    """Action ``kind`` on one model, from the evaluation images last clicked (``picks``, oldest
    first; the first image when there is none). Raises InputError, in words for the page, when this
    model cannot answer (no decoder, no training record, fewer than two picks to interpolate).

    Examples:
        >>> answer("interpolate", entry, [3, 30]).rows.images.shape[0]  # doctest: +SKIP
        10
    """
    if kind == "kl":
        figure, notes = kl_panel(entry)
        return Answer(kind, " ".join(notes[:2]), figure=figure)
    if kind == "timeline":
        figure, words = training_timeline(entry)
        return Answer(kind, words, figure=figure)
    if kind not in ACTIONS:
        raise InputError(f"unknown action {kind!r}")
    decoder_of(entry)  # precomputed codes: there is no decoder, nothing to answer with
    last = picks[-1] if picks else 0
    if kind == "samples":
        return Answer(kind, (rows := prior_rows(entry)).note, rows)
    if kind == "interpolate":
        if len(picks) < 2:
            raise InputError("click two points on a map first: the interpolation joins the last two picks")
        rows = interpolation_rows(entry, picks[-2], picks[-1])
        return Answer(kind, rows.note, rows, overlay={"path": rows.codes})
    if kind == "traverse":
        return Answer(kind, (rows := traversal_rows(entry, last)).note, rows)
    if kind == "posterior":
        rows = posterior_rows(entry, last)
        overlay: dict[str, Any] = {"you are here": [entry.latents.mean[last]]}
        if entry.latents.std[last].any():  # a deterministic encoder has no cloud to draw
            overlay["cloud"] = rows.codes
        return Answer(kind, rows.note, rows, overlay=overlay)
    return Answer(kind, (rows := denoise_rows(entry, last)).note, rows)


def same_images(a: ModelEntry, b: ModelEntry) -> str | None:
    """None when both models were encoded on the same evaluation images (a click names the same
    image on both sides); else why not, in words."""
    if not (a.has_points and b.has_points):
        return "one of the models has no evaluation images"
    if len(a.latents) != len(b.latents) or a.dataset_name != b.dataset_name:
        return (f"the models were evaluated on different images ({len(a.latents):,} of {a.dataset_name} and "
                f"{len(b.latents):,} of {b.dataset_name}): a click shows image # of each side's own set")
    if a.latents.images is not None and b.latents.images is not None and not np.array_equal(
            a.latents.images[:64], b.latents.images[:64]):
        return "the models' evaluation images differ: a click shows image # of each side's own set"
    return None


def prior_rows(entry: ModelEntry, seed: int = 0) -> Rows:
    """Prior samples: a row per class (a decoder that takes the class) or per mixture component,
    else four rows of the prior."""
    description = entry.description
    decoder_of(entry, "sample")
    plan = description.condition.prior_rows(description.class_name, component_names(entry), SAMPLE_ROWS_MAX)
    if plan:
        images = [decode(entry, prior_codes(entry, SAMPLE_COLUMNS, seed + k, condition=row.component), row.decoder_class)
                  for k, row in enumerate(plan)]
        how = ("a row per mixture component" if plan[0].component is not None
               else "a row per class the decoder is given")
        return Rows(np.concatenate(images), SAMPLE_COLUMNS, [row.label for row in plan], f"prior samples, {how}")
    z = prior_codes(entry, SAMPLE_COLUMNS * 4, seed)
    note = "prior samples: codes drawn from p(z), decoded"
    if not entry.has_prior:
        note += f" ({description.prior_note or 'this model has no prior: codes from N(0, I)'})"
    return Rows(decode(entry, z, None), SAMPLE_COLUMNS, [""] * 4, note, z)


def interpolation_rows(entry: ModelEntry, start: int, end: int, steps: int = INTERPOLATION_STEPS) -> Rows:
    """The straight line between the codes of evaluation images ``start`` and ``end``, decoded."""
    a, b = index_code(entry, start), index_code(entry, end)
    codes = lerp(a.z, b.z, steps).astype(np.float32)
    images = decode(entry, codes, a.y)
    jumps = np.sqrt(((images[1:] - images[:-1]) ** 2).reshape(steps - 1, -1).mean(1))
    note = (f"test {item_noun(entry)} #{start} → #{end} in {steps} steps · largest change between neighbouring frames "
            f"{jumps.max():.3f} (rms per pixel; {jumps.max() / max(jumps.mean(), 1e-9):.1f}× the mean step)")
    return Rows(images, steps, [""], note, codes)


def traversal_rows(entry: ModelEntry, index: int, steps: int = TRAVERSAL_STEPS, span: float = 3.0) -> Rows:
    """From the code of evaluation image ``index``: its three most used dimensions and its least used
    one, each swept over ±``span`` prior sd (the model's prior spread; for a prior-less model the
    codes' spread), with the KL each carries in the row label."""
    code = index_code(entry, index)
    info = dim_info(entry)
    order = list(info.order)
    dims = order[:TRAVERSAL_ROWS - 1] + ([order[-1]] if len(order) >= TRAVERSAL_ROWS else [])
    spread = np.maximum(entry.latents.mean.std(0), 1e-6) if info.kl is None else np.ones(len(code.z))
    center = np.zeros_like(code.z) if info.kl is not None else entry.latents.mean.mean(0)
    codes, labels = [], []
    for d in dims:
        values = center[d] + np.linspace(-span, span, steps) * spread[d]
        block = np.repeat(code.z[None], steps, 0)
        block[:, d] = values
        codes.append(block)
        usage = f"KL {info.kl[d]:.2f} nats" if info.kl is not None else f"spread {spread[d]:.2f}"
        dead = " (unused)" if (info.kl is not None and info.kl[d] < KL_DEAD) or not info.active[d] else ""
        labels.append(f"z{d} · {usage}{dead}")
    z = np.concatenate(codes).astype(np.float32)
    note = (f"from test {item_noun(entry)} #{index}: the 3 most used dimensions and the least used one, each from "
            f"-{span:g} to +{span:g} " + ("prior sd" if info.kl is not None else "sd of the codes"))
    return Rows(decode(entry, z, code.y), steps, labels, note)


def posterior_rows(entry: ModelEntry, index: int, n: int = POSTERIOR_SAMPLES, seed: int = 0) -> Rows:
    """The reparameterisation trick for evaluation image ``index``: z = mu + sigma * eps, eps ~ N(0, I),
    n codes from q(z|x) and their decoded images; the note gives the posterior's spread."""
    code = index_code(entry, index)
    std = entry.latents.std[index].astype(np.float32)
    eps = torch.randn(n, len(std), generator=torch.Generator().manual_seed(int(seed))).numpy()
    codes = (code.z[None] + eps * std[None]).astype(np.float32)
    note = (f"{n} codes z = μ + σ·ε from q(z|x) of test {item_noun(entry)} #{index} · mean σ over the used dimensions "
            f"{posterior_spread(entry, index):.2f} (the prior's is 1)")
    if not std.any():
        note = f"test {item_noun(entry)} #{index}: this model's encoder is deterministic (σ = 0): every sample is the same code"
    return Rows(decode(entry, codes, code.y), SAMPLE_COLUMNS, [""] * (n // SAMPLE_COLUMNS), note, codes)


def denoise_rows(entry: ModelEntry, index: int, kind: str = DENOISE[0], level: float = DENOISE[1]) -> Rows:
    """Evaluation image ``index`` clean, corrupted by ``kind`` noise at ``level``, and rebuilt from the
    code of the corrupted image: one row of three, with both errors in the note."""
    code = index_code(entry, index)
    out = denoise(entry, code.image, kind, level, seed=0, label=code.y)
    return Rows(np.stack([out.clean, out.corrupted, out.rebuilt]), 3, [""],
                f"test {item_noun(entry)} #{index}: clean · with {kind} noise (level {level}) · rebuilt from its code · "
                f"error {out.corrupted_error:.4f} → {out.rebuilt_error:.4f} (mean squared, per pixel)")


def posterior_spread(entry: ModelEntry, index: int | None = None) -> float:
    """The mean posterior sd over the used dimensions (0: deterministic): of evaluation image
    ``index``, or over all of them. The posterior panel's note and the lessons quote this one figure."""
    active = dim_info(entry).active
    std = entry.latents.std if index is None else entry.latents.std[int(index)][None]
    return float((std[:, active] if active.any() else std).mean())
