"""The latent map of a model: which points, coloured by what, with which overlays, as a plotly figure.

``MapView`` records what a session's map shows (its projection and the evaluation indices of its
rows) so that clicks, paths and markers can be mapped back and forth. ``draw_map`` is the one way a
map is drawn (the Explore page's and each side of the side-by-side view's), and ``read_click`` /
``point_code`` the one way a click on one is read.

The Explore map also rings chosen points (a search's matches, a picked point's nearest neighbours)
in named traces the page script restyles from ``highlights_json`` (no map is resent), and can draw
its structure: density contours and HDBSCAN clusters named by their majority label
(``find_clusters``, ``add_structure``).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from scipy.ndimage import gaussian_filter

from vaescope.contract import LatentGroup
from vaescope.errors import InputError
from vaescope.explorer.core import figures
from vaescope.explorer.core.codes import Code, index_code, prior_codes
from vaescope.explorer.core.mapfiles import prefitted
from vaescope.explorer.core.projection import Projection, ProjectionCache
from vaescope.explorer.core.sampling import component_names
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import whole
from vaescope.limits import MAX_DRAWN_POINTS

PRIOR_OVERLAY_POINTS = 300
MAX_CLICK_CHARS = 1000  # the page script sends a few dozen characters; anything longer is not a click
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
COLOR_LABELS = {"class": "class", "component": "mixture component", "recon": "reconstruction error",
                "kl": "KL per image", "none": "one colour"}
# Rings drawn over chosen points, one named trace each (always present, so the page can fill them
# in later); they take no hover, so a click on a ringed point still picks the point beneath.
HIGHLIGHTS = {"matches": {"symbol": "circle-open", "color": "#ff8c00", "size": 13, "line": {"width": 2}},
              "neighbours": {"symbol": "diamond-open", "color": "#00a3cc", "size": 14, "line": {"width": 2}}}
STRUCTURE_POINTS = 5_000  # a seeded subset clustered by HDBSCAN: a fraction of a second at any map size
DENSITY_BINS = 60  # bins a side of the density histogram the contours are drawn from
DENSITY_LEVELS = 6  # contour lines, evenly spaced from DENSITY_FLOOR of the peak density to the peak
DENSITY_FLOOR = 0.08


@dataclass(frozen=True)
class MapView:
    """What a session's current map shows, so clicks and paths can be mapped back."""

    key: str  # the model's store key
    projection: Projection
    indices: np.ndarray  # [M] evaluation-image index of each plotted row
    method: str
    color_by: str
    group: LatentGroup | None = None  # the slice of the code the map shows (None: the whole code)
    # the rows the browser draws when there are more than MAX_DRAWN_POINTS (``figures.decimate``;
    # None: all); every row is still on the map: clicks, rings, paths and selections use all of them
    drawn: np.ndarray | None = None
    # a thinned map's category per row and its palette, when it is coloured by category: a ringed
    # point the thinning left out is drawn back in its colour (``add_highlights``)
    categories: tuple[np.ndarray, str] | None = None

    @property
    def title(self) -> str:
        layer = f" · layer {self.group.name}" if self.group is not None else ""
        return f"{METHOD_NAMES.get(self.method, self.method)} {self.projection.dims}D{layer} · {len(self.indices):,} images"

    @property
    def notes(self) -> list[str]:
        """What the map does not show as it is, in words: a projection fitted on a subset, and a
        browser drawing of fewer points than the map holds."""
        notes = [self.projection.note] if self.projection.note else []
        if self.drawn is not None:
            notes.append(f"drawing {len(self.drawn):,} of the {len(self.indices):,} points: crowded areas thinned, "
                         "sparse ones and every ringed point kept")
        return notes

    def rows(self, indices: np.ndarray | None) -> np.ndarray:
        """The map rows [M] (sorted) of those evaluation ``indices`` the map shows (a map of a
        seeded subset leaves some out): a binary search in the sorted ``indices``, never a pass
        over a million rows."""
        if indices is None or len(indices) == 0:
            return np.zeros(0, np.int64)
        wanted = np.unique(np.asarray(indices, np.int64))
        at = np.minimum(np.searchsorted(self.indices, wanted), len(self.indices) - 1)
        return at[self.indices[at] == wanted]

    def slice(self, codes: np.ndarray) -> np.ndarray:
        """The part of codes [..., D] this map shows."""
        return codes if self.group is None else codes[..., self.group.start:self.group.start + self.group.size]


