"""A visitor's page never waits on another visitor's model: uploads and switches hold the "load"
slots, page loads have their own, so two slow model loads in flight do not delay a third
visitor's page. (Each bundle graph also runs under a time budget: tests/test_bundle_doors.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from serving import serving

from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.ui.app import build_app

SLOW_S = 8.0


@pytest.mark.slow
def test_two_slow_uploads_do_not_delay_another_visitors_page(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = ModelStore.open_path
    started = threading.Semaphore(0)

    def open_path(self, path, name=None, progress=None):  # noqa: ANN001, ANN202 - a model that takes long to load
        if Path(path).name.startswith("slow"):
            started.release()
            time.sleep(SLOW_S)
        return real(self, path, name, progress)

    monkeypatch.setattr(ModelStore, "open_path", open_path)
    slow = []
    for i in range(2):
        copy = tmp_path / f"slow-{i}.safetensors"
        copy.write_bytes((tiny_checkpoint_dir / "tiny-vae.safetensors").read_bytes())
        slow.append(copy)
    with serving(build_app(tiny_checkpoint_dir, device="cpu", default_checkpoint="tiny-vae.safetensors")) as url:
        Client(url, verbose=False).predict("tiny-vae.safetensors", api_name="/page_load")  # the default, in memory
        jobs = [Client(url, verbose=False).submit(handle_file(str(p)), api_name="/upload_checkpoint") for p in slow]
        for _ in slow:  # both uploads hold a load slot now
            assert started.acquire(timeout=30)
        t0 = time.monotonic()
        out = Client(url, verbose=False).predict("tiny-vae.safetensors", api_name="/page_load")
        waited = time.monotonic() - t0
        assert waited < SLOW_S / 2, f"the page waited {waited:.1f} s behind the uploads"
        assert any("tiny-vae" in str(v) for v in out)
        for job in jobs:
            job.result(timeout=60)
