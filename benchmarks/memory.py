"""Figure 5: peak memory of the explorer's server state.

A fresh child process imports the app (Gradio, plotly, torch), loads the Fashion-MNIST checkpoints
through ``vaescope.explorer.core.store.ModelStore`` (which encodes each one's test set) and computes all three
2D maps of each through ``vaescope.explorer.core.projection.ProjectionCache``, then reports its peak resident set
(VmHWM from /proc/self/status; ``ru_maxrss`` where /proc is missing). The baseline is the same
child that only imports the app.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, Row, at_most, fmnist_checkpoints, median

TARGET_GB = 2.0
GB = 1e9


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def child(root: Path, names: list[str], points: int) -> dict[str, Any]:
    """Build the explorer's state for ``names`` (none: imports only); peak RSS and timings."""
    start = time.perf_counter()
    import torch

    import vaescope.explorer.ui.app  # noqa: F401 - the server process holds Gradio and the app too
    from vaescope.explorer.core.projection import METHODS, ProjectionCache
    from vaescope.explorer.core.store import ModelStore

    store = ModelStore(root, torch.device("cpu"))
    cache = ProjectionCache()
    maps = {}
    for name in names:
        entry = store.open_name(name)
        if entry.latents is None:
            raise RuntimeError(f"{name}: no latents ({entry.data_note})")
        z = entry.latents.mean[:points] if points else entry.latents.mean
        for method in METHODS:
            cache.get(entry.key, z, method, 2)
        maps[name] = len(z)
    return {"peak_rss_bytes": peak_rss_bytes(), "seconds": time.perf_counter() - start, "maps_points": maps}


def measure(root: Path, names: list[str], points: int) -> dict[str, Any]:
    """``child`` in a fresh interpreter; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--root", str(root), "--points", str(points),
               "--out", out.name, "--names", *names]
        subprocess.run(cmd, check=True, timeout=3600)
        return json.loads(Path(out.name).read_text())


def run(quick: bool) -> Figure:
    """Figure 5 rows: peak RSS with checkpoints loaded and maps computed, vs imports only."""
    # A loaded child fits every map from scratch (minutes each), so it repeats less than the baseline.
    n_base, n, points = (1, 1, 3000) if quick else (3, 2, 0)
    with tempfile.TemporaryDirectory(prefix="vaescope-bench-") as tmp:
        root, names, source = fmnist_checkpoints(Path(tmp))
        names = names[:1] if quick else names
        base = [measure(root, [], 0) for _ in range(n_base)]
        full = [measure(root, names, points) for _ in range(n)]
    peak = median([r["peak_rss_bytes"] for r in full]) / GB
    what = f"{len(names)} checkpoint(s), PCA + t-SNE + UMAP of {points or 'all'} test codes each"
    row = Row(f"peak RSS, explorer state ({what})", peak, "GB", n,
              median([r["peak_rss_bytes"] for r in base]) / GB, "imports only", f"<= {TARGET_GB:g} GB",
              at_most(peak, TARGET_GB), note=f"checkpoints: {', '.join(names)} ({source}); baseline n={n_base}")
    return Figure([row], {"loaded": full, "imports_only": base, "checkpoints": names, "source": source})


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point (used by ``measure``)."""
    p = argparse.ArgumentParser(description="peak RSS of the explorer's state, for benchmarks.memory")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--names", nargs="*", default=[])
    p.add_argument("--points", type=int, default=0, help="codes per map (0: all)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.write_text(json.dumps(child(args.root, args.names, args.points)))


if __name__ == "__main__":
    main()
