"""explorer.figures: the latent map at scale, image grids, GIFs and the diagnostic charts."""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from vaescope.explorer.core.figures import (
    INACTIVE_COLOR,
    gif_bytes,
    image_grid,
    kl_bar_chart,
    latent_map,
    to_pil,
    training_curves,
)

RNG = np.random.default_rng(0)


def data_traces(fig: go.Figure) -> list:
    """The traces that carry dataset points (customdata = index)."""
    return [t for t in fig.data if t.customdata is not None]


# -- latent map -----------------------------------------------------------------------------------
def test_latent_map_of_70k_points_has_one_trace_per_class_and_every_point() -> None:
    n = 70_000
    coords = RNG.normal(size=(n, 2)).astype(np.float32)
    labels = RNG.integers(-1, 10, n)
    fig = latent_map(coords, labels, "categorical", [f"digit {i}" for i in range(10)], title="map")
    traces = data_traces(fig)
    assert len(traces) == len(fig.data) == 11  # ten classes and "unknown"
    assert all(isinstance(t, go.Scattergl) for t in traces)
    assert sum(len(t.x) for t in traces) == n
    assert {t.name for t in traces} == {"unknown"} | {f"digit {i}" for i in range(10)}
    index = np.concatenate([t.customdata for t in traces])
    np.testing.assert_array_equal(np.sort(index), np.arange(n))


def test_customdata_round_trips_to_the_points_coordinates_and_labels() -> None:
    coords = RNG.normal(size=(500, 2)).astype(np.float32)
    labels = RNG.integers(0, 4, 500)
    fig = latent_map(coords, labels, "categorical", None)
    for trace in data_traces(fig):
        idx = np.asarray(trace.customdata)
        np.testing.assert_array_equal(np.asarray(trace.x), coords[idx, 0])
        np.testing.assert_array_equal(np.asarray(trace.y), coords[idx, 1])
        assert (labels[idx] == int(trace.name)).all()
        assert "%{customdata}" in trace.hovertemplate and trace.name in trace.hovertemplate


def test_per_point_hover_labels_and_continuous_colouring() -> None:
    coords = RNG.normal(size=(300, 2))
    errors = RNG.random(300)
    names = [f"pt{i}" for i in range(300)]
    fig = latent_map(coords, errors, "continuous", names)
    (trace,) = data_traces(fig)
    assert trace.marker.showscale and len(trace.x) == 300
    np.testing.assert_array_equal(np.asarray(trace.customdata), np.arange(300))
    assert list(trace.text[:2]) == ["pt0", "pt1"] and "%{text}" in trace.hovertemplate
    with pytest.raises(ValueError, match="color_kind"):
        latent_map(coords, errors, "rainbow", None)
    with pytest.raises(ValueError, match="one label per point"):
        latent_map(coords, errors, "continuous", ["a", "b"])


def test_3d_map_uses_scatter3d_and_overlay_and_path_add_traces() -> None:
    coords = RNG.normal(size=(400, 3))
    labels = RNG.integers(0, 3, 400)
    plain = latent_map(coords, labels, "categorical", None)
    fig = latent_map(coords, labels, "categorical", None, overlay=RNG.normal(size=(16, 3)),
                     overlay_name="prior samples", path=RNG.normal(size=(8, 3)))
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    assert len(fig.data) == len(plain.data) + 2
    overlay, path = fig.data[-2], fig.data[-1]
    assert overlay.name == "prior samples" and len(overlay.x) == 16 and overlay.marker.symbol == "x"
    assert path.mode == "lines+markers" and len(path.z) == 8
    assert len(data_traces(fig)) == 3  # the overlay and path carry no dataset index


