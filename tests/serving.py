"""Shared helpers for tests that serve the app on loopback or drive it in Chromium."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


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
