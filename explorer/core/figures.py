"""Arrays -> plotly figures, image grids and GIFs. Knows nothing of models.

The latent map is built for 70k points: whole numpy arrays go into WebGL traces (no per-point
Python objects), one trace per category, and every data trace carries the dataset index as its
``customdata`` so a click handler can read which point was picked.
"""

from __future__ import annotations

import io
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from PIL import Image, ImageDraw

BIG_MAP = 20_000  # above this many points markers shrink so dense regions stay readable
# Up to this many points a 2D map is drawn in SVG: a browser allows only a few WebGL contexts at
# once ("Too many active WebGL contexts" when redrawn maps leave theirs behind), and SVG draws a
# few thousand points just as fast. Bigger maps need WebGL.
SVG_POINTS = 5_000
# Classes and mixture components get different palettes, so a component colour is never mistaken
# for the class that happens to share its number.
PALETTES = {"classes": plotly.colors.qualitative.Plotly + plotly.colors.qualitative.Pastel,
            "components": plotly.colors.qualitative.Dark24}
MARKER_COLOR = "#ff1493"
PAD_VALUE = 128  # mid-grey between grid cells: visible against both black and white digits
ACTIVE_COLOR, NEARLY_COLOR, INACTIVE_COLOR = "#1f77b4", "#ff9f40", "#c7c7c7"


# A decimated map bins its points into this many cells a side (2D; a cube root of it in 3D) and
# thins the crowded cells: 65,536 cells of a few pixels each on a 500-px plot.
DECIMATE_CELLS = 256


# -- latent map -----------------------------------------------------------------------------------
def decimate(coords: np.ndarray, limit: int, keep: np.ndarray | None = None, seed: int = 0,
             cells: int = DECIMATE_CELLS) -> np.ndarray:
    """Sorted rows [M] of coords [N, dims] to draw when a browser cannot take all N: every row of
    ``keep`` (rows that must stay clickable: searched points, a point's neighbours), then up to
    ``limit`` in all, thinned by density: the points are binned on a grid of ``cells`` a side and
    every cell keeps at most the same number of them (the largest number the budget allows), chosen
    at random (seeded), so sparse regions and outliers keep every point and only crowded cells,
    where points overdraw one another anyway, lose some. All rows when N <= ``limit``.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> xy = np.concatenate([rng.normal(0, 0.01, (10_000, 2)), [[5.0, 5.0]]])  # a crowd and an outlier
        >>> rows = decimate(xy, 1_000, keep=np.array([7]))
        >>> len(rows) <= 1_001, 10_000 in rows, 7 in rows
        (True, True, True)
    """
    coords = np.asarray(coords)
    n = len(coords)
    if n <= limit:
        return np.arange(n)
    keep = np.unique(np.asarray(keep if keep is not None else [], np.int64))
    keep = keep[(keep >= 0) & (keep < n)]
    budget = max(limit - len(keep), 0)
    candidate = np.ones(n, bool)
    candidate[keep] = False
    rows = np.flatnonzero(candidate)
    dims = coords.shape[1]
    side = cells if dims == 2 else max(2, round(cells ** (2 / dims)))
    lo, hi = coords.min(0), coords.max(0)
    scale = side / np.where(hi > lo, hi - lo, 1.0)
    bins = np.clip(((coords[rows] - lo) * scale).astype(np.int64), 0, side - 1)
    cell = np.ravel_multi_index(tuple(bins.T), (side,) * dims)
    counts = np.bincount(cell, minlength=side ** dims)
    low, high = 0, int(counts.max())  # the largest per-cell cap whose total fits the budget
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if np.minimum(counts, mid).sum() <= budget else (low, mid - 1)
    order = np.argsort(cell + np.random.default_rng(seed).random(len(rows)))  # by cell, at random within
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(rows)) - starts[cell[order]]
    chosen = order[rank < low]
    spare = budget - len(chosen)  # the cap's rounding leaves room: one more from that many crowded cells
    if spare > 0:
        chosen = np.concatenate([chosen, order[rank == low][:spare]])
    return np.union1d(rows[chosen], keep)


