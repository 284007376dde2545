"""Shared helpers for tests that serve the app on loopback or drive it in Chromium."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Gradio's red error toasts, reported as they appear (a toast closes itself after a while); installed
# in every document the page opens, before the page's own scripts
ERROR_TOASTS = """(() => {
  const seen = new WeakSet();
  const look = () => document.querySelectorAll('.toast-body.error').forEach((t) => {
    if (seen.has(t)) return;
    seen.add(t);
    if (window.__vaescopeErrorToast) window.__vaescopeErrorToast(t.innerText);
  });
  const start = () => new MutationObserver(look).observe(document.documentElement, {childList: true, subtree: true});
  if (document.documentElement) start(); else document.addEventListener('DOMContentLoaded', start);
})();"""


class PageProblems:
    """What went wrong in a browser page, collected as it happens: uncaught JavaScript errors
    (``pageerror``), console errors, and Gradio's red error toasts. ``check()`` fails the test on any
    that no ``allow`` pattern explains, and forgets them; ``expecting(pattern)`` allows one for a block
    of a test that provokes it on purpose (a refused upload)."""

    def __init__(self, page: Any, allowed: Iterable[str] = ()) -> None:
        self.page = page
        self.found: list[str] = []
        self.allowed = [re.compile(p) for p in allowed]
        page.on("pageerror", lambda exc: self.found.append(f"page error: {exc}\n{getattr(exc, 'stack', '')}"))
        page.on("console", lambda message: self.found.append(f"console error: {message.text}")
                if message.type == "error" else None)
        page.expose_function("__vaescopeErrorToast", lambda text: self.found.append(f"error toast: {text}"))
        page.add_init_script(ERROR_TOASTS)

    @contextmanager
    def expecting(self, pattern: str) -> Iterator[None]:
        """Allow problems matching ``pattern`` (a regular expression) while the block runs."""
        allowed = re.compile(pattern)
        self.allowed.append(allowed)
        try:
            yield
        finally:
            time.sleep(0.3)  # a toast's observer reports just after it shows
            self.found = [p for p in self.found if not allowed.search(p)]
            self.allowed.remove(allowed)

    def reload(self) -> None:
        """Check, then reload the page: what the old document says while its requests are cut off
        (Gradio's "Connection errored out", an aborted fetch) is not a problem of the page."""
        self.check()
        with self.expecting(r"Connection errored out|AbortError|Connection to the server was lost"):
            self.page.reload()
            self.page.wait_for_load_state()

    def check(self) -> None:
        """Fail on every problem seen since the last check that no allowed pattern explains."""
        problems = [p for p in self.found if not any(a.search(p) for a in self.allowed)]
        self.found = []
        assert not problems, "the page reported problems:\n" + "\n".join(problems)


def watch(page: Any, allowed: Iterable[str] = ()) -> PageProblems:
    """Start collecting ``page``'s problems (before it opens anything); see ``PageProblems``."""
    page.problems = PageProblems(page, allowed)
    return page.problems


@contextmanager
def watched_page(browser: Any, width: int = 1280, height: int = 720,
                 allowed: Iterable[str] = ()) -> Iterator[Any]:
    """A new page of ``browser`` at width x height whose problems are watched (``page.problems``);
    it fails the test if the page reported any when the block ends, and always closes the page."""
    page = browser.new_page(viewport={"width": width, "height": height})
    watch(page, allowed)
    try:
        yield page
        page.problems.check()
    finally:
        page.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(demo: Any) -> Iterator[str]:
    """Launch a Gradio app on a free loopback port; yields its URL and always closes it."""
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def image_src(page: Any, elem_id: str) -> str:
    """The src of the <img> inside #elem_id, or '' when it shows none."""
    return page.evaluate("(id) => { const i = document.querySelector(`#${id} img`); return i ? i.src : ''; }",
                         elem_id)


def wait_src(page: Any, elem_id: str, old: str = "", timeout: float = 30.0) -> str:
    """The <img> src of #elem_id once it is set and differs from ``old``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = image_src(page, elem_id)
        if src and src != old:
            return src
        time.sleep(0.05)
    raise AssertionError(f"#{elem_id} image did not change within {timeout:.0f} s")


def screenshot(page: Any, path: Path, selector: str | None = None, full: bool = False) -> Path:
    """Save the page (or one element) as a PNG at ``path`` and check something was drawn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full)
    assert path.stat().st_size > 1000
    return path


@contextmanager
def latent_explore(folder: Path, workdir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                   startup: float = 180.0) -> Iterator[tuple[str, Path, Any]]:
    """A fresh ``python -m vaescope.explorer`` process serving ``folder`` (plus ``args``) on a free
    loopback port, run from ``workdir`` with ``env`` (default: this one's, analytics off, no
    PYTHONPATH) and logging to ``workdir/server.log``; yields (url, log path, process) once the page
    answers, and always stops the process by its PID."""
    import os
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    log_path = workdir / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": "", **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vaescope.explorer", "--checkpoints", str(folder),
                                 "--port", str(port), "--device", "cpu", "--no-disk-cache", *args],
                                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + startup
            while True:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "latent-explore did not answer"
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    time.sleep(0.5)
            yield url, log_path, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


HOVER_THUMB_SHOWN = ("() => { const t = document.querySelector('#hover-thumb');"
                     " return !!(t && t.classList.contains('shown') && t.querySelector('img')); }")


def api_client(url: str, tries: int = 3, **kwargs: Any) -> Any:
    """A gradio_client ``Client`` of ``url``, set up again (up to ``tries`` times) when its setup
    fails: many clients asking for the whole API's description (/info) at the same instant can
    outwait httpx's timeout on 2 loaded cores, and a user whose page timed out reloads it."""
    from gradio_client import Client

    for _ in range(tries - 1):
        try:
            return Client(url, verbose=False, **kwargs)
        except Exception:  # noqa: BLE001 - tried again; the last try's failure is raised
            time.sleep(1.0)
    return Client(url, verbose=False, **kwargs)


def hover_until_thumbnail(page: Any, point: dict, timeout: float = 30.0, attempt_ms: int = 2_000) -> None:
    """Move the pointer onto map ``point`` ({x, y} in page pixels) until its hover thumbnail shows,
    as a hand does: onto the point, and again if plotly was still settling the new map."""
    deadline = time.monotonic() + timeout
    while True:
        page.mouse.move(point["x"] - 30, point["y"])
        page.mouse.move(point["x"], point["y"], steps=4)
        try:
            page.wait_for_function(HOVER_THUMB_SHOWN, timeout=attempt_ms)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try the move again
            assert time.monotonic() < deadline, "hovering a point never showed its thumbnail"


def click_until(page: Any, locate: Any, done: Any, timeout: float = 40.0, attempt: float = 4.0) -> dict:
    """Click where ``locate()`` says (a dict with x and y, found again before every try) until the
    page function ``done(spot)`` returns true, as a hand clicks again when a click lands while the
    page is still settling (a plot resizing after its first draw, a panel above it growing).
    Returns the spot that worked."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout
    while True:
        spot = locate()
        page.mouse.click(spot["x"], spot["y"])
        try:
            page.wait_for_function(done(spot), timeout=attempt * 1000)
            return spot
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"clicking {spot} never gave what the test waits for"
