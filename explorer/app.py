"""The Gradio explorer: `latent-explore --checkpoints DIR`.

This file only lays the page out (``_layout`` and its panels), wires events to ``Handlers``
(``_wire``) and parses the command line (``main``). What the handlers do lives elsewhere:
``handlers`` (event adapters), ``views`` (model card, sliders, map, diagnostics), ``codes``
(start codes, uploads, decoding) and ``session`` (per-user state). Importing this module starts
nothing.

Concurrency: the heavy work (loading and encoding a checkpoint, fitting a projection) runs in its
own concurrency groups with small limits, and single-flight: one load per checkpoint file
(``ModelStore``), one fit per checkpoint and projection request (``ProjectionCache``), later
callers wait for that result. The slider handler is about a millisecond of decoding and skips
the queue (``SLIDER_QUEUE``), so a t-SNE fit never stalls someone dragging a slider.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import matplotlib
import torch

from vaescope.explorer.handlers import Handlers
from vaescope.explorer.loading import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ModelStore,
    choose_default,
    default_cache_dir,
    pick_device,
)
from vaescope.explorer.projection import ProjectionCache
from vaescope.explorer.views import COLOR_LABELS, PICK_HINT, PREVIEW_PX, SLIDERS

DEFAULT_MAX_UPLOAD_MB = 200  # checkpoints are uploaded too; images are capped by prepare_image
# The slider events skip Gradio's queue: one request and response per move instead of a queue
# join and a stream of status messages. Gradio 6's page answers every status message by copying the
# props of every component with a loading status (Blocks.svelte update_loading_stati_state; about
# 15 components on this page, each event's inputs and progress targets), and a queued move brings
# 5-6 messages. Measured in Chromium with the JavaScript profiler: 12 ms of the page's main thread
# per move went to that. The handler decodes one image in about a millisecond and needs no
# concurrency limit: Gradio runs unqueued events in its thread pool (max_threads). Unqueued events
# show no error toast, so the slider handler reports failures in the traversal note instead.
SLIDER_QUEUE = False
MAP_CONCURRENCY = 2  # projections fit on the CPU: at most two at a time, one per core
LOAD_CONCURRENCY = 2
DEFAULT_CONCURRENCY = 8
# Gradio's output cache (every image and file sent) is per app: every 10 minutes, drop what is
# older than an hour, so a long-running server does not fill its disk.
DELETE_CACHE = (600, 3600)
# One intra-op thread for torch in the server: its work is many tiny, independent calls (one
# decode per slider move), which Gradio already runs in parallel threads, so an OpenMP team per
# call only waits for cores that other requests (and other processes) hold. Measured on a busy
# 2-core box: one 28x28 decode, median 96 ms with torch's default 2 threads vs 0.4 ms with 1
# (benchmarks/slider.py); the shapes beta-VAE, decode median 1.8 ms vs 0.6 ms (p95 10 vs 1.9 ms),
# and encoding its 2000 test images 0.60 s vs 0.46 s. Set in main(), never at import;
# --torch-threads N overrides it (a GPU, or an idle many-core machine serving one user).
DEFAULT_TORCH_THREADS = 1

# Gradio 6's run history saves every event's inputs and outputs in the browser's localStorage,
# re-reading and re-writing the last 100 runs as JSON several times per event. A slider drag is
# hundreds of events: profiled in Chromium (CDP) that was the largest JavaScript cost per move, and
# it would keep whatever people explore in their browser. The explorer has no use for it.
RUN_HISTORY = False

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
        kwargs.setdefault("run_history", RUN_HISTORY)
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
    with ExplorerBlocks(title="vaescope explorer", delete_cache=DELETE_CACHE) as demo:
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
    """Place every component; the per-session states come first. Returns them all by name."""
    c: dict[str, Any] = {}
    c["model_key"], c["code"], c["map_view"] = gr.State(None), gr.State(None), gr.State(None)
    c["picked"], c["ends"] = gr.State(None), gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            _checkpoint_panel(c, store, max_upload_mb, default)
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


def _checkpoint_panel(c: dict[str, Any], store: ModelStore, max_upload_mb: int, default: str | None) -> None:
    names = store.names()
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
    # The caps are stated where uploads start; ExplorerBlocks.launch enforces the first
    # (Gradio's max_file_size), prepare_image the others.
    gr.Markdown(f"<small>Uploads: up to {max_upload_mb} MB per file; images up to "
                f"{MAX_IMAGE_BYTES // 2**20} MB and {MAX_IMAGE_PIXELS // 10**6} megapixels.</small>",
                elem_id="upload-cap")


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
        c["picked_info"] = gr.Markdown(PICK_HINT, elem_id="picked-info")


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
# Progress and error badges show only where they help (``show_progress_on`` the card or the map,
# "hidden" for the quick traversal events): a badge over a slider or the dropdown would block it.
# Dropdowns listen to ``select``: their ``input`` fires twice (on choosing and again on blur).
QUICK = {"show_progress": "hidden"}


def _wire(demo: gr.Blocks, ui: UI, h: Handlers) -> None:
    """Connect every event to its handler, panel by panel."""
    _wire_checkpoints(demo, ui, h)
    _wire_map(ui, h)
    _wire_traversal(ui, h)
    _wire_interpolation(ui, h)
    _wire_sampling(ui, h)


def _trav_out(ui: UI) -> list[Any]:
    return [ui["code"], ui["trav_image"], ui["trav_info"], *ui["sliders"]]


def _start_out(ui: UI) -> list[Any]:
    """The outputs of a new start code: the class dropdown names the class it decodes with."""
    return [ui["trav_class"], *_trav_out(ui)]


def _map_io(ui: UI) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(inputs, outputs, event options) of a map redraw: the heavy, size-limited group."""
    map_in = ui.many("model_key", "method", "dims", "color", "overlay", "max_points", "ends")
    heavy = {"concurrency_id": "map", "concurrency_limit": MAP_CONCURRENCY, "show_progress_on": [ui["map"]]}
    return map_in, ui.many("map", "map_view", "map_info"), heavy


