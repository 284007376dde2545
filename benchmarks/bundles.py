"""Figure 7: what serving a model as an ONNX bundle costs in memory, against the same model in torch.

Four 3x64x64 conv VAEs (vaescope's own conv family, seeds 0-3, untrained: memory does not depend on
the weights' values) are written twice, as checkpoints (``vs.save``) and as ONNX bundles
(``vs.export``), each carrying the same 2,000 images as its embedded sample. A fresh child process
imports the app (Gradio, plotly, torch), then opens 1 or 4 of the files through
``vaescope.explorer.core.store.ModelStore``, as the server does (which loads the model and encodes
the 2,000 images in batches of 512), and decodes the 2,000 codes in batches of 256. It reports its
resident set after the imports, its peak (VmHWM) and what it holds at the end (VmRSS after a garbage
collection). Each figure is the median of ``RUNS`` children; the baseline is the same models in
torch, measured the same way in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, Row, median

RUNS = 3  # children per (kind, count)
IMAGES = 2000  # images each file carries, encoded when it is opened, and codes decoded
SHAPE = (3, 64, 64)
LATENT = 32
DECODE_BATCH = 256
GB = 1e9


def _status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def make_files(root: Path, count: int = 4) -> dict[str, list[str]]:
    """``count`` conv VAEs as checkpoints under root/torch and bundles under root/onnx, each with the
    same IMAGES seeded images as its sample; their names by kind."""
    import numpy as np
    import torch

    import vaescope as vs
    from vaescope.training.config import ModelConfig
    from vaescope.training.models import build_model

    rng = np.random.default_rng(0)
    # smooth random images (a blurred noise field), not white noise, so the sample looks like images
    coarse = rng.integers(0, 256, (IMAGES, SHAPE[0], 8, 8), dtype=np.uint8)
    images = np.ascontiguousarray(coarse.repeat(8, axis=2).repeat(8, axis=3))
    labels = rng.integers(0, 10, IMAGES)
    names: dict[str, list[str]] = {"torch": [], "onnx": []}
    for kind in names:
        (root / kind).mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(image_shape=SHAPE, latent_dim=LATENT, arch="conv", base_channels=32,
                                        hidden_dim=256, num_classes=10)).eval()
        vs.save(model, root / "torch" / f"vae-{seed}.safetensors", images=images, labels=labels)
        vs.export(model, root / "onnx" / f"vae-{seed}.safetensors", images=images, labels=labels)
        names["torch"].append(f"vae-{seed}.safetensors")
        names["onnx"].append(f"vae-{seed}.safetensors")
    return names


def child(root: Path, names: list[str]) -> dict[str, Any]:
    """Open ``names`` under ``root`` as the server does, decode every code; RSS at each stage."""
    start = time.perf_counter()
    import numpy as np
    import torch

    import vaescope.explorer.ui.app  # noqa: F401 - the server process holds Gradio and the app too
    from vaescope.explorer.core.store import ModelStore

    torch.set_num_threads(1)
    gc.collect()
    imports = _status("VmRSS")
    store = ModelStore(root, torch.device("cpu"))
    entries = []
    for name in names:
        entry = store.open_name(name)  # loads the model and encodes its IMAGES embedded images
        if entry.latents is None or len(entry.latents) != IMAGES:
            raise RuntimeError(f"{name}: expected {IMAGES} encoded images, got {entry.data_note or 'none'}")
        codes = torch.from_numpy(np.ascontiguousarray(entry.latents.mean, np.float32))
        with torch.inference_mode():
            for s in range(0, IMAGES, DECODE_BATCH):
                entry.model.decode(codes[s:s + DECODE_BATCH])
        entries.append(entry)
    gc.collect()
    return {"imports_rss_bytes": imports, "peak_rss_bytes": _status("VmHWM"), "held_rss_bytes": _status("VmRSS"),
            "models": len(entries), "seconds": time.perf_counter() - start}


def measure(root: Path, names: list[str]) -> dict[str, Any]:
    """``child`` in a fresh interpreter; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.bundles", "--root", str(root), "--out", out.name, "--names", *names]
        subprocess.run(cmd, check=True, timeout=1800)
        return json.loads(Path(out.name).read_text())


def run(quick: bool) -> Figure:
    """Figure 7 rows: RSS added (held and peak) by 1 and 4 served bundles, against the same models in torch."""
    runs = 1 if quick else RUNS
    counts = (1,) if quick else (1, 4)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {"torch": {}, "onnx": {}}
    with tempfile.TemporaryDirectory(prefix="vaescope-bundles-") as tmp:
        root = Path(tmp)
        names = make_files(root, max(counts))
        for n in counts:
            for _ in range(runs):  # interleaved, so a busy moment on the machine hits both kinds
                for kind in results:
                    results[kind].setdefault(n, []).append(measure(root / kind, names[kind][:n]))
    rows = []
    for n in counts:
        for what in ("held", "peak"):
            def added(kind: str) -> float:
                return median([r[f"{what}_rss_bytes"] - r["imports_rss_bytes"] for r in results[kind][n]]) / GB  # noqa: B023

            total = {k: median([r[f"{what}_rss_bytes"] for r in results[k][n]]) / GB for k in results}
            rows.append(Row(f"{what} RSS added by {n} served bundle{'s' if n > 1 else ''} (3x64x64 conv VAE, "
                            f"{IMAGES:,} images encoded and decoded each)", added("onnx"), "GB", runs, added("torch"),
                            "the same models in torch",
                            note=f"whole process: {total['onnx']:.2f} GB with bundles, {total['torch']:.2f} GB in torch; "
                                 f"after imports {median([r['imports_rss_bytes'] for r in results['onnx'][n]]) / GB:.2f} GB"))
    return Figure(rows, {"results": results, "images": IMAGES, "shape": SHAPE, "latent_dim": LATENT})


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point (used by ``measure``); ``--print`` runs the figure and prints it."""
    p = argparse.ArgumentParser(description="RSS of served bundles vs torch, for benchmarks.bundles")
    p.add_argument("--root", type=Path)
    p.add_argument("--names", nargs="*", default=[])
    p.add_argument("--out", type=Path)
    p.add_argument("--print", action="store_true", help="run the whole figure and print its rows")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.print:
        for row in run(args.quick).rows:
            print(f"{row.figure}: {row.value:.3f} GB vs {row.baseline:.3f} GB in torch "
                  f"(ratio {row.ratio:.2f}x, n={row.n}); {row.note}")
        return
    args.out.write_text(json.dumps(child(args.root, args.names)))


if __name__ == "__main__":
    main()
