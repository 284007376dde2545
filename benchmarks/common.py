"""Shared pieces of the benchmarks: result rows, statistics, hardware, the model under test."""

from __future__ import annotations

import functools
import os
import platform
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets" / "checkpoints"
FMNIST_SHIPPED = ASSETS / "fashion-mnist"
# The shipped Fashion-MNIST architecture (training/recipes.py FMNIST_CONV).
FMNIST_CONV = {"image_shape": (1, 28, 28), "latent_dim": 16, "arch": "conv", "base_channels": 32,
               "hidden_dim": 256}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HandlerLog = list[tuple[float, float]]  # (wall-clock start, seconds) per handler call


@dataclass
class Row:
    """One line of the results table: a measured value against its baseline and target."""

    figure: str
    value: float | None
    unit: str
    n: int  # how many repeated runs the value is the median (or percentile) of
    baseline: float | None = None
    baseline_label: str = ""  # what the baseline is, in words
    target: str = ""  # in words, e.g. "<= 100 ms"
    met: bool | None = None  # None: no target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


@dataclass
class Figure:
    """What a benchmark module returns: table rows plus details kept only in the JSON."""

    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def p95(xs: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(xs, float), 95))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def repeat(fn: Callable[[], Any], n: int, warmup: int = 1) -> list[float]:
    """Seconds of ``n`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(n)]


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def fmt(value: float | None, unit: str = "") -> str:
    """A compact human number: 3 significant digits, thousands separated."""
    if value is None:
        return "–"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """The machine and library versions the numbers were taken on."""
    import gradio
    import sklearn
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "gradio": gradio.__version__, "sklearn": sklearn.__version__,
        "load_average_at_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in ("umap", "openTSNE"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], port: int, workdir: Path, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, str, float]:
    """Run ``command`` (an explorer serving on 127.0.0.1:``port``) in ``workdir`` and wait until
    it answers, five minutes at most; (its process, its URL, the seconds until it answered)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the explorer exited with {proc.returncode}")
        if time.perf_counter() - start > 300:
            stop(proc)
            raise RuntimeError("the explorer did not answer within 5 minutes")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """End a server started by ``start_server``: terminate, then kill after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shipped_fmnist() -> list[Path]:
    """The shipped Fashion-MNIST checkpoints, vae first; empty when none are built yet."""
    paths = sorted(FMNIST_SHIPPED.glob("*.safetensors"))
    return sorted(paths, key=lambda p: p.stem != "vae")


def make_untrained_checkpoints(folder: Path, model_types: Sequence[str] = ("vae", "cvae", "gmvae")) -> list[Path]:
    """Untrained 28x28 conv models with the shipped architecture, saved as Fashion-MNIST checkpoints.

    An untrained model decodes and encodes exactly as fast as a trained one, and the explorer
    loads the real Fashion-MNIST test set for it, so it stands in when no checkpoint is shipped.
    """
    import torch

    from vaescope.training.checkpoint import CheckpointMeta, save_checkpoint
    from vaescope.training.config import ModelConfig, TrainConfig
    from vaescope.training.data import load_dataset
    from vaescope.training.models import build_model

    info = load_dataset("fashion-mnist", image_size=28).info
    paths = []
    for i, kind in enumerate(model_types):
        torch.manual_seed(i)
        extra = {"num_classes": 10} if kind == "cvae" else {"options": {"components": 10}} if kind == "gmvae" else {}
        model = build_model(ModelConfig(model_type=kind, **FMNIST_CONV, **extra)).eval()
        meta = CheckpointMeta(model_config=model.config, train_config=TrainConfig(dataset="fashion-mnist").to_dict(),
                              dataset=info.to_dict(), metrics={"note": "untrained benchmark stand-in"})
        paths.append(save_checkpoint(folder / "fashion-mnist" / f"{kind}.safetensors", model, meta))
    return paths


def fmnist_checkpoints(scratch: Path) -> tuple[Path, list[str], str]:
    """(checkpoint root, names relative to it with the VAE first, where they came from).

    The shipped checkpoints when present, else untrained stand-ins written under ``scratch``.
    """
    shipped = shipped_fmnist()
    if shipped:
        return ASSETS, [str(p.relative_to(ASSETS)) for p in shipped], "shipped assets/checkpoints/fashion-mnist"
    root = scratch / "checkpoints"
    paths = make_untrained_checkpoints(root)
    return root, [str(p.relative_to(root)) for p in paths], "untrained stand-ins (no shipped checkpoint yet)"


def launch_browser(playwright: Any) -> Any:
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def timed_slider_handlers(record: Callable[[float, float], None]) -> Iterator[None]:
    """While active, apps built by ``vaescope.explorer.ui.app.build_app`` time every slider handler call:
    ``record(wall-clock start, seconds)``."""
    from vaescope.explorer.ui.traversal import TraversalPanel

    original = TraversalPanel.slider_handler

    def slider_handler(self: Any, slot: int) -> Callable[..., Any]:
        fn = original(self, slot)

        @functools.wraps(fn)  # keeps the signature Gradio inspects
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, start = time.time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                record(wall, time.perf_counter() - start)
        return timed

    TraversalPanel.slider_handler = slider_handler  # type: ignore[method-assign]
    try:
        yield
    finally:
        TraversalPanel.slider_handler = original  # type: ignore[method-assign]