def _wire_checkpoints(demo: gr.Blocks, ui: UI, h: Handlers) -> None:
    load_out = [*ui.many("model_key", "checkpoint", "card", "note", "color", "overlay", "trav_class", "dim_page",
                         "sample_class", "every_group", "trav_range", "diag_note", "diag_kl", "diag_curves",
                         "diag_recon", "diag_prior", "picked", "ends", "map_view", "picked_original",
                         "picked_recon", "picked_info"), *_trav_out(ui)]
    h.load_outputs = len(load_out)
    map_in, map_out, heavy = _map_io(ui)
    loading = {"concurrency_id": "load", "concurrency_limit": LOAD_CONCURRENCY, "show_progress_on": [ui["card"]]}

    def then_map(event: Any, name: str) -> None:  # redraw the map once a checkpoint has loaded
        event.success(h.draw_map, map_in, map_out, api_name=name, api_visibility="private", **heavy)

    then_map(demo.load(h.page_load, [ui["checkpoint"], ui["model_key"]], load_out, api_name="page_load",
                       **loading), "map_after_page_load")
    ui["refresh"].click(h.refresh_list, [ui["checkpoint"]], [ui["checkpoint"]], api_name="list_checkpoints",
                        **QUICK)
    then_map(ui["checkpoint"].select(h.load_checkpoint, [ui["checkpoint"], ui["model_key"]], load_out,
                                    api_name="load_checkpoint", **loading), "map_after_load")
    then_map(ui["upload_ckpt"].upload(h.upload_checkpoint, [ui["upload_ckpt"], ui["model_key"]], load_out,
                                      api_name="upload_checkpoint", **loading), "map_after_upload")


def _wire_map(ui: UI, h: Handlers) -> None:
    map_in, map_out, heavy = _map_io(ui)
    gr.on([ui["draw"].click, ui["method"].select, ui["dims"].select, ui["color"].select, ui["overlay"].select],
          h.draw_map, map_in, map_out, api_name="draw_map", **heavy)
    # The click bridge: the js reads the picked point; the other inputs pass through unchanged.
    ui["pick_btn"].click(h.pick, ui.many("pick_data", "model_key", "map_view", "code", "dim_page", "trav_range"),
                         [*ui.many("picked_original", "picked_recon", "picked_info", "picked"), *_start_out(ui)],
                         js="(...inputs) => [window.__picked, ...inputs.slice(1)]", api_name="pick", **QUICK)


def _wire_traversal(ui: UI, h: Handlers) -> None:
    trav_out, start_out = _trav_out(ui), _start_out(ui)
    view_in = ui.many("model_key", "dim_page", "trav_range")
    # Every slider decodes one image; preprocess=False skips the per-event bounds check.
    for i, slider in enumerate(ui["sliders"]):
        slider.input(h.slider_handler(i), [slider, ui["model_key"], ui["code"], ui["dim_page"]],
                     [ui["trav_image"], ui["code"], ui["trav_info"]], api_name=f"slider_{i}",
                     trigger_mode="always_last", preprocess=False, queue=SLIDER_QUEUE,
                     show_progress_on=[ui["trav_image"]], **QUICK)  # its only loading status (see SLIDER_QUEUE)
    ui["trav_index_btn"].click(h.traverse_from_index, [ui["trav_index"], *view_in], start_out,
                               api_name="traverse_from_index", **QUICK)
    ui["trav_random"].click(h.traverse_random, [ui["trav_class"], *view_in], start_out,
                            api_name="traverse_random", **QUICK)
    ui["trav_upload"].upload(h.traverse_upload, [ui["trav_upload"], ui["trav_class"], *view_in], start_out,
                             api_name="traverse_upload", **QUICK)
    ui["sketch_btn"].click(h.traverse_sketch, [ui["sketch"], ui["trav_class"], *view_in], start_out,
                           api_name="traverse_sketch", **QUICK)
    ui["trav_reset"].click(h.traverse_reset, [ui["code"], *view_in], trav_out, api_name="traverse_reset", **QUICK)
    ui["trav_class"].select(h.traverse_class, [ui["trav_class"], ui["code"], *view_in], trav_out,
                           api_name="traverse_class", **QUICK)
    gr.on([ui["trav_range"].input, ui["dim_page"].select], h.traverse_view, [ui["code"], *view_in], trav_out,
          api_name="traverse_view", **QUICK)
    ui["grid_btn"].click(h.traversal_grid, [ui["grid_steps"], ui["code"], *view_in],
                         [ui["grid_image"], ui["grid_file"]], api_name="traversal_grid",
                         show_progress_on=[ui["grid_image"]])


