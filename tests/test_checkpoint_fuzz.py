"""Property-based fuzzing of checkpoints and resume states (the properties are in checkpoint_fuzz.py):
any crafted file is read or refused with the one error type, and never costs more than a bounded
amount of memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_fuzz import PROPERTIES, bombs, check_checkpoint, run_property

TESTS = Path(__file__).parent
CAP_MB = 512  # RLIMIT_AS headroom above what the interpreter maps after importing torch
PEAK_GROWTH_MB = 256  # the most resident memory the fuzzed reads may add


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_fuzzed_files_are_read_or_refused_with_one_error_type(name: str) -> None:
    outcomes = run_property(name, max_examples=100)
    assert outcomes["refused"] > 0, outcomes  # the fuzzing reached the checks


@pytest.mark.parametrize("name", sorted(bombs()))
def test_a_few_hundred_bytes_never_decide_an_allocation(name: str) -> None:
    path = bombs()[name]
    assert path.stat().st_size < 4096
    assert check_checkpoint(path) == "refused"


def _capped_run(examples: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run([sys.executable, str(TESTS / "checkpoint_fuzz.py"), str(examples), str(CAP_MB), mode],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fuzzing_under_a_memory_cap_stays_small() -> None:
    """The bombs and every property, in a process whose address space is capped at what it maps
    after importing torch plus 512 MB: it finishes, and its peak RSS grows by less than 256 MB."""
    result = _capped_run(40, "fixed")
    assert result["bombs_refused"] == len(bombs())
    assert result["peak_rss_growth_mb"] < PEAK_GROWTH_MB, result


@pytest.mark.slow
def test_longer_fuzzing_with_fresh_examples_under_the_cap() -> None:
    result = _capped_run(400, "random")
    assert result["peak_rss_growth_mb"] < PEAK_GROWTH_MB, result