def _point_labels(color: np.ndarray, color_kind: str, hover_labels: Sequence[str] | None,
                  n: int) -> tuple[np.ndarray | None, Sequence[str] | None]:
    """Split ``hover_labels`` into (per-point labels [N] or None, category names or None).

    A sequence of length N is read as one label per point; with categorical colouring any other
    length is read as names indexed by the colour value, e.g. class names.
    """
    if hover_labels is None:
        return None, None
    if len(hover_labels) == n:
        return np.asarray(hover_labels, dtype=str), None
    if color_kind == "categorical":
        return None, hover_labels
    raise ValueError(f"with continuous colouring hover_labels needs one label per point ({n}), "
                     f"got {len(hover_labels)}")


def _category_name(value: int, names: Sequence[str] | None) -> str:
    if value < 0:
        return "unknown"
    return str(names[value]) if names is not None and value < len(names) else str(value)


def _scatter(coords: np.ndarray, webgl: bool = True, **kwargs: object) -> go.Scattergl | go.Scatter | go.Scatter3d:
    """A 2D scatter (WebGL when ``webgl``, else SVG) or a 3D scatter of coords [M, 2|3]."""
    if coords.shape[1] == 3:
        return go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], **kwargs)
    if not webgl:
        return go.Scatter(x=coords[:, 0], y=coords[:, 1], **kwargs)
    return go.Scattergl(x=coords[:, 0], y=coords[:, 1], **kwargs)


def _marker(n: int, dims: int) -> dict:
    size = (2 if n > BIG_MAP else 3) if dims == 3 else (3 if n > BIG_MAP else 6)
    return {"size": size, "opacity": 0.7}


def category_colour(value: int, palette: str = "classes") -> str:
    """The colour a categorical map draws category ``value`` in (grey for -1, unknown)."""
    colours = PALETTES.get(palette, PALETTES["classes"])
    return "#999999" if value < 0 else colours[int(value) % len(colours)]


def _categorical_traces(coords: np.ndarray, color: np.ndarray, labels: np.ndarray | None,
                        names: Sequence[str] | None, palette: str, category_title: str = "class") -> list:
    """One trace per category value (legend entry), customdata = dataset index."""
    values = np.asarray(color, np.int64)
    index = np.arange(len(coords))
    traces = []
    for value in np.unique(values):
        mask = values == value
        name = _category_name(int(value), names)
        text = labels[mask] if labels is not None else None
        label = "%{text}" if text is not None else name.replace("%", "%%")
        marker = _marker(len(coords), coords.shape[1]) | {"color": category_colour(int(value), palette)}
        traces.append(_scatter(coords[mask], len(coords) > SVG_POINTS, mode="markers", name=name,
                               customdata=index[mask], text=text, marker=marker,
                               hovertemplate=f"image #%{{customdata}} · {category_title}: {label}<extra></extra>"))
    return traces


def _continuous_trace(coords: np.ndarray, color: np.ndarray, labels: np.ndarray | None) -> list:
    """A single trace coloured by value with a colour bar, customdata = dataset index."""
    marker = _marker(len(coords), coords.shape[1]) | {
        "color": np.asarray(color, np.float32), "colorscale": "Viridis", "showscale": True}
    label = "%{text} · " if labels is not None else ""
    return [_scatter(coords, len(coords) > SVG_POINTS, mode="markers", name="points",
                     customdata=np.arange(len(coords)), text=labels, marker=marker, showlegend=False,
                     hovertemplate=f"image #%{{customdata}} · {label}value %{{marker.color:.3g}}"
                                   "<extra></extra>")]