def subsample(n: int, max_points: int) -> np.ndarray:
    """Sorted indices of a seeded subset of size ``max_points`` (all n when 0 or >= n)."""
    if max_points <= 0 or max_points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def color_choices(entry: ModelEntry) -> list[tuple[str, str]]:
    """(label, value) of the colourings this model's map offers."""
    choices = [(COLOR_LABELS["class"], "class")] if entry.has_points and entry.latents.has_labels else []
    if entry.latents is not None and entry.latents.component_probs is not None:
        choices.append((COLOR_LABELS["component"], "component"))
    if entry.generator is not None:
        choices.append((COLOR_LABELS["recon"], "recon"))
    if entry.has_prior:
        choices.append((COLOR_LABELS["kl"], "kl"))
    if entry.latents is not None and entry.latents.factors is not None:  # ground truth: shapes' scale, x, ...
        choices += [(f"true factor: {name}", f"factor:{i}") for i, name in enumerate(entry.latents.factor_names)]
    return choices or [(COLOR_LABELS["none"], "none")]


def overlay_choices(entry: ModelEntry) -> list[tuple[str, str]]:
    """(label, value) of the prior overlays: none, the whole prior, and each mixture component."""
    condition = entry.description.condition
    if entry.generator is None:  # precomputed codes: there is no prior to draw from
        return [("none", "none")]
    return condition.overlays(component_names(entry))


def map_colors(entry: ModelEntry, view: MapView) -> tuple[np.ndarray, str, list[str] | None, str]:
    """(colour value per plotted point, "categorical" / "continuous", category names or per-point
    hover labels, palette) of a view."""
    latents, idx = entry.latents, view.indices
    assert latents is not None
    labels = latents.labels[idx]
    description = entry.description
    if view.color_by == "component" and latents.component_probs is not None:
        return latents.component_probs[idx].argmax(1), "categorical", component_names(entry), "components"
    if view.color_by == "none" or (view.color_by == "class" and not latents.has_labels):
        return np.zeros(len(idx), np.int64), "categorical", ["items"], "classes"
    if view.color_by.startswith("factor:") and latents.factors is not None:
        column = _factor_column(view.color_by, latents.factors.shape[1])
        if column is not None:
            values = latents.factors[idx, column]
            if _is_categorical(values):
                names = [f"{latents.factor_names[column]} {v:g}" for v in np.unique(values)]
                if description.class_names and np.array_equal(values, labels):  # the factor is the class
                    names = [description.class_name(int(v)) for v in np.unique(values)]
                return np.searchsorted(np.unique(values), values), "categorical", names, "classes"
            hover = [f"class: {description.class_name(int(c))}" for c in labels]
            return values, "continuous", hover, "viridis"
    if view.color_by in ("recon", "kl"):
        color = (latents.recon_error if view.color_by == "recon" else latents.kl)[idx]
        hover = [f"class: {description.class_name(int(c))}" for c in labels]
        return color, "continuous", hover, "viridis"
    return labels, "categorical", list(description.class_names) or None, "classes"


def color_label(entry: ModelEntry, color_by: str) -> str:
    """A colouring in words, as the map's title names it."""
    return next((label for label, value in color_choices(entry) if value == color_by),
                COLOR_LABELS.get(color_by, color_by))


def _factor_column(color_by: str, count: int) -> int | None:
    """The factor column a "factor:K" colouring names, if it is one of the ``count``."""
    try:
        column = int(color_by.split(":", 1)[1])
    except ValueError:
        return None
    return column if 0 <= column < count else None


def _is_categorical(values: np.ndarray) -> bool:
    """A factor with a few whole-number values (a shape index) rather than a continuous one."""
    unique = np.unique(values)
    return len(unique) <= 12 and bool(np.all(unique == np.round(unique)))


