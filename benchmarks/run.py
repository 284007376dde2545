"""Run the benchmarks, print the table, write benchmarks/results/latest.{json,md}.

    python -m benchmarks.run                  # everything (about an hour on 2 CPU cores)
    python -m benchmarks.run --quick          # small sizes and short runs: a smoke test, minutes
    python -m benchmarks.run --only maps      # one figure; the others are kept from latest.json

Every value is a median (or p95) over n repeated runs, with its baseline measured in the same run.
A figure that crashes is recorded with its traceback and the others still run; the exit status is
then 1. Nothing here is a pass/fail test: a missed target is reported in the "met?" column.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import fmt, hardware

RESULTS = Path(__file__).resolve().parent / "results"
# name -> (module, title); run in this order.
FIGURES = {
    "slider": ("benchmarks.slider", "1. Slider round trip in a browser"),
    "concurrency": ("benchmarks.concurrency", "2. Concurrent clients"),
    "maps": ("benchmarks.maps", "3. Latent maps"),
    "training": ("benchmarks.throughput", "4. Training throughput"),
    "memory": ("benchmarks.memory", "5. Memory"),
    "neighbours": ("benchmarks.neighbours", "6. Nearest neighbours in latent space"),
    "bundles": ("benchmarks.bundles", "7. Memory of served ONNX bundles"),
    "million": ("benchmarks.million", "8. A million points"),
    "pointer": ("benchmarks.pointer", "9. Decoding under the pointer, in the page"),
    "lessons": ("benchmarks.lessons", "10. Lessons opened from their links"),
}


def run_figure(name: str, quick: bool) -> dict[str, Any]:
    """One figure's JSON entry: rows and details, or the error that stopped it."""
    module, title = FIGURES[name]
    print(f"== {title}{' (quick)' if quick else ''}", flush=True)
    entry: dict[str, Any] = {"title": title, "quick": quick, "measured_at": now()}
    start = time.perf_counter()
    try:
        figure = importlib.import_module(module).run(quick)
        entry |= {"rows": [r.to_dict() for r in figure.rows], "details": figure.details, "error": None}
    except Exception:  # one broken figure must not lose the others' numbers
        entry |= {"rows": [], "details": {}, "error": traceback.format_exc()}
        print(entry["error"], file=sys.stderr, flush=True)
    entry["seconds"] = round(time.perf_counter() - start, 1)
    return entry


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def cell_value(row: dict[str, Any]) -> str:
    if row["value"] is None:
        return row["note"] or "–"
    return f"{fmt(row['value'], row['unit'])} (n={row['n']})"


def markdown(results: dict[str, Any]) -> str:
    """The results table (figure, value, baseline, ratio, target, met?) with notes underneath."""
    lines = ["| figure | value | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    notes = []
    for entry in results["figures"].values():
        number = entry["title"].split(".")[0]
        if entry["error"]:
            last = entry["error"].strip().splitlines()[-1]
            lines.append(f"| {number}. {entry['title'].split('. ', 1)[1]} | failed: {last} | | | | |")
        for row in entry["rows"]:
            base = "–" if row["baseline"] is None else f"{fmt(row['baseline'], row['unit'])} ({row['baseline_label']})"
            ratio = "–" if row["ratio"] is None else f"{row['ratio']:.3g}x"
            met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
            lines.append(f"| {number}. {row['figure']} | {cell_value(row)} | {base} | {ratio} | "
                         f"{row['target'] or '–'} | {met} |")
            if row["note"] and row["value"] is not None:
                notes.append(f"- {number}. {row['figure']}: {row['note']}")
    hw = results["hardware"]
    modes = {e["quick"] for e in results["figures"].values()}
    mode = "mixed quick and full" if len(modes) > 1 else "quick" if True in modes else "full"
    head = [f"# vaescope benchmarks ({mode} run, {results['finished']})", "",
            f"{hw['cpu']}, {hw['cores']} cores, torch {hw['torch']} ({hw['torch_threads']} threads), "
            f"GPU: {hw['gpu'] or 'none'}; load average at start {', '.join(f'{x:.1f}' for x in hw['load_average_at_start'])}. "
            "Values are medians over n runs unless the figure says p95; details in latest.json.", ""]
    return "\n".join(head + lines + ([""] + notes if notes else [])) + "\n"


def write(path: Path, text: str) -> None:
    """Atomic write: a reader sees the old file or the whole new one (``*.tmp`` is git-ignored)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def previous() -> dict[str, Any]:
    """The figures of the last run, kept when ``--only`` re-measures some of them."""
    try:
        return json.loads((RESULTS / "latest.json").read_text()).get("figures", {})
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    p.add_argument("--only", action="append", choices=list(FIGURES), metavar="NAME",
                   help=f"run only this figure (repeatable): {', '.join(FIGURES)}")
    args = p.parse_args(argv)
    chosen = args.only or list(FIGURES)
    results: dict[str, Any] = {"started": now(), "quick": args.quick, "hardware": hardware(),
                               "figures": previous() if args.only else {}}
    for name in chosen:
        results["figures"][name] = run_figure(name, args.quick)
    results["figures"] = {n: results["figures"][n] for n in FIGURES if n in results["figures"]}
    results["finished"] = now()
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    write(RESULTS / "latest.json", json.dumps(results, indent=1, default=str) + "\n")
    write(RESULTS / "latest.md", table)
    print(table)
    return 1 if any(results["figures"][n]["error"] for n in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
