"""What the sliders need to know about a model's latent dimensions: their order, how much each one
is used, their ranges and names. Computed once per model (``entry.derived``): a slider move asks
every time.

A spatial code (``Description.latent_shape``, e.g. a diffusers VAE's 4 x 8 x 8) is flattened to [D]
like any other, its values named by channel and position ("c2 (3,5)"), and it gets channel pages
too (``CHANNELS``): one slider per channel, which moves that channel's whole map by a common offset
from where the code started (one value of 256 barely changes the image; a channel does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaescope.contract import Description, LatentGroup
from vaescope.explorer.core import traversal
from vaescope.explorer.core.codes import prior_codes
from vaescope.explorer.core.store import ModelEntry
from vaescope.training.metrics import active_dims

SLIDERS = 16  # sliders on screen; wider models page through their dims, most used first
CHANNELS = "channels"  # the page value's prefix for channel-wise sliders ("channels:0"), spatial codes only
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
    hierarchical model's layers), most used first. The value is "group:page". A spatial code's
    channel pages come first (the default): one slider per channel, value "channels:page"."""
    choices = []
    description = entry.description
    if description.spatial:
        c, where = description.latent_shape[0], "×".join(str(s) for s in description.latent_shape[1:])
        for page in range(-(-c // SLIDERS)):
            shown = f"{page * SLIDERS + 1}–{min(c, (page + 1) * SLIDERS)} of {c}" if c > SLIDERS else f"all {c}"
            choices.append((f"channels ({shown}): one slider moves a whole {where} map", f"{CHANNELS}:{page}"))
    groups = description.latent_groups
    for group in groups:
        for page in range(-(-group.size // SLIDERS)):
            dims = f"dims {page * SLIDERS + 1}–{min(group.size, (page + 1) * SLIDERS)} of {group.size}"
            label = f"layer {group.name} · {dims}" if len(groups) > 1 else dims
            choices.append((f"{label} (one value each)" if description.spatial else label, f"{group.name}:{page}"))
    return choices


def page_channels(entry: ModelEntry, value: object) -> np.ndarray | None:
    """The channels a channel page shows (SLIDERS a page), or None when ``value`` names no channel
    page of this model (a dims page, a flat code, a request value from outside)."""
    name, _, page = str(value or "").partition(":")
    if name != CHANNELS or not entry.description.spatial:
        return None
    c = entry.description.latent_shape[0]
    try:
        number = min(max(int(page), 0), (c - 1) // SLIDERS)
    except ValueError:
        number = 0
    return np.arange(number * SLIDERS, min(c, (number + 1) * SLIDERS))


def channel_values(entry: ModelEntry, channel: int) -> slice:
    """Where channel ``channel`` of a spatial code lies in the flattened code [D]."""
    size = math.prod(entry.description.latent_shape[1:])
    return slice(channel * size, (channel + 1) * size)


def channel_offset(entry: ModelEntry, z: np.ndarray, z0: np.ndarray, channel: int) -> float:
    """How far channel ``channel`` of z [D] has moved from the start code z0 [D]: the mean offset."""
    where = channel_values(entry, channel)
    return float(np.mean(np.asarray(z[where], np.float64) - np.asarray(z0[where], np.float64)))


def shift_channel(entry: ModelEntry, z: np.ndarray, z0: np.ndarray, channel: int, offset: float) -> np.ndarray:
    """A copy of z [D] whose channel ``channel`` is moved, all of its values by one amount, so that
    its mean offset from z0 becomes ``offset`` (edits made to single values ride along)."""
    out = np.array(z, np.float32, copy=True)
    out[channel_values(entry, channel)] += np.float32(offset - channel_offset(entry, z, z0, channel))
    return out


def channel_bounds(entry: ModelEntry, mode: str, z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (lo [C], hi [C]) of the offset from z0: what moves the channel's mean from its
    values' mean lower bound to their mean upper bound (``slider_bounds``)."""
    lo, hi = slider_bounds(entry, mode)
    c = entry.description.latent_shape[0]
    base = np.asarray(z0, np.float64).reshape(c, -1).mean(1)
    return lo.reshape(c, -1).mean(1) - base, hi.reshape(c, -1).mean(1) - base


def channel_codes(entry: ModelEntry, z: np.ndarray, z0: np.ndarray, channels: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, steps: int) -> np.ndarray:
    """Codes [len(channels) * steps, D], row-major (channel, step): z with channel ``channels[i]``
    at ``steps`` offsets from lo to hi (``channel_bounds``) from z0."""
    return np.stack([shift_channel(entry, z, z0, int(c), float(v)) for c in channels
                     for v in np.linspace(lo[c], hi[c], steps)])


def channel_label(entry: ModelEntry, info: DimInfo, channel: int) -> str:
    """A channel slider's label: the channel, how many values it moves, and how much it is used."""
    where = channel_values(entry, channel)
    label = f"c{channel} · whole channel ({where.stop - where.start} values)"
    values = info.kl if info.kl is not None else info.spread
    if values is not None:
        label += f" · {info.score_name} {float(np.sum(values[where])):.2f} in all"
    return label


def code_scale(entry: ModelEntry) -> float:
    """The colour scale of a code's channel maps: the largest slider bound (3 for a N(0, I) prior)."""
    lo, hi = slider_bounds(entry, default_range(entry))
    return float(max(np.abs(lo).max(), np.abs(hi).max(), 1e-3))


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
    # A standard normal prior gets the exact ±3 sd, not its sampled estimate. The estimate of a 0.13 %
    # quantile from 20,000 draws has a standard error of about 0.06, so over the hundreds of values of
    # a wide code (a diffusers VAE's 256) some stray past 0.15: there the mean error decides.
    error = np.abs(np.concatenate([lo - standard[0], hi - standard[1]]))
    if error.max() <= 0.15 or (error.max() <= 0.35 and error.mean() <= 0.08):
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


def slider_label(info: DimInfo, d: int, name: str | None = None) -> str:
    """A slider's label: the dimension (``name``, e.g. "c2 (3,5)" for a spatial code; else "z{d}"),
    how much it is used, and a clear mark when it changes nothing."""
    label = name or f"z{d}"
    if info.score_name:
        label += f" · {info.score_name} {info.score(d):.2f}"
    if info.dead(d):
        label += " · unused (changes nothing)"
    elif info.active is not None and not info.active[d]:
        label += " · barely used"
    return label


def flattened_note(description: Description) -> str:
    """What a map of a spatial code is a map of, in words ("" for a flat code): maps, neighbours and
    selections use the whole code flattened to [D]."""
    if not description.spatial:
        return ""
    shape = "×".join(str(s) for s in description.latent_shape)
    return f" The map places each image by its whole {shape} code, flattened to {description.latent_dim} values."