def prior_overlay(entry: ModelEntry, view: MapView, overlay: str) -> tuple[np.ndarray | None, str]:
    """(projected prior samples [PRIOR_OVERLAY_POINTS, dims] or None, legend name) for an overlay
    choice: "none", "prior" (the whole prior) or "prior:K" (mixture component K)."""
    if not overlay or overlay == "none":
        return None, ""
    comp = None
    if overlay.startswith("prior:"):
        comp = int(overlay.split(":", 1)[1])
        if not 0 <= comp < entry.description.condition.size:
            return None, ""
    z = prior_codes(entry, PRIOR_OVERLAY_POINTS, seed=0, condition=comp)
    name = "prior samples" if comp is None else f"prior of {component_names(entry)[comp]}"
    return view.projection.transform(view.slice(z)), name


def draw_map(entry: ModelEntry, projections: ProjectionCache, method: str, dims: int = 2, color_by: str = "class",
             overlay: str = "none", *, max_points: int = 0, group: LatentGroup | None = None,
             path: np.ndarray | None = None, marker: list[np.ndarray] | None = None, structure: bool = False,
             progress: Callable[[float, str], None] | None = None,
             keep: np.ndarray | None = None) -> tuple[MapView, go.Figure]:
    """(view, figure) of the map of ``entry``'s evaluation codes: a seeded subset of ``max_points``
    (0: all), the slice ``group`` of each code (None: the whole code), projected by ``method`` into
    ``dims`` dimensions through the shared cache (one fit per model, layer, method and points; a
    second caller waits for the first), and drawn by ``map_figure`` (with its density contours and
    named clusters when ``structure``, on a 2D map). A colouring or overlay the model does not
    offer falls back to its first / to none, so one setting can serve two models.

    A map of more than MAX_DRAWN_POINTS points is drawn thinned by density (``view.drawn``,
    ``figures.decimate``), keeping the evaluation indices ``keep`` (a selection, say); the
    figure's title says so, and ``add_highlights`` adds any ringed point the thinning left out.

    Raises InputError for a model without evaluation images or a projection that cannot be fitted.

    Examples:
        >>> view, figure = draw_map(entry, ProjectionCache(None), "pca")  # doctest: +SKIP
        >>> view.projection.dims, len(view.indices) == len(entry.latents)  # doctest: +SKIP
        (2, True)
    """
    if not entry.has_points:
        raise InputError(f"No map for {_short(entry)}: {entry.data_note}.")
    if method not in METHOD_NAMES:
        raise InputError(f"Projection must be one of {', '.join(METHOD_NAMES)}.")
    colours = [value for _, value in color_choices(entry)]
    color_by = color_by if color_by in colours else colours[0]
    overlay = overlay if overlay in [value for _, value in overlay_choices(entry)] else "none"
    view = MapView(entry.key, None, subsample(len(entry.latents), max_points), method, color_by, group)  # type: ignore[arg-type]
    # all codes: the array itself (a million codes are 64 MB, not to be copied per drawing)
    codes = entry.latents.mean if len(view.indices) == len(entry.latents) else entry.latents.mean[view.indices]
    try:  # the cache key names the layer: a hierarchical model has a map per layer
        ready = None if group is not None and len(entry.description.latent_groups) > 1 else \
            prefitted(entry, method, int(dims), view.indices)  # a checkpoint's maps sidecar
        projection = ready or projections.get(f"{entry.key}:{group.name if group is not None else ''}",
                                              view.slice(codes), method, int(dims), progress=progress)
    except ValueError as exc:
        raise InputError(f"Cannot project: {exc}") from None
    view = dataclasses.replace(view, projection=projection)
    if len(view.indices) > MAX_DRAWN_POINTS:
        drawn = figures.decimate(projection.coords, MAX_DRAWN_POINTS, view.rows(keep))
        values, kind, _, palette = map_colors(entry, view) if _categorical(entry, view) else (None, "", None, "")
        view = dataclasses.replace(view, drawn=drawn, categories=None if values is None else
                                   (np.asarray(values, np.int16 if np.abs(values).max(initial=0) < 2**15 else np.int64),
                                    palette))
    return view, map_figure(entry, view, overlay, path, marker, structure)


