"""Finding and keeping points of a map: search and filter by index, label, class name or a metadata
column; what a selection holds (its size, label mix and mean code); and the selection as a file
(CSV, parquet or npz: indices, labels, codes).

Pure functions of arrays, so the map's panel, ``vs`` sessions and tests share them.

Examples:
    >>> import numpy as np
    >>> labels = np.array([0, 1, 1, -1])
    >>> search("cat", labels, ("dog", "cat")).tolist()
    [1, 2]
    >>> search("#3", labels, ()).tolist()
    [3]
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core.values import whole
from vaescope.limits import MAX_SEARCH_CHARS, MAX_SELECTION

EXPORT_FORMATS = ("csv", "parquet", "npz")
# the page sends {"indices": [i, ...]}: at most 8 characters an index (7 digits and a comma), plus a
# little for the braces; anything longer is not a selection of MAX_SELECTION points
MAX_SELECTION_CHARS = 64 + 8 * MAX_SELECTION


def read_selection(payload: str | None, n: int) -> np.ndarray:
    """The points [M] (sorted, unique) a lasso or box selection on the page names: ``payload`` is
    the page script's JSON, ``{"indices": [i, ...]}``, each a point of a map of ``n``. Empty for an
    empty selection (a double click clears it); InputError for anything else: too long, not JSON,
    more than MAX_SELECTION points, or a value that is not a whole number in 0..n-1.

    Examples:
        >>> read_selection('{"indices": [4, 2, 4]}', 10).tolist()
        [2, 4]
    """
    text = str(payload or "")
    if len(text) > MAX_SELECTION_CHARS:
        raise InputError(f"a selection is at most {MAX_SELECTION:,} points; this one sent {len(text):,} characters")
    try:
        data = json.loads(text or "{}")
    except (json.JSONDecodeError, RecursionError):
        raise InputError("the selection did not arrive as the page sends it") from None
    values = data.get("indices") if isinstance(data, dict) else None
    if not isinstance(values, list):
        raise InputError("the selection did not arrive as the page sends it")
    if len(values) > MAX_SELECTION:
        raise InputError(f"a selection is at most {MAX_SELECTION:,} points, got {len(values):,}")
    rows = [whole(value, "A selected point", 0, n - 1) for value in values]
    return np.unique(np.asarray(rows, np.int64))


def search(query: str, labels: np.ndarray, class_names: tuple[str, ...],
           metadata: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Rows [M] (sorted) that ``query`` names: ``#12`` or ``12`` (a row), ``label:3`` (a label),
    ``column=value`` (a metadata column, compared as text), else class names containing the
    query (case-insensitive; an exact name wins over the names that contain it). Empty when nothing
    matches; InputError for a query over MAX_SEARCH_CHARS or a column the data does not have."""
    text = str(query or "").strip()
    if len(text) > MAX_SEARCH_CHARS:
        raise InputError(f"a search is at most {MAX_SEARCH_CHARS} characters, got {len(text)}")
    n = len(labels)
    if not text:
        return np.zeros(0, np.int64)
    if re.fullmatch(r"#?\d{1,12}", text):
        i = int(text.lstrip("#"))
        return np.array([i] if i < n else [], np.int64)
    found = re.fullmatch(r"label:\s*(-?\d{1,9})", text)
    if found:
        return np.flatnonzero(labels == int(found.group(1))).astype(np.int64)
    if "=" in text and metadata is not None:
        column, _, value = (part.strip() for part in text.partition("="))
        if column not in metadata:
            raise InputError(f"no column {column[:40]!r} to search; the columns are {sorted(metadata)[:10]}")
        return np.flatnonzero(np.asarray(metadata[column]).astype(str) == value).astype(np.int64)
    lowered = [name.lower() for name in class_names]
    wanted = [i for i, name in enumerate(lowered) if name == text.lower()] or \
             [i for i, name in enumerate(lowered) if text.lower() in name]
    return np.flatnonzero(np.isin(labels, wanted)).astype(np.int64) if wanted else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Selection:
    """What a set of points holds."""

    indices: np.ndarray  # [M] int64, sorted, unique
    label_counts: list[tuple[str, int]]  # (class name, count), most common first; "?" for unknown
    mean_code: np.ndarray  # [D] float32, the mean of the selected codes

    @property
    def size(self) -> int:
        return len(self.indices)


def summarize(indices: np.ndarray, codes: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> Selection:
    """The selection ``indices`` (rows of ``codes`` [N, D] / ``labels`` [N]; duplicates dropped):
    its size, label mix and mean code. InputError for an empty selection or a row out of range."""
    rows = np.unique(np.asarray(indices, np.int64))
    if len(rows) == 0:
        raise InputError("the selection is empty: lasso or box-select points on the map first")
    if rows[0] < 0 or rows[-1] >= len(codes):
        raise InputError(f"a selection names rows 0 to {len(codes) - 1}, got {int(rows[0])} to {int(rows[-1])}")
    values, counts = np.unique(labels[rows], return_counts=True)
    order = np.lexsort((values, -counts))
    mix = [(_name(int(values[i]), class_names), int(counts[i])) for i in order]
    return Selection(rows, mix, codes[rows].astype(np.float64).mean(0).astype(np.float32))


def _name(label: int, class_names: tuple[str, ...]) -> str:
    if label < 0:
        return "?"
    return class_names[label] if label < len(class_names) else str(label)


def export(selection: Selection, codes: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
           fmt: str) -> bytes:
    """The selection as a file's bytes: one row per point with its index, label, class name and
    code (columns z0..z{D-1} in CSV; a list column ``code`` in parquet; arrays in npz)."""
    rows = selection.indices
    picked, picked_labels = codes[rows].astype(np.float32), labels[rows].astype(np.int64)
    names = np.array([_name(int(v), class_names) for v in picked_labels], dtype=object)
    if fmt == "csv":
        header = ",".join(["index", "label", "class_name", *(f"z{d}" for d in range(codes.shape[1]))])
        lines = [header]
        for i, label, name, code in zip(rows, picked_labels, names, picked, strict=True):
            quoted = '"' + str(name).replace('"', '""') + '"'
            lines.append(",".join([str(int(i)), str(int(label)), quoted, *(f"{v:.7g}" for v in code)]))
        return ("\n".join(lines) + "\n").encode()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"index": pa.array(rows), "label": pa.array(picked_labels),
                          "class_name": pa.array(names.astype(str)),
                          "code": pa.FixedSizeListArray.from_arrays(pa.array(picked.ravel()), codes.shape[1])})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()
    if fmt == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, indices=rows, labels=picked_labels, latents=picked,
                 class_names=np.array(class_names, dtype=str))
        return buffer.getvalue()
    raise InputError(f"a selection is exported as {', '.join(EXPORT_FORMATS)}, not {str(fmt)[:20]!r}")
