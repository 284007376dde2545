"""Decoding under the pointer and the sliders in the page, against the server's path and Gradio's floor.

    python -m benchmarks.pointer [--quick]     # prints the table; run(quick) returns it as a Figure

One explorer serves the 2-D MNIST VAE (assets/checkpoints/mnist/vae-2d.safetensors, its PCA map of
the embedded sample drawn), and headless Chromium opens it twice: as it is (the page decodes with
onnxruntime-web, static/decode.js) and with ``?decode=server`` (the page sends every spot and
slider move to the server, as before). Beside them runs the no-op Gradio app of
``benchmarks/slider.py``: one slider whose handler returns a fixed image, wired as the explorer
wires its sliders; its slider round trip is Gradio's floor for anything the server answers.

- pointer: ``page.mouse.move`` to a new spot of the map's plot area. In the page, the time from
  the pointer event's timestamp (``event.timeStamp``) to the decoded image drawn on its canvas
  (``window.vaescopeWebDecode.times``), and to the start of the next animation frame after it;
  on the server path, from the event's timestamp to the new ``<img>`` src in ``#pointer-image``.
- slider: an arrow key on the first traversal slider; in the page, input event to canvas drawn;
  on the server path, input event to the traversal image's new src (what ``benchmarks/slider.py``
  measures). The no-op floor is the same key press on its slider.

Moves alternate between the pages in rounds, so background load on a shared machine hits all
alike; every value is a median over the moves, its ratio taken against a baseline of the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.common import ASSETS, Figure, Row, free_port, launch_browser, median, p95
from vaescope.training.threads import torch_threads

CHECKPOINT = ASSETS / "mnist" / "vae-2d.safetensors"
FRAME_MS = 1000 / 60
MOVE_TIMEOUT_MS = 10_000
PAUSE_MS = 60  # between moves, so every move is answered before the next

# Stamps pointer and slider events and each watched image's src changes into window.__bench.
OBSERVE_JS = """
(images) => {
  const b = window.__bench = {moves: [], changes: {}};
  const kind = 'onpointerrawupdate' in window ? 'pointerrawupdate' : 'mousemove';
  window.addEventListener(kind, (e) => b.moves.push(e.timeStamp), true);
  document.addEventListener('input', (e) => b.moves.push(e.timeStamp), true);
  for (const id of images) {
    const root = document.querySelector(`#${id}`);
    if (!root) return false;
    b.changes[id] = [];
    const src = () => { const img = root.querySelector('img'); return img ? img.src : null; };
    let last = src();
    new MutationObserver(() => {
      const s = src();
      if (s && s !== last) { last = s; b.changes[id].push(performance.now()); }
    }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  }
  return true;
}
"""
PLOT_AREA_JS = """() => { const r = document.querySelector('#latent-map .nsewdrag').getBoundingClientRect();
  return {x: r.left, y: r.top, w: r.width, h: r.height}; }"""


def open_explorer(browser: Any, url: str) -> Any:
    """A page of the explorer once its map is drawn, its way back to codes has arrived and the
    page's decoder has settled (ready, or the reason the server decodes)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_function("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"
                           " return gd && gd._fullData && gd._fullData.length > 2; }", timeout=300_000)
    page.wait_for_function("() => { const el = document.querySelector('#web-map textarea, #web-map input');"
                           " const m = el && JSON.parse(el.value || 'null'); return m && m.server; }", timeout=60_000)
    page.wait_for_function("() => window.vaescopeWebDecode && (window.vaescopeWebDecode.ready ||"
                           " window.vaescopeWebDecode.why)", timeout=120_000)
    page.wait_for_selector("#traversal-image img", timeout=60_000)
    page.wait_for_timeout(1000)
    if not page.evaluate(OBSERVE_JS, ["pointer-image", "traversal-image"]):
        raise RuntimeError(f"{url}: the page lacks #pointer-image or #traversal-image")
    return page


def spots(area: dict[str, float], n: int) -> list[tuple[float, float]]:
    """``n`` distinct spots inside the plot area, on a slanted zig-zag (each one a new code)."""
    out = []
    for i in range(n):
        fx = 0.15 + 0.7 * ((i * 0.137) % 1.0)
        fy = 0.2 + 0.6 * ((i * 0.291) % 1.0)
        out.append((area["x"] + fx * area["w"], area["y"] + fy * area["h"]))
    return out


