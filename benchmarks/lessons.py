"""How long a lesson takes to open from its link, in headless Chromium at 1280x720, presenter layout.

    python -m benchmarks.lessons [--quick] [--only NAME ...]

A fresh ``latent-explore --checkpoints assets/checkpoints`` (a subprocess, no projection cache on
disk: the shipped maps come from their sidecars, as on a new machine) serves the shipped models.
Each lesson's link ``?lesson=NAME&present=1`` is opened in a new page, and three moments are
stamped from the start of navigation:

- words: the banner holds the lesson's measured words (its title, and no longer "Loading");
- screen: the lesson's own screen is drawn (every visible plot of its panes has its traces, every
  picture has loaded), with the words: what the lecturer waits for;
- done: every one of the lesson's events has run (``body[data-lesson-done]``).

Cold: the first opening of each lesson on the fresh server (lessons in their list's order, so a
later lesson may find a model an earlier one loaded). Warm: later openings, median over rounds.
The baseline, measured in the same rounds: the page floor, ``?model=M&present=1`` for the lesson's
first model, until its map is drawn (Gradio's page, the model panel and one map, no lesson).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import ASSETS, Figure, Row, free_port, launch_browser, median

TARGET_S = 5.0
TIMEOUT_MS = 180_000
WORDS_JS = """(title) => { const b = document.querySelector('#lesson-banner');
  return !!(b && b.innerText.includes(title) && !b.innerText.includes('Loading')); }"""
# the lesson's screen: every visible plot in its panes drawn, every picture loaded (at least one pane)
SCREEN_JS = """() => {
  const panes = document.querySelector('#lesson-panes');
  if (!panes) return false;
  const shown = (el) => el.offsetParent !== null;
  const boxes = Array.from(panes.querySelectorAll('[id^=stage-], #lesson-chart')).filter(shown);
  const plots = boxes.filter((b) => b.querySelector('.js-plotly-plot') || b.classList.contains('gradio-plot'));
  const drawn = plots.every((b) => { const gd = b.querySelector('.js-plotly-plot');
                                      return gd && gd._fullData && gd._fullData.length; });
  const pictures = Array.from(panes.querySelectorAll('.stage-picture img')).filter(shown);
  return boxes.length > 0 && drawn && pictures.every((img) => img.complete && img.naturalWidth > 0);
}"""
MAP_JS = """() => { const gd = document.querySelector('#latent-map .js-plotly-plot');
  return !!(gd && gd._fullData && gd._fullData.length > 1); }"""


def serve(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A fresh explorer on the shipped checkpoints; (its process, its URL)."""
    port = free_port()
    command = [sys.executable, "-m", "vaescope.explorer", "--checkpoints", str(ASSETS), "--port", str(port),
               "--device", "cpu", "--no-disk-cache"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, start = f"http://127.0.0.1:{port}/", time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"latent-explore exited with {proc.returncode}")
        if time.perf_counter() - start > 300:
            stop(proc)
            raise RuntimeError("latent-explore did not answer within 5 minutes")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def open_lesson(browser: Any, url: str, lesson: Any) -> dict[str, float]:
    """Seconds from navigation to the words, the screen and the last event of one lesson."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        start = time.perf_counter()
        page.goto(f"{url}?lesson={lesson.name}&present=1")
        page.wait_for_function(WORDS_JS, arg=lesson.title, timeout=TIMEOUT_MS, polling=50)
        words = time.perf_counter() - start
        page.wait_for_function(SCREEN_JS, timeout=TIMEOUT_MS, polling=50)
        screen = time.perf_counter() - start
        page.wait_for_function("(n) => document.body.dataset.lessonDone === n", arg=lesson.name,
                               timeout=TIMEOUT_MS, polling=50)
        return {"words": words, "screen": screen, "done": time.perf_counter() - start}
    finally:
        page.close()


def open_floor(browser: Any, url: str, model: str) -> float:
    """Seconds from navigation to the map of ``model`` drawn, presenter layout, no lesson."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        start = time.perf_counter()
        page.goto(f"{url}?model={model}&present=1")
        page.wait_for_function(MAP_JS, timeout=TIMEOUT_MS, polling=50)
        return time.perf_counter() - start
    finally:
        page.close()


def measure(names: list[str], rounds: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from vaescope.explorer.core.lessons import find

    lessons = [find(name) for name in names]
    got: dict[str, Any] = {"cold": {}, "warm": {n: [] for n in names}, "floor": []}
    with tempfile.TemporaryDirectory(prefix="vaescope-lessons-") as tmp, sync_playwright() as pw:
        proc, url = serve(Path(tmp))
        browser = launch_browser(pw)
        try:
            for lesson in lessons:
                got["cold"][lesson.name] = open_lesson(browser, url, lesson)
            for _ in range(rounds):
                for lesson in lessons:
                    got["floor"].append(open_floor(browser, url, lesson.models[0]))
                    got["warm"][lesson.name].append(open_lesson(browser, url, lesson))
        finally:
            browser.close()
            stop(proc)
    return got


def run(quick: bool, names: list[str] | None = None) -> Figure:
    from vaescope.explorer.core.lessons import LESSONS

    names = names or [lesson.name for lesson in LESSONS][: 3 if quick else None]
    got = measure(names, rounds=1 if quick else 3)
    floor = median(got["floor"])
    rows = [Row("page floor: ?model=M&present=1 until its map is drawn", floor, "s", len(got["floor"]))]
    for name in names:
        warm = got["warm"][name]
        screen = median([w["screen"] for w in warm])
        cold = got["cold"][name]
        rows.append(Row(f"{name}: screen and words shown, warm", screen, "s", len(warm), floor, "page floor, same run",
                        f"<= {TARGET_S:.0f} s", screen <= TARGET_S,
                        note=f"words {median([w['words'] for w in warm]):.1f} s, every event "
                             f"{median([w['done'] for w in warm]):.1f} s; cold: screen {cold['screen']:.1f} s, "
                             f"words {cold['words']:.1f} s"))
    return Figure(rows, {"seconds": got})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three lessons, one warm round")
    parser.add_argument("--only", nargs="*", default=None, help="these lessons only")
    args = parser.parse_args(argv)
    for row in run(args.quick, args.only).rows:
        ratio = f" ({row.ratio:.2f}x {row.baseline_label})" if row.ratio is not None else ""
        print(f"{row.figure}: {row.value:.2f} {row.unit}{ratio}, n={row.n}{'; ' + row.note if row.note else ''}",
              flush=True)


if __name__ == "__main__":
    main()