def latent_map(coords: np.ndarray, color: np.ndarray, color_kind: str,
               hover_labels: Sequence[str] | None, title: str = "",
               overlay: np.ndarray | None = None, overlay_name: str = "prior samples",
               path: np.ndarray | None = None, palette: str = "classes", category_title: str = "class") -> go.Figure:
    """Scatter of coords [N, 2|3] coloured by ``color`` [N].

    color_kind "categorical" (int values, -1 = unknown): one trace per category, in a legend;
    "continuous": one trace with a colour bar. ``hover_labels``: [N] per-point labels, or names
    indexed by colour value (e.g. class names). Data traces come first; ``overlay`` [M, dims]
    (black x markers) and ``path`` [S, dims] (line + markers) follow as extra traces.
    """
    if color_kind not in ("categorical", "continuous"):
        raise ValueError(f"color_kind must be 'categorical' or 'continuous', got {color_kind!r}")
    coords = np.asarray(coords, np.float32)
    labels, names = _point_labels(color, color_kind, hover_labels, len(coords))
    traces = (_categorical_traces(coords, color, labels, names, palette, category_title) if color_kind == "categorical"
              else _continuous_trace(coords, color, labels))
    fig = go.Figure(traces)
    if overlay is not None and len(overlay):
        add_overlay(fig, overlay, overlay_name)
    if path is not None and len(path):
        add_path(fig, path)
    fig.update_layout(title=title, uirevision="latent-map", legend={"itemsizing": "constant"},
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return fig


def add_overlay(fig: go.Figure, points: np.ndarray, name: str = "prior samples") -> go.Figure:
    """Append points [M, 2|3] as black x markers (no customdata: they are not dataset points)."""
    points = np.asarray(points, np.float32)
    size = 5 if points.shape[1] == 3 else 9
    fig.add_trace(_scatter(points, False, mode="markers", name=name, hoverinfo="name",
                           marker={"symbol": "x", "color": "black", "size": size}))
    return fig


def add_marker(fig: go.Figure, points: np.ndarray, dims: int, name: str = "you are here") -> go.Figure:
    """Append the "you are here" marker at the last of ``points`` [T, dims] and a faint trail through
    the earlier ones (the path of a slider drag). Both traces are added even when empty, so the
    page can move them later (``static/bridge.js`` restyles them by name)."""
    points = np.asarray(points, np.float32).reshape(-1, dims)
    fig.add_trace(_scatter(points, False, mode="lines", name="trail", hoverinfo="skip", showlegend=False,
                           line={"color": MARKER_COLOR, "width": 2}, opacity=0.4))
    size = 9 if dims == 3 else 16
    fig.add_trace(_scatter(points[-1:], False, mode="markers", name=name, hoverinfo="name", showlegend=False,
                           marker={"symbol": "diamond" if dims == 3 else "star", "color": MARKER_COLOR,
                                   "size": size, "line": {"color": "black", "width": 1}}))
    return fig


def add_path(fig: go.Figure, points: np.ndarray, dims: int | None = None, name: str = "path") -> go.Figure:
    """Append a path [S, 2|3] as a red line with markers, e.g. an interpolation's codes (added even
    when empty, so the page can fill it in later)."""
    points = np.asarray(points, np.float32)
    if dims is not None:
        points = points.reshape(-1, dims)
    fig.add_trace(_scatter(points, False, mode="lines+markers", name=name, hoverinfo="name", showlegend=len(points) > 0,
                           line={"color": "crimson", "width": 3}, marker={"size": 5, "color": "crimson"}))
    return fig


def add_points(fig: go.Figure, points: np.ndarray, dims: int, name: str, marker: dict,
               mode: str = "markers") -> go.Figure:
    """Append named points [M, dims] (added even when empty, so the page can fill them in later by
    the trace's name)."""
    points = np.asarray(points, np.float32).reshape(-1, dims)
    fig.add_trace(_scatter(points, False, mode=mode, name=name, hoverinfo="name", showlegend=False, marker=marker))
    return fig


# -- images ---------------------------------------------------------------------------------------
LINE_HEIGHT = 48  # px of a sequence drawn as a line
LINE_STEP = 2  # px per time step


def line_pictures(sequences: np.ndarray) -> np.ndarray:
    """Sequences stored as images [M, C, T, F] (T time steps of C * F values in [0, 1]) drawn as line
    plots [M, 1, LINE_HEIGHT, T * LINE_STEP] in [0, 1]: a bright line per feature on a dark ground,
    value 1 at the top."""
    seqs = np.asarray(sequences, np.float32)
    m, c, t, f = seqs.shape
    values = np.clip(np.nan_to_num(seqs.transpose(0, 2, 1, 3).reshape(m, t, c * f)), 0, 1)
    out = np.zeros((m, 1, LINE_HEIGHT, t * LINE_STEP), np.float32)
    xs = np.arange(t) * LINE_STEP + LINE_STEP // 2
    for i in range(m):
        canvas = Image.new("L", (t * LINE_STEP, LINE_HEIGHT), 0)
        draw = ImageDraw.Draw(canvas)
        for k in range(c * f):
            ys = (1 - values[i, :, k]) * (LINE_HEIGHT - 3) + 1
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255, width=2)
        out[i, 0] = np.asarray(canvas, np.float32) / 255
    return out


