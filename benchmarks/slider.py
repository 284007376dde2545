"""Figure 1: slider round trip in a real browser, the decoder's own time, and the image payload.

Three servers run side by side: the real explorer on a 28x28 conv checkpoint, the baseline no-op
Gradio app (one slider whose handler returns a fixed 28x28 image upscaled like the explorer does,
wired as the explorer wires its sliders: no queue), and the same no-op app through Gradio's queue,
which shows what skipping the queue saves. Headless
Chromium presses an arrow key on each slider; a listener stamps the range input's ``input`` event
and a MutationObserver stamps the moment the decoded ``<img>``'s src changes, both with
``performance.now()`` in the page, so the round trip is measured by one clock. Pages alternate in
rounds so background load on a shared machine hits both alike.

Where the time goes: the server side is timed in the same run by instrumentation, per app and per
move: Gradio's whole ``process_api`` (preprocess, the handler in a worker thread, postprocess),
the handler itself, and Gradio's PNG encode + write into its file cache. The round trip minus the
server's time is the transport (queue join, SSE message) and the browser's own work. The explorer
is served with torch's intra-op threads as ``latent-explore`` sets them (main(), not build_app).
"""

from __future__ import annotations

import functools
import io
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    Figure,
    Row,
    at_most,
    fmnist_checkpoints,
    free_port,
    launch_browser,
    median,
    p95,
    repeat,
    shipped_fmnist,
    timed_slider_handlers,
)
from vaescope.training.threads import torch_threads

IMAGE_ID, SLIDER_ID = "traversal-image", "dim-slider-0"
TARGET_MS, TARGET_RATIO, DECODER_TARGET_MS = 100.0, 1.3, 5.0
MOVE_TIMEOUT_MS = 10_000
PAUSE_MS = 40  # between moves, so every move is answered before the next (always_last never drops)

# Installed once per page: stamps moves, src changes and image loads into window.__bench.
OBSERVE_JS = """
([image, slider]) => {
  const root = document.querySelector(`#${image}`);
  const range = document.querySelector(`#${slider} input[type=range]`);
  if (!root || !range) return false;
  const b = window.__bench = {moves: [], changes: [], loads: []};
  const src = () => { const img = root.querySelector('img'); return img ? img.src : null; };
  let last = src();
  new MutationObserver(() => {
    const now = performance.now(), s = src();
    if (s && s !== last) { last = s; b.changes.push(now); }
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  root.addEventListener('load', () => b.loads.push(performance.now()), true);
  range.addEventListener('input', () => b.moves.push(performance.now()), true);
  return true;
}
"""
RANGE_JS = """(slider) => { const r = document.querySelector(`#${slider} input[type=range]`);
  return [Number(r.min), Number(r.max), Number(r.step) || 0, Number(r.value)]; }"""


class ServerTimes:
    """Seconds per server stage, filed under the app whose page is being moved (moves are
    sequential, one page at a time, so the current app owns every call)."""

    def __init__(self) -> None:
        self.app = ""
        self.times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def record(self, stage: str, seconds: float) -> None:
        if self.app:
            self.times[self.app][stage].append(seconds)

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps the signature Gradio inspects
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.record(stage, time.perf_counter() - start)
        return wrapper

    def time_process_api(self, demo: Any) -> None:
        """Time the Blocks' whole event processing (awaited on the server's event loop)."""
        original = demo.process_api

        async def process_api(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.record("process_api", time.perf_counter() - start)
        demo.process_api = process_api

    @contextmanager
    def png_saves(self) -> Iterator[None]:
        """Time Gradio's PNG encode + write of every output image (processing_utils.save_pil_to_cache)."""
        from gradio import processing_utils

        original = processing_utils.save_pil_to_cache
        processing_utils.save_pil_to_cache = self.timed("png_save", original)
        try:
            yield
        finally:
            processing_utils.save_pil_to_cache = original


def noop_app(times: ServerTimes, queue: bool | None = None) -> Any:
    """The latency floor: one slider, one image, a handler that only upscales a fixed image. The
    slider event is queued or not as the explorer's (``SLIDER_QUEUE``) unless ``queue`` says."""
    import gradio as gr

    from vaescope.explorer.core import figures
    from vaescope.explorer.ui.common import scale_for
    from vaescope.explorer.ui.traversal import SLIDER_QUEUE

    base = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)

    def on_slide(value: float) -> Any:
        # Brightness follows the slider so every move yields new bytes, hence a new file URL.
        image = (base + float(value)) % 1.0
        return figures.to_pil(image, scale_for(image))

    with gr.Blocks(title="no-op slider") as demo:
        slider = gr.Slider(-3, 3, value=0, step=0.03, label="z0", elem_id=SLIDER_ID)
        image = gr.Image(on_slide(0.0), format="png", interactive=False, elem_id=IMAGE_ID)
        slider.input(times.timed("handler", on_slide), slider, image, trigger_mode="always_last",
                     show_progress="hidden", queue=SLIDER_QUEUE if queue is None else queue)
    return demo.queue()


