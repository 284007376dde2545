"""The Gradio explorer: ``latent-explore --checkpoints DIR`` and ``vs.explore(...)``.

This file assembles the panels (one module each: models, map, traversal, interpolation, sampling,
diagnostics), lays them out, and parses the command line. The panels hold their own components,
events and handlers; ``core`` holds everything that is not Gradio. Importing this module starts
nothing.

Concurrency: the heavy work (loading and encoding a model, fitting a projection) runs in its own
concurrency groups with small limits, and single-flight: one load per file (``ModelStore``), one
fit per model and projection (``ProjectionCache``); later callers wait for that result. The slider
handler is about a millisecond of decoding and skips the queue, so a t-SNE fit never stalls a drag.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import matplotlib
import plotly.graph_objects as go
import torch
from gradio.blocks import BlockContext

from vaescope.devices import pick_device
from vaescope.errors import InputError
from vaescope.explorer.core.embeddings import read_embeddings
from vaescope.explorer.core.lessons import LESSONS, page_model
from vaescope.explorer.core.maps import METHOD_NAMES, color_choices
from vaescope.explorer.core.projection import ProjectionCache
from vaescope.explorer.core.selection import Selection
from vaescope.explorer.core.store import ModelEntry, ModelStore, default_cache_dir
from vaescope.explorer.core.webdecoder import WebDecoders
from vaescope.explorer.ui.anomaly import AnomalyPanel
from vaescope.explorer.ui.common import Context, Downloads
from vaescope.explorer.ui.compare import CompareView
from vaescope.explorer.ui.denoising import DenoisingPanel
from vaescope.explorer.ui.diagnostics import DiagnosticsPanel
from vaescope.explorer.ui.interpolation import InterpolationPanel
from vaescope.explorer.ui.lessons import LessonPage, LessonsPanel
from vaescope.explorer.ui.manifold import ManifoldPanel
from vaescope.explorer.ui.map import MapPanel
from vaescope.explorer.ui.models import ModelsPanel
from vaescope.explorer.ui.sampling import SamplingPanel
from vaescope.explorer.ui.state import Session
from vaescope.explorer.ui.traversal import TraversalPanel
from vaescope.explorer.ui.webdecode import WebDecodePanel, routes
from vaescope.limits import DEFAULT_MAX_UPLOAD_MB, MAX_MODELS_IN_MEMORY

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_CONCURRENCY = 8
# Gradio's output cache (every image and file sent) is per app: every 10 minutes, drop what is
# older than an hour, so a long-running server does not fill its disk.
DELETE_CACHE = (600, 3600)
# One intra-op thread for torch in the server: its work is many tiny, independent calls (one
# decode per slider move), which Gradio already runs in parallel threads, so an OpenMP team per
# call only waits for cores that other requests hold (benchmarks/slider.py). Set in main(), never
# at import; --torch-threads N overrides it.
DEFAULT_TORCH_THREADS = 1
# Gradio 6's run history saves every event's inputs and outputs in the browser's localStorage,
# re-reading and re-writing the last 100 runs as JSON several times per event; profiled in
# Chromium it was the largest JavaScript cost per slider move. The explorer has no use for it.
RUN_HISTORY = False
RESIZE_JS = "() => { window.vaescopeResizePlots && window.vaescopeResizePlots(); }"


def page_head() -> str:
    """The <head> additions: the click bridge and overlay script, and the page script (the view in
    the address, the presenter layout's views)."""
    return "".join(f"<script>\n{(STATIC / name).read_text()}\n</script>"
                   for name in ("bridge.js", "page.js", "decode.js"))


def page_css() -> str:
    return (STATIC / "style.css").read_text()


class ExplorerBlocks(gr.Blocks):
    """gr.Blocks whose ``launch`` defaults to the explorer's CSS, page script and upload cap.

    Gradio 6 takes ``css`` / ``head`` in ``launch``, so a caller that launches ``build_app(...)``
    itself (tests, notebooks, ``vs.explore``) still gets a working map without repeating them.
    """

    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    web_decoders: WebDecoders | None = None  # the decoders the page runs itself (ui/webdecode.py)

    def launch(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        kwargs.setdefault("css", page_css())
        kwargs.setdefault("head", page_head())
        kwargs.setdefault("max_file_size", f"{self.max_upload_mb}mb")
        kwargs.setdefault("run_history", RUN_HISTORY)
        if self.web_decoders is not None:  # FastAPI's own routes come before Gradio's
            app_kwargs = dict(kwargs.get("app_kwargs") or {})
            app_kwargs["routes"] = [*routes(self.web_decoders), *app_kwargs.get("routes", [])]
            kwargs["app_kwargs"] = app_kwargs
        return super().launch(*args, **kwargs)

    def selection(self) -> Selection | None:
        """The points last lassoed or box-selected on the map (or selected from a search), in the
        session that selected most recently; None when there is none or it was cleared. Its
        ``indices`` are rows of the map's evaluation images (the ``images`` given to ``vs.explore``,
        or their seeded subset above 70,000), with ``label_counts`` and ``mean_code`` [D].

        Examples:
            >>> app = vs.explore(vae, images=x, labels=y, prevent_thread_lock=True)  # doctest: +SKIP
            >>> x[app.selection().indices]  # the images lassoed on the page  # doctest: +SKIP
        """
        return self.panels["map"].last_selection()  # type: ignore[attr-defined]


def build_app(checkpoint_dir: str | Path | None = None, device: str = "auto", *, store: ModelStore | None = None,
              cache_dir: Path | None = None, data_dir: str | Path | None = None,
              default_checkpoint: str | None = None, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
              max_models: int = MAX_MODELS_IN_MEMORY) -> ExplorerBlocks:
    """The explorer for the checkpoints under ``checkpoint_dir`` (or for a prepared ``store``, which
    ``vs.explore`` fills with in-process models); call ``.launch()`` to serve it.

    ``cache_dir`` keeps fitted projections on disk (memory only when None); ``data_dir`` is where
    datasets are looked for.
    """
    if store is None:
        store = ModelStore(None if checkpoint_dir is None else Path(checkpoint_dir), pick_device(device),
                           data_dir=data_dir, max_models=max_models)
    ctx = Context(store, ProjectionCache(cache_dir), Downloads())
    decoders = WebDecoders()
    with ExplorerBlocks(title="vaescope explorer", delete_cache=DELETE_CACHE) as demo:
        demo.max_upload_mb = max_upload_mb
        demo.web_decoders = decoders
        # a value, not a factory: Gradio deep-copies it once per browser tab. (A callable value is also
        # re-run by Gradio on every page load, which raced the model panel's own load event.)
        session = gr.State(Session())
        # phase 1: every panel, given what it depends on, then the layout (each panel builds its own
        # components); phase 2: the wiring. No panel sets another's attributes.
        traversal = TraversalPanel(ctx, session)
        interpolation = InterpolationPanel(ctx, session, traversal)
        latent_map = MapPanel(ctx, session, traversal, interpolation)
        sampling = SamplingPanel(ctx, session)
        diagnostics = DiagnosticsPanel(session)
        denoising, anomaly = DenoisingPanel(ctx, session), AnomalyPanel(ctx, session)
        manifold = ManifoldPanel(ctx, session)
        webdecode = WebDecodePanel(ctx, session, decoders)
        panels = [latent_map, traversal, interpolation, sampling, diagnostics, denoising, anomaly, manifold, webdecode]
        models = ModelsPanel(ctx, session, panels, default_checkpoint, max_upload_mb,
                             url_choice=lambda params: page_model(params.get("lesson")) or params.get("model"),
                             url_view=(lambda: [latent_map.method, latent_map.color],
                                       lambda params, entry: map_settings(latent_map, params, entry)))
        compare = CompareView(ctx, default_checkpoint, [lesson.models for lesson in LESSONS if len(lesson.models) == 2])
        lessons = LessonsPanel(ctx, compare, models, session)
        models.build_toolbar()
        lessons.build_banner()
        # Gradio imports plotly.js (4.6 MB, about 1 s of the page's main thread to evaluate) when the
        # first plot gets a figure. An empty figure from the start, out of sight, starts that import
        # as the page mounts, while the server opens the model, instead of after the map arrives.
        gr.Plot(go.Figure(layout={"width": 10, "height": 10}), show_label=False, container=False,
                elem_id="plotly-early", elem_classes="offscreen")
        with gr.Tabs(elem_id="top-tabs") as top_tabs:
            with gr.Tab("Explore", id="explore", elem_id="tab-explore") as explore_tab:
                explore_tabs = _layout(models, latent_map, webdecode, traversal, {
                    "Traversal grid": traversal.build_grid, "Interpolation": interpolation.build,
                    "Class sampling": sampling.build, "Diagnostics": diagnostics.build, "Denoising": denoising.build,
                    "Anomalies": anomaly.build, "Manifold": manifold.build})
            with gr.Tab("Side by side", id="compare", elem_id="tab-compare") as compare_tab:
                compare.build()
            with gr.Tab("Lessons", id="lessons", elem_id="tab-lessons") as lessons_tab:
                lessons.build()
        for tab in (explore_tab, compare_tab, lessons_tab):
            tab.select(None, js=RESIZE_JS)
        # a link's tabs (static/page.js writes them into the address); a lesson's link chooses its own
        def open_link_tabs(request: gr.Request) -> tuple[Any, Any]:
            return link_tabs(dict(request.query_params))
        demo.load(open_link_tabs, None, [top_tabs, explore_tabs], queue=False, show_progress="hidden")
        latent_map.wire(models.wire(demo))
        compare.wire(compare_tab)
        lessons.wire(demo, LessonPage(top_tabs, explore_tabs, followups={
            "*": [(latent_map.draw_map, latent_map.draw_inputs(), latent_map.draw_outputs())],
            "anomalies": [
                (anomaly.score_test_images, [session], [anomaly.note, anomaly.histogram, anomaly.typical,
                                                        anomaly.unusual]),
                (anomaly.compare, [anomaly.other, session], [anomaly.histogram, anomaly.compare_note])]}))
        traversal.wire(models.present)
        webdecode.wire(latent_map.plot)
        interpolation.wire()
        manifold.wire(models.present)
        for panel in (sampling, diagnostics, denoising, anomaly):
            panel.wire()
    no_progress_on_layouts(demo)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    demo.ctx = ctx  # type: ignore[attr-defined]  # tests and vs.explore reach the store through it
    demo.panels = {"models": models, "compare": compare, "lessons": lessons,  # type: ignore[attr-defined]
                   **{p.__class__.__name__.removesuffix("Panel").lower(): p for p in panels}}
    return demo


def no_progress_on_layouts(demo: gr.Blocks) -> None:
    """Take layouts (tabs, accordions, rows) out of every event's progress targets.

    Gradio 6's page keeps a loading status for every progress target (by default: every output)
    and every input of each event that has run, and on every status message of any later event it
    re-reads each of them, a layout with every component inside it, copying their values (the
    map's figure among them). One load event whose outputs are the page's tabs made every slider
    move copy the whole page: 50-70 ms of the page's main thread per move (CDP profile,
    docs/performance.md). A layout shows no progress anyway; its components keep theirs.
    """
    for fn in demo.fns.values():
        targets = list(fn.show_progress_on) if fn.show_progress_on is not None else list(fn.outputs)
        kept = [block for block in targets if not isinstance(block, BlockContext)]
        if len(kept) != len(targets):
            fn.show_progress_on = kept


def _layout(models: ModelsPanel, latent_map: MapPanel, webdecode: WebDecodePanel, traversal: TraversalPanel,
            tabs: dict[str, Callable[[], None]]) -> gr.Tabs:
    """The Explore page: the model and its card on top, the map (with what the page's own decoder
    needs under it) beside the traversal (the core loop), then a tab per other panel (``tabs``: title -> the function that builds it, its id the
    title's first word in lower case). Returns those tabs."""
    with gr.Row(equal_height=False, elem_id="explore-model-row"):
        with gr.Column(scale=2, min_width=360, elem_id="explore-model-column"):
            gr.Markdown("## vaescope — latent explorer", elem_id="page-title")
            models.build()
        with gr.Column(scale=3, min_width=420, elem_id="explore-card-column"):
            models.build_card()
    with gr.Row(equal_height=False, elem_id="explore-core"):
        with gr.Column(scale=3, min_width=420, elem_id="explore-map-column"):
            latent_map.build()
            webdecode.build()
        with gr.Column(scale=2, min_width=320, elem_id="explore-traversal-column"):
            traversal.build()
    built = []
    # the presenter layout shows one view at a time: the map and traversal are its first tab (empty
    # here: static/style.css shows the row above for it); the page opens on the first panel's tab
    first = tabs and next(iter(tabs)).split()[0].lower()
    with gr.Tabs(elem_id="main-tabs", selected=first) as lower_tabs:
        with gr.Tab("Map & traversal", id="map", elem_id="tab-map") as map_tab:
            gr.Markdown("", elem_id="map-tab-note")
        built.append(map_tab)
        for title, build in tabs.items():
            key = title.split()[0].lower()
            with gr.Tab(title, id=key, elem_id=f"tab-{key}") as tab:
                build()
            built.append(tab)
    for tab in built:  # a plot drawn while its tab was hidden is sized to nothing: resize on show
        tab.select(None, js=RESIZE_JS)
    return lower_tabs


TOP_TABS = ("explore", "compare", "lessons")


def link_tabs(params: dict[str, str]) -> tuple[Any, Any]:
    """The page's tabs a link names (``?tab=compare``, ``?tab=explore&view=interpolation``): updates
    for the top tabs and the Explore page's tabs; nothing for a name the page has no tab for, or
    when the link opens a lesson (the lesson chooses its views)."""
    if params.get("lesson"):
        return gr.skip(), gr.skip()
    tab, view = params.get("tab"), params.get("view")
    views = {"map", "traversal", "interpolation", "class", "diagnostics", "denoising", "anomalies", "manifold"}
    return (gr.Tabs(selected=tab) if tab in TOP_TABS else gr.skip(),
            gr.Tabs(selected=view) if view in views else gr.skip())


def map_settings(latent_map: MapPanel, params: Mapping[str, str], entry: ModelEntry) -> dict[Any, Any]:
    """The map's projection and colouring a link names (``?projection=umap&colour=class``, by value
    or by the name the page shows), for a model just loaded; a choice the model lacks is ignored."""
    updates: dict[Any, Any] = {}
    method = _chosen(params.get("projection"), [(name, key) for key, name in METHOD_NAMES.items()])
    if method is not None:
        updates[latent_map.method] = method
    colours = color_choices(entry)
    colour = _chosen(params.get("colour"), colours)
    if colour is not None:
        updates[latent_map.color] = gr.Dropdown(choices=colours, value=colour)
    return updates


def _chosen(asked: str | None, choices: list[tuple[str, str]]) -> str | None:
    """The value among (name, value) ``choices`` that ``asked`` names by value or name (any case)."""
    wanted = (asked or "").strip().lower()
    return next((value for name, value in choices if wanted in (str(value).lower(), str(name).lower())), None) \
        if wanted else None


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
    p.add_argument("--checkpoints", type=Path, help="folder searched for *.safetensors")
    p.add_argument("--embeddings", type=Path, action="append", default=[], metavar="FILE",
                   help="a .npz or .parquet file of precomputed codes (and optional images, labels) to map; "
                        "may be given several times")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N] or mps")
    p.add_argument("--share", action="store_true", help="create a public Gradio share link (see the warning)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="projection cache folder (default ~/.cache/vaescope/projections)")
    p.add_argument("--no-disk-cache", action="store_true", help="keep projections in memory only")
    p.add_argument("--data-dir", default=None, help="dataset folder (default ~/.cache/vaescope/data)")
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


def prepare_process(torch_threads: int = DEFAULT_TORCH_THREADS) -> None:
    """Process-wide settings for serving: torch's threads, and matplotlib's backend resolved now.

    Gradio wraps every event in matplotlib.get_backend()/use("agg"); with the backend unresolved, the
    first event imports pyplot to resolve it (570 ms measured while profiling the slider).
    """
    torch.set_num_threads(torch_threads)
    matplotlib.use("agg")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `latent-explore`."""
    args = parse_args(argv)
    if args.checkpoints is None and not args.embeddings:
        sys.exit("latent-explore: give --checkpoints FOLDER, --embeddings FILE, or both")
    if args.checkpoints is not None and not args.checkpoints.is_dir():
        sys.exit(f"latent-explore: {args.checkpoints} is not a folder")
    if args.torch_threads < 1 or args.max_upload_mb < 1:
        sys.exit("latent-explore: --torch-threads and --max-upload-mb must be at least 1")
    if not 0 < args.port < 65536:
        sys.exit(f"latent-explore: --port must be 1..65535, got {args.port}")
    try:
        pick_device(args.device)
    except InputError as exc:
        sys.exit(f"latent-explore: {exc}")
    if warning := exposure_warning(args):
        print(warning, file=sys.stderr)
    prepare_process(args.torch_threads)
    cache_dir = None if args.no_disk_cache else (args.cache_dir or default_cache_dir())
    store = ModelStore(args.checkpoints, pick_device(args.device), data_dir=args.data_dir)
    for path in args.embeddings:
        try:
            store.add_embeddings(path.name, read_embeddings(path))
        except InputError as exc:
            sys.exit(f"latent-explore: {exc}")
    demo = build_app(store=store, cache_dir=cache_dir, default_checkpoint=args.default,
                     max_upload_mb=args.max_upload_mb)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
