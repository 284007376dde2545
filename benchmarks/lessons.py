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

``--baseline-commit REV`` also serves the code of an earlier commit (``git archive`` into a
temporary folder, imported ahead of the installed package) from its own fresh server, and opens
every lesson there too, alternating with this tree's in every round: a before/after ratio from
one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ASSETS,
    REPO,
    Figure,
    Row,
    free_port,
    launch_browser,
    median,
    start_server,
    stop,
)

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


def checkout(rev: str, folder: Path) -> Path:
    """The code of commit ``rev`` as an importable ``vaescope`` package under ``folder`` (the
    repository's layout mapped as pyproject.toml maps it); the folder to put on PYTHONPATH."""
    tree = folder / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "vaescope", "explorer", "training"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    site = folder / "site"
    site.mkdir()
    (tree / "vaescope").rename(site / "vaescope")
    (tree / "explorer").rename(site / "vaescope" / "explorer")
    (tree / "training").rename(site / "vaescope" / "training")
    return site


def serve(workdir: Path, code: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A fresh explorer on the shipped checkpoints, of this tree or of the package under ``code``;
    (its process, its URL)."""
    port = free_port()
    command = [sys.executable, "-m", "vaescope.explorer", "--checkpoints", str(ASSETS), "--port", str(port),
               "--device", "cpu", "--no-disk-cache"]
    env = {"PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])} \
        if code is not None else None
    proc, url, _ = start_server(command, port, workdir, env)
    return proc, url


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


def measure(names: list[str], rounds: int, baseline: str | None = None) -> dict[str, Any]:
    """{tree: {"cold": {lesson: times}, "warm": {lesson: [times]}, "floor": [s]}} for this tree
    ("now") and, when given, commit ``baseline``; the trees alternate within every round."""
    from playwright.sync_api import sync_playwright

    from vaescope.explorer.core.lessons import find

    lessons = [find(name) for name in names]
    with tempfile.TemporaryDirectory(prefix="vaescope-lessons-") as tmp, sync_playwright() as pw:
        codes: dict[str, Path | None] = {"now": None}
        if baseline:
            codes[baseline] = checkout(baseline, Path(tmp) / "baseline")
        got = {tree: {"cold": {}, "warm": {n: [] for n in names}, "floor": []} for tree in codes}
        servers = {tree: serve(Path(tmp), code) for tree, code in codes.items()}
        browser = launch_browser(pw)
        try:
            for lesson in lessons:
                for tree, (_, url) in servers.items():
                    got[tree]["cold"][lesson.name] = open_lesson(browser, url, lesson)
            for _ in range(rounds):
                for lesson in lessons:
                    for tree, (_, url) in servers.items():
                        got[tree]["floor"].append(open_floor(browser, url, lesson.models[0]))
                        got[tree]["warm"][lesson.name].append(open_lesson(browser, url, lesson))
        finally:
            browser.close()
            for proc, _ in servers.values():
                stop(proc)
    return got


def run(quick: bool, names: list[str] | None = None, baseline: str | None = None) -> Figure:
    from vaescope.explorer.core.lessons import LESSONS

    names = names or [lesson.name for lesson in LESSONS][: 3 if quick else None]
    got = measure(names, rounds=1 if quick else 3, baseline=baseline)
    now = got["now"]
    floor = median(now["floor"])
    rows = [Row("page floor: ?model=M&present=1 until its map is drawn", floor, "s", len(now["floor"]))]
    for name in names:
        warm = now["warm"][name]
        screen = median([w["screen"] for w in warm])
        cold = now["cold"][name]
        before = ""
        if baseline:
            old = got[baseline]
            before = (f"; commit {baseline}, same run: warm screen {median([w['screen'] for w in old['warm'][name]]):.1f}"
                      f" s, cold {old['cold'][name]['screen']:.1f} s")
        rows.append(Row(f"{name}: screen and words shown, warm", screen, "s", len(warm), floor, "page floor, same run",
                        f"<= {TARGET_S:.0f} s", screen <= TARGET_S,
                        note=f"words {median([w['words'] for w in warm]):.1f} s, every event "
                             f"{median([w['done'] for w in warm]):.1f} s; cold: screen {cold['screen']:.1f} s, "
                             f"words {cold['words']:.1f} s{before}"))
    return Figure(rows, {"seconds": got})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three lessons, one warm round")
    parser.add_argument("--only", nargs="*", default=None, help="these lessons only")
    parser.add_argument("--baseline-commit", default=None, metavar="REV",
                        help="also measure this commit's code, alternating with this tree's")
    args = parser.parse_args(argv)
    for row in run(args.quick, args.only, args.baseline_commit).rows:
        ratio = f" ({row.ratio:.2f}x {row.baseline_label})" if row.ratio is not None else ""
        print(f"{row.figure}: {row.value:.2f} {row.unit}{ratio}, n={row.n}{'; ' + row.note if row.note else ''}",
              flush=True)


if __name__ == "__main__":
    main()