# -- images ---------------------------------------------------------------------------------------
def test_image_grid_shape_padding_and_placement() -> None:
    images = RNG.random((7, 1, 8, 8)).astype(np.float32)
    grid = image_grid(images, nrow=3, pad=2, scale=2)
    rows, cols, cell = 3, 3, 8 * 2 + 2
    assert grid.shape == (rows * cell + 2, cols * cell + 2, 3) and grid.dtype == np.uint8
    # the 5th image (row 1, col 1) sits at its cell, upscaled by nearest neighbour
    block = grid[2 + cell:2 + cell + 16, 2 + cell:2 + cell + 16, 0]
    expected = np.round(images[4, 0] * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(block, expected)
    assert image_grid(RNG.random((2, 3, 5, 4)), nrow=8, pad=0).shape == (5, 8, 3)


def test_to_pil_modes_and_scaling() -> None:
    grey = to_pil(RNG.random((1, 8, 8)), scale=4)
    colour = to_pil(RNG.random((3, 8, 6)))
    assert (grey.mode, grey.size) == ("L", (32, 32))
    assert (colour.mode, colour.size) == ("RGB", (6, 8))


def test_gif_has_every_frame_and_loops() -> None:
    frames = np.linspace(0, 1, 6, dtype=np.float32)[:, None, None, None] * np.ones((6, 1, 8, 8), np.float32)
    data = gif_bytes(frames, scale=3, duration_ms=50)
    assert data.startswith(b"GIF8")
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 6 and gif.size == (24, 24)
    assert gif.info.get("loop") == 0


# -- diagnostics ----------------------------------------------------------------------------------
def test_kl_bar_chart_marks_used_nearly_dead_and_unused_dims() -> None:
    kl = np.array([1.5, 0.001, 0.3, 0.0, 0.004])
    active = np.array([True, False, True, False, True])  # z4's code moves, but it carries ~nothing
    fig = kl_bar_chart(kl, active)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_array_equal(np.asarray(by_name["used"].x), [0, 2])
    np.testing.assert_array_equal(np.asarray(by_name["moves, carries ~nothing"].x), [4])
    np.testing.assert_array_equal(np.asarray(by_name["unused"].x), [1, 3])
    assert by_name["unused"].marker.color == INACTIVE_COLOR
    assert "2 of 5 used" in fig.layout.title.text


def test_grid_captions_and_row_labels_add_bands_with_text() -> None:
    images = np.zeros((6, 1, 8, 8), np.float32)
    plain = image_grid(images, nrow=3, scale=4)
    labelled = image_grid(images, nrow=3, scale=4, captions=[f"c{i}" for i in range(6)], row_labels=["z0", "z1"])
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    ink = labelled.min(axis=2) < 100  # dark text on the white bands, beside and below the cells
    assert ink[:, : labelled.shape[1] - plain.shape[1]].any() and ink[plain.shape[0] // 2 + 2: plain.shape[0] // 2 + 16].any()


def test_training_curves_has_a_trace_per_history_key() -> None:
    history = [{"epoch": e, "train_loss": 10.0 / e, "train_kl": 1.0 + e, "val_loss": 11.0 / e}
               for e in range(1, 5)]
    history[-1]["train_recon"] = np.float32(3.0)  # appears late: gaps before it; numpy is numeric
    history[0]["note"] = "warm-up"  # not numeric: no trace
    for row in history:
        row |= {"seconds": 50.0, "temperature": 0.5, "val_cluster_accuracy": 0.6}
    fig = training_curves(history)
    assert {t.name for t in fig.data} == {"train_loss", "train_kl", "val_loss", "train_recon", "temperature",
                                          "val_cluster_accuracy"}  # the epoch time is no curve
    # nats on the left axis; schedules and accuracy (0..1) on the right, so neither scale flattens the other
    assert {t.name: t.yaxis for t in fig.data} == {"train_loss": "y", "train_kl": "y", "val_loss": "y",
                                                   "train_recon": "y", "temperature": "y2",
                                                   "val_cluster_accuracy": "y2"}
    assert fig.layout.yaxis2.overlaying == "y"
    assert fig.layout.yaxis2.title.text == "temperature / val_cluster_accuracy"  # names what it holds
    loss = next(t for t in fig.data if t.name == "train_loss")
    assert list(loss.x) == [1, 2, 3, 4] and loss.y[0] == 10.0
    recon = next(t for t in fig.data if t.name == "train_recon")
    assert list(recon.y) == [None, None, None, 3.0]
