"""The nearest neighbours of the point picked on the map, found in latent space (the codes
themselves, not the map's two or three coordinates): a strip of their images with their distances,
and a ring around each on the map.

Part of the map panel, which builds it under the picked point and asks it for its updates on every
pick (``show``); its own event is the neighbour count.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from vaescope.explorer.core.codes import Code, item_noun
from vaescope.explorer.core.maps import highlights_json
from vaescope.explorer.core.neighbours import nearest
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import whole
from vaescope.explorer.ui.common import QUICK, Context, grid, handler, served, short_name
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_NEIGHBOURS

DEFAULT_NEIGHBOURS = 8
PER_ROW = 10  # thumbnails a row of the strip
CELL_PX = 84  # a thumbnail with room for its caption ("#1234 0.43")
HINT = "Click a point on the map: its nearest neighbours in latent space appear here."


class NeighboursView:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    def build(self, rings: Any) -> None:
        """The strip and its count; ``rings`` is the map's hidden box of ringed points."""
        self.rings = rings
        with gr.Row(equal_height=False, elem_id="neighbours-row"):
            self.count = gr.Number(DEFAULT_NEIGHBOURS, precision=0, minimum=1, maximum=MAX_NEIGHBOURS,
                                   label="Nearest neighbours", elem_id="neighbours-count", min_width=110, scale=0)
            self.note = gr.Markdown(HINT, elem_id="neighbours-note")
        self.strip = gr.Image(label="Nearest neighbours in latent space", format="png", interactive=False,
                              elem_id="neighbours-strip", elem_classes="pixelated", buttons=[], visible=False)

    def outputs(self) -> list[Any]:
        return [self.strip, self.note]

    def cleared(self) -> dict[Any, Any]:
        return {self.strip: gr.Image(value=None, visible=False), self.note: HINT}

    def wire(self) -> None:
        self.count.input(self.recount, [self.count, self.session], [*self.outputs(), self.rings],
                         api_name="neighbours", trigger_mode="always_last", **QUICK)

    @handler
    def recount(self, count: Any, session: Session) -> dict[Any, Any]:
        """The neighbours of the point already picked, with another count."""
        version, entry = self.ctx.current(session)
        k = whole(count, "Nearest neighbours", 1, MAX_NEIGHBOURS)
        code = session.picked
        if code is None or code.key != entry.key:
            return {}
        return self.show(entry, code, session, version, k)

    def show(self, entry: ModelEntry, code: Code, session: Session, version: int, k: int) -> dict[Any, Any]:
        """The ``k`` evaluation images whose codes are nearest ``code`` (a picked point is left out
        of its own list), as a strip and a note, ringed on the map."""
        if not entry.has_points:
            return {}
        latents = entry.latents
        query = code.index if code.index is not None else code.z
        found = nearest(latents.mean, query, k)
        highlights = {**session.highlights, "neighbours": found.indices}
        if not session.update(version, highlights=highlights):
            return {}
        describe = entry.description.class_name
        where = f"test {item_noun(entry)} #{code.index}" if code.index is not None else "the decoded spot"
        items = ", ".join(f"#{int(i)}" + (f" ({describe(int(latents.labels[i]))})" if latents.labels[i] >= 0 else "")
                          + f" {d:.2f}" for i, d in zip(found.indices, found.distances, strict=True))
        note = (f"**{len(found.indices)} nearest neighbours** of {where} in the {latents.mean.shape[1]}-d latent "
                f"space of {short_name(entry)} (Euclidean distance between codes, not on the map; ringed there): "
                f"{items}.")
        strip: Any = gr.Image(value=None, visible=False)
        if latents.images is not None and len(found.indices):
            images = latents.float_images(found.indices)
            captions = [f"#{int(i)} {d:.2f}" for i, d in zip(found.indices, found.distances, strict=True)]
            picture = grid(entry, images, nrow=min(PER_ROW, len(images)), cell_px=CELL_PX, captions=captions)
            strip = gr.Image(value=served(picture), visible=True,
                             label=f"{short_name(entry)} · nearest neighbours of {where} · nearest first")
        return {self.strip: strip, self.note: note, self.rings: rings_json(session, entry, highlights)}


def rings_json(session: Session, entry: ModelEntry, highlights: dict[str, np.ndarray]) -> str:
    """The map's ring box for ``highlights``, placed on the session's map when it shows ``entry``'s
    model (all rings empty until it does)."""
    view = session.view
    return highlights_json(view if view is not None and view.key == entry.key else None, highlights)