FEATURE_ROWS = 40  # up to this many features a row is drawn as named bars; more as an unnamed profile
FEATURE_BAR_COLORS = ((31, 119, 180), (214, 96, 77))  # above and below the baseline (0, where it is in range)
FEATURE_TRACK = (236, 236, 236)  # the range a bar can span


@dataclass(frozen=True)
class FeatureLayout:
    """Pixel sizes of one bar chart of features: a row per feature (name, bar, value)."""

    row: int
    name: int
    bar: int
    value: int
    font: int


FEATURE_BIG = FeatureLayout(row=16, name=118, bar=120, value=54, font=11)  # one chart: names and values
FEATURE_CELL = FeatureLayout(row=9, name=52, bar=64, value=0, font=8)  # a grid cell: short names, no values


@dataclass(frozen=True)
class Drawing:
    """How a model's x [C, H, W] is drawn: ``kind`` "image" (pixels), "line" (a sequence) or
    "features" (a row of F = C*H*W named values in [0, 1]: ``names``, and ``ranges``, each
    feature's (lo, hi) in the data's own units that 0 and 1 stand for)."""

    kind: str = "image"
    names: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()

    @classmethod
    def of(cls, description: object) -> Drawing:
        """The drawing a model's ``Description`` asks for (its display, feature names and ranges)."""
        return cls(str(getattr(description, "display", "image")), tuple(getattr(description, "feature_names", ())),
                   tuple(getattr(description, "feature_range", ())))


