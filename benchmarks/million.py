"""Figure 8: a million points. ``latent-explore --embeddings`` of 1,000,000 x 16 codes, from the
command to the map on screen in headless Chromium, and the map's zoom and hover latency in the
browser at 70,000, 200,000 and 1,000,000 points.

Each size is served by its own fresh ``latent-explore --embeddings FILE`` process (PCA maps, no
disk cache). The time to the map is the median over several launches: from starting the command
to the map's points being drawn and the click bridge bound (a data trace with its points in
``gd._fullData``), split into the server's start (imports, reading the file) and the page's part
(load the codes, project, draw, send, render). Zoom is ``Plotly.relayout`` to the middle quarter
and back, timed to the second animation frame after it; hover is a pointer move onto a drawn
point, timed to plotly's ``plotly_hover`` event. The baseline of every 200k / 1M row is the same
measure at 70k in the same run (the size the explorer drew before), and 1M is also measured with
every point sent to the browser (``MAX_DRAWN_POINTS`` raised in that process), which is what the
thinning saves. Codes are synthetic: 10 Gaussian clusters in 16-d, seeded.

    python -m benchmarks.million [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    Figure,
    Row,
    at_most,
    free_port,
    launch_browser,
    median,
    start_server,
    stop,
)

SIZES, QUICK_SIZES = (70_000, 200_000, 1_000_000), (20_000, 70_000, 200_000)
DIM = 16
LAUNCHES, QUICK_LAUNCHES = 3, 1  # fresh servers per size for the time to the map
ZOOMS, HOVERS = 10, 15  # browser measurements per page
TARGET_MAP_S, TARGET_ZOOM_MS = 10.0, 250.0
MAP = "document.querySelector('#latent-map .js-plotly-plot')"
DRAWN = (f"() => {{ const gd = {MAP}; return !!(gd && gd.__vaescopeBound && gd._fullData && "
         "gd._fullData.some((t) => t.customdata && t._length > 0)); }")
ZOOM_JS = f"""async (n) => {{
  const gd = {MAP}, L = gd._fullLayout;
  const xr = L.xaxis.range.slice(), yr = L.yaxis.range.slice(), times = [];
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  for (let i = 0; i < n; i++) {{
    const f = i % 2 ? 1 : 0.25, cx = (xr[0] + xr[1]) / 2, cy = (yr[0] + yr[1]) / 2;
    const hx = (xr[1] - xr[0]) / 2 * f, hy = (yr[1] - yr[0]) / 2 * f;
    const t0 = performance.now();
    await window.Plotly.relayout(gd, {{'xaxis.range': [cx - hx, cx + hx], 'yaxis.range': [cy - hy, cy + hy]}});
    await frame();
    times.push(performance.now() - t0);
  }}
  await window.Plotly.relayout(gd, {{'xaxis.range': xr, 'yaxis.range': yr}});
  return times;
}}"""
HOVER_JS = f"""async (n) => {{
  const gd = {MAP}, L = gd._fullLayout, area = gd.querySelector('.nsewdrag');
  const r = area.getBoundingClientRect(), times = [];
  const traces = gd._fullData.filter((t) => t.customdata && t._length > 0);
  const wait = (ms) => new Promise((res) => setTimeout(res, ms));
  for (let i = 0; i < n; i++) {{
    const t = traces[i % traces.length], j = Math.floor(((i * 7919) % 1000 + 0.5) / 1000 * t._length);
    const x = r.left + L.xaxis.c2p(t.x[j]), y = r.top + L.yaxis.c2p(t.y[j]);
    window.Plotly.Fx.unhover(gd);
    await wait(150);  // past plotly's hover throttle
    const hovered = new Promise((res) => gd.once('plotly_hover', () => res(performance.now())));
    const t0 = performance.now();
    area.dispatchEvent(new MouseEvent('mousemove', {{clientX: x, clientY: y, bubbles: true}}));
    const t1 = await Promise.race([hovered, wait(3000).then(() => null)]);
    if (t1 !== null) times.push(t1 - t0);
  }}
  return times;
}}"""


def write_codes(folder: Path, n: int) -> Path:
    """n seeded codes [n, 16] float32 in 10 labelled Gaussian clusters, as an .npz."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    centres = rng.normal(scale=4, size=(10, DIM)).astype(np.float32)
    codes = centres[labels] + rng.normal(size=(n, DIM)).astype(np.float32)
    path = folder / f"codes-{n}.npz"
    np.savez(path, latents=codes.astype(np.float32), labels=labels,
             class_names=np.array([f"cluster {i}" for i in range(10)]))
    return path


def serve(path: Path, workdir: Path, thin: bool = True) -> tuple[subprocess.Popen, str, float]:
    """A fresh ``latent-explore --embeddings path`` (every point sent when not ``thin``); returns
    the process, its URL and the seconds until it answered."""
    port = free_port()
    argv = ["--embeddings", str(path), "--port", str(port), "--device", "cpu", "--no-disk-cache"]
    code = ("import sys; import vaescope.explorer.core.maps as m; m.MAX_DRAWN_POINTS = 10**9; "
            "from vaescope.explorer.ui.app import main; main(sys.argv[1:])")
    command = ([sys.executable, "-m", "vaescope.explorer", *argv] if thin else [sys.executable, "-c", code, *argv])
    return start_server(command, port, workdir)


