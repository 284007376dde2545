"""Per-session state, and the one rule that keeps the page consistent: what is shown always belongs
to the session's current model.

A ``Session`` lives in one ``gr.State`` per browser tab. Gradio hands every event of that tab the
same object, so a model switch made by one event is seen at once by every event in flight. Each
switch bumps ``version``; a handler notes the version it started under and its result is dropped
(no output, no state change) when the version has moved on meanwhile. Handlers change the session
only through ``Session.update``, which refuses a stale version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaescope.explorer.core.codes import Code
from vaescope.explorer.core.maps import MapView
from vaescope.explorer.core.selection import Selection

_UPDATE = threading.Lock()  # held for a few attribute writes only
TRAIL_POINTS = 64  # codes kept for the "you are here" trail of a slider drag


@dataclass
class Session:
    """One browser tab's state. Mutated in place, never returned as an event output."""

    key: str | None = None  # the current model's store key
    version: int = 0  # bumped when a model switch is asked for and again when it lands
    code: Code | None = None  # the traversal's current code
    view: MapView | None = None  # what the map shows
    picked: Code | None = None  # the point last clicked on the map
    ends: dict[str, Code] = field(default_factory=dict)  # interpolation endpoints "a" / "b"
    path: np.ndarray | None = None  # the last interpolation path [S, D]
    trail: list[np.ndarray] = field(default_factory=list)  # codes of the current slider drag
    denoise_source: Code | None = None  # the clean image the denoising panel corrupts
    highlights: dict[str, np.ndarray] = field(default_factory=dict)  # evaluation indices ringed on the map, by ring
    selection: Selection | None = None  # the points last lassoed or box-selected on the map

    def begin_switch(self) -> int:
        """A model switch starts: everything in flight becomes stale. Returns the switch's version."""
        with _UPDATE:
            self.version += 1
            return self.version

    def finish_switch(self, claimed: int, key: str) -> int | None:
        """Make ``key`` the current model if no later switch was asked for since ``claimed``; resets
        every per-model field. Returns the new version, or None when superseded."""
        with _UPDATE:
            if self.version != claimed:
                return None
            self.version += 1
            self.key = key
            self.code = self.view = self.picked = self.path = self.denoise_source = self.selection = None
            self.ends, self.highlights = {}, {}
            self.trail = []
            return self.version

    def update(self, version: int, **changes: Any) -> bool:
        """Apply ``changes`` if the session is still at ``version``; False (nothing changed) if not."""
        with _UPDATE:
            if self.version != version:
                return False
            for name, value in changes.items():
                setattr(self, name, value)
            return True

    def record_trail(self, version: int, z: np.ndarray, restart: bool = False) -> list[np.ndarray]:
        """Add z [D] to the slider-drag trail (a fresh trail when ``restart``); the trail's codes."""
        with _UPDATE:
            if self.version == version:
                self.trail = ([] if restart else self.trail)[-(TRAIL_POINTS - 1):] + [np.asarray(z, np.float32)]
            return list(self.trail)


@dataclass
class SessionPair:
    """The side-by-side view's state in one browser tab: two sides, each a ``Session`` of its own
    (its model, map and version), and the evaluation images last clicked on either map."""

    a: Session = field(default_factory=Session)
    b: Session = field(default_factory=Session)
    picks: list[int] = field(default_factory=list)  # at most the last two, oldest first

    def side(self, name: str) -> Session:
        return self.b if name == "b" else self.a

    def sessions(self) -> tuple[Session, Session]:
        return self.a, self.b

    def versions(self) -> tuple[int, int]:
        """Both sides' versions: an answer computed while they moved belongs to another model."""
        return self.a.version, self.b.version

    def pick(self, index: int) -> list[int]:
        """Record a click on evaluation image ``index``; the last two picks."""
        with _UPDATE:
            self.picks = (self.picks + [int(index)])[-2:]
            return list(self.picks)
