"""The decoded manifold panel: a grid of images decoded from codes that sweep two latent dimensions
over the prior (Kingma & Welling 2014, fig. 4), the other dimensions held at the data's mean code
or at the traversal's current code. For a 2-d latent space it is the whole learned plane.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from vaescope.explorer.core.codes import class_of, decode
from vaescope.explorer.core.dims import dim_info
from vaescope.explorer.core.embeddings import NO_DECODER
from vaescope.explorer.core.manifold import axes, default_dims, grid_codes
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import whole
from vaescope.explorer.ui.common import STRIP_PX, Context, grid, handler, served, short_name
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_MANIFOLD_STEPS

CAPTION = ("**Decoded manifold.** Images decoded from a grid of codes: one dimension moves down the rows, another "
           "along the columns, each across the prior's middle 90 % (equal prior mass per step), while the other "
           "dimensions stay put. With a 2-d latent space this is the whole plane the decoder learned.")
DEFAULT_STEPS = 10
GRID_PX = 720  # about this wide, whatever the steps
# the presenter layout's grid: at most this many steps a side, in cells of at least STRIP_PX (1280x720:
# 4 x 4 MNIST digits of 140 px, as tall as the window leaves, beside the inputs). The chosen plane
# is kept (the prior's middle 90 % on both axes), sampled more coarsely; the label says so.
PRESENT_STEPS = 4
BASES = [("the data's mean code", "mean"), ("the traversal's current code", "traversal")]


class ManifoldPanel:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row(equal_height=True):
            self.rows = gr.Dropdown([], label="Rows: dimension", elem_id="manifold-rows", min_width=140)
            self.cols = gr.Dropdown([], label="Columns: dimension", elem_id="manifold-cols", min_width=140)
            self.steps = gr.Slider(2, MAX_MANIFOLD_STEPS, value=DEFAULT_STEPS, step=1, label="Steps a side",
                                   elem_id="manifold-steps", buttons=[])
            self.base = gr.Radio(BASES, value="mean", label="Other dimensions at", elem_id="manifold-base")
            self.button = gr.Button("Decode the grid", variant="primary", elem_id="manifold-btn", scale=0,
                                    min_width=120)
        self.note = gr.Markdown("", elem_id="manifold-note")
        self.image = gr.Image(label="Decoded manifold", format="png", interactive=False, height=560,
                              elem_id="manifold-grid", elem_classes="pixelated", buttons=["download", "fullscreen"])

    # -- the model changed --
    def model_outputs(self) -> list[Any]:
        return [self.rows, self.cols, self.note, self.image, self.button]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        info = dim_info(entry)
        choices = [(f"z{d}" + (f" · {info.score_name} {info.score(d):.2f}" if info.score_name else ""), int(d))
                   for d in info.order]
        i, j = default_dims(entry)
        note = ""
        if entry.generator is None:
            note = f"**{short_name(entry)}** · {NO_DECODER.format(what='decode a manifold')}."
        elif len(choices) < 2:
            note = f"**{short_name(entry)}** has a 1-d latent space: there is no second dimension to sweep."
        usable = entry.generator is not None and len(choices) > 1
        return {self.rows: gr.Dropdown(choices=choices, value=i), self.cols: gr.Dropdown(choices=choices, value=j),
                self.note: note, self.image: gr.Image(value=None, label="Decoded manifold"),
                self.button: gr.Button(interactive=usable)}  # a decoder and two dimensions

    def wire(self, present: Any = None) -> None:
        """The panel's events; ``present`` is the page's presenter-layout toggle (the grid is drawn
        for a projector when it is on)."""
        inputs = [self.rows, self.cols, self.steps, self.base, self.session, *([present] if present is not None else [])]
        gr.on([self.button.click, self.rows.select, self.cols.select, self.steps.release, self.base.select],
              self.decode_grid, inputs, [self.image, self.note], api_name="manifold", show_progress_on=[self.image])

    @handler
    def decode_grid(self, rows: Any, cols: Any, steps: Any, base: Any, session: Session,
                    present: bool = False) -> dict[Any, Any]:
        """The decoded grid; in the presenter layout (``present``) at most PRESENT_STEPS a side, in
        cells of at least STRIP_PX, so it fits 1280x720 unscaled."""
        _, entry = self.ctx.current(session)
        d = entry.description.latent_dim
        i = whole(rows, "The rows' dimension", 0, d - 1)
        j = whole(cols, "The columns' dimension", 0, d - 1)
        chosen = n = whole(steps, "Steps a side", 2, MAX_MANIFOLD_STEPS)
        if present:
            n = min(n, PRESENT_STEPS)
        centre, scale, how = axes(entry)
        code = session.code if base == "traversal" and session.code is not None and session.code.key == entry.key \
            else None
        if code is not None:
            start, y, where = code.z, code.y, "the traversal's current code"
        else:
            start = entry.latents.mean.mean(0) if entry.has_points else centre
            y, where = class_of(entry, None), "the data's mean code" if entry.has_points else "the prior's centre"
        codes = grid_codes(start, (i, j), n, scale, centre)
        images = decode(entry, codes, y)
        values = codes.reshape(n, n, d)
        picture = grid(entry, images, nrow=n, cell_px=STRIP_PX if present else max(24, GRID_PX // n),
                       row_labels=[f"z{i} {v:+.2f}" for v in values[:, 0, i]])
        lo, hi = float(values[0, 0, j]), float(values[0, -1, j])
        name = short_name(entry)
        plane = " (the whole latent plane)" if d == 2 else f"; the other {d - 2} at {where}"
        columns = f"columns: z{j} from {lo:+.2f} to {hi:+.2f}, left to right"
        label = f"{name} · rows: z{i}, top to bottom · {columns}"
        cls = f" · decoded as class {entry.description.class_name(y)}" if y is not None else ""
        # the presenter layout hides the image's label (static/style.css): its note says it all
        shown = f" (presenter layout: {n} × {n} of the {chosen} steps chosen)" if n < chosen else ""
        note = f"**{name}** · z{i} × z{j} over {how}, {n} × {n} steps{plane}{shown}{cls}" + (
            f" · rows: z{i}, top to bottom · {columns}." if present else ".")
        return {self.image: gr.Image(value=served(picture), label=label), self.note: note}
