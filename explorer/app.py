"""The Gradio explorer: `latent-explore --checkpoints DIR`.

``build_app`` lays the page out and wires events to handlers; the handlers are thin adapters over
pure functions (``explorer.loading``, ``traversal``, ``interpolation``, ``sampling``, ``figures``
and the small helpers at the bottom of this file). Importing this module starts nothing.

Concurrency: the heavy work (loading and encoding a checkpoint, fitting a projection) runs in its
own concurrency groups with small limits, and single-flight per checkpoint in ``ModelStore`` and
``ProjectionCache``; the slider handler is a few milliseconds of decoding in a wide group, so a
t-SNE fit never stalls someone dragging a slider.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from explorer import figures, interpolation, sampling, traversal
from explorer.loading import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageError,
    ModelEntry,
    ModelStore,
    choose_default,
    default_cache_dir,
    pick_device,
    prepare_image,
)
from explorer.projection import Projection, ProjectionCache
from training.checkpoint import CheckpointError

SLIDERS = 16  # sliders on screen; wider models page through their dims, highest KL first
PREVIEW_PX = 224  # single images are upscaled (nearest) to about this size
SLIDER_STEPS = 200  # slider resolution across its range
STRIP_PX = 64  # cell size of interpolation strips and class rows
PRIOR_OVERLAY_POINTS = 300
TRAVERSAL_GRID_DIMS = SLIDERS
DEFAULT_MAX_UPLOAD_MB = 200  # checkpoints are uploaded too; images are capped by prepare_image
SLIDER_CONCURRENCY = 16  # cheap decode-one-image handlers: serve many users at once
MAP_CONCURRENCY = 2  # projections fit on the CPU: at most two at a time, one per core
LOAD_CONCURRENCY = 2
DEFAULT_CONCURRENCY = 8

PROGRESS = gr.Progress()  # a marker default: Gradio hands each call its own tracker in its place

COLOR_LABELS = {"class": "class", "component": "GMVAE component", "recon": "reconstruction error",
                "kl": "KL per point"}

CSS = """
#pick-btn, #pick-data { display: none !important; }
.pixelated img { image-rendering: pixelated; image-rendering: crisp-edges; }
#model-card table { font-size: 0.9em; }
#traversal-image { max-width: 260px; margin: 0 auto; }
"""

# The plotly click bridge (see shared/design.md): gr.Plot has no click event, so a script binds
# plotly_click on the map, stores the point (or, on empty space, the data coordinates) in
# window.__picked and clicks the hidden #pick-btn, whose listener reads it with a js function.
# The map is re-rendered on every redraw, so binding is re-checked on a timer.
HEAD = """
<script>
(() => {
  const send = (payload) => {
    window.__picked = JSON.stringify(payload);
    const btn = document.querySelector('#pick-btn');
    if (btn) btn.click();
  };
  const bind = () => {
    const gd = document.querySelector('#latent-map .js-plotly-plot');
    if (!gd || gd.__vaescopeBound || typeof gd.on !== 'function') return;
    gd.__vaescopeBound = true;
    let lastPoint = 0, down = null;
    gd.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p) return;
      lastPoint = Date.now();
      const cd = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      if (cd !== undefined && cd !== null && cd !== '') send({kind: 'point', index: Number(cd), t: lastPoint});
      else send({kind: 'xy', x: p.x, y: p.y, t: lastPoint});
    });
    // Empty space: plotly sends no event, so turn a still click on the 2D plot area into data coords.
    gd.addEventListener('mousedown', (e) => { down = {x: e.clientX, y: e.clientY, t: Date.now()}; }, true);
    document.addEventListener('mouseup', (e) => {
      const start = down; down = null;
      if (!start || Math.hypot(e.clientX - start.x, e.clientY - start.y) > 4) return;
      const layout = gd._fullLayout;
      const area = gd.querySelector('.nsewdrag');
      if (!layout || !layout.xaxis || !layout.yaxis || !area || layout.scene) return;
      const r = area.getBoundingClientRect();
      if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) return;
      const x = layout.xaxis.p2c(e.clientX - r.left), y = layout.yaxis.p2c(e.clientY - r.top);
      setTimeout(() => { if (lastPoint < start.t) send({kind: 'xy', x: x, y: y, t: Date.now()}); }, 120);
    }, true);
  };
  setInterval(bind, 300);
})();
</script>
"""


# -- the app ------------------------------------------------------------------------------------
class ExplorerBlocks(gr.Blocks):
    """gr.Blocks whose ``launch`` defaults to the explorer's CSS, click bridge and upload cap.

    Gradio 6 takes ``css`` / ``head`` in ``launch``, so a caller that launches ``build_app(...)``
    itself (tests, notebooks) still gets a working map without repeating them.
    """

    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB

    def launch(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("head", HEAD)
        kwargs.setdefault("max_file_size", f"{self.max_upload_mb}mb")
        return super().launch(*args, **kwargs)


def build_app(checkpoint_dir: str | Path, device: str = "auto", *, cache_dir: Path | None = None,
              data_dir: str | Path | None = None, default_checkpoint: str | None = None,
              max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, max_models: int = 4) -> gr.Blocks:
    """The explorer for the checkpoints under ``checkpoint_dir``; call ``.launch()`` to serve it.

    ``cache_dir`` keeps fitted projections on disk (memory only when None); ``data_dir`` is where
    datasets are looked for (default: each checkpoint's own train config).
    """
    store = ModelStore(Path(checkpoint_dir), pick_device(device), data_dir=data_dir, max_models=max_models)
    h = Handlers(store, ProjectionCache(cache_dir), default_checkpoint)
    with ExplorerBlocks(title="vaescope explorer") as demo:
        demo.max_upload_mb = max_upload_mb
        ui = _layout(store, max_upload_mb, default_checkpoint)
        _wire(demo, ui, h)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    return demo


@dataclass
class UI:
    """The components the handlers read and write, by name."""

    c: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.c[name]

    def many(self, *names: str) -> list[Any]:
        return [self.c[n] for n in names]


def _layout(store: ModelStore, max_upload_mb: int, default: str | None) -> UI:
    c: dict[str, Any] = {}
    c["model_key"], c["code"], c["map_view"] = gr.State(None), gr.State(None), gr.State(None)
    c["picked"], c["ends"] = gr.State(None), gr.State(None)
    names = store.names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("## vaescope — latent explorer")
            with gr.Row(equal_height=True):
                c["checkpoint"] = gr.Dropdown(choices=names, value=default if default in names else
                                              choose_default(store.root, names),
                                              label=f"Checkpoint in {store.root}", elem_id="checkpoint-dropdown",
                                              interactive=True, scale=4)
                with gr.Column(scale=1, min_width=150):
                    c["refresh"] = gr.Button("↻ Refresh list", size="sm", elem_id="checkpoint-refresh")
                    c["upload_ckpt"] = gr.UploadButton("⇪ Upload .safetensors", file_types=[".safetensors"],
                                                       size="sm", elem_id="checkpoint-upload")
            gr.Markdown(f"<small>Uploads: up to {max_upload_mb} MB per file; images up to "
                        f"{MAX_IMAGE_BYTES // 2**20} MB and {MAX_IMAGE_PIXELS // 10**6} megapixels.</small>",
                        elem_id="upload-cap")
        with gr.Column(scale=3, min_width=420):
            c["card"] = gr.Markdown("Loading…", elem_id="model-card")
            c["note"] = gr.Markdown("", elem_id="data-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            _map_panel(c)
        with gr.Column(scale=2, min_width=320):
            _traversal_panel(c)
    with gr.Tabs():
        with gr.Tab("Traversal grid", elem_id="tab-grid"):
            _grid_tab(c)
        with gr.Tab("Interpolation", elem_id="tab-interpolation"):
            _interpolation_tab(c)
        with gr.Tab("Class sampling", elem_id="tab-sampling"):
            _sampling_tab(c)
        with gr.Tab("Diagnostics", elem_id="tab-diagnostics"):
            _diagnostics_tab(c)
    return UI(c)


def _map_panel(c: dict[str, Any]) -> None:
    with gr.Row(equal_height=True):
        c["method"] = gr.Dropdown([("PCA", "pca"), ("t-SNE", "tsne"), ("UMAP", "umap")], value="pca",
                                  label="Projection", elem_id="map-method", min_width=120)
        c["dims"] = gr.Dropdown([("2D", 2), ("3D", 3)], value=2, label="Dims", elem_id="map-dims", min_width=90)
        c["color"] = gr.Dropdown([(v, k) for k, v in COLOR_LABELS.items()], value="class",
                                 label="Colour by", elem_id="map-color", min_width=140)
        c["overlay"] = gr.Dropdown([("none", "none"), ("prior samples", "prior")], value="none",
                                   label="Overlay", elem_id="map-overlay", min_width=140)
        c["max_points"] = gr.Number(0, precision=0, minimum=0, label="Max points (0 = all)",
                                    elem_id="map-max-points", min_width=100)
        c["draw"] = gr.Button("Draw", variant="primary", elem_id="map-draw-btn", min_width=70, scale=0)
    c["map"] = gr.Plot(label="Latent map (click a point)", elem_id="latent-map")
    c["map_info"] = gr.Markdown("", elem_id="map-info")
    c["pick_data"] = gr.Textbox(visible=False, elem_id="pick-data")
    c["pick_btn"] = gr.Button("pick", elem_id="pick-btn")
    with gr.Row(equal_height=False):
        c["picked_original"] = gr.Image(label="Picked: original", format="png", height=140, width=140,
                                        interactive=False, elem_id="picked-original", elem_classes="pixelated",
                                        min_width=140, scale=0)
        c["picked_recon"] = gr.Image(label="Reconstruction", format="png", height=140, width=140,
                                     interactive=False, elem_id="picked-recon", elem_classes="pixelated",
                                     min_width=140, scale=0)
        c["picked_info"] = gr.Markdown("Click a point on the map to see it here and traverse from it.",
                                       elem_id="picked-info")


def _traversal_panel(c: dict[str, Any]) -> None:
    gr.Markdown("### Traversal")
    c["trav_image"] = gr.Image(label="Decoded", format="png", height=PREVIEW_PX + 20, interactive=False,
                               elem_id="traversal-image", elem_classes="pixelated")
    c["trav_info"] = gr.Markdown("", elem_id="traversal-info")
    with gr.Row():
        c["trav_index"] = gr.Number(0, precision=0, minimum=0, label="Test image #", elem_id="traversal-index",
                                    min_width=100)
        c["trav_index_btn"] = gr.Button("Start from image", size="sm", elem_id="traversal-index-btn")
        c["trav_random"] = gr.Button("Random prior sample", size="sm", elem_id="traversal-random-btn")
        c["trav_reset"] = gr.Button("Reset", size="sm", elem_id="traversal-reset")
    with gr.Row():
        c["trav_range"] = gr.Radio([("±3 prior sd", "prior"), ("data min–max", "data")], value="prior",
                                   label="Slider range", elem_id="traversal-range")
        c["trav_class"] = gr.Dropdown([], label="Decode as class (CVAE)", visible=False,
                                      elem_id="traversal-class")
    c["dim_page"] = gr.Dropdown([("dims 1–16", 0)], value=0, label="Dimension page", visible=False,
                                elem_id="dim-page")
    c["sliders"] = [gr.Slider(-3, 3, value=0, step=0.03, label=f"z{i}", elem_id=f"dim-slider-{i}")
                    for i in range(SLIDERS)]
    with gr.Accordion("Start from your own image or a drawing", open=False):
        c["trav_upload"] = gr.File(label="Image (PNG / JPEG …); converted to the model's size",
                                   file_types=["image"], elem_id="traversal-upload", height=110)
        c["sketch"] = gr.Sketchpad(type="numpy", canvas_size=(280, 280), fixed_canvas=True, layers=False,
                                   brush=gr.Brush(default_size=20, colors=["#000000"], color_mode="fixed"),
                                   label="…or draw: pick the brush, draw, then encode",
                                   height=330, elem_id="traversal-sketch")
        c["sketch_btn"] = gr.Button("Encode the drawing", size="sm", elem_id="traversal-sketch-btn")


def _grid_tab(c: dict[str, Any]) -> None:
    gr.Markdown("Each row moves one dimension of the current code across the slider range "
                "(rows follow the current dimension page, highest KL first).")
    with gr.Row():
        c["grid_steps"] = gr.Slider(3, 15, value=9, step=1, label="Steps", elem_id="traversal-grid-steps")
        c["grid_btn"] = gr.Button("Make traversal grid", variant="primary", elem_id="traversal-grid-btn")
    c["grid_image"] = gr.Image(label="Traversal grid", format="png", interactive=False, height=380,
                               elem_id="traversal-grid", elem_classes="pixelated")
    c["grid_file"] = gr.File(label="PNG download", interactive=False, height=70, elem_id="traversal-grid-file")


def _endpoint(c: dict[str, Any], end: str) -> None:
    with gr.Column(min_width=220):
        gr.Markdown(f"**Endpoint {end.upper()}**")
        c[f"{end}_image"] = gr.Image(label=f"{end.upper()}", format="png", height=130, interactive=False,
                                     elem_id=f"interp-{end}-image", elem_classes="pixelated")
        with gr.Row():
            c[f"{end}_index"] = gr.Number(0 if end == "a" else 1, precision=0, minimum=0, label="Test image #",
                                          elem_id=f"interp-{end}-index", min_width=90)
            c[f"{end}_index_btn"] = gr.Button("Use image", size="sm", elem_id=f"interp-{end}-index-btn")
        c[f"{end}_pick_btn"] = gr.Button("Use the point picked on the map", size="sm",
                                         elem_id=f"interp-{end}-pick-btn")
        c[f"{end}_upload"] = gr.File(label="…or upload an image", file_types=["image"], height=90,
                                     elem_id=f"interp-{end}-upload")


def _interpolation_tab(c: dict[str, Any]) -> None:
    with gr.Row():
        _endpoint(c, "a")
        _endpoint(c, "b")
        with gr.Column(min_width=220):
            c["interp_steps"] = gr.Slider(2, 32, value=10, step=1, label="Steps", elem_id="interp-steps")
            c["interp_method"] = gr.Radio([("linear", "linear"), ("slerp", "slerp")], value="linear",
                                          label="Path", elem_id="interp-method")
            c["interp_btn"] = gr.Button("Interpolate", variant="primary", elem_id="interp-btn")
            c["interp_info"] = gr.Markdown("", elem_id="interp-info")
    c["interp_strip"] = gr.Image(label="Decoded path (A → B); the path is drawn on the map above",
                                 format="png", interactive=False, height=120, elem_id="interp-strip",
                                 elem_classes="pixelated")
    with gr.Row():
        c["interp_gif_view"] = gr.Image(label="Animation", type="filepath", format="gif", interactive=False,
                                        height=160, elem_id="interp-gif-view", elem_classes="pixelated")
        c["interp_gif"] = gr.File(label="GIF download", interactive=False, height=70, elem_id="interp-gif")


def _sampling_tab(c: dict[str, Any]) -> None:
    with gr.Row():
        c["sample_class"] = gr.Dropdown([], label="Class", elem_id="sample-class")
        c["sample_n"] = gr.Slider(1, 64, value=16, step=1, label="N", elem_id="sample-n")
        c["sample_seed"] = gr.Number(0, precision=0, label="Seed", elem_id="sample-seed")
        c["sample_temp"] = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                     elem_id="sample-temperature")
        c["sample_btn"] = gr.Button("Sample", variant="primary", elem_id="sample-btn")
    c["sample_note"] = gr.Markdown("", elem_id="sample-note")
    c["sample_grid"] = gr.Image(label="Samples", format="png", interactive=False, height=380, elem_id="sample-grid",
                                elem_classes="pixelated")
    with gr.Group(visible=False) as c["every_group"]:
        c["every_btn"] = gr.Button("CVAE: decode the traversal's current code under every class",
                                   elem_id="sample-every-class-btn")
        c["every_image"] = gr.Image(label="One code, every class", format="png", interactive=False, height=120,
                                    elem_id="sample-every-class", elem_classes="pixelated")


def _diagnostics_tab(c: dict[str, Any]) -> None:
    c["diag_note"] = gr.Markdown("", elem_id="diag-note")
    with gr.Row():
        c["diag_kl"] = gr.Plot(label="KL per dimension", elem_id="diag-kl")
        c["diag_curves"] = gr.Plot(label="Training curves", elem_id="diag-curves")
    with gr.Row():
        c["diag_recon"] = gr.Image(label="Test images (rows 1, 3) and their reconstructions (rows 2, 4)",
                                   format="png", height=300, interactive=False, elem_id="diag-recon",
                                   elem_classes="pixelated")
        c["diag_prior"] = gr.Image(label="Samples from the prior", format="png", height=300, interactive=False,
                                   elem_id="diag-prior", elem_classes="pixelated")


# -- wiring -------------------------------------------------------------------------------------
def _wire(demo: gr.Blocks, ui: UI, h: Handlers) -> None:
    """Connect events to handlers.

    Progress and error badges show only where they help (``show_progress_on`` the card or the map,
    "hidden" for the quick traversal events): a badge over a slider or the dropdown would block it.
    Dropdowns listen to ``select``: their ``input`` fires twice (on choosing and again on blur).
    """
    trav_out = [ui["code"], ui["trav_image"], ui["trav_info"], *ui["sliders"]]
    load_out = [ui["model_key"], ui["checkpoint"], ui["card"], ui["note"], ui["color"], ui["overlay"],
                ui["trav_class"], ui["dim_page"], ui["sample_class"], ui["every_group"], ui["trav_range"],
                ui["diag_note"], ui["diag_kl"], ui["diag_curves"], ui["diag_recon"], ui["diag_prior"],
                ui["picked"], ui["ends"], ui["map_view"], *trav_out]
    h.load_outputs = len(load_out)
    map_in = [ui["model_key"], ui["method"], ui["dims"], ui["color"], ui["overlay"], ui["max_points"],
              ui["ends"]]
    map_out = [ui["map"], ui["map_view"], ui["map_info"]]
    view_in = [ui["model_key"], ui["dim_page"], ui["trav_range"]]
    heavy = {"concurrency_id": "map", "concurrency_limit": MAP_CONCURRENCY, "show_progress_on": [ui["map"]]}
    loading = {"concurrency_id": "load", "concurrency_limit": LOAD_CONCURRENCY, "show_progress_on": [ui["card"]]}
    quick = {"show_progress": "hidden"}

    def then_map(event: Any, name: str) -> None:  # redraw the map once a checkpoint has loaded
        event.success(h.draw_map, map_in, map_out, api_name=name, api_visibility="private", **heavy)

    then_map(demo.load(h.page_load, [ui["checkpoint"], ui["model_key"]], load_out, api_name="page_load",
                       **loading), "map_after_page_load")
    ui["refresh"].click(h.refresh_list, [ui["checkpoint"]], [ui["checkpoint"]], api_name="list_checkpoints",
                        **quick)
    then_map(ui["checkpoint"].select(h.load_checkpoint, [ui["checkpoint"], ui["model_key"]], load_out,
                                    api_name="load_checkpoint", **loading), "map_after_load")
    then_map(ui["upload_ckpt"].upload(h.upload_checkpoint, [ui["upload_ckpt"], ui["model_key"]], load_out,
                                      api_name="upload_checkpoint", **loading), "map_after_upload")

    gr.on([ui["draw"].click, ui["method"].select, ui["dims"].select, ui["color"].select, ui["overlay"].select],
          h.draw_map, map_in, map_out, api_name="draw_map", **heavy)
    # The click bridge: the js reads the picked point; the other inputs pass through unchanged.
    ui["pick_btn"].click(h.pick, [ui["pick_data"], ui["model_key"], ui["map_view"], ui["code"], *view_in[1:]],
                         [ui["picked_original"], ui["picked_recon"], ui["picked_info"], ui["picked"], *trav_out],
                         js="(...inputs) => [window.__picked, ...inputs.slice(1)]", api_name="pick", **quick)

    # Traversal: every slider decodes one image; preprocess=False skips the per-event bounds check.
    for i, slider in enumerate(ui["sliders"]):
        slider.input(h.slider_handler(i), [slider, ui["model_key"], ui["code"], ui["dim_page"]],
                     [ui["trav_image"], ui["code"]], api_name=f"slider_{i}", trigger_mode="always_last",
                     preprocess=False, concurrency_id="traverse", concurrency_limit=SLIDER_CONCURRENCY, **quick)
    ui["trav_index_btn"].click(h.traverse_from_index, [ui["trav_index"], *view_in], trav_out,
                               api_name="traverse_from_index", **quick)
    ui["trav_random"].click(h.traverse_random, [ui["trav_class"], *view_in], trav_out,
                            api_name="traverse_random", **quick)
    ui["trav_upload"].upload(h.traverse_upload, [ui["trav_upload"], ui["trav_class"], *view_in], trav_out,
                             api_name="traverse_upload", **quick)
    ui["sketch_btn"].click(h.traverse_sketch, [ui["sketch"], ui["trav_class"], *view_in], trav_out,
                           api_name="traverse_sketch", **quick)
    ui["trav_reset"].click(h.traverse_reset, [ui["code"], *view_in], trav_out, api_name="traverse_reset", **quick)
    ui["trav_class"].select(h.traverse_class, [ui["trav_class"], ui["code"], *view_in], trav_out,
                           api_name="traverse_class", **quick)
    gr.on([ui["trav_range"].input, ui["dim_page"].select], h.traverse_view, [ui["code"], *view_in], trav_out,
          api_name="traverse_view", **quick)
    ui["grid_btn"].click(h.traversal_grid, [ui["grid_steps"], ui["code"], *view_in],
                         [ui["grid_image"], ui["grid_file"]], api_name="traversal_grid",
                         show_progress_on=[ui["grid_image"]])

    for end in ("a", "b"):
        end_out = [ui["ends"], ui[f"{end}_image"]]
        ui[f"{end}_index_btn"].click(h.endpoint_index(end), [ui[f"{end}_index"], ui["model_key"], ui["ends"]],
                                     end_out, api_name=f"interp_{end}_index", **quick)
        ui[f"{end}_pick_btn"].click(h.endpoint_picked(end), [ui["picked"], ui["model_key"], ui["ends"]],
                                    end_out, api_name=f"interp_{end}_picked", **quick)
        ui[f"{end}_upload"].upload(h.endpoint_upload(end), [ui[f"{end}_upload"], ui["model_key"], ui["ends"],
                                                            ui["trav_class"]], end_out,
                                   api_name=f"interp_{end}_upload", **quick)
    ui["interp_btn"].click(h.interpolate, [ui["interp_steps"], ui["interp_method"], ui["model_key"], ui["ends"],
                                           ui["map_view"], ui["overlay"]],
                           [ui["interp_strip"], ui["interp_gif_view"], ui["interp_gif"], ui["interp_info"],
                            ui["map"], ui["ends"], ui["a_image"], ui["b_image"]], api_name="interpolate",
                           show_progress_on=[ui["interp_strip"]])

    ui["sample_btn"].click(h.sample, [ui["sample_class"], ui["sample_n"], ui["sample_seed"], ui["sample_temp"],
                                      ui["model_key"]], [ui["sample_grid"], ui["sample_note"]],
                           api_name="sample_class", show_progress_on=[ui["sample_grid"]])
    ui["every_btn"].click(h.every_class, [ui["model_key"], ui["code"]], [ui["every_image"]],
                          api_name="decode_every_class", show_progress_on=[ui["every_image"]])


# -- handlers: thin adapters from component values to the pure helpers below --------------------
@dataclass
class Code:
    """The traversal's current latent code and where it came from."""

    z: np.ndarray  # [D] float32
    z0: np.ndarray  # [D] the starting code; Reset returns here
    y: int | None  # decoder condition (a CVAE's class), else None
    source: str  # in words, for the info line
    image: Image.Image | None = None  # decoded preview, filled on first use (interpolation endpoints)

    def moved(self, z: np.ndarray) -> Code:
        return Code(z, self.z0, self.y, self.source)


@dataclass
class MapView:
    """What the session's current map shows, so clicks and paths can be mapped back."""

    key: str
    projection: Projection
    indices: np.ndarray  # [M] test-set index of each plotted row
    title: str
    color_by: str


class Handlers:
    """Event handlers. They hold only server-wide shared objects; per-user data is in gr.State."""

    def __init__(self, store: ModelStore, projections: ProjectionCache, default: str | None) -> None:
        self.store = store
        self.projections = projections
        self.default = default
        self.tmp = Path(tempfile.mkdtemp(prefix="vaescope-explorer-"))
        self.load_outputs = 0  # set by the wiring: how many components a checkpoint load updates

    # -- helpers --
    def entry(self, key: str | None) -> ModelEntry:
        if not key:
            raise gr.Error("No checkpoint is loaded yet: pick one in the dropdown or upload a file.")
        try:
            return self.store.get(key)
        except KeyError:
            raise gr.Error("That checkpoint is no longer available; pick it again in the dropdown.") from None

    def _file(self, suffix: str, data: bytes) -> str:
        path = self.tmp / f"{uuid.uuid4().hex[:12]}{suffix}"
        path.write_bytes(data)
        return str(path)

    # -- checkpoints --
    def refresh_list(self, current: str | None) -> Any:
        names = self.store.names()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def page_load(self, current: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        """Open the default checkpoint (or the next one that loads) when a page opens."""
        names = self.store.names()
        if not names:
            return self._failed(f"No .safetensors checkpoints in {self.store.root}. Train one with latent-train, "
                                f"or upload a checkpoint file on this page.", key, choices=[])
        first = current if current in names else self.default if self.default in names else \
            choose_default(self.store.root, names)
        problems = []
        for name in [first, *(n for n in names if n != first)]:
            try:
                entry = self.store.open_name(name, lambda f, d: progress(f, desc=d))
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            out = self._opened(entry, gr.Dropdown(choices=names, value=name))
            if problems:
                out[3] = f"⚠️ Skipped: {'; '.join(problems)}\n\n{out[3]}"
            return out
        return self._failed(f"No checkpoint could be loaded: {'; '.join(problems)}", key, choices=names)

    def load_checkpoint(self, name: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not name:
            return self._failed("Choose a checkpoint.", key)
        try:
            entry = self.store.open_name(name, lambda f, d: progress(f, desc=d))
        except CheckpointError as exc:
            return self._failed(f"Cannot load checkpoint — {exc}", key)
        return self._opened(entry, gr.skip())

    def upload_checkpoint(self, path: str | None, key: str | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not path:
            return self._failed("No file arrived.", key)
        try:
            entry = self.store.open_path(Path(path), f"uploaded: {Path(path).name}",
                                         lambda f, d: progress(f, desc=d))
        except CheckpointError as exc:
            return self._failed(f"Cannot load the uploaded checkpoint — {exc}", key)
        return self._opened(entry, gr.Dropdown(value=None))

    def _failed(self, message: str, key: str | None, choices: list[str] | None = None) -> list[Any]:
        """A load that did not happen: warn, keep the current model, name it in the dropdown again."""
        gr.Warning(message)
        try:
            current = self.store.get(key).loaded.name if key else None
        except KeyError:
            current = None
        if current not in (choices if choices is not None else self.store.names()):
            current = None  # an uploaded model has no entry in the list
        dropdown = gr.Dropdown(value=current) if choices is None else gr.Dropdown(choices=choices, value=current)
        out: list[Any] = [gr.skip()] * self.load_outputs
        out[1], out[3] = dropdown, f"⚠️ {message}"
        return out

    def _opened(self, entry: ModelEntry, dropdown: Any) -> list[Any]:
        if entry.data_note:
            gr.Warning(f"{entry.data_note}. The map and dataset images are unavailable; traversal, "
                       f"sampling and interpolation of uploaded images still work.")
        code = start_code(entry, 0, "index", None) if entry.latents is not None and len(entry.latents) else \
            start_code(entry, None, "random", None)
        return [entry.key, dropdown, model_card(entry), data_note(entry), *model_controls(entry),
                *diagnostics_view(entry), None, None, None, *traversal_view(entry, code, 0, default_range(entry))]

    # -- map --
    def draw_map(self, key: str | None, method: str, dims: int, color_by: str, overlay: str,
                 max_points: float | None, ends: dict | None, progress: gr.Progress = PROGRESS) -> list[Any]:
        if not key:
            return [message_figure("No checkpoint loaded."), None, ""]
        entry = self.entry(key)
        if entry.latents is None:
            return [message_figure(f"No map: {entry.data_note}"), None, ""]
        idx = subsample(len(entry.latents), int(max_points or 0))
        try:
            proj = self.projections.get(key, entry.latents.mean[idx], method, int(dims),
                                        progress=lambda f, d: progress(f, desc=d))
        except ValueError as exc:
            raise gr.Error(f"Cannot project: {exc}") from None
        view = MapView(key, proj, idx, f"{method.upper()} {dims}D · {len(idx)} test points", color_by)
        fig = map_figure(entry, view, overlay, path_codes(ends))
        info = (f"{len(idx)} of {len(entry.latents)} test points. Click a point to inspect and traverse it"
                + ("; click empty space to decode that spot." if proj.invertible and int(dims) == 2 else "."))
        return [fig, view, info]

    def pick(self, payload: str | None, key: str | None, view: MapView | None, code: Code | None,
             page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        try:
            data = json.loads(payload or "null")
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or view is None or view.key != key:
            return [gr.skip()] * (4 + 3 + SLIDERS)
        if data.get("kind") == "point":
            i = int(data.get("index", -1))  # customdata: the test-set index
            if entry.latents is None or not 0 <= i < len(entry.latents):
                raise gr.Error(f"Point {i} is not a test image of this model.")
            picked = start_code(entry, i, "index", None)
            x = entry.latents.images[i] if entry.latents is not None else None
            info = f"Test image #{i} · class {class_name(entry, int(entry.latents.labels[i]))}"
        else:
            if not view.projection.invertible or view.projection.dims != 2:
                gr.Info("Clicking empty space decodes a spot only on 2D PCA maps (PCA can be inverted).")
                return [gr.skip()] * (4 + 3 + SLIDERS)
            z = view.projection.inverse_transform(np.array([[float(data["x"]), float(data["y"])]]))[0]
            y = code.y if code is not None else None
            picked = Code(z, z, y, f"map spot ({float(data['x']):.2f}, {float(data['y']):.2f})")
            x, info = None, f"Decoded the map spot ({float(data['x']):.2f}, {float(data['y']):.2f}) (PCA inverse)"
        recon = decode(entry, picked.z, picked.y)[0]
        return [None if x is None else figures.to_pil(x, scale_for(x)), figures.to_pil(recon, scale_for(recon)),
                info, picked, *traversal_view(entry, picked, page, range_mode)]

    # -- traversal --
    def slider_handler(self, slot: int) -> Any:
        def on_slide(value: float, key: str | None, code: Code | None, page: int | None) -> list[Any]:
            if not key or code is None or value is None:
                return [gr.skip(), gr.skip()]
            entry = self.entry(key)
            dims = page_dims(dim_info(entry).order, int(page or 0))
            if slot >= len(dims):
                return [gr.skip(), gr.skip()]
            new = code.moved(traversal.set_coordinate(code.z, int(dims[slot]), float(value)))
            image = decode(entry, new.z, new.y)[0]
            return [figures.to_pil(image, scale_for(image)), new]
        on_slide.__name__ = f"slider_{slot}"
        return on_slide

    def traverse_from_index(self, index: float | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return traversal_view(entry, start_code(entry, int(index or 0), "index", None), page, range_mode)

    def traverse_random(self, y: int | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return traversal_view(entry, start_code(entry, None, "random", y), page, range_mode)

    def traverse_upload(self, path: str | None, y: int | None, key: str | None, page: int,
                        range_mode: str) -> list[Any]:
        entry = self.entry(key)
        code, note = upload_code(entry, path, y)
        if note:
            gr.Info(f"Image converted: {note}")
        return traversal_view(entry, code, page, range_mode)

    def traverse_sketch(self, sketch: dict | None, y: int | None, key: str | None, page: int,
                        range_mode: str) -> list[Any]:
        entry = self.entry(key)
        rgb = sketch_to_rgb(sketch)
        if rgb is None:
            raise gr.Error("Draw something first.")
        code, note = encode_image(entry, rgb, y, "your drawing")
        if note:
            gr.Info(f"Drawing converted: {note}")
        return traversal_view(entry, code, page, range_mode)

    def traverse_reset(self, code: Code | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        if code is None:
            return traversal_view(entry, start_code(entry, None, "random", None), page, range_mode)
        return traversal_view(entry, Code(code.z0.copy(), code.z0, code.y, code.source), page, range_mode)

    def traverse_class(self, y: int | None, code: Code | None, key: str | None, page: int,
                       range_mode: str) -> list[Any]:
        entry = self.entry(key)
        if code is None:
            code = start_code(entry, None, "random", y)
        return traversal_view(entry, Code(code.z, code.z0, None if y is None else int(y), code.source),
                              page, range_mode)

    def traverse_view(self, code: Code | None, key: str | None, page: int, range_mode: str) -> list[Any]:
        entry = self.entry(key)
        return traversal_view(entry, code or start_code(entry, None, "random", None), page, range_mode)

    def traversal_grid(self, steps: float, code: Code | None, key: str | None, page: int,
                       range_mode: str) -> list[Any]:
        entry = self.entry(key)
        code = code or start_code(entry, None, "random", None)
        dims = page_dims(dim_info(entry).order, int(page or 0))
        lo, hi = slider_bounds(entry, range_mode)
        codes = traversal.traversal_codes(code.z, dims, lo, hi, int(steps))
        images = decode(entry, codes, code.y)
        grid = figures.image_grid(images, nrow=int(steps), scale=grid_scale(images))
        rows = ", ".join(f"z{d}" for d in dims)
        return [gr.Image(grid, label=f"Traversal grid · rows, top to bottom: {rows} · "
                                     f"columns: {range_mode or 'prior'} range, low to high"),
                self._file(".png", png_bytes(Image.fromarray(grid)))]

    # -- interpolation --
    def endpoint_index(self, end: str) -> Any:
        def set_from_index(index: float | None, key: str | None, ends: dict | None) -> list[Any]:
            entry = self.entry(key)
            return set_endpoint(entry, ends, end, start_code(entry, int(index or 0), "index", None))
        set_from_index.__name__ = f"interp_{end}_index"
        return set_from_index

    def endpoint_picked(self, end: str) -> Any:
        def set_from_pick(picked: Code | None, key: str | None, ends: dict | None) -> list[Any]:
            entry = self.entry(key)
            if picked is None:
                raise gr.Error("Click a point on the map first.")
            return set_endpoint(entry, ends, end, picked)
        set_from_pick.__name__ = f"interp_{end}_picked"
        return set_from_pick

    def endpoint_upload(self, end: str) -> Any:
        def set_from_upload(path: str | None, key: str | None, ends: dict | None, y: int | None) -> list[Any]:
            entry = self.entry(key)
            code, note = upload_code(entry, path, y)
            if note:
                gr.Info(f"Image converted: {note}")
            return set_endpoint(entry, ends, end, code)
        set_from_upload.__name__ = f"interp_{end}_upload"
        return set_from_upload

    def interpolate(self, steps: float, method: str, key: str | None, ends: dict | None,
                    view: MapView | None, overlay: str) -> list[Any]:
        entry = self.entry(key)
        ends = dict(ends or {})
        for end in ("a", "b"):
            if ends.get(end) is None:
                ends[end] = start_code(entry, None if entry.latents is None else (0 if end == "a" else 1),
                                       "random" if entry.latents is None else "index", None)
        a, b = ends["a"], ends["b"]
        codes = interpolation.interpolate(a.z, b.z, int(steps), method).astype(np.float32)
        images = decode(entry, codes, a.y)
        strip = figures.image_grid(images, nrow=len(images), scale=grid_scale(images, STRIP_PX))
        gif = self._file(".gif", figures.gif_bytes(images, scale=scale_for(images[0]), duration_ms=120))
        ends["path"] = codes
        note = f"{len(images)} steps, {method}, from {a.source} to {b.source}"
        if entry.loaded.model.is_conditional:
            note += f"; decoded as class {class_name(entry, a.y)}"
        fig = gr.skip()
        if view is not None and view.key == key:
            fig = map_figure(entry, view, overlay, codes)
        return [strip, gif, gif, note, fig, ends, *(endpoint_image(ends[e], entry) for e in ("a", "b"))]

    # -- sampling --
    def sample(self, class_index: int | None, n: float, seed: float | None, temperature: float,
               key: str | None) -> list[Any]:
        entry = self.entry(key)
        if class_index is None:
            raise gr.Error("Choose a class.")
        try:
            images, note = sampling.sample_class(entry.loaded.model, int(class_index), int(n), int(seed or 0),
                                                 float(temperature), entry.latents)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        nrow = int(np.ceil(np.sqrt(len(images))))
        return [figures.image_grid(images, nrow=nrow, scale=grid_scale(images, STRIP_PX)), note]

    def every_class(self, key: str | None, code: Code | None) -> Any:
        entry = self.entry(key)
        if not entry.loaded.model.is_conditional:
            raise gr.Error("Only a conditional model (CVAE) decodes one code under every class.")
        z = code.z if code is not None else start_code(entry, None, "random", 0).z
        images = sampling.decode_under_every_class(entry.loaded.model, z)
        return figures.image_grid(images, nrow=len(images), scale=grid_scale(images, STRIP_PX))


# -- pure helpers ---------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 2) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


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
    m = meta.metrics or {}
    named = [("ELBO", "elbo", " nats"), ("NLL (IWAE)", "nll_iwae", " nats"), ("recon", "recon", " nats"),
             ("KL", "kl", " nats"), ("active units", "active_units", f" of {cfg.latent_dim}"),
             ("probe accuracy", "probe_accuracy", ""), ("clustering accuracy", "cluster_accuracy", ""),
             ("NMI", "nmi", "")]
    metrics = [f"{label} **{int(m[k]) if k == 'active_units' else fmt(m[k])}**{unit}"
               for label, k, unit in named if m.get(k) is not None]
    lines = [f"### {entry.loaded.name}",
             f"**{kind}** ({cfg.arch}, {cfg.likelihood}) · trained on {data} · image size **{shape}** · "
             f"latent dim **{cfg.latent_dim}** · {len(meta.history)} epochs · device **{entry.loaded.device}**",
             " · ".join(metrics) if metrics else "no metrics in this checkpoint"]
    return "\n\n".join(lines)


def data_note(entry: ModelEntry) -> str:
    if not entry.data_note:
        return ""
    return (f"⚠️ **{entry.data_note}.** The map, dataset indices and per-class statistics need the "
            f"test images; traversal, sampling and interpolation of uploaded images still work.")


def class_names(entry: ModelEntry) -> list[str]:
    return [str(c) for c in (entry.loaded.meta.dataset or {}).get("class_names") or []]


def class_name(entry: ModelEntry, label: int | None) -> str:
    names = class_names(entry)
    if label is None or label < 0:
        return "?"
    return names[label] if label < len(names) else str(label)


def model_controls(entry: ModelEntry) -> list[Any]:
    """Updates for the colour / overlay / class / page / sampling controls that depend on the model."""
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
            gr.Dropdown(choices=class_choices, value=0 if class_choices else None, visible=model.is_conditional),
            gr.Dropdown(choices=pages, value=0, visible=d > SLIDERS),
            gr.Dropdown(choices=sample_choices, value=sample_choices[0][1] if sample_choices else None),
            gr.Group(visible=model.is_conditional), default_range(entry)]


def default_range(entry: ModelEntry) -> str:
    """Slider range a model opens with: its prior's, or the data's when there is no prior to speak of (AE)."""
    return "data" if dim_info(entry).score_name == "var" else "prior"


@dataclass(frozen=True)
class DimInfo:
    order: np.ndarray  # [D] dims, most informative first
    score: np.ndarray  # [D] KL per dim (or code variance for a model without KL)
    active: np.ndarray | None  # [D] bool, None when KL says nothing (AE, no data)
    score_name: str


def dim_info(entry: ModelEntry) -> DimInfo:
    d = entry.loaded.model.config.latent_dim
    lat = entry.latents
    if lat is None or len(lat) == 0:
        return DimInfo(np.arange(d), np.zeros(d), None, "")
    if float(lat.kl_per_dim.sum()) > 0:
        return DimInfo(traversal.dimension_order(lat.kl_per_dim), lat.kl_per_dim,
                       traversal.active_dims(lat.kl_per_dim), "KL")
    var = lat.mean.var(axis=0)  # an AE has no KL: order by how much the codes spread instead
    return DimInfo(traversal.dimension_order(var), var, None, "var")


def page_dims(order: np.ndarray, page: int) -> np.ndarray:
    return order[page * SLIDERS:(page + 1) * SLIDERS]


def slider_bounds(entry: ModelEntry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim (lo, hi): the data's min-max, or the prior's ±3 sd (a mixture prior: its 0.13/99.87%)."""
    model = entry.loaded.model
    d = model.config.latent_dim
    if mode == "data" and entry.latents is not None:
        return traversal.slider_ranges("data", entry.latents.mean)
    if model.num_components:
        with torch.inference_mode():
            z = model.prior_sample(20_000, None, torch.Generator(model.device).manual_seed(0)).cpu().numpy()
        return np.quantile(z, 0.00135, axis=0), np.quantile(z, 0.99865, axis=0)
    return traversal.slider_ranges("prior", None, latent_dim=d)


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


def traversal_view(entry: ModelEntry, code: Code, page: int | None, range_mode: str) -> list[Any]:
    """[code state, decoded image, info, SLIDERS slider updates] for a code on a dimension page."""
    info = dim_info(entry)
    page = int(page or 0)
    dims = page_dims(info.order, page)
    lo, hi = slider_bounds(entry, range_mode or "prior")
    sliders = []
    for slot in range(SLIDERS):
        if slot >= len(dims):
            sliders.append(gr.Slider(visible=False))
            continue
        d = int(dims[slot])
        mn, mx, step = nice_bounds(float(lo[d]), float(hi[d]), float(code.z[d]))
        label = f"z{d}"
        if info.score_name:
            label += f" · {info.score_name} {info.score[d]:.2f}"
        if info.active is not None and not info.active[d]:
            label += " · inactive"
        value = min(max(round(float(code.z[d]), 4), mn), mx)  # shown rounded; the state keeps the exact code
        sliders.append(gr.Slider(minimum=mn, maximum=mx, step=step, value=value, label=label, visible=True))
    image = decode(entry, code.z, code.y)[0]
    text = f"From {code.source}" + (f" · decoded as class {class_name(entry, code.y)}" if code.y is not None
                                    and entry.loaded.model.is_conditional else "")
    return [code, figures.to_pil(image, scale_for(image)), text, *sliders]


def start_code(entry: ModelEntry, index: int | None, kind: str, y: int | None) -> Code:
    """A starting code: test image ``index`` (its posterior mean) or a seeded prior sample."""
    model = entry.loaded.model
    if kind == "index":
        if entry.latents is None:
            raise gr.Error(f"No dataset images: {entry.data_note}. Start from a prior sample or an upload.")
        n = len(entry.latents)
        if not 0 <= int(index) < n:
            raise gr.Error(f"Test image # must be between 0 and {n - 1}, got {index}.")
        z = entry.latents.mean[int(index)].astype(np.float32)
        label = int(entry.latents.labels[int(index)])
        cond = label if model.is_conditional else None
        return Code(z.copy(), z, cond, f"test image #{int(index)} (class {class_name(entry, label)})")
    cond = (int(y) if y is not None else 0) if model.is_conditional else None
    seed = int(np.random.default_rng().integers(2**31))
    with torch.inference_mode():
        z = model.prior_sample(1, None, torch.Generator(model.device).manual_seed(seed))[0].float().cpu().numpy()
    return Code(z.copy(), z, cond, f"a prior sample (seed {seed})")


def upload_code(entry: ModelEntry, path: str | None, y: int | None) -> tuple[Code, str]:
    """Encode an uploaded image file (posterior mean); ImageError becomes a gr.Error."""
    if not path:
        raise gr.Error("No file arrived.")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise gr.Error(f"Cannot read {Path(path).name}: {exc}") from None
    return encode_image(entry, data, y, f"uploaded {Path(path).name}")


def encode_image(entry: ModelEntry, data: bytes | np.ndarray, y: int | None, source: str) -> tuple[Code, str]:
    """prepare_image + encode: the posterior mean of an image, and the note of its conversion."""
    model = entry.loaded.model
    try:
        x, note = prepare_image(data, model.config.image_shape, background=entry.background or "dark")
    except ImageError as exc:
        raise gr.Error(f"Cannot use {source.removeprefix('uploaded ')}: {exc}") from None
    cond = (int(y) if y is not None else 0) if model.is_conditional else None
    with torch.inference_mode():
        xt = torch.from_numpy(x[None]).to(model.device)
        yt = None if cond is None else torch.tensor([cond], device=model.device)
        z = model.encode(xt, yt).mean[0].float().cpu().numpy()
    return Code(z.copy(), z, cond, source + (f" ({note})" if note else "")), note


def sketch_to_rgb(sketch: dict | None) -> np.ndarray | None:
    """A Sketchpad value -> RGB uint8 [H, W, 3] on white paper; None when nothing is drawn."""
    if not isinstance(sketch, dict) or sketch.get("composite") is None:
        return None
    arr = np.asarray(sketch["composite"])
    if arr.ndim == 3 and arr.shape[-1] == 4:  # strokes on a transparent canvas: lay them on white
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.size == 0 or int(arr.min()) == int(arr.max()):
        return None  # a blank canvas
    return arr


def decode(entry: ModelEntry, z: np.ndarray, y: int | None) -> np.ndarray:
    """Codes [D] or [M, D] -> images [M, C, H, W] float32 in [0, 1] (one forward pass)."""
    model = entry.loaded.model
    with torch.inference_mode():
        zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.float32, device=model.device)
        yt = model.condition_labels(len(zt), 0 if y is None else int(y))  # None for unconditional models
        return model.decode(zt, yt).float().cpu().numpy()


def scale_for(image: np.ndarray) -> int:
    """Nearest-neighbour upscaling factor that brings a [C, H, W] image near PREVIEW_PX."""
    return max(1, PREVIEW_PX // max(image.shape[-2:]))


def grid_scale(images: np.ndarray, cell_px: int = 48) -> int:
    """Upscaling for grids: small images (8x8 digits) need it to be visible at all."""
    return max(1, cell_px // max(images.shape[-2:]))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def subsample(n: int, max_points: int) -> np.ndarray:
    """Sorted indices of a seeded subset of size ``max_points`` (all n when 0 or >= n)."""
    if max_points <= 0 or max_points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def path_codes(ends: dict | None) -> np.ndarray | None:
    return None if not ends else ends.get("path")


def map_figure(entry: ModelEntry, view: MapView, overlay: str, path: np.ndarray | None) -> go.Figure:
    """The latent map of a view: coloured points, an optional prior overlay and interpolation path.

    The data traces' customdata is rewritten from row numbers to test-set indices, so a click names
    the same image whether or not the map was downsampled.
    """
    lat = entry.latents
    assert lat is not None
    idx, proj = view.indices, view.projection
    names = class_names(entry)
    labels = lat.labels[idx]
    per_point = [f"test #{i} · {class_name(entry, int(c))}" for i, c in zip(idx, labels, strict=True)]
    if view.color_by == "component" and lat.component_probs is not None:
        k = lat.component_probs.shape[1]
        color, kind, hover = lat.component_probs[idx].argmax(1), "categorical", [f"component {j}" for j in range(k)]
    elif view.color_by in ("recon", "kl"):
        color = (lat.recon_error if view.color_by == "recon" else lat.kl)[idx]
        kind, hover = "continuous", per_point
    else:
        color, kind, hover = labels, "categorical", names or None
    if kind == "categorical" and hover is not None and len(hover) == len(idx):  # would read as per-point
        hover = [hover[c] if 0 <= c < len(hover) else "unknown" for c in color]
    over, over_name = None, "prior samples"
    if overlay and overlay != "none":
        comp = int(overlay.split(":")[1]) if ":" in overlay else None
        model = entry.loaded.model
        with torch.inference_mode():
            z = model.prior_sample(PRIOR_OVERLAY_POINTS, comp, torch.Generator(model.device).manual_seed(0))
        over = proj.transform(z.float().cpu().numpy())
        over_name = "prior samples" if comp is None else f"prior of component {comp}"
    path_xy = None if path is None else proj.transform(np.asarray(path, np.float32))
    title = f"{view.title} · colour: {COLOR_LABELS.get(view.color_by, view.color_by)}"
    fig = figures.latent_map(proj.coords, color, kind, hover, title=title, overlay=over,
                             overlay_name=over_name, path=path_xy)
    for trace in fig.data:
        if trace.customdata is not None:
            trace.customdata = idx[np.asarray(trace.customdata, np.int64)]
    fig.update_layout(height=520 if proj.dims == 2 else 600)
    return fig


def message_figure(text: str, width: int = 70) -> go.Figure:
    """An empty figure that says ``text`` (wrapped to ``width`` characters) in its middle."""
    wrapped = "<br>".join(textwrap.wrap(text, width)) or " "
    fig = go.Figure()
    fig.add_annotation(text=wrapped, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14}, align="center")
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=420,
                      plot_bgcolor="white", paper_bgcolor="white")
    return fig


def diagnostics_view(entry: ModelEntry) -> list[Any]:
    """[note, KL bar chart, training curves, reconstructions grid, prior samples grid]."""
    model = entry.loaded.model
    notes = []
    info = dim_info(entry)
    if entry.latents is not None and info.score_name == "KL":
        active = traversal.active_dims(entry.latents.kl_per_dim)
        kl_fig = figures.kl_bar_chart(entry.latents.kl_per_dim, active)
        notes.append(f"**Active units:** {int(active.sum())} of {len(active)} (mean KL > 0.01 nats).")
    elif entry.latents is not None:
        kl_fig = message_figure("This model has no KL term (a plain autoencoder).")
        notes.append("**Active units:** not defined without a KL term.")
    else:
        kl_fig = message_figure("KL per dimension needs the test images.")
    curves = figures.training_curves(entry.loaded.meta.history) if entry.loaded.meta.history else \
        message_figure("No training history in this checkpoint.")
    recon_grid = None
    if entry.latents is not None:
        n = min(16, len(entry.latents))
        x = entry.latents.images[:n]
        y = None if not model.is_conditional else entry.latents.labels[:n]
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(model.device)
            yt = None if y is None else torch.from_numpy(np.maximum(y, 0)).to(model.device)
            r = model.decode(model.encode(xt, yt).mean, yt).float().cpu().numpy()
        half = max(1, (n + 1) // 2)  # rows of originals, each followed by its row of reconstructions
        rows = [block for i in range(0, n, half) for block in (x[i:i + half], r[i:i + half])]
        recon_grid = figures.image_grid(np.concatenate(rows), nrow=half, scale=grid_scale(x))
    prior = prior_samples(entry, 32)
    prior_grid = figures.image_grid(prior, nrow=8, scale=grid_scale(prior))
    if float(entry.latents.kl_per_dim.sum() if entry.latents is not None else 1) == 0:
        notes.append("An AE has no prior: codes drawn from N(0, I) land away from where the encoder puts "
                     "images, so its prior samples are mostly noise.")
    if model.is_conditional:
        notes.append("Prior samples cycle through the classes (class = position mod number of classes).")
    return ["\n\n".join(notes), kl_fig, curves, recon_grid, prior_grid]


def prior_samples(entry: ModelEntry, n: int, seed: int = 0) -> np.ndarray:
    """n images from the prior [n, C, H, W]; a CVAE cycles its classes."""
    model = entry.loaded.model
    gen = torch.Generator(model.device).manual_seed(seed)
    with torch.inference_mode():
        z = model.prior_sample(n, None, gen)
        y = None
        if model.is_conditional:
            y = torch.arange(n, device=model.device) % model.config.num_classes
        return model.decode(z, y).float().cpu().numpy()


def set_endpoint(entry: ModelEntry, ends: dict | None, end: str, code: Code) -> list[Any]:
    ends = dict(ends or {})
    ends[end] = code
    ends.pop("path", None)
    return [ends, endpoint_image(code, entry)]


def endpoint_image(code: Code, entry: ModelEntry | None = None) -> Image.Image:
    """The decoded endpoint, cached on the code so a redraw costs nothing."""
    if getattr(code, "image", None) is None:
        assert entry is not None
        image = decode(entry, code.z, code.y)[0]
        code.image = figures.to_pil(image, max(1, 128 // max(image.shape[-2:])))
    return code.image


# -- command line ---------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="latent-explore", description="Explore the latent space of vaescope "
                                "checkpoints in the browser.")
    p.add_argument("--checkpoints", required=True, type=Path, help="folder searched for *.safetensors")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--share", action="store_true", help="create a public Gradio share link (see the warning)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="projection cache folder (default ~/.cache/vaescope/projections)")
    p.add_argument("--no-disk-cache", action="store_true", help="keep projections in memory only")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: each checkpoint's own)")
    p.add_argument("--default", default=None, help="checkpoint selected when the page opens")
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `latent-explore`."""
    args = parse_args(argv)
    if not args.checkpoints.is_dir():
        sys.exit(f"latent-explore: {args.checkpoints} is not a folder")
    try:
        pick_device(args.device)
    except ValueError as exc:
        sys.exit(f"latent-explore: {exc}")
    if args.share or not is_loopback(args.host):
        where = "a public share link" if args.share else f"{args.host}"
        print(f"WARNING: serving on {where}: anyone who can reach it can use this explorer and upload files "
              f"to it. It has no login. Use --host 127.0.0.1 without --share to keep it private.",
              file=sys.stderr)
    cache_dir = None if args.no_disk_cache else (args.cache_dir or default_cache_dir())
    demo = build_app(args.checkpoints, args.device, cache_dir=cache_dir, data_dir=args.data_dir,
                     default_checkpoint=args.default, max_upload_mb=args.max_upload_mb)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
