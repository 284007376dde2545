"""Figure 2: many people dragging sliders at once.

The explorer is served in this process with its slider handlers wrapped in a timer (server-side
handler time: decode + upscale, without Gradio's own pre/post-processing). A separate client
process runs N gradio_client threads, one session each: every thread loads the checkpoint, then
all call the slider endpoint back to back for a fixed time. The baseline is one client alone.
The server runs with torch's intra-op threads set as ``latent-explore`` sets them (main(), not
build_app, does that), so the numbers are those of the real server.
Clients live in their own process so their Python work does not compete with the server's GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Figure,
    HandlerLog,
    Row,
    fmnist_checkpoints,
    free_port,
    median,
    p95,
    timed_slider_handlers,
)
from vaescope.training.threads import torch_threads

CLIENTS = 8
SLIDER_API = "slider_0"


def queue_settings(demo: Any) -> dict[str, Any]:
    """The queue and concurrency settings the app was built with, read from the Blocks."""
    fn = next(f for f in demo.fns.values() if f.api_name == SLIDER_API)
    return {"default_concurrency_limit": demo._queue.default_concurrency_limit,
            "queue_max_size": demo._queue.max_size, "max_threads": demo.max_threads,
            "slider_queue": fn.queue, "slider_trigger_mode": fn.trigger_mode, "slider_preprocess": fn.preprocess}


# -- the client process -------------------------------------------------------------------------
def client_main(url: str, checkpoint: str, clients: int, seconds: float) -> dict[str, Any]:
    """Run ``clients`` sessions against ``url`` for ``seconds``; latencies in seconds, errors."""
    from gradio_client import Client

    latencies: list[float] = []
    errors: list[str] = []
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, when every session has loaded the checkpoint
        window["start"] = time.time()
        window["end"] = window["start"] + seconds
        window["cpu_start"] = time.process_time()

    ready = threading.Barrier(clients, action=open_window)

    def worker(i: int) -> None:
        try:
            client = Client(url, verbose=False)
            client.predict(checkpoint, api_name="/load_checkpoint")
        except Exception as exc:  # counted: a session that cannot even start is an error
            errors.append(f"setup: {exc!r}"[:300])
            ready.wait()
            return
        ready.wait()
        k = 0
        while time.time() < window["end"]:
            k += 1
            value = ((i * 7 + k * 13) % 400 - 200) / 100  # distinct values in [-2, 2)
            start = time.perf_counter()
            try:
                image, note, *_ = client.predict(value, api_name=f"/{SLIDER_API}")
                latencies.append(time.perf_counter() - start)
                if not image:  # the handler names a failure in the traversal note, it does not raise
                    errors.append(f"no image: {note}"[:300])
            except Exception as exc:
                errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # CPU seconds per wall second of this process: near 1 means the clients were GIL-bound.
    window["client_cpu_share"] = (time.process_time() - window["cpu_start"]) / (time.time() - window["start"])
    return {"latencies": latencies, "errors": errors, "window": window, "clients": clients}


def drive(url: str, checkpoint: str, clients: int, seconds: float) -> dict[str, Any]:
    """``client_main`` in a subprocess; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.concurrency", "--url", url, "--checkpoint", checkpoint,
               "--clients", str(clients), "--seconds", str(seconds), "--out", out.name]
        subprocess.run(cmd, check=True, timeout=seconds + 600)
        return json.loads(Path(out.name).read_text())


# -- the benchmark ------------------------------------------------------------------------------
def run(quick: bool) -> Figure:
    """Figure 2 rows: errors, client p95 and server handler p95 for 8 clients vs 1."""
    from vaescope.explorer.ui.app import DEFAULT_TORCH_THREADS

    seconds = 5.0 if quick else 30.0
    with torch_threads(DEFAULT_TORCH_THREADS):  # what latent-explore's main() sets before it serves
        runs, settings, names, source, log = _serve_and_drive(seconds)
    for r in runs.values():
        start, end = r["window"]["start"], r["window"]["end"]
        r["server_s"] = [s for wall, s in log if start <= wall <= end]
    figure = _rows(runs[1], runs[CLIENTS])
    figure.rows[0].note += "; app settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())
    figure.details |= {"queue_settings": settings, "checkpoint": f"{names[0]} ({source})",
                       "seconds": {"baseline_1_client": seconds / 2, f"{CLIENTS}_clients": seconds}}
    return figure


def _serve_and_drive(seconds: float) -> tuple[dict[int, Any], dict[str, Any], list[str], str, HandlerLog]:
    """Serve the app, drive it with 1 then CLIENTS clients: (runs by client count, queue settings,
    checkpoint names, their source, the server's handler log)."""
    from vaescope.explorer.ui.app import build_app

    log: HandlerLog = []
    with tempfile.TemporaryDirectory(prefix="vaescope-bench-") as tmp:
        root, names, source = fmnist_checkpoints(Path(tmp))
        with timed_slider_handlers(lambda wall, s: log.append((wall, s))):
            demo = build_app(root, device="cpu", default_checkpoint=names[0])
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            settings = queue_settings(demo)
            url = f"http://127.0.0.1:{port}/"
            runs = {n: drive(url, names[0], n, seconds if n > 1 else seconds / 2) for n in (1, CLIENTS)}
        finally:
            demo.close()
    return runs, settings, names, source, log


def _rows(one: dict[str, Any], many: dict[str, Any]) -> Figure:
    ms = lambda xs: [x * 1e3 for x in xs]  # noqa: E731
    base, load = ms(one["latencies"]), ms(many["latencies"])
    rate = lambda r: len(r["latencies"]) / (r["window"]["end"] - r["window"]["start"])  # noqa: E731
    label = "1 client alone"
    setup = sum(e.startswith("setup") for e in many["errors"])
    rows = [
        Row(f"{CLIENTS} clients: errors", len(many["errors"]), "", len(load) + len(many["errors"]),
            len(one["errors"]), label, "0", not many["errors"],
            note=f"{setup} while loading the checkpoint, {len(many['errors']) - setup} on the slider"),
        Row(f"{CLIENTS} clients: client latency p95", p95(load), "ms", len(load), p95(base), label,
            note=f"the client process used {many['window']['client_cpu_share']:.2f} CPU-seconds per second "
                 f"of the machine's {os.cpu_count()} cores (gradio_client's own overhead)"),
        Row(f"{CLIENTS} clients: client latency median", median(load), "ms", len(load), median(base), label),
        Row(f"{CLIENTS} clients: server handler p95", p95(ms(many["server_s"])), "ms", len(many["server_s"]),
            p95(ms(one["server_s"])), label),
        Row(f"{CLIENTS} clients: throughput", rate(many), "req/s", len(load), rate(one), label),
    ]
    details = {"errors": many["errors"][:20] + one["errors"][:5],
               "client_process_cpu_share": {"1": one["window"]["client_cpu_share"],
                                            str(CLIENTS): many["window"]["client_cpu_share"]},
               "client_ms": {"1": base, str(CLIENTS): load},
               "server_handler_ms": {"1": ms(one["server_s"]), str(CLIENTS): ms(many["server_s"])}}
    return Figure(rows, details)


def main(argv: list[str] | None = None) -> None:
    """Client-process entry point (used by ``drive``)."""
    p = argparse.ArgumentParser(description="gradio_client load generator for benchmarks.concurrency")
    p.add_argument("--url", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--clients", type=int, default=CLIENTS)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = client_main(args.url, args.checkpoint, args.clients, args.seconds)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
