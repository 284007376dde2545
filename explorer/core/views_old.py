"""What the page shows for a loaded model and a session's state: the model card, the model-dependent
controls, the traversal's sliders and image, the latent map, the diagnostics.

Each function takes a ``ModelEntry`` (and session state) and returns component values: markdown,
plotly figures, PIL images, ``gr.Slider`` / ``gr.Dropdown`` updates. They read files nowhere and
keep no state beyond a per-entry memo of what never changes for a model (``entry.memo``).
"""

from __future__ import annotations

import io
import textwrap
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from vaescope.explorer import figures, traversal
from vaescope.explorer.codes import class_name, class_names, decode, endpoint_image, prior_samples
from vaescope.explorer.loading import ModelEntry
from vaescope.explorer.session import Code, MapView
from vaescope.training.metrics import ACTIVE_UNIT_THRESHOLD, active_dims

SLIDERS = 16  # sliders on screen; wider models page through their dims, highest KL first
PREVIEW_PX = 224  # single images are upscaled (nearest) to about this size
SLIDER_STEPS = 200  # slider resolution across its range
STRIP_PX = 64  # cell size of interpolation strips and class rows
GRID_PX = 48  # cell size of traversal and diagnostics grids
PRIOR_OVERLAY_POINTS = 300
MIXTURE_RANGE_SAMPLES = 20_000  # prior samples whose quantiles bound a mixture prior's sliders
COLOR_LABELS = {"class": "class", "component": "GMVAE component", "recon": "reconstruction error",
                "kl": "KL per point"}
CARD_METRICS = [("ELBO", "elbo", " nats"), ("NLL (IWAE)", "nll_iwae", " nats"), ("recon", "recon", " nats"),
                ("KL", "kl", " nats"), ("active units", "active_units", " of {d}"),
                ("probe accuracy", "probe_accuracy", ""), ("clustering accuracy", "cluster_accuracy", ""),
                ("NMI", "nmi", "")]
PICK_HINT = "Click a point on the map to see it here and traverse from it."  # the empty picked panel