def measure(browser: Any, path: Path, workdir: Path, thin: bool = True, interact: bool = True) -> dict[str, Any]:
    """One launch: seconds to the server, and to the map on screen; and when ``interact`` the zoom
    and hover latencies (ms) and the points drawn."""
    proc, url, server_s = serve(path, workdir, thin)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_function(DRAWN, timeout=600_000, polling=50)
        out: dict[str, Any] = {"server_s": server_s, "page_to_map_s": time.perf_counter() - start}
        out["total_s"] = server_s + out["page_to_map_s"]
        out["drawn"] = page.evaluate(f"() => {MAP}._fullData.filter((t) => t.customdata)"
                                     ".reduce((a, t) => a + t._length, 0)")
        if interact:
            page.wait_for_timeout(1000)  # let the first paint and Gradio's status settle
            out["zoom_ms"] = page.evaluate(ZOOM_JS, ZOOMS)
            out["hover_ms"] = page.evaluate(HOVER_JS, HOVERS)
        return out
    finally:
        page.close()
        stop(proc)


def run(quick: bool) -> Figure:
    from playwright.sync_api import sync_playwright

    sizes, launches = (QUICK_SIZES, QUICK_LAUNCHES) if quick else (SIZES, LAUNCHES)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="vaescope-million-") as tmp, sync_playwright() as p:
        folder = Path(tmp)
        files = {n: write_codes(folder, n) for n in sizes}
        browser = launch_browser(p)
        try:
            for n in sizes:  # launches of a size alternate with the others', so drift hits all alike
                results[str(n)] = []
            for i in range(launches):
                for n in sizes:
                    results[str(n)].append(measure(browser, files[n], folder, interact=i == 0))
            big = sizes[-1]
            results[f"{big}-all"] = [measure(browser, files[big], folder, thin=False)]
        finally:
            browser.close()
    return Figure(rows(results, sizes), {"results": results, "dim": DIM, "zooms": ZOOMS, "hovers": HOVERS,
                                         "launches": launches})


def rows(results: dict[str, list[dict[str, Any]]], sizes: tuple[int, ...]) -> list[Row]:
    base = str(sizes[0])
    total = {k: median([r["total_s"] for r in v]) for k, v in results.items()}
    page = {k: median([r["page_to_map_s"] for r in v]) for k, v in results.items()}
    zoom = {k: median(v[0]["zoom_ms"]) for k, v in results.items() if v[0].get("zoom_ms")}
    hover = {k: median(v[0]["hover_ms"]) for k, v in results.items() if v[0].get("hover_ms")}
    out = []
    for n in sizes:
        k, drawn = str(n), results[str(n)][0]["drawn"]
        label = f"{n:,} x {DIM}" + ("" if drawn == n else f" ({drawn:,} drawn)")
        out += [
            Row(f"latent-explore --embeddings to map on screen, {label}", total[k], "s", len(results[k]),
                total[base], f"{int(base):,} points, same run",
                note=f"server up {median([r['server_s'] for r in results[k]]):.1f} s; page to map {page[k]:.1f} s"),
            Row(f"page load to map on screen, {label}", page[k], "s", len(results[k]), page[base],
                f"{int(base):,} points, same run", f"<= {TARGET_MAP_S:g} s", at_most(page[k], TARGET_MAP_S)),
            Row(f"zoom (relayout to 2nd frame), {label}", zoom.get(k), "ms", ZOOMS, zoom.get(base),
                f"{int(base):,} points, same run", f"<= {TARGET_ZOOM_MS:g} ms", at_most(zoom.get(k), TARGET_ZOOM_MS)),
            Row(f"hover (pointer move to plotly_hover), {label}", hover.get(k), "ms", HOVERS, hover.get(base),
                f"{int(base):,} points, same run"),
        ]
    k, n = f"{sizes[-1]}-all", sizes[-1]
    thin = str(n)
    out += [
        Row(f"page load to map, {n:,} all drawn (no thinning)", page[k], "s", 1, page[thin], "thinned, same run"),
        Row(f"zoom, {n:,} all drawn (no thinning)", zoom.get(k), "ms", ZOOMS, zoom.get(thin), "thinned, same run"),
        Row(f"hover, {n:,} all drawn (no thinning)", hover.get(k), "ms", HOVERS, hover.get(thin), "thinned, same run"),
    ]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A million points: latent-explore --embeddings to map, zoom, hover")
    p.add_argument("--quick", action="store_true", help="20k, 70k and 200k points, one launch each")
    args = p.parse_args(argv)
    figure = run(args.quick)
    for row in figure.rows:
        ratio = f" ({row.ratio:.2f}x {row.baseline_label})" if row.ratio is not None else ""
        value = "–" if row.value is None else f"{row.value:.3g} {row.unit}"
        print(f"{row.figure}: {value}{ratio}, n={row.n}{'; ' + row.note if row.note else ''}", flush=True)


if __name__ == "__main__":
    main()