def _categorical(entry: ModelEntry, view: MapView) -> bool:
    """Whether ``map_colors`` colours this view by category (class, component, one colour, or a
    categorical factor) without building per-point hover labels for a million points."""
    latents = entry.latents
    if view.color_by in ("class", "component", "none"):
        return True
    column = _factor_column(view.color_by, latents.factors.shape[1]) \
        if view.color_by.startswith("factor:") and latents.factors is not None else None
    return column is not None and _is_categorical(latents.factors[view.indices, column])


def placeholder(entry: ModelEntry) -> go.Figure:
    """What a model's map shows until it is drawn, or why it has none (no evaluation images)."""
    if entry.has_points:
        return message_figure(f"Drawing the map of {_short(entry)}…")
    return message_figure(f"No map for {_short(entry)}: {entry.data_note}.")


def read_click(payload: str | None) -> dict[str, Any] | None:
    """A click the page script sent ({"kind": "point", "index": i} on a point, {"kind": "xy", "x":
    .., "y": ..} on empty space; the side-by-side maps add "side"), as a dict; None for anything
    else (too long to be a click, not JSON, not an object). Its values are still unchecked."""
    if len(payload or "") > MAX_CLICK_CHARS:
        return None
    try:
        data = json.loads(payload or "null")
    except (json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def point_code(entry: ModelEntry, index: Any) -> Code:
    """The code of the evaluation image a click on a map point names (its index, from the page);
    InputError when it names none of this model's images."""
    if not entry.has_points:
        raise InputError(f"Point {str(index)[:20]!r} is not an image of this model.")
    return index_code(entry, whole(index, "A map point", 0, len(entry.latents) - 1))


def _short(entry: ModelEntry) -> str:
    return entry.name.removesuffix(".safetensors")


def map_figure(entry: ModelEntry, view: MapView, overlay: str, path: np.ndarray | None = None,
               marker: list[np.ndarray] | None = None, structure: bool = False) -> go.Figure:
    """The latent map of a view: coloured points, an optional prior overlay, interpolation path and
    "you are here" marker (codes [S, D] / [T, D], projected with the map's own transform), and on a
    2D map with ``structure`` its density contours and clusters (``add_structure``).

    The data traces' customdata is rewritten from row numbers to evaluation-image indices, so a
    click names the same image whether or not the map was downsampled. A thinned map
    (``view.drawn``) draws those rows only, and says so under its title with how it was fitted.
    """
    proj = view.projection
    shown = view if view.drawn is None else dataclasses.replace(view, indices=view.indices[view.drawn])
    coords = proj.coords if view.drawn is None else proj.coords[view.drawn]
    color, kind, hover, palette = map_colors(entry, shown)
    over, over_name = prior_overlay(entry, view, overlay)
    colour = color_label(entry, view.color_by)
    title = f"{entry.name.removesuffix('.safetensors')} · {view.title} · colour: {colour}"
    if view.notes:  # a second, smaller line: how the map was made, when not as it looks
        title += "<br><sup>" + "; ".join(view.notes) + "</sup>"
    category = "component" if palette == "components" else "class" if view.color_by == "class" else colour
    fig = figures.latent_map(coords, color, kind, hover, title=title, overlay=over, overlay_name=over_name,
                             palette=palette, category_title=category)
    for trace in fig.data:
        if trace.customdata is not None:
            trace.customdata = shown.indices[np.asarray(trace.customdata, np.int64)]
    if view.notes:
        fig.update_layout(margin={"t": 62})
    figures.add_path(fig, project(view, path), proj.dims)
    figures.add_marker(fig, project(view, marker), proj.dims)
    if structure and proj.dims == 2:
        labels, names = structure_labels(entry, view)
        add_structure(fig, proj.coords, find_clusters(proj.coords, labels, names))
    fig.update_layout(height=520 if proj.dims == 2 else 600)
    return fig


# -- rings over chosen points -----------------------------------------------------------------------
def on_map(view: MapView, indices: np.ndarray | None) -> np.ndarray:
    """The map coordinates [M, dims] of those evaluation ``indices`` the map shows (a downsampled map
    leaves some out), in the order of the map's rows."""
    return np.asarray(view.projection.coords[view.rows(indices)], np.float32)


def add_highlights(fig: go.Figure, view: MapView, chosen: dict[str, np.ndarray]) -> go.Figure:
    """Append one named ring trace per ``HIGHLIGHTS`` name, at the points of ``chosen[name]``
    (evaluation indices; empty when absent), so the page script can move them by name later.

    On a thinned map (``view.drawn``), a ringed point the thinning left out is drawn too, in a
    trace of its own ("ringed points", with its image index as customdata like every data
    trace), so every ringed point can be hovered and clicked."""
    if view.drawn is not None:
        rows = view.rows(np.concatenate([np.asarray(v, np.int64).reshape(-1) for v in chosen.values()] or [[]]))
        missing = np.setdiff1d(rows, view.drawn, assume_unique=True)
        if len(missing):
            _add_points_back(fig, view, missing)
    for name, marker in HIGHLIGHTS.items():
        figures.add_points(fig, on_map(view, chosen.get(name)), view.projection.dims, name, marker)
        fig.data[-1].hoverinfo = "skip"
    return fig


def _add_points_back(fig: go.Figure, view: MapView, rows: np.ndarray) -> None:
    """Draw map ``rows`` [M] a thinned map left out, coloured as the map colours them, as one data
    trace (WebGL on a 2D map: it sits with the map's own points)."""
    coords = view.projection.coords[rows]
    colour = "#555555"  # a continuous colouring's points: the ring says why they are there
    if view.categories is not None:
        values, palette = view.categories
        colour = [figures.category_colour(int(v), palette) for v in values[rows]]
    axes = dict(zip("xyz", coords.T, strict=False))
    trace = (go.Scattergl if coords.shape[1] == 2 else go.Scatter3d)(
        **axes, mode="markers", name="ringed points", showlegend=False, customdata=view.indices[rows],
        marker={"size": 6 if coords.shape[1] == 2 else 3, "opacity": 0.9, "color": colour},
        hovertemplate="image #%{customdata}<extra></extra>")
    fig.add_trace(trace)


def highlights_json(view: MapView | None, chosen: dict[str, np.ndarray]) -> str:
    """The rings as the page's overlay box holds them: {"matches": [[x, y], ...], "neighbours":
    [...]}, every ``HIGHLIGHTS`` name present (an empty list clears its ring)."""
    if view is None:
        return json.dumps({name: [] for name in HIGHLIGHTS})
    return json.dumps({name: np.round(on_map(view, chosen.get(name)).astype(np.float64), 4).tolist()
                       for name in HIGHLIGHTS})


# -- structure: density and clusters ------------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    """A cluster of map points, named by its most common label."""

    centre: np.ndarray  # [2] the median of its points on the map
    name: str  # the majority label's name, and its share: "7 (92%)"
    size: int  # points of the clustered subset in it


def structure_labels(entry: ModelEntry, view: MapView) -> tuple[np.ndarray, list[str]]:
    """(label per map row [M], names) clusters are named by: a mixture model's most likely component
    for each point, else the class (-1 unknown)."""
    latents = entry.latents
    assert latents is not None
    if latents.component_probs is not None:
        return latents.component_probs[view.indices].argmax(1), component_names(entry)
    labels = latents.labels[view.indices]
    names = list(entry.description.class_names) or [str(v) for v in range(int(labels.max(initial=-1)) + 1)]
    return labels, names


def find_clusters(coords: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...],
                  max_points: int = STRUCTURE_POINTS, seed: int = 0) -> list[Cluster]:
    """Clusters of map points coords [N, 2] by HDBSCAN (scikit-learn's; Campello et al. 2013) on a
    seeded subset of at most ``max_points``, each named by the most common of ``labels`` [N] among
    its points (``names[label]``; "cluster k" when they are unknown, -1), largest first. HDBSCAN
    needs no number of clusters and leaves sparse points out as noise.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> xy = np.concatenate([rng.normal(0, 0.3, (100, 2)), rng.normal(5, 0.3, (100, 2))])
        >>> sorted(c.name for c in find_clusters(xy, np.repeat([0, 1], 100), ["cat", "dog"]))
        ['cat (100%)', 'dog (100%)']
    """
    from sklearn.cluster import HDBSCAN

    coords = np.asarray(coords, np.float64)
    keep = subsample(len(coords), max_points)
    xy, lab = coords[keep], np.asarray(labels, np.int64)[keep]
    if len(xy) < 10:
        return []
    found = HDBSCAN(min_cluster_size=max(10, len(xy) // 40), min_samples=10, copy=True).fit_predict(xy)
    clusters = []
    for k in range(int(found.max(initial=-1)) + 1):
        inside = found == k
        values, counts = np.unique(lab[inside], return_counts=True)
        top = int(np.argmax(counts))
        label, share = int(values[top]), counts[top] / inside.sum()
        name = (str(names[label]) if label < len(names) else str(label)) if label >= 0 else f"cluster {k + 1}"
        clusters.append(Cluster(np.median(xy[inside], axis=0), f"{name} ({share:.0%})", int(inside.sum())))
    return sorted(clusters, key=lambda c: -c.size)


def density(coords: np.ndarray, bins: int = DENSITY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres [bins], y centres [bins], density [bins, bins] indexed [y, x]) of map points coords
    [N, 2]: a histogram over the points' range, smoothed by a Gaussian of 1.5 bins."""
    coords = np.asarray(coords, np.float64)
    lo, hi = coords.min(0), coords.max(0)
    pad = (hi - lo) * 0.05 + 1e-9
    counts, xe, ye = np.histogram2d(coords[:, 0], coords[:, 1], bins=bins,
                                    range=[[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]])
    return (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, gaussian_filter(counts.T, 1.5)


def add_structure(fig: go.Figure, coords: np.ndarray, clusters: list[Cluster]) -> go.Figure:
    """Add density contours of coords [N, 2] (a Contour trace of ``density``: a few thousand values
    whatever the map's size, where a Histogram2dContour would send every point again) and one text
    annotation per cluster at its centre."""
    if len(coords) < 2:
        return fig
    xs, ys, z = density(coords)
    peak = float(z.max())
    if peak > 0:
        start = peak * DENSITY_FLOOR
        fig.add_trace(go.Contour(x=xs, y=ys, z=z, name="density", showscale=False, hoverinfo="skip",
                                 contours={"coloring": "lines", "start": start, "end": peak,
                                           "size": (peak - start) / DENSITY_LEVELS},
                                 colorscale=[[0, "rgba(120,120,120,0.45)"], [1, "rgba(40,40,40,0.9)"]],
                                 line={"width": 1}, showlegend=True))
    for cluster in clusters:
        fig.add_annotation(x=float(cluster.centre[0]), y=float(cluster.centre[1]), text=cluster.name,
                           showarrow=False, font={"size": 12, "color": "#111"}, bgcolor="rgba(255,255,255,0.75)",
                           bordercolor="#666", borderwidth=1, borderpad=2)
    return fig


def points_json(view: MapView | None, codes: np.ndarray | list[np.ndarray] | None) -> str:
    """Codes placed on a map, as the JSON the page's overlay boxes hold: {"points": [[x, y], ...]}."""
    if view is None:
        return json.dumps({"points": []})
    return json.dumps({"points": np.round(project(view, codes), 4).tolist()})


def project(view: MapView, codes: np.ndarray | list[np.ndarray] | None) -> np.ndarray:
    """Codes [S, D] placed on the map [S, dims] ([0, dims] for none). Fast for every method: PCA
    exactly, t-SNE and UMAP by their nearest fitted neighbours (an exact UMAP transform would first
    build a search index, a minute on 70k codes)."""
    if codes is None or len(codes) == 0:
        return np.zeros((0, view.projection.dims), np.float32)
    return view.projection.transform(view.slice(np.asarray(np.stack(list(codes)), np.float32)), exact=False)


def message_figure(text: str, width: int = 70) -> go.Figure:
    """An empty figure that says ``text`` (wrapped to ``width`` characters) in its middle."""
    wrapped = "<br>".join(textwrap.wrap(text, width)) or " "
    fig = go.Figure()
    fig.add_annotation(text=wrapped, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14}, align="center")
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=420)
    return fig
