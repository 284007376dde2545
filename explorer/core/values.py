"""Request values -> checked numbers: the one place a number from the page becomes a Python number.

Every slider, box and payload field arrives as whatever the client sent: a number, a string, None,
a boolean, ``NaN``, ``1e400`` or an integer with a thousand digits. ``number`` and ``whole`` turn it
into a finite float or an int inside a stated range, or raise ``InputError`` with one sentence that
names the field and the range. Nothing else in the explorer calls ``float()`` / ``int()`` on a
request value.

Examples:
    >>> whole("7", "Steps", 2, 32)
    7
    >>> number(0.25, "Level", 0.0, 1.0)
    0.25
"""

from __future__ import annotations

import math
from typing import Any

from vaescope.errors import InputError

MAX_TEXT_CHARS = 64  # a number typed or sent as text; anything longer is not a number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _num(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f" of at least {_num(lo)}"
    return f" of at most {_num(hi)}" if hi is not None else ""


def number(value: Any, what: str, lo: float | None = None, hi: float | None = None,
           default: float | None = None) -> float:
    """``value`` as a finite float in [lo, hi]; ``default`` for None / "" when given.

    Raises InputError for anything else: text that is not a number, booleans, NaN, infinities,
    values too large for a float, and values outside the range.
    """
    if (value is None or value == "") and default is not None:
        return float(default)
    expected = f"{what} must be a number{_range(lo, hi)}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{expected}, got {_shown(value)}.")
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise InputError(f"{expected}, got a text of {len(value)} characters.")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{expected}, got {_shown(value)}.") from None
    if not math.isfinite(x):
        raise InputError(f"{expected}, got {_shown(value)}.")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise InputError(f"{expected}, got {x:g}.")
    return x


def whole(value: Any, what: str, lo: int | None = None, hi: int | None = None, default: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (a float must be whole: 3.0 is 3, 3.5 is refused);
    ``default`` for None / "" when given. Raises InputError like ``number``."""
    if (value is None or value == "") and default is not None:
        return int(default)
    expected = f"{what} must be a whole number{_range(lo, hi)}"
    if isinstance(value, bool):
        raise InputError(f"{expected}, got {_shown(value)}.")
    if isinstance(value, int):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InputError(f"{expected}, got {_num(value) if abs(value) < 10**18 else _shown(value)}.")
        return int(value)
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise InputError(f"{expected}, got a text of {len(value)} characters.")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{expected}, got {_shown(value)}.") from None
    if not math.isfinite(x) or x != math.floor(x):
        raise InputError(f"{expected}, got {x:g}.")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise InputError(f"{expected}, got {x:g}.")
    return int(x)