def open_page(browser: Any, url: str, ready: str, timeout_ms: int) -> Any:
    """A page on ``url`` once its image is shown, ``ready`` is in the DOM and the observers are on."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector(f"#{IMAGE_ID} img", timeout=timeout_ms)
    page.wait_for_selector(ready, state="attached", timeout=timeout_ms)
    page.wait_for_timeout(1000)  # let the load chain (map, diagnostics) settle
    if not page.evaluate(OBSERVE_JS, [IMAGE_ID, SLIDER_ID]):
        raise RuntimeError(f"{url}: no #{IMAGE_ID} image or #{SLIDER_ID} range input on the page")
    return page


def move_once(page: Any, key: str) -> tuple[float, float] | None:
    """Press ``key`` on the focused slider; (ms to src change, ms to image loaded), None on timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = page.evaluate("[window.__bench.changes.length, window.__bench.loads.length]")
    page.keyboard.press(key)
    try:
        page.wait_for_function(f"window.__bench.changes.length > {before[0]} && "
                               f"window.__bench.loads.length > {before[1]}", timeout=MOVE_TIMEOUT_MS)
    except PlaywrightTimeout:  # the image never changed (e.g. an identical decode): counted as missed
        return None
    moved, changed, loaded = page.evaluate(
        "[window.__bench.moves.at(-1), window.__bench.changes.at(-1), window.__bench.loads.at(-1)]")
    page.wait_for_timeout(PAUSE_MS)
    return changed - moved, loaded - moved


def move_many(page: Any, moves: int) -> tuple[list[float], list[float], int]:
    """``moves`` key presses towards the slider's farther end: (src ms, load ms, timeouts)."""
    page.bring_to_front()  # a background tab may be throttled
    lo, hi, _, value = page.evaluate(RANGE_JS, SLIDER_ID)
    key = "ArrowRight" if hi - value >= value - lo else "ArrowLeft"
    page.focus(f"#{SLIDER_ID} input[type=range]")
    src, load, missed = [], [], 0
    for _ in range(moves):
        got = move_once(page, key)
        if got is None:
            missed += 1
        else:
            src.append(got[0])
            load.append(got[1])
    return src, load, missed


class BrowserMetrics:
    """Chromium's own counters for one page (CDP Performance.getMetrics): main-thread busy time
    (TaskDuration) and JavaScript time (ScriptDuration), cumulative seconds."""

    def __init__(self, page: Any) -> None:
        self.session = page.context.new_cdp_session(page)
        self.session.send("Performance.enable")

    def read(self) -> dict[str, float]:
        return {m["name"]: m["value"] for m in self.session.send("Performance.getMetrics")["metrics"]}