def feature_pictures(rows: np.ndarray, names: Sequence[str] = (), ranges: Sequence[tuple[float, float]] = (),
                     cell: bool = False) -> np.ndarray:
    """Rows of F features in [0, 1] [M, F] drawn as horizontal bar charts [M, 3, h, w] in [0, 1]:
    one row per feature with its name (f0, f1, ... without names), a bar from the baseline (the
    feature's 0 where its range holds it, else the range's low end) to the value, and the value in
    the feature's own units (``ranges``: (lo, hi) per feature; without them, the [0, 1] value).
    ``cell``: small, for a grid cell (short names, no values). Above FEATURE_ROWS features, an
    unnamed profile (one vertical bar per feature) instead."""
    values = np.clip(np.nan_to_num(np.asarray(rows, np.float64)), 0, 1)
    m, f = values.shape
    lo = np.array([r[0] for r in ranges], np.float64) if len(ranges) == f else np.zeros(f)
    hi = np.array([r[1] for r in ranges], np.float64) if len(ranges) == f else np.ones(f)
    base = np.clip(-lo / (hi - lo), 0, 1)  # where 0 lies in each feature's range
    if f > FEATURE_ROWS:
        return _feature_profiles(values, base, 48 if cell else 96)
    layout = FEATURE_CELL if cell else FEATURE_BIG
    names = [str(n) for n in names] if len(names) == f else [f"f{i}" for i in range(f)]
    font = _font(layout.font)
    pad = 4
    width, height = layout.name + layout.bar + layout.value + 2 * pad, f * layout.row + 2 * pad
    out = np.zeros((m, 3, height, width), np.float32)
    labels = [_fit_text(font, name, layout.name - 4) for name in names]
    for i in range(m):
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        for k in range(f):
            top = pad + k * layout.row
            left = pad + layout.name
            draw.text((pad, top + (layout.row - layout.font) // 2 - 1), labels[k], fill=(40, 40, 40), font=font)
            draw.rectangle((left, top + 2, left + layout.bar - 1, top + layout.row - 2), fill=FEATURE_TRACK)
            x0, x1 = left + base[k] * (layout.bar - 1), left + values[i, k] * (layout.bar - 1)
            colour = FEATURE_BAR_COLORS[0] if values[i, k] >= base[k] else FEATURE_BAR_COLORS[1]
            draw.rectangle((min(x0, x1), top + 2, max(x0, x1), top + layout.row - 2), fill=colour)
            draw.line((x0, top + 1, x0, top + layout.row - 1), fill=(90, 90, 90))
            if layout.value:
                shown = lo[k] + values[i, k] * (hi[k] - lo[k])
                draw.text((left + layout.bar + 4, top + (layout.row - layout.font) // 2 - 1), f"{shown:.3g}",
                          fill=(40, 40, 40), font=font)
        out[i] = np.asarray(canvas, np.float32).transpose(2, 0, 1) / 255
    return out


def _feature_profiles(values: np.ndarray, base: np.ndarray, height: int) -> np.ndarray:
    """Rows [M, F] in [0, 1] as profiles [M, 3, height, 2F]: a vertical bar per feature from its
    baseline, on white."""
    m, f = values.shape
    out = np.ones((m, 3, height, 2 * f), np.float32)
    ys = np.arange(height)[:, None]
    top_of = lambda v: (1 - v) * (height - 1)  # noqa: E731 - value 1 at the top
    for i in range(m):
        a, b = top_of(values[i])[None], top_of(base)[None]
        inside = (ys >= np.minimum(a, b) - 0.5) & (ys <= np.maximum(a, b) + 0.5)  # [height, F]
        above = (values[i] >= base)[None]
        for ch in range(3):
            up, down = FEATURE_BAR_COLORS[0][ch] / 255, FEATURE_BAR_COLORS[1][ch] / 255
            column = np.where(inside, np.where(above, up, down), 1.0)
            out[i, ch, :, 0::2] = column
    return out


def pictures(images: np.ndarray, display: str | Drawing = "image", cell: bool = False) -> np.ndarray:
    """Images [M, C, H, W] or one [C, H, W] as they are drawn: as they are, as line plots (display
    "line": sequences, e.g. waveforms), or as bar charts of named features (display "features": a
    table's rows, ``feature_pictures``; ``cell``: small enough for a grid cell). ``display`` is the
    kind, or a ``Drawing`` with the feature names and ranges."""
    drawing = display if isinstance(display, Drawing) else Drawing(str(display))
    if drawing.kind not in ("line", "features"):
        return images
    one = np.asarray(images).ndim == 3
    batch = np.asarray(images)[None] if one else np.asarray(images)
    if drawing.kind == "line":
        drawn = line_pictures(batch)
    else:
        drawn = feature_pictures(batch.reshape(len(batch), -1), drawing.names, drawing.ranges, cell)
    return drawn[0] if one else drawn


# -- a spatial code as channel maps -------------------------------------------------------------------
HEAT_COLORS = ((33, 102, 172), (247, 247, 247), (178, 24, 43))  # -scale, 0, +scale (ColorBrewer RdBu)
CODE_CELL_PX = 72  # each channel map is upscaled (nearest) to about this size


def heat_rgb(values: np.ndarray, scale: float) -> np.ndarray:
    """Values [...] -> RGB [..., 3] in [0, 1] on a diverging scale: blue at -scale, white at 0, red
    at +scale (clipped beyond)."""
    t = np.clip(np.nan_to_num(np.asarray(values, np.float64)) / max(float(scale), 1e-12), -1, 1)[..., None]
    neg, mid, pos = (np.array(c, np.float64) / 255 for c in HEAT_COLORS)
    return np.where(t < 0, mid + (mid - neg) * t, mid + (pos - mid) * t).astype(np.float32)


def code_maps(z: np.ndarray, shape: Sequence[int], scale: float, cell_px: int = CODE_CELL_PX,
              columns: int = 8) -> np.ndarray:
    """A spatial code z [D] of ``shape`` (C, H, W) as C small heatmaps, one per channel, in a
    captioned grid (uint8 [H', W', 3]); a (C, L) code gives C strips, and a longer shape keeps its
    last axis as the width. Colours: ``heat_rgb`` with ``scale``."""
    shape = tuple(int(s) for s in shape)
    c = shape[0]
    rest = shape[1:] or (1,)
    width = rest[-1]
    maps = np.asarray(z, np.float32).reshape(c, -1, width)  # [C, h, w]
    rgb = heat_rgb(maps, scale).transpose(0, 3, 1, 2)  # [C, 3, h, w]
    px = max(1, cell_px // max(maps.shape[1:]))
    return image_grid(rgb, nrow=min(columns, c), scale=px, captions=[f"c{i}" for i in range(c)])


def _to_uint8_hwc(image: np.ndarray, scale: int = 1) -> np.ndarray:
    """One image [C, H, W] float in [0, 1] -> uint8 [H * scale, W * scale, 3], nearest upscaling."""
    image = np.asarray(image, np.float32)
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    out = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return out.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else out


def image_grid(images: np.ndarray, nrow: int, pad: int = 2, scale: int = 1,
               captions: Sequence[str] | None = None, row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Images [N, C, H, W] float in [0, 1] -> one RGB uint8 grid [H', W', 3], ``nrow`` per row.

    H' = rows * (H * scale + pad) + pad with rows = ceil(N / nrow); W' likewise with
    min(nrow, N) columns. Cells are separated by mid-grey padding. ``captions`` (one per image)
    are written under the cells and ``row_labels`` (one per row) to their left, in a band added
    for them, so a strip of classes or a grid of dimensions says what each part shows.
    """
    n, _, h, w = images.shape
    cols = max(1, min(nrow, n))
    rows = -(-n // cols)
    ch, cw = h * scale + pad, w * scale + pad
    grid = np.full((rows * ch + pad, cols * cw + pad, 3), PAD_VALUE, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * ch: pad + r * ch + h * scale,
             pad + c * cw: pad + c * cw + w * scale] = _to_uint8_hwc(images[i], scale)
    if captions is None and row_labels is None:
        return grid
    return _label_grid(grid, rows, cols, ch, cw, pad, captions, row_labels)


LABEL_PX = 14  # height of a caption line


def _label_grid(grid: np.ndarray, rows: int, cols: int, ch: int, cw: int, pad: int,
                captions: Sequence[str] | None, row_labels: Sequence[str] | None) -> np.ndarray:
    """The grid with a caption band under every row of cells and a label column on the left."""
    from PIL import ImageDraw

    font = _font()
    left = 0 if row_labels is None else max(_text_width(font, t) for t in row_labels) + 8
    band = 0 if captions is None else LABEL_PX + 2
    out = Image.new("RGB", (left + grid.shape[1], grid.shape[0] + rows * band), "white")
    draw = ImageDraw.Draw(out)
    for r in range(rows):
        top = r * (ch + band)
        out.paste(Image.fromarray(grid[r * ch: r * ch + ch + pad]), (left, top))
        if row_labels is not None and r < len(row_labels):
            draw.text((4, top + pad + (ch - LABEL_PX) // 2), str(row_labels[r]), fill="black", font=font)
        for c in range(cols):
            i = r * cols + c
            if captions is not None and i < len(captions):
                text = _fit_text(font, str(captions[i]), cw - 2)
                x = left + pad + c * cw + (cw - pad - _text_width(font, text)) // 2
                draw.text((max(left, x), top + ch + pad), text, fill="black", font=font)
    return np.asarray(out)


def _font(size: int = 12) -> object:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an old Pillow without scalable default fonts
        return ImageFont.load_default()


def _text_width(font: object, text: str) -> int:
    return int(font.getlength(text)) if hasattr(font, "getlength") else 6 * len(text)


def _fit_text(font: object, text: str, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    while len(text) > 1 and _text_width(font, text) > width:
        text = text[:-2] + "…"
    return text


def to_pil(image: np.ndarray, scale: int = 1) -> Image.Image:
    """One image [C, H, W] float in [0, 1] -> PIL image ("L" for grey, "RGB" for colour)."""
    rgb = _to_uint8_hwc(image, scale)
    return Image.fromarray(rgb[..., 0]) if image.shape[0] == 1 else Image.fromarray(rgb)


def gif_bytes(images: np.ndarray, scale: int, duration_ms: int = 80) -> bytes:
    """Frames [N, C, H, W] float in [0, 1] -> an animated, looping GIF.

    Pillow merges consecutive identical frames into one longer frame, so the file may hold fewer
    frames than N when the sequence pauses.
    """
    frames = [to_pil(image, scale) for image in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=duration_ms, loop=0)
    return buf.getvalue()


# -- diagnostics ----------------------------------------------------------------------------------
def kl_bar_chart(kl_per_dim: np.ndarray, active: np.ndarray, dead_below: float = 0.01,
                 names: Sequence[str] | None = None) -> go.Figure:
    """KL per latent dimension [D] as bars in three groups: used (its code moves with the image and
    it carries information), moving but carrying almost nothing (KL below ``dead_below`` nats),
    and unused (its code does not move). ``names`` [D] name the dims in the hover ("c2 (3,5)" for
    a spatial code); z0, z1, ... without them."""
    kl = np.asarray(kl_per_dim, np.float64)
    active = np.asarray(active, bool)
    dims = np.arange(len(kl))
    labels = np.asarray(list(names) if names is not None and len(names) == len(kl) else [f"z{d}" for d in dims])
    used = active & (kl >= dead_below)
    fig = go.Figure()
    for name, mask, colour in (("used", used, ACTIVE_COLOR), ("moves, carries ~nothing", active & ~used, NEARLY_COLOR),
                               ("unused", ~active, INACTIVE_COLOR)):
        fig.add_trace(go.Bar(x=dims[mask], y=kl[mask], name=name, marker_color=colour, customdata=labels[mask],
                             hovertemplate="%{customdata}: %{y:.3f} nats<extra>" + name + "</extra>"))
    fig.update_layout(title=f"KL per dimension ({int(used.sum())} of {len(kl)} used)",
                      xaxis={"title": "latent dimension", "tickmode": "linear", "dtick": 1 if len(kl) <= 32 else 4},
                      yaxis={"title": "mean KL (nats)"}, bargap=0.15,
                      legend={"orientation": "h", "y": -0.25, "x": 0}, margin={"b": 80})
    return fig


def activation_chart(mean_activation: np.ndarray, target: float) -> go.Figure:
    """Each code unit's mean activation over the images [D] as bars, against the target ρ (a line)."""
    values = np.asarray(mean_activation, np.float64)
    fig = go.Figure(go.Bar(x=np.arange(len(values)), y=values, marker_color=ACTIVE_COLOR, name="mean activation",
                           hovertemplate="unit %{x}: %{y:.3f}<extra></extra>"))
    fig.add_hline(y=target, line={"color": "crimson", "dash": "dash"}, annotation_text=f"target ρ = {target:g}")
    fig.update_layout(title=f"Mean activation per code unit (mean {values.mean():.3f}, target {target:g})",
                      xaxis={"title": "code unit"}, yaxis={"title": "mean activation over the images"},
                      showlegend=False, bargap=0.1)
    return fig


HISTORY_SKIPPED = {"epoch", "seconds"}  # the x axis, and bookkeeping rather than training


def training_curves(history: list[dict]) -> go.Figure:
    """One line per numeric key of the per-epoch dicts (x = "epoch" if present, else 1..E).

    Losses (keys ending in loss / recon / kl, in nats) share the left axis; everything else
    (KL weight, temperature, clustering accuracy: values near 0..1) goes on the right axis, titled
    with their names, so the two scales do not flatten each other. The epoch time is left out.
    """
    keys = list(dict.fromkeys(k for row in history for k, v in row.items()
                              if k not in HISTORY_SKIPPED and isinstance(v, numbers.Real) and not isinstance(v, bool)))
    x = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    right = [key for key in keys if not key.endswith(("loss", "recon", "kl"))]  # the rest are in nats
    fig = go.Figure()
    for key in keys:
        y = [row.get(key) for row in history]  # None where an epoch lacks the key: a gap
        dash = "dot" if key.startswith("val") else "solid"
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=key, line={"dash": dash},
                                 yaxis="y2" if key in right else "y"))
    fig.update_layout(title="Training history", xaxis={"title": "epoch"}, yaxis={"title": "nats"},
                      yaxis2={"title": " / ".join(right), "overlaying": "y", "side": "right",
                              "showgrid": False, "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.25, "x": 0}, margin={"b": 90})  # below: clear of the axes
    return fig
