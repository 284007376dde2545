"""Exact type and size checks for values that come from outside: config files, flags, checkpoint
metadata and resume states.

Every check raises ``ConfigError`` (an ``InputError``) whose message names the value by its path
(``history[3].epoch``) and says what was expected; callers that know the file add its name. Nothing
here lets a TypeError, ValueError, RecursionError or OverflowError from a malformed value escape,
and nothing allocates in proportion to a size it has not checked.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from vaescope.errors import InputError
from vaescope.limits import MAX_JSON_DEPTH, MAX_JSON_ITEMS, MAX_STRING_CHARS


class ConfigError(InputError):
    """A value is missing, of the wrong type, out of range or unknown; the message names it."""


def shown(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of a refused value, so that a 4 KB string never fills an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int of over 4300 digits
        return "a number too large to show"
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"


def _name(where: str) -> str:
    return f"{where} " if where else ""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds [lo, hi] of a number; ``lo_open`` makes the lower bound exclusive (> lo)."""

    lo: float
    hi: float
    lo_open: bool = False

    def check(self, value: float, where: str) -> None:
        if value < self.lo or (self.lo_open and value == self.lo):
            raise ConfigError(f"{_name(where)}must be {'>' if self.lo_open else '>='} {_number(self.lo)}, "
                              f"got {_number(value)}")
        if value > self.hi:
            raise ConfigError(f"{_name(where)}must be <= {_number(self.hi)} (a documented limit), "
                              f"got {_number(value)}")


def _number(value: float) -> str:
    """A number for a message: floats short, ints whole unless absurdly long (str() of an int of
    over 4300 digits raises)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if abs(value) < 10**20 else "an integer of more than 20 digits"


# -- scalars ------------------------------------------------------------------------------------
def as_int(value: Any, where: str, bounds: Range | None = None) -> int:
    """``value`` as an int: an int (numpy / torch integers too) but never a bool or a float."""
    if isinstance(value, bool):
        raise ConfigError(f"{_name(where)}must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{_name(where)}must be an integer, got {shown(value)}") from None
    if bounds is not None:
        bounds.check(number, where)
    return number


def as_float(value: Any, where: str, bounds: Range | None = None, finite: bool = True) -> float:
    """``value`` as a float: an int or float (never a bool or a string), finite unless told."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{_name(where)}must be a float, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ConfigError(f"{_name(where)}must be a finite number, got {_number(value)}") from None
    if finite and not math.isfinite(number):
        raise ConfigError(f"{_name(where)}must be a finite number, got {number}")
    if bounds is not None and math.isfinite(number):
        bounds.check(number, where)
    return number


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{_name(where)}must be true or false, got {shown(value)}")
    return value


def as_str(value: Any, where: str, max_chars: int = MAX_STRING_CHARS) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{_name(where)}must be a string, got {shown(value)}")
    if len(value) > max_chars:
        raise ConfigError(f"{_name(where)}is {len(value)} characters long; the limit is {max_chars}")
    return value


def as_choice(value: Any, where: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{_name(where)}must be one of {choices}, got {shown(value)}")
    return value


# -- containers ---------------------------------------------------------------------------------
def as_list(value: Any, where: str, max_items: int = MAX_JSON_ITEMS) -> list:
    """A JSON array (a list or a tuple) of at most ``max_items`` entries."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{_name(where)}must be a list, got {shown(value)}")
    if len(value) > max_items:
        raise ConfigError(f"{_name(where)}has {len(value)} entries; the limit is {max_items}")
    return list(value)


def as_dict(value: Any, where: str, max_items: int = MAX_JSON_ITEMS) -> dict[str, Any]:
    """A JSON object (string keys) of at most ``max_items`` entries."""
    if not isinstance(value, dict):
        raise ConfigError(f"{_name(where)}must be a JSON object, got {shown(value)}")
    if len(value) > max_items:
        raise ConfigError(f"{_name(where)}has {len(value)} keys; the limit is {max_items}")
    for key in value:
        as_str(key, f"a key of {where or 'the object'}", 200)
    return value


def only_keys(data: dict[str, Any], where: str, known: Iterable[str], required: Iterable[str] = ()) -> None:
    """Refuse unknown keys and missing required ones, naming both."""
    known = tuple(known)
    unknown = sorted(set(data) - set(known))
    missing = [k for k in required if k not in data]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {[k[:40] for k in unknown[:10]]}; known keys are {sorted(known)}")
    if missing:
        raise ConfigError(f"{where}: lacks key(s) {missing}")


def check_json(value: Any, where: str, depth: int = 0, finite: bool = False) -> None:
    """A free-form JSON value (notes, metrics, history records): only JSON types, nested at most
    ``MAX_JSON_DEPTH`` deep, strings and containers within the limits. ``finite`` refuses NaN / inf."""
    if depth > MAX_JSON_DEPTH:
        raise ConfigError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        Range(-(2**63), 2**63 - 1).check(value, where)  # what any JSON reader can hold
    elif isinstance(value, float):
        if finite and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value}")
    elif isinstance(value, str):
        as_str(value, where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(as_list(value, where)):
            check_json(item, f"{where}[{i}]", depth + 1, finite)
    elif isinstance(value, dict):
        for key, item in as_dict(value, where).items():
            check_json(item, f"{where}.{key}", depth + 1, finite)
    else:
        raise ConfigError(f"{where} must be a JSON value, got a {type(value).__name__}")


# -- parsing ------------------------------------------------------------------------------------
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # the unrolled-loop string pattern


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest, found without parsing it (so a text
    nested a million levels deep costs one pass, not a RecursionError)."""
    skeleton = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    opens = (skeleton == ord("[")) | (skeleton == ord("{"))
    closes = (skeleton == ord("]")) | (skeleton == ord("}"))
    return int(np.cumsum(opens.astype(np.int64) - closes, dtype=np.int64).max(initial=0))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook: two readers of a file must never see different values for one key."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ConfigError(f"key {shown(twice, 40)} appears twice in one object")
    return result


def parse_json(text: str | bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for text from outside: the nesting is measured first and capped at
    ``max_depth``, duplicate keys are refused, and every failure is a ConfigError naming ``what``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise ConfigError(f"{what} is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and ints of over 4300 digits
        raise ConfigError(f"{what} is not valid JSON: {shown(str(exc), 120)}") from None


def as_array(value: Any, where: str, error: type[InputError] = ConfigError) -> np.ndarray:
    """``value`` (a tensor, detached and moved to the CPU, or anything numpy takes) as a numpy array;
    ``error`` naming ``where`` when it holds Python objects rather than numbers."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise error(f"{where} must be a numeric array, not an array of objects")
    return array