def in_page_moves(page: Any, kind: str, act: Any, n: int) -> tuple[list[float], list[float], int]:
    """``n`` moves answered by the page's own decoder: (event → image drawn ms, event → next
    frame ms, moves with no image)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    drawn, frames, missed = [], [], 0
    for i in range(n):
        before = page.evaluate(f"window.vaescopeWebDecode.times.filter(t => t.kind === '{kind}').length")
        act(i)
        try:
            page.wait_for_function(f"window.vaescopeWebDecode.times.filter(t => t.kind === '{kind}' && t.frame_ms)"
                                   f".length > {before}", timeout=MOVE_TIMEOUT_MS)
        except PlaywrightTimeout:
            missed += 1
            continue
        last = page.evaluate(f"window.vaescopeWebDecode.times.filter(t => t.kind === '{kind}').at(-1)")
        drawn.append(last["ms"])
        frames.append(last["frame_ms"])
        page.wait_for_timeout(PAUSE_MS)
    return drawn, frames, missed


def server_moves(page: Any, image: str, act: Any, n: int) -> tuple[list[float], int]:
    """``n`` moves answered by the server: (event → new <img> src in #image ms, moves unanswered)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    out, missed = [], 0
    for i in range(n):
        before = page.evaluate(f"window.__bench.changes['{image}'].length")
        act(i)
        try:
            page.wait_for_function(f"window.__bench.changes['{image}'].length > {before}", timeout=MOVE_TIMEOUT_MS)
        except PlaywrightTimeout:
            missed += 1
            continue
        moved, changed = page.evaluate(f"[window.__bench.moves.at(-1), window.__bench.changes['{image}'].at(-1)]")
        out.append(changed - moved)
        page.wait_for_timeout(PAUSE_MS * 2)  # the server path: let Gradio settle
    return out, missed


def pointer_act(page: Any, n: int) -> Any:
    page.bring_to_front()
    places = spots(page.evaluate(PLOT_AREA_JS), n)
    return lambda i: page.mouse.move(*places[i % len(places)])


def slider_act(page: Any, slider: str = "dim-slider-0") -> Any:
    """Arrow keys on ``slider``: towards its farther end, turning back at an end."""
    page.bring_to_front()
    lo, hi, value = page.evaluate(f"""() => {{ const r = document.querySelector('#{slider} input[type=range]');
        return [Number(r.min), Number(r.max), Number(r.value)]; }}""")
    page.focus(f"#{slider} input[type=range]")
    key = "ArrowRight" if hi - value >= value - lo else "ArrowLeft"
    return lambda i: page.keyboard.press(key)


def measure(urls: dict[str, str], moves: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    from benchmarks.slider import IMAGE_ID, move_once, open_page

    out: dict[str, list[float]] = {k: [] for k in (
        "page_pointer", "page_pointer_frame", "server_pointer", "page_slider", "page_slider_frame", "server_slider",
        "noop_slider", "missed")}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            web = open_explorer(browser, urls["explorer"])
            server = open_explorer(browser, urls["explorer"] + "?decode=server")
            if not web.evaluate("window.vaescopeWebDecode.ready"):
                raise RuntimeError(f"the page did not decode: {web.evaluate('window.vaescopeWebDecode.why')}")
            noop = open_page(browser, urls["noop"], f"#{IMAGE_ID}", 60_000)
            per_round = max(1, moves // rounds)
            for r in range(rounds + 1):  # round 0 is the warm-up, not kept
                n = warmup if r == 0 else per_round
                keep = r > 0
                drawn, frames, missed = in_page_moves(web, "map", pointer_act(web, n), n)
                if keep:
                    out["page_pointer"] += drawn
                    out["page_pointer_frame"] += frames
                    out["missed"].append(missed)
                times, missed = server_moves(server, "pointer-image", pointer_act(server, n), n)
                if keep:
                    out["server_pointer"] += times
                    out["missed"].append(missed)
                drawn, frames, missed = in_page_moves(web, "slider", slider_act(web), n)
                if keep:
                    out["page_slider"] += drawn
                    out["page_slider_frame"] += frames
                    out["missed"].append(missed)
                times, missed = server_moves(server, "traversal-image", slider_act(server), n)
                if keep:
                    out["server_slider"] += times
                    out["missed"].append(missed)
                noop.bring_to_front()
                noop.focus("input[type=range]")
                for _ in range(n):
                    got = move_once(noop, "ArrowRight")
                    if keep and got is not None:
                        out["noop_slider"].append(got[0])
        finally:
            browser.close()
    return out


def run(quick: bool) -> Figure:
    """The rows: pointer and slider, in the page vs on the server vs the no-op floor."""
    from benchmarks.slider import ServerTimes, noop_app
    from vaescope.explorer.ui.app import DEFAULT_TORCH_THREADS, build_app, prepare_process

    moves, rounds, warmup = (16, 2, 4) if quick else (60, 3, 8)
    prepare_process(DEFAULT_TORCH_THREADS)
    with tempfile.TemporaryDirectory(prefix="vaescope-pointer-") as tmp, ExitStack() as stack:
        root = Path(tmp) / "checkpoints"
        root.mkdir()
        shutil.copy(CHECKPOINT, root / CHECKPOINT.name)
        stack.enter_context(torch_threads(DEFAULT_TORCH_THREADS))
        demos = {"explorer": build_app(root, device="cpu", default_checkpoint=CHECKPOINT.name),
                 "noop": noop_app(ServerTimes())}
        urls = {}
        for name, demo in demos.items():
            port = free_port()
            demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            stack.callback(demo.close)
            urls[name] = f"http://127.0.0.1:{port}/"
        got = measure(urls, moves, rounds, warmup)
    return _rows(got)


def _rows(got: dict[str, list[float]]) -> Figure:
    noop = median(got["noop_slider"])
    server_pointer, server_slider = median(got["server_pointer"]), median(got["server_slider"])
    frame = f"<= {FRAME_MS:.1f} ms (one frame)"
    rows = [
        Row("pointer → decoded image drawn, in the page", median(got["page_pointer"]), "ms", len(got["page_pointer"]),
            server_pointer, "server path (?decode=server), same run", frame,
            median(got["page_pointer"]) <= FRAME_MS, note=f"p95 {p95(got['page_pointer']):.1f} ms"),
        Row("pointer → next animation frame after the image is drawn, in the page", median(got["page_pointer_frame"]),
            "ms", len(got["page_pointer_frame"]), server_pointer, "server path (?decode=server), same run", frame,
            median(got["page_pointer_frame"]) <= FRAME_MS, note=f"p95 {p95(got['page_pointer_frame']):.1f} ms"),
        Row("pointer → server's image, server path", server_pointer, "ms", len(got["server_pointer"]), noop,
            "no-op Gradio app's slider round trip", note=f"p95 {p95(got['server_pointer']):.1f} ms"),
        Row("slider → decoded image drawn, in the page", median(got["page_slider"]), "ms", len(got["page_slider"]),
            server_slider, "server slider path, same run", frame, median(got["page_slider"]) <= FRAME_MS,
            note=f"p95 {p95(got['page_slider']):.1f} ms"),
        Row("slider → next animation frame after the image is drawn, in the page", median(got["page_slider_frame"]),
            "ms", len(got["page_slider_frame"]), server_slider, "server slider path, same run", frame,
            median(got["page_slider_frame"]) <= FRAME_MS),
        Row("slider → server's image, server path", server_slider, "ms", len(got["server_slider"]), noop,
            "no-op Gradio app's slider round trip", "<= 1.3x no-op", server_slider <= 1.3 * noop,
            note=f"p95 {p95(got['server_slider']):.1f} ms"),
        Row("no-op Gradio app, slider → new image", noop, "ms", len(got["noop_slider"])),
    ]
    return Figure(rows, {"ms": got, "missed_moves": sum(got["missed"])})


def table(figure: Figure) -> str:
    lines = ["| figure | value | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for r in figure.rows:
        baseline = f"{r.baseline:.1f} ms ({r.baseline_label})" if r.baseline is not None else "–"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "–"
        met = "–" if r.met is None else ("yes" if r.met else "no")
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.figure} | {r.value:.1f} {r.unit} (n={r.n}){note} | {baseline} | {ratio} | "
                     f"{r.target or '–'} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer moves (a smoke test)")
    figure = run(parser.parse_args().quick)
    print(table(figure))
    print(f"moves unanswered: {figure.details['missed_moves']}")


if __name__ == "__main__":
    main()
