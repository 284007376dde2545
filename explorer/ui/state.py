"""Per-session state, kept in ``gr.State``: the traversal's code and the map on screen.

Sessions hold only these small records and a checkpoint key; models and latents live once in the
server's ``ModelStore``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from vaescope.explorer.projection import Projection


@dataclass
class Code:
    """The traversal's current latent code and where it came from."""

    z: np.ndarray  # [D] float32
    z0: np.ndarray  # [D] the starting code; Reset returns here
    y: int | None  # decoder condition (a CVAE's class), else None
    source: str  # in words, for the info line
    image: Image.Image | None = None  # decoded preview, filled on first use (interpolation endpoints)
    note_shows_error: bool = False  # a slider move failed and the traversal note says so

    def with_note_error(self, shown: bool) -> Code:
        """The same code, marked as having (or no longer having) a failure written in the traversal note."""
        return self if self.note_shows_error == shown else replace(self, note_shows_error=shown)

    def moved(self, z: np.ndarray) -> Code:
        """The same start and condition at a new code z [D] (the cached preview does not carry over)."""
        return Code(z, self.z0, self.y, self.source)

    def reset(self) -> Code:
        """Back to the starting code."""
        return Code(self.z0.copy(), self.z0, self.y, self.source)

    def with_class(self, y: int | None) -> Code:
        """The same code decoded under class ``y``."""
        return Code(self.z, self.z0, y, self.source)


@dataclass
class MapView:
    """What the session's current map shows, so clicks and paths can be mapped back."""

    key: str  # the checkpoint's key in the ModelStore
    projection: Projection
    indices: np.ndarray  # [M] test-set index of each plotted row
    title: str
    color_by: str