def _wire_interpolation(ui: UI, h: Handlers) -> None:
    for end in ("a", "b"):
        end_out = [ui["ends"], ui[f"{end}_image"]]
        ui[f"{end}_index_btn"].click(h.endpoint_index(end), [ui[f"{end}_index"], ui["model_key"], ui["ends"]],
                                     end_out, api_name=f"interp_{end}_index", **QUICK)
        ui[f"{end}_pick_btn"].click(h.endpoint_picked(end), [ui["picked"], ui["model_key"], ui["ends"]],
                                    end_out, api_name=f"interp_{end}_picked", **QUICK)
        ui[f"{end}_upload"].upload(h.endpoint_upload(end), [ui[f"{end}_upload"], ui["model_key"], ui["ends"],
                                                            ui["trav_class"]], end_out,
                                   api_name=f"interp_{end}_upload", **QUICK)
    ui["interp_btn"].click(h.interpolate, ui.many("interp_steps", "interp_method", "model_key", "ends", "map_view",
                                                  "overlay"),
                           ui.many("interp_strip", "interp_gif_view", "interp_gif", "interp_info", "map", "ends",
                                   "a_image", "b_image"), api_name="interpolate",
                           show_progress_on=[ui["interp_strip"]])


def _wire_sampling(ui: UI, h: Handlers) -> None:
    ui["sample_btn"].click(h.sample, ui.many("sample_class", "sample_n", "sample_seed", "sample_temp", "model_key"),
                           [ui["sample_grid"], ui["sample_note"]], api_name="sample_class",
                           show_progress_on=[ui["sample_grid"]])
    ui["every_btn"].click(h.every_class, [ui["model_key"], ui["code"]], [ui["every_image"]],
                          api_name="decode_every_class", show_progress_on=[ui["every_image"]])


# -- command line ---------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only ("localhost", 127.0.0.0/8, ::1)."""
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
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted, per file (default {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--torch-threads", type=int, default=DEFAULT_TORCH_THREADS,
                   help=f"torch intra-op threads (default {DEFAULT_TORCH_THREADS}: many small decodes "
                        f"run in parallel requests; more threads per call only contend)")
    return p.parse_args(argv)


def exposure_warning(args: argparse.Namespace) -> str | None:
    """The warning for a server that others can reach (--share or a non-loopback --host), else None."""
    if not args.share and is_loopback(args.host):
        return None
    where = "a public share link" if args.share else f"{args.host}"
    return (f"WARNING: serving on {where}: anyone who can reach it can use this explorer and upload files "
            f"to it. It has no login. Use --host 127.0.0.1 without --share to keep it private.")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `latent-explore`."""
    args = parse_args(argv)
    if not args.checkpoints.is_dir():
        sys.exit(f"latent-explore: {args.checkpoints} is not a folder")
    if args.torch_threads < 1 or args.max_upload_mb < 1:
        sys.exit("latent-explore: --torch-threads and --max-upload-mb must be at least 1")
    try:
        pick_device(args.device)
    except ValueError as exc:
        sys.exit(f"latent-explore: {exc}")
    if warning := exposure_warning(args):
        print(warning, file=sys.stderr)
    torch.set_num_threads(args.torch_threads)  # here, not at import: see DEFAULT_TORCH_THREADS
    # Gradio wraps every event in matplotlib.get_backend()/use("agg"); with matplotlib's backend
    # unresolved, the first event imports pyplot to resolve it (570 ms measured with py-spy
    # while profiling the slider). Resolving it here moves that off the first user's first move.
    matplotlib.use("agg")
    cache_dir = None if args.no_disk_cache else (args.cache_dir or default_cache_dir())
    demo = build_app(args.checkpoints, args.device, cache_dir=cache_dir, data_dir=args.data_dir,
                     default_checkpoint=args.default, max_upload_mb=args.max_upload_mb)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
