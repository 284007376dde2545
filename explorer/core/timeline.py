"""Watching a latent space form: the codes ``latent-train --record`` stored during training, as an
animated map (plotly frames, a play button and a slider over the recorded moments).

Every frame is placed by one projection, fitted on the last frame (PCA; a 2-d code is shown as it
is), so what moves on screen is the codes moving, not the axes being refitted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from sklearn.decomposition import PCA

from vaescope.errors import InputError
from vaescope.explorer.core.figures import PALETTES
from vaescope.explorer.core.store import ModelEntry

FRAME_MS = 500


def project_frames(codes: np.ndarray) -> np.ndarray:
    """Codes [E, N, D] -> 2-d points [E, N, 2] under one PCA fitted on the last frame."""
    codes = np.asarray(codes, np.float32)
    if codes.ndim != 3 or codes.shape[0] < 1:
        raise ValueError(f"recorded codes must be [frames, points, dims], got {list(codes.shape)}")
    frames, n, d = codes.shape
    if d <= 2:
        return np.concatenate([codes, np.zeros((frames, n, 2 - d), np.float32)], axis=2)
    pca = PCA(2).fit(codes[-1])
    return pca.transform(codes.reshape(-1, d)).reshape(frames, n, 2).astype(np.float32)


def frame_label(epoch: float) -> str:
    """A recorded moment in words: "start", "epoch 0.25", "epoch 3"."""
    return "start" if epoch <= 0 else f"epoch {epoch:g}"


def frame_labels(epochs: Sequence[float]) -> list[str]:
    """A unique label per frame; a repeated epoch is the frame after the mixture was initialised
    (the record's convention)."""
    labels: list[str] = []
    for e in epochs:
        label = frame_label(float(e))
        labels.append(f"{label} (after initialising the mixture)" if labels and labels[-1] == label else label)
    return labels


def timeline_figure(codes: np.ndarray, labels: np.ndarray, epochs: Sequence[float], class_names: Sequence[str],
                    title: str) -> go.Figure:
    """The animated map: a trace per class, a frame per recorded moment, play / pause and a slider."""
    points = project_frames(codes)
    labels = np.asarray(labels)
    classes = [int(c) for c in np.unique(labels)]
    lo, hi = np.percentile(points.reshape(-1, 2), [0.5, 99.5], axis=0)
    pad = 0.08 * (hi - lo + 1e-6)

    # SVG, not WebGL: plotly.js 3 fails animating a scattergl trace to a frame with redraw (a page
    # error and an empty plot); a few thousand SVG markers animate smoothly. Plain dicts, not
    # go.Scatter objects: validating a trace per class and frame took 2 s for two models' records.
    colours = PALETTES["classes"]

    def traces(frame: int) -> list[dict[str, Any]]:
        return [{"type": "scatter", "x": points[frame, labels == c, 0], "y": points[frame, labels == c, 1],
                 "mode": "markers", "name": _name(c, class_names),
                 "marker": {"size": 4, "color": colours[c % len(colours)] if c >= 0 else "#888"}}
                for c in classes]

    names = frame_labels(epochs)
    # Gradio's Plot draws a figure with Plotly.react(data, layout, config) and drops its frames, so
    # the play button would have nothing to play: the frames travel in layout.meta, where
    # static/bridge.js finds them and adds them to the drawn plot
    frames = [{"name": names[i], "data": traces(i), "layout": {"title": {"text": f"{title} · {names[i]}"}}}
              for i in range(len(points))]
    play: dict[str, Any] = {"frame": {"duration": FRAME_MS, "redraw": True}, "fromcurrent": True,
                            "transition": {"duration": 0}}
    layout = {
        "title": {"text": f"{title} · {names[0]}"}, "height": 460, "legend": {"itemsizing": "constant"},
        "xaxis": {"range": [lo[0] - pad[0], hi[0] + pad[0]], "title": {"text": "PC 1 of the last frame"}},
        "yaxis": {"range": [lo[1] - pad[1], hi[1] + pad[1]], "title": {"text": "PC 2"}},
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "meta": {"frames": frames},
        "updatemenus": [{"type": "buttons", "direction": "left", "x": 0, "y": -0.12, "xanchor": "left",
                         "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                     {"label": "❚❚ Pause", "method": "animate",
                                      "args": [[None], {"frame": {"duration": 0}, "mode": "immediate"}]}]}],
        "sliders": [{"active": 0, "x": 0.2, "len": 0.8, "y": -0.08, "currentvalue": {"prefix": "training: "},
                     "steps": [{"label": name, "method": "animate",
                                "args": [[name], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate"}]}
                               for name in names]}]}
    return go.Figure({"data": traces(0), "layout": layout})


def _name(label: int, class_names: Sequence[str]) -> str:
    if label < 0:
        return "unlabelled"
    return class_names[label] if label < len(class_names) else str(label)


def training_timeline(entry: ModelEntry) -> tuple[go.Figure, str]:
    """The animated map of the record ``entry``'s checkpoint carries, and a sentence on it; an
    InputError when it has none."""
    derived = entry.derived
    if not derived.record_read:
        from vaescope.training.checkpoint import read_record

        derived.record = read_record(entry.path) if entry.path is not None and not _is_bundle(entry) else None
        derived.record_read = True
    record = derived.record
    if record is None:
        raise InputError("this checkpoint carries no training record (train with latent-train --record N to keep one)")
    frames, points, dims = record.codes.shape
    names = entry.description.class_names
    title = entry.name.removesuffix(".safetensors")
    words = (f"{frames} recorded moments of training, {points:,} test images each: press ▶ Play, or drag the slider. "
             f"The axes are the last frame's first two principal components" if dims > 2 else
             f"{frames} recorded moments of training, {points:,} test images each, in the 2-d code itself: press "
             f"▶ Play, or drag the slider")
    if derived.timeline is None:  # drawn once per model, kept as a plain dict: every page and lesson
        # builds its own figure from a deep copy (plotly briefly changes the source it builds from,
        # so two threads building from one source at once can get the wrong trace type)
        derived.timeline = timeline_figure(record.codes, record.labels, [float(e) for e in record.epochs], names,
                                           title).to_dict()
    return go.Figure(copy.deepcopy(derived.timeline)), words + "."


def _is_bundle(entry: ModelEntry) -> bool:
    from vaescope.bundle import is_bundle

    return is_bundle(entry.path)
