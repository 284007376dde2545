"""The contract gives behaviour, not flags: no module of the explorer reads a capability flag of a
model's description or condition to choose what to do.

What differs between models reaches the explorer as objects that do it: the ``Condition`` classes
(class choices, prior rows, overlays, how a class is drawn), the ``Likelihood`` (scores), and the
``Generator`` protocol (``ModelEntry.generator``: None for precomputed codes), and the ``Prior``
(``ModelEntry.has_prior`` is ``prior_of(model) is not None``: an AE has none).
"""

from __future__ import annotations

import ast
from pathlib import Path

EXPLORER = Path(__file__).resolve().parents[1] / "explorer"
FLAGS = {"decodes", "decodes_with_class", "is_mixture", "has_prior"}
HOLDERS = {"description", "condition"}  # a flag read off these is a capability flag
ALLOWED: dict[tuple[str, str], int] = {}  # none: what a model can do comes from the objects it hands out


def flag_reads(source: str) -> list[str]:
    """``description.<flag>`` / ``condition.<flag>`` reads (also ``x.description.<flag>``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in FLAGS:
            holder = node.value
            name = holder.attr if isinstance(holder, ast.Attribute) else holder.id if isinstance(holder, ast.Name) else ""
            if name in HOLDERS:
                found.append(node.attr)
    return found


def test_the_explorer_reads_no_capability_flag() -> None:
    counts: dict[tuple[str, str], int] = {}
    for path in sorted(EXPLORER.rglob("*.py")):
        for flag in flag_reads(path.read_text()):
            key = (path.relative_to(EXPLORER).as_posix(), flag)
            counts[key] = counts.get(key, 0) + 1
    assert counts == ALLOWED


def test_the_check_catches_a_flag_read() -> None:
    assert flag_reads("if entry.description.decodes and condition.is_mixture: pass") == ["decodes", "is_mixture"]
    assert flag_reads("entry.generator is None or entry.has_prior") == []
