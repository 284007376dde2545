"""What the sliders need to know about a model's latent dimensions: their order, how much each one
is used, and their ranges. Computed once per model (``entry.derived``): a slider move asks every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaescope.contract import LatentGroup
from vaescope.explorer.core import traversal
from vaescope.explorer.core.codes import prior_codes
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.metrics import active_dims

SLIDERS = 16  # sliders on screen; wider models page through their dims, most used first
SLIDER_STEPS = 200  # slider resolution across its range
PRIOR_RANGE_SAMPLES = 20_000  # prior samples whose quantiles bound the sliders of a non-standard prior
KL_DEAD = 0.01  # nats: below this mean KL a dimension carries (almost) no information about the image


@dataclass(frozen=True)
class DimInfo:
    """Per latent dimension [D]: the order the sliders show them in and how much each is used."""

    order: np.ndarray  # [D] dims, most informative first
    kl: np.ndarray | None  # [D] mean KL from the prior, nats (None: the model has no prior to measure)
    spread: np.ndarray | None  # [D] variance of the posterior means over the images (None: no images)
    active: np.ndarray | None  # [D] bool: Burda's active units, Var_x E[z_d|x] > 0.01 (None: no images)

    @property
    def score_name(self) -> str:
        return "KL" if self.kl is not None else "var" if self.spread is not None else ""

    def score(self, d: int) -> float:
        values = self.kl if self.kl is not None else self.spread
        return float(values[d]) if values is not None else 0.0

    def dead(self, d: int) -> bool:
        """True when dimension d changes nothing the model uses: its mean KL is about zero, or
        (without a prior) its code does not vary over the images."""
        if self.kl is not None:
            return bool(self.kl[d] < KL_DEAD)
        return self.active is not None and not bool(self.active[d])


def dim_info(entry: ModelEntry) -> DimInfo:
    """The dimension order and scores of a model, computed once per entry."""
    derived = entry.derived
    if derived.dim_info is None:
        derived.dim_info = _dim_info(entry)
    return derived.dim_info


def _dim_info(entry: ModelEntry) -> DimInfo:
    d = entry.description.latent_dim
    latents = entry.latents
    if latents is None or len(latents) == 0:
        return DimInfo(np.arange(d), None, None, None)
    spread = latents.mean.var(axis=0)
    active = active_dims(latents.mean)
    if entry.has_prior and float(latents.kl_per_dim.sum()) > 0:
        return DimInfo(traversal.dimension_order(latents.kl_per_dim), latents.kl_per_dim, spread, active)
    return DimInfo(traversal.dimension_order(spread), None, spread, active)  # no prior: order by spread


def page_choices(entry: ModelEntry) -> list[tuple[str, str]]:
    """The slider pages, as (label, value): SLIDERS dims a page, within each latent group (a
    hierarchical model's layers), most used first. The value is "group:page"."""
    choices = []
    groups = entry.description.latent_groups
    for group in groups:
        for page in range(-(-group.size // SLIDERS)):
            dims = f"dims {page * SLIDERS + 1}–{min(group.size, (page + 1) * SLIDERS)} of {group.size}"
            choices.append((f"layer {group.name} · {dims}" if len(groups) > 1 else dims, f"{group.name}:{page}"))
    return choices


def parse_page(value: object, entry: ModelEntry) -> tuple[LatentGroup, int]:
    """(the latent group, the page number) a page value names; the first group's first page for
    anything else (a request value from outside)."""
    groups = entry.description.latent_groups
    name, _, page = str(value or "").partition(":")
    group = next((g for g in groups if g.name == name), groups[0])
    try:
        number = int(page)
    except ValueError:
        number = 0
    return group, min(max(number, 0), (group.size - 1) // SLIDERS)


def page_dims(entry: ModelEntry, value: object) -> np.ndarray:
    """The dims shown on a slider page: the group's dims in the model's order, SLIDERS a page."""
    group, page = parse_page(value, entry)
    order = dim_info(entry).order
    inside = order[(order >= group.start) & (order < group.start + group.size)]
    return inside[page * SLIDERS:(page + 1) * SLIDERS]


def default_range(entry: ModelEntry) -> str:
    """Slider range a model opens with: its prior's, or the data's when it has no prior (an AE)."""
    return "prior" if entry.has_prior or not entry.has_points else "data"


def slider_bounds(entry: ModelEntry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim (lo, hi): the data's min-max, or the prior's 0.13 % / 99.87 % quantiles (± 3 sd of a
    standard normal). Computed once per entry and mode."""
    mode = "data" if mode == "data" and entry.has_points else "prior"
    kept = entry.derived.slider_bounds
    if mode not in kept:
        kept[mode] = _slider_bounds(entry, mode)
    return kept[mode]


def _slider_bounds(entry: ModelEntry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    if mode == "data":
        return traversal.slider_ranges("data", entry.latents.mean)
    z = prior_codes(entry, PRIOR_RANGE_SAMPLES, seed=0)
    lo, hi = np.quantile(z, 0.00135, axis=0), np.quantile(z, 0.99865, axis=0)
    standard = traversal.slider_ranges("prior", None, latent_dim=entry.description.latent_dim)
    # a standard normal prior gets the exact ±3 sd, not its sampled estimate
    if np.allclose(lo, standard[0], atol=0.15) and np.allclose(hi, standard[1], atol=0.15):
        return standard
    return lo.astype(np.float32), hi.astype(np.float32)


def nice_bounds(lo: float, hi: float, value: float) -> tuple[float, float, float]:
    """Slider (min, max, step) covering [lo, hi] and ``value``, on a round step grid."""
    lo, hi = min(lo, value), max(hi, value)
    span = max(hi - lo, 1e-3)
    raw = span / SLIDER_STEPS
    mag = 10 ** np.floor(np.log10(raw))
    step = float(mag * min((s for s in (1, 2, 5, 10) if s * mag >= raw), default=10))
    decimals = max(0, int(-np.floor(np.log10(step))) + 1)
    return (round(float(np.floor(lo / step) * step), decimals), round(float(np.ceil(hi / step) * step), decimals),
            step)


def slider_label(info: DimInfo, d: int) -> str:
    """A slider's label: the dimension, how much it is used, and a clear mark when it changes nothing."""
    label = f"z{d}"
    if info.score_name:
        label += f" · {info.score_name} {info.score(d):.2f}"
    if info.dead(d):
        label += " · unused (changes nothing)"
    elif info.active is not None and not info.active[d]:
        label += " · barely used"
    return label