def browser_round_trips(urls: dict[str, str], moves: int, rounds: int, warmup: int,
                        times: ServerTimes) -> dict[str, Any]:
    """Per app (``urls``: name -> URL, "real" being the explorer): round-trip times (ms) over
    ``moves`` moves, split into alternating rounds; the server's stage times of the measured moves
    land in ``times``."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {name: {"src_ms": [], "load_ms": [], "missed": 0, "main_thread_ms": [],
                                  "script_ms": []} for name in urls}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            ready = {"real": ("#latent-map .js-plotly-plot", 300_000)}  # the explorer: once its map is drawn
            pages = {name: open_page(browser, url, *ready.get(name, (f"#{SLIDER_ID}", 60_000)))
                     for name, url in urls.items()}
            metrics = {name: BrowserMetrics(page) for name, page in pages.items()}
            for page in pages.values():
                move_many(page, warmup)
            per_round = max(1, moves // rounds)
            for _ in range(rounds):
                for name, page in pages.items():
                    times.app = name
                    before = metrics[name].read()
                    src, load, missed = move_many(page, per_round)
                    after = metrics[name].read()
                    times.app = ""
                    out[name]["src_ms"] += src
                    out[name]["load_ms"] += load
                    out[name]["missed"] += missed
                    for key, metric in (("main_thread_ms", "TaskDuration"), ("script_ms", "ScriptDuration")):
                        out[name][key].append((after[metric] - before[metric]) * 1e3 / per_round)
        finally:
            browser.close()
    return out


def decoder_and_payload(checkpoint: Path, repeats: int) -> tuple[dict[int, list[float]], dict[str, dict[str, Any]], str]:
    """Decoder seconds per single image on CPU by torch thread count (the default and 1), and the
    size / encode time of the upscaled image in each format."""
    import torch
    from gradio.processing_utils import encode_pil_to_bytes

    from vaescope.explorer.core import figures
    from vaescope.explorer.core.evaldata import load_eval_images
    from vaescope.explorer.ui.common import scale_for
    from vaescope.training.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint, torch.device("cpu"))
    z = torch.zeros(1, model.config.latent_dim)
    y = model.condition.for_class(0, 1)  # class 0 for a conditional model, else None
    decode_s = {}
    for n in sorted({torch.get_num_threads(), 1}, reverse=True):  # the app's default, then one intra-op thread
        with torch_threads(n), torch.inference_mode():
            decode_s[n] = repeat(lambda: model.decode(z, y).float().cpu().numpy(), repeats, warmup=20)
    # The payload of a realistic picture: a decoded test image (trained model) or the test image.
    images = load_eval_images(meta.dataset).images.astype(np.float32) / 255
    image, what = images[0], "Fashion-MNIST test image #0"
    if shipped_fmnist():
        with torch.inference_mode():
            image = model.decode(model.encode(torch.from_numpy(images[:1]), y).mean, y)[0].numpy()
        what = "decoded Fashion-MNIST test image #0"
    pil = figures.to_pil(image, scale_for(image))
    encoders = {
        "raw": lambda: pil.tobytes(),
        "png": lambda: encode_pil_to_bytes(pil, "png"),  # what gr.Image(format="png") sends
        "webp_lossless": lambda: _save(pil, "WEBP", lossless=True),
        "webp_q80": lambda: encode_pil_to_bytes(pil, "webp"),  # gr.Image's default format
    }
    payload = {name: {"bytes": len(enc()), "encode_s": repeat(enc, repeats, warmup=3)}
               for name, enc in encoders.items()}
    return decode_s, payload, f"{what}, {pil.size[0]}x{pil.size[1]} {pil.mode}"


def _save(image: Any, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def run(quick: bool) -> Figure:
    """Figure 1 rows: round trip median / p95 (real vs no-op), decoder time, payload sizes."""
    from vaescope.explorer.ui.app import DEFAULT_TORCH_THREADS, build_app

    moves, rounds, warmup = (16, 2, 3) if quick else (50, 2, 5)
    times = ServerTimes()
    with tempfile.TemporaryDirectory(prefix="vaescope-bench-") as tmp:
        root, names, source = fmnist_checkpoints(Path(tmp))
        with ExitStack() as stack:
            stack.enter_context(torch_threads(DEFAULT_TORCH_THREADS))  # as latent-explore's main() sets it
            stack.enter_context(times.png_saves())
            with timed_slider_handlers(lambda wall, seconds: times.record("handler", seconds)):
                real = build_app(root, device="cpu", default_checkpoint=names[0])
            demos = {"real": real, "noop": noop_app(times), "noop_queued": noop_app(times, queue=True)}
            urls = {}
            for name, demo in demos.items():
                times.time_process_api(demo)
                port = free_port()
                demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
                stack.callback(demo.close)
                urls[name] = f"http://127.0.0.1:{port}/"
            trips = browser_round_trips(urls, moves, rounds, warmup, times)
        # torch's default threads again: this compares them with one thread
        decode_s, payload, payload_image = decoder_and_payload(root / names[0], 50 if quick else 200)
    figure = _rows(trips, decode_s, payload, times.times)
    figure.details |= {"checkpoint": f"{names[0]} ({source})", "payload_image": payload_image,
                       "moves": {"warmup": warmup, "rounds": rounds, "measured": moves}}
    return figure


def _stage_ms(stages: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    """ServerTimes' seconds per app and stage, in ms."""
    return {app: {stage: [t * 1e3 for t in ts] for stage, ts in by_stage.items()} for app, by_stage in stages.items()}