# -- small helpers ------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; anything else as it is."""
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def scale_for(image: np.ndarray) -> int:
    """Nearest-neighbour upscaling factor that brings a [C, H, W] image near PREVIEW_PX."""
    return max(1, PREVIEW_PX // max(image.shape[-2:]))


def grid_scale(images: np.ndarray, cell_px: int = GRID_PX) -> int:
    """Upscaling for grids: small images (8x8 digits) need it to be visible at all."""
    return max(1, cell_px // max(images.shape[-2:]))


def served(image: np.ndarray | Image.Image) -> Image.Image:
    """A copy of an output image (PIL, or uint8 [H, W, 3]) tagged with a one-off PNG text chunk.

    Gradio 6 caches an output image under the hash of its PNG bytes and rewrites that file in
    place on every response (processing_utils.save_pil_to_cache). When two requests return the
    same picture at once (every user opening one model gets the same diagnostics grids), one
    client's download raced the other's rewrite: "peer closed connection without sending complete
    message body". The tag makes each response's bytes, hence its file, its own.
    """
    pil = image.copy() if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.info["vaescope-response"] = uuid.uuid4().hex
    return pil


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG file bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def subsample(n: int, max_points: int) -> np.ndarray:
    """Sorted indices of a seeded subset of size ``max_points`` (all n when 0 or >= n)."""
    if max_points <= 0 or max_points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def path_codes(ends: dict | None) -> np.ndarray | None:
    """The last interpolation path [S, D] of the endpoints state, if any."""
    return None if not ends else ends.get("path")


# -- the model card and the controls that depend on the model ----------------------------------
def model_card(entry: ModelEntry) -> str:
    """Markdown, three short lines: what the model is, what it learnt from, its key metrics and device."""
    meta, cfg = entry.loaded.meta, entry.loaded.meta.model_config
    ds = meta.dataset or {}
    shape = "×".join(str(v) for v in ds.get("image_shape") or cfg.image_shape)
    kind = cfg.model_type.upper() + (f" (β = {cfg.beta:g})" if cfg.beta != 1 and cfg.model_type != "ae" else "")
    if cfg.model_type == "gmvae":
        kind += f", K = {cfg.num_components}"
    classes = ds.get("class_names") or []
    data = f"**{ds.get('name', '?')}**" + (f", {len(entry.latents)} test images" if entry.latents is not None
                                           else "") + (f", {len(classes)} classes" if classes else "")
    metrics = card_metrics(meta.metrics or {}, cfg.latent_dim)
    return "\n\n".join([
        f"### {entry.loaded.name}",
        f"**{kind}** ({cfg.arch}, {cfg.likelihood}) · trained on {data} · image size **{shape}** · "
        f"latent dim **{cfg.latent_dim}** · {len(meta.history)} epochs · device **{entry.loaded.device}**",
        " · ".join(metrics) if metrics else "no metrics in this checkpoint"])


def card_metrics(metrics: dict[str, Any], latent_dim: int) -> list[str]:
    """The checkpoint's final metrics that it has, as "label **value** unit" strings."""
    return [f"{label} **{int(metrics[k]) if k == 'active_units' else fmt(metrics[k])}**{unit.format(d=latent_dim)}"
            for label, k, unit in CARD_METRICS if metrics.get(k) is not None]


def data_note(entry: ModelEntry) -> str:
    """Why the map is missing (markdown), or "" when the test images are there."""
    if not entry.data_note:
        return ""
    return (f"⚠️ **{entry.data_note}.** The map, dataset indices and per-class statistics need the "
            f"test images; traversal, sampling and interpolation of uploaded images still work.")


def model_controls(entry: ModelEntry, y: int | None) -> list[Any]:
    """Updates for the colour / overlay / class / page / sampling controls that depend on the model.

    ``y`` is the class the opening code decodes with (a CVAE's), which the class dropdown shows.
    """
    model = entry.loaded.model
    k = model.num_components
    names = class_names(entry)
    colors = [(COLOR_LABELS["class"], "class")] if names else []
    colors += [(COLOR_LABELS["component"], "component")] if k else []
    colors += [(COLOR_LABELS["recon"], "recon"), (COLOR_LABELS["kl"], "kl")]
    overlays = [("none", "none"), ("prior samples" + (" (mixture)" if k else ""), "prior")]
    overlays += [(f"prior of component {j}", f"prior:{j}") for j in range(k)]
    class_choices = [(n, i) for i, n in enumerate(names)]
    sample_choices = class_choices or [(f"component {j}", j) for j in range(k)]
    d = model.config.latent_dim
    pages = [(f"dims {p * SLIDERS + 1}–{min(d, (p + 1) * SLIDERS)} of {d}", p) for p in range(-(-d // SLIDERS))]
    return [gr.Dropdown(choices=colors, value=colors[0][1]), gr.Dropdown(choices=overlays, value="none"),
            gr.Dropdown(choices=class_choices, value=y if class_choices else None, visible=model.is_conditional),
            gr.Dropdown(choices=pages, value=0, visible=d > SLIDERS),
            gr.Dropdown(choices=sample_choices, value=sample_choices[0][1] if sample_choices else None),
            gr.Group(visible=model.is_conditional), default_range(entry)]


def class_choice(entry: ModelEntry, code: Code) -> Any:
    """The "Decode as class" dropdown set to the class ``code`` decodes with (a CVAE), else untouched.

    Sent with every new start code (an index, a map point, a prior sample, an upload): a test image
    decodes under its own class, which the dropdown would otherwise not show.
    """
    return gr.Dropdown(value=code.y) if entry.loaded.model.is_conditional else gr.skip()


def default_range(entry: ModelEntry) -> str:
    """Slider range a model opens with: its prior's, or the data's when there is no prior to speak of (AE)."""
    return "data" if dim_info(entry).score_name == "var" else "prior"


# -- dimensions and sliders ---------------------------------------------------------------------
@dataclass(frozen=True)
class DimInfo:
    order: np.ndarray  # [D] dims, most informative first
    score: np.ndarray  # [D] KL per dim (or code variance for a model without KL)
    active: np.ndarray | None  # [D] bool: Burda's active units, as on the model card; None without data
    score_name: str


def dim_info(entry: ModelEntry) -> DimInfo:
    """The dimension order and scores of a model, computed once per entry (every slider move asks)."""
    memo = entry.memo.get("dim_info")
    if memo is None:
        memo = entry.memo["dim_info"] = _dim_info(entry)
    return memo


def _dim_info(entry: ModelEntry) -> DimInfo:
    d = entry.loaded.model.config.latent_dim
    lat = entry.latents
    if lat is None or len(lat) == 0:
        return DimInfo(np.arange(d), np.zeros(d), None, "")
    active = active_dims(lat.mean)
    if float(lat.kl_per_dim.sum()) > 0:
        return DimInfo(traversal.dimension_order(lat.kl_per_dim), lat.kl_per_dim, active, "KL")
    var = lat.mean.var(axis=0)  # an AE has no KL: order by how much the codes spread instead
    return DimInfo(traversal.dimension_order(var), var, active, "var")


def page_dims(order: np.ndarray, page: int) -> np.ndarray:
    """The dims shown on slider page ``page`` (SLIDERS per page)."""
    return order[page * SLIDERS:(page + 1) * SLIDERS]


def slider_bounds(entry: ModelEntry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim (lo, hi): the data's min-max, or the prior's ±3 sd (a mixture prior: its 0.13/99.87%).

    Computed once per entry and mode: the mixture's quantiles take 20k prior samples.
    """
    mode = "data" if mode == "data" and entry.latents is not None else "prior"
    memo = entry.memo.get(("slider_bounds", mode))
    if memo is None:
        memo = entry.memo[("slider_bounds", mode)] = _slider_bounds(entry, mode)
    return memo


def _slider_bounds(entry: ModelEntry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    model = entry.loaded.model
    if mode == "data":
        return traversal.slider_ranges("data", entry.latents.mean)
    if model.num_components:
        gen = torch.Generator(model.device).manual_seed(0)
        with torch.inference_mode():
            z = model.prior_sample(MIXTURE_RANGE_SAMPLES, None, gen).cpu().numpy()
        return np.quantile(z, 0.00135, axis=0), np.quantile(z, 0.99865, axis=0)
    return traversal.slider_ranges("prior", None, latent_dim=model.config.latent_dim)


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


def slider_update(info: DimInfo, d: int, lo: float, hi: float, value: float) -> Any:
    """The slider of dim ``d``: a round range around [lo, hi] and the value, labelled with its score."""
    mn, mx, step = nice_bounds(lo, hi, value)
    label = f"z{d}"
    if info.score_name:
        label += f" · {info.score_name} {info.score[d]:.2f}"
    if info.active is not None and not info.active[d]:
        label += " · inactive"
    shown = min(max(round(value, 4), mn), mx)  # shown rounded; the state keeps the exact code
    return gr.Slider(minimum=mn, maximum=mx, step=step, value=shown, label=label, visible=True)


def traversal_view(entry: ModelEntry, code: Code, page: int | None, range_mode: str) -> list[Any]:
    """[code state, decoded image, info, SLIDERS slider updates] for a code on a dimension page."""
    info = dim_info(entry)
    dims = page_dims(info.order, int(page or 0))
    lo, hi = slider_bounds(entry, range_mode or "prior")
    sliders = [slider_update(info, int(d), float(lo[d]), float(hi[d]), float(code.z[d])) for d in dims]
    sliders += [gr.Slider(visible=False) for _ in range(SLIDERS - len(sliders))]
    image = decode(entry, code.z, code.y)[0]
    shown = served(figures.to_pil(image, scale_for(image)))
    return [code.with_note_error(False), shown, traversal_note(entry, code), *sliders]


def traversal_note(entry: ModelEntry, code: Code) -> str:
    """The note under the traversal image: where the code came from and the class it is decoded as."""
    text = f"From {code.source}"
    if code.y is not None and entry.loaded.model.is_conditional:
        text += f" · decoded as class {class_name(entry, code.y)}"
    return text


# -- the latent map -----------------------------------------------------------------------------
def map_figure(entry: ModelEntry, view: MapView, overlay: str, path: np.ndarray | None) -> go.Figure:
    """The latent map of a view: coloured points, an optional prior overlay and interpolation path.

    The data traces' customdata is rewritten from row numbers to test-set indices, so a click names
    the same image whether or not the map was downsampled.
    """
    idx, proj = view.indices, view.projection
    color, kind, hover = map_colors(entry, view)
    over, over_name = prior_overlay(entry, view, overlay)
    path_xy = None if path is None else proj.transform(np.asarray(path, np.float32))
    title = f"{view.title} · colour: {COLOR_LABELS.get(view.color_by, view.color_by)}"
    fig = figures.latent_map(proj.coords, color, kind, hover, title=title, overlay=over,
                             overlay_name=over_name, path=path_xy)
    for trace in fig.data:
        if trace.customdata is not None:
            trace.customdata = idx[np.asarray(trace.customdata, np.int64)]
    fig.update_layout(height=520 if proj.dims == 2 else 600)
    return fig


def map_colors(entry: ModelEntry, view: MapView) -> tuple[np.ndarray, str, list[str] | None]:
    """(colour value per plotted point, "categorical" / "continuous", hover labels) of a view."""
    lat, idx = entry.latents, view.indices
    assert lat is not None
    labels = lat.labels[idx]
    if view.color_by == "component" and lat.component_probs is not None:
        k = lat.component_probs.shape[1]
        color, kind, hover = lat.component_probs[idx].argmax(1), "categorical", [f"component {j}" for j in range(k)]
    elif view.color_by in ("recon", "kl"):
        color = (lat.recon_error if view.color_by == "recon" else lat.kl)[idx]
        hover = [f"test #{i} · {class_name(entry, int(c))}" for i, c in zip(idx, labels, strict=True)]
        kind = "continuous"
    else:
        color, kind, hover = labels, "categorical", class_names(entry) or None
    if kind == "categorical" and hover is not None and len(hover) == len(idx):  # would read as per-point
        hover = [hover[c] if 0 <= c < len(hover) else "unknown" for c in color]
    return color, kind, hover


def prior_overlay(entry: ModelEntry, view: MapView, overlay: str) -> tuple[np.ndarray | None, str]:
    """(projected prior samples [PRIOR_OVERLAY_POINTS, dims] or None, legend name) for an overlay
    choice: "none", "prior" (the whole prior) or "prior:K" (a GMVAE's component K)."""
    if not overlay or overlay == "none":
        return None, "prior samples"
    comp = int(overlay.split(":")[1]) if ":" in overlay else None
    model = entry.loaded.model
    with torch.inference_mode():
        z = model.prior_sample(PRIOR_OVERLAY_POINTS, comp, torch.Generator(model.device).manual_seed(0))
    name = "prior samples" if comp is None else f"prior of component {comp}"
    return view.projection.transform(z.float().cpu().numpy()), name


def message_figure(text: str, width: int = 70) -> go.Figure:
    """An empty figure that says ``text`` (wrapped to ``width`` characters) in its middle."""
    wrapped = "<br>".join(textwrap.wrap(text, width)) or " "
    fig = go.Figure()
    fig.add_annotation(text=wrapped, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14}, align="center")
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=420,
                      plot_bgcolor="white", paper_bgcolor="white")
    return fig


# -- diagnostics --------------------------------------------------------------------------------
def diagnostics_view(entry: ModelEntry) -> list[Any]:
    """[note, KL bar chart, training curves, reconstructions grid, prior samples grid]."""
    kl_fig, notes = kl_panel(entry)
    history = entry.loaded.meta.history
    if entry.loaded.model.num_components == 0:  # older checkpoints (the shipped ones too) record it for every model
        history = [{k: v for k, v in row.items() if k != "temperature"} for row in history]
    curves = figures.training_curves(history) if history else message_figure("No training history in this checkpoint.")
    prior = prior_samples(entry, 32)
    prior_grid = figures.image_grid(prior, nrow=8, scale=grid_scale(prior))
    if entry.latents is not None and float(entry.latents.kl_per_dim.sum()) == 0:
        notes.append("An AE has no prior: codes drawn from N(0, I) land away from where the encoder puts "
                     "images, so its prior samples are mostly noise.")
    if entry.loaded.model.is_conditional:
        notes.append("Prior samples cycle through the classes (class = position mod number of classes).")
    recon = recon_grid(entry)
    return ["\n\n".join(notes), kl_fig, curves, None if recon is None else served(recon),
            served(prior_grid)]


def kl_panel(entry: ModelEntry) -> tuple[go.Figure, list[str]]:
    """The KL-per-dimension chart (or why there is none) and the active-units note."""
    if entry.latents is None:
        return message_figure("KL per dimension needs the test images."), []
    info = dim_info(entry)
    notes = [f"**Active units:** {int(info.active.sum())} of {len(info.active)} (Var_x E[z_d|x] > "
             f"{ACTIVE_UNIT_THRESHOLD}, Burda et al. 2016: the dims whose code moves with the image)."]
    if info.score_name != "KL":
        return message_figure("This model has no KL term (a plain autoencoder)."), notes
    return figures.kl_bar_chart(entry.latents.kl_per_dim, info.active), notes


def recon_grid(entry: ModelEntry, n: int = 16) -> np.ndarray | None:
    """Up to n test images and their reconstructions from the posterior mean, as a uint8 grid
    [H, W, C]: rows of originals, each followed by its row of reconstructions. None without data."""
    if entry.latents is None:
        return None
    model = entry.loaded.model
    n = min(n, len(entry.latents))
    x = entry.latents.images[:n]
    y = None if not model.is_conditional else entry.latents.labels[:n]
    with torch.inference_mode():
        xt = torch.from_numpy(x).to(model.device)
        yt = None if y is None else torch.from_numpy(np.maximum(y, 0)).to(model.device)
        r = model.decode(model.encode(xt, yt).mean, yt).float().cpu().numpy()
    half = max(1, (n + 1) // 2)
    rows = [block for i in range(0, n, half) for block in (x[i:i + half], r[i:i + half])]
    return figures.image_grid(np.concatenate(rows), nrow=half, scale=grid_scale(x))


# -- interpolation endpoints --------------------------------------------------------------------
def set_endpoint(entry: ModelEntry, ends: dict | None, end: str, code: Code) -> list[Any]:
    """[new endpoints state, the endpoint's image]; a new endpoint drops the old path."""
    ends = dict(ends or {})
    ends[end] = code
    ends.pop("path", None)
    return [ends, served(endpoint_image(code, entry))]