def _stage_rows(trips: dict[str, Any], ms: dict[str, dict[str, list[float]]]) -> list[Row]:
    """Where the round trip goes, explorer vs no-op, medians of the stage times ``ms``."""
    rows = []
    for stage, label in (("process_api", "server: Gradio event processing (pre + handler + post)"),
                         ("handler", "server: handler (decode + upscale)"),
                         ("png_save", "server: PNG encode + write to Gradio's cache")):
        real, noop = ms.get("real", {}).get(stage), ms.get("noop", {}).get(stage)
        if real and noop:
            rows.append(Row(f"slider {label}, median", median(real), "ms", len(real), median(noop), "no-op Gradio app"))
    for key, label in (("main_thread_ms", "browser: main-thread busy time per move"),
                       ("script_ms", "browser: JavaScript time per move")):
        if trips["real"].get(key) and trips["noop"].get(key):
            rows.append(Row(f"slider {label}", median(trips["real"][key]), "ms", len(trips["real"][key]),
                            median(trips["noop"][key]), "no-op Gradio app", note="median over rounds"))
    if ms.get("real", {}).get("process_api") and ms.get("noop", {}).get("process_api"):
        rest = {app: median(trips[app]["src_ms"]) - median(ms[app]["process_api"]) for app in ("real", "noop")}
        rows.append(Row("slider round trip minus server processing (queue, transport, browser)", rest["real"], "ms",
                        len(trips["real"]["src_ms"]), rest["noop"], "no-op Gradio app",
                        note="difference of medians"))
    return rows


def _queue_rows(trips: dict[str, Any]) -> list[Row]:
    """What the queue costs: the no-op app through Gradio's queue against the unqueued one."""
    queued, noop = trips.get("noop_queued", {}).get("src_ms"), trips["noop"]["src_ms"]
    if not queued:
        return []
    return [Row("slider → new image, median, no-op app through Gradio's queue", median(queued), "ms", len(queued),
                median(noop), "no-op app unqueued (the explorer's wiring)",
                note=f"browser main-thread busy time per move: queued "
                     f"{median(trips['noop_queued']['main_thread_ms']):.1f} ms, unqueued "
                     f"{median(trips['noop']['main_thread_ms']):.1f} ms")]


def _rows(trips: dict[str, Any], decode_s: dict[int, list[float]], payload: dict[str, dict[str, Any]],
          stages: dict[str, dict[str, list[float]]]) -> Figure:
    real, noop = trips["real"]["src_ms"], trips["noop"]["src_ms"]
    ratio = median(real) / median(noop)
    stage_ms = _stage_ms(stages)
    rows = [
        Row("slider → new image, median (explorer)", median(real), "ms", len(real), median(noop),
            "no-op Gradio app", f"<= {TARGET_MS:.0f} ms and <= {TARGET_RATIO}x no-op",
            median(real) <= TARGET_MS and ratio <= TARGET_RATIO,
            note=f"timeouts (image unchanged): explorer {trips['real']['missed']}, no-op {trips['noop']['missed']}"),
        Row("slider → new image, p95 (explorer)", p95(real), "ms", len(real), p95(noop), "no-op Gradio app"),
        *_queue_rows(trips),
        Row("slider → image loaded, median (explorer)", median(trips["real"]["load_ms"]), "ms", len(real),
            median(trips["noop"]["load_ms"]), "no-op Gradio app"),
        *_stage_rows(trips, stage_ms),
    ]
    default = max(decode_s)
    for threads, times in sorted(decode_s.items(), reverse=True):
        ms = median(times) * 1e3
        label = f"torch default, {threads} threads" if threads == default else f"{threads} torch thread"
        rows.append(Row(f"decoder, one 28x28 image (CPU, {label})", ms, "ms", len(times),
                        target=f"<= {DECODER_TARGET_MS:.0f} ms", met=at_most(ms, DECODER_TARGET_MS)))
    raw = payload["raw"]
    for name, label in (("png", "PNG"), ("webp_lossless", "WebP lossless"), ("webp_q80", "WebP q80")):
        p = payload[name]
        rows.append(Row(f"payload, {label}", p["bytes"], "B", 1, raw["bytes"], "raw pixels"))
        rows.append(Row(f"encode time, {label}", median(p["encode_s"]) * 1e3, "ms", len(p["encode_s"]),
                        median(raw["encode_s"]) * 1e3, "raw bytes copy"))
    details = {"round_trip_ms": trips,
               "server_stage_ms": stage_ms,
               "decoder_ms_by_threads": {n: [t * 1e3 for t in ts] for n, ts in decode_s.items()},
               "payload": {k: {"bytes": v["bytes"], "encode_ms_median": median(v["encode_s"]) * 1e3}
                           for k, v in payload.items()}}
    return Figure(rows, details)
