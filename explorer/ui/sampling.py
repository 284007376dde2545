"""The class sampling panel: N images of one class, drawn the way the model's condition allows,
and, for a model whose decoder takes the class, one code decoded under every class."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core.codes import index_code, random_code
from vaescope.explorer.core.embeddings import NO_DECODER
from vaescope.explorer.core.sampling import decode_under_every_class, sample_class
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import number, whole
from vaescope.explorer.ui.common import (
    STRIP_PX,
    Context,
    decoder_buttons,
    grid,
    handler,
    served,
    short_name,
)
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_CLASSES

CAPTION = ("**Class sampling.** Draw new images of one class from the model. How depends on the model: it "
           "may take the class as an input, have a cluster for it, or neither (then the codes of that class's "
           "test images are summarised by a Gaussian, and new codes are drawn from it). Temperature below 1 "
           "gives more typical images, above 1 more varied ones.")
MAX_SAMPLES = 64


class SamplingPanel:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row():
            self.cls = gr.Dropdown([], label="Class", elem_id="sample-class")
            self.n = gr.Slider(1, MAX_SAMPLES, value=16, step=1, label="N", elem_id="sample-n", buttons=[])
            self.seed = gr.Number(0, precision=0, label="Seed", elem_id="sample-seed")
            self.temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                         elem_id="sample-temperature", buttons=[])
            self.button = gr.Button("Sample", variant="primary", elem_id="sample-btn")
        self.note = gr.Markdown("", elem_id="sample-note")
        self.grid = gr.Image(label="Samples", format="png", interactive=False, height=420, elem_id="sample-grid",
                             elem_classes="pixelated", buttons=["download", "fullscreen"])
        with gr.Group(visible=False) as self.every_group:
            self.every_btn = gr.Button("Decode the traversal's current code under every class",
                                       elem_id="sample-every-class-btn")
            self.every_image = gr.Image(label="One code, every class", format="png", interactive=False, height=170,
                                        elem_id="sample-every-class", elem_classes="pixelated",
                                        buttons=["download", "fullscreen"])

    def model_outputs(self) -> list[Any]:
        return [self.cls, self.note, self.grid, self.every_group, self.every_image, *self.decoder_buttons()]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        description = entry.description
        names = description.class_names or tuple(str(i) for i in range(description.condition.size))
        choices = [(name, i) for i, name in enumerate(names)]
        note = "" if choices else f"**{short_name(entry)}** has no classes to sample from."
        if entry.generator is None:
            note = f"**{short_name(entry)}** · {NO_DECODER.format(what='sample')}."
        return {self.cls: gr.Dropdown(choices=choices, value=choices[0][1] if choices else None),
                self.note: note,
                self.grid: gr.Image(value=None, label="Samples"),
                self.every_group: gr.Group(visible=bool(description.condition.class_choices(description.class_names))),
                self.every_image: gr.Image(value=None, label="One code, every class")} | \
            decoder_buttons(entry, self.decoder_buttons())

    def decoder_buttons(self) -> list[Any]:
        return [self.button, self.every_btn]

    def wire(self) -> None:
        self.button.click(self.sample_class, [self.cls, self.n, self.seed, self.temperature, self.session],
                          [self.grid, self.note], api_name="sample_class", show_progress_on=[self.grid])
        self.every_btn.click(self.decode_every_class, [self.session], [self.every_image],
                             api_name="decode_every_class", show_progress_on=[self.every_image])

    @handler
    def sample_class(self, class_index: Any, n: Any, seed: Any, temperature: Any, session: Session) -> dict[Any, Any]:
        _, entry = self.ctx.current(session)
        if class_index is None or class_index == "":
            raise InputError("Choose a class.")
        c = whole(class_index, "The class", 0, MAX_CLASSES - 1)
        count = whole(n, "N", 1, MAX_SAMPLES)
        s = whole(seed, "The seed", 0, 2**63 - 1, default=0)
        t = number(temperature, "The temperature", 0.05, 5.0)
        images, how = sample_class(entry, c, count, s, t)
        name, class_name = short_name(entry), entry.description.class_name(c)
        nrow = int(np.ceil(np.sqrt(len(images))))
        note = (f"**{class_name}** · {name}: {how.note}. "
                f"<details><summary>Details</summary>{how.details}</details>")
        return {self.grid: gr.Image(value=served(grid(entry, images, nrow=nrow, cell_px=STRIP_PX)),
                                    label=f"{name} · {count} samples of “{class_name}”"),
                self.note: note}

    @handler
    def decode_every_class(self, session: Session) -> dict[Any, Any]:
        _, entry = self.ctx.current(session)
        code = session.code
        if code is None or code.key != entry.key:
            code = index_code(entry, 0) if entry.has_points else random_code(entry, None, seed=0)
        images = decode_under_every_class(entry, code.z)
        names = [entry.description.class_name(c) for c in range(len(images))]
        picture = grid(entry, images, nrow=len(images), cell_px=STRIP_PX, captions=names)
        return {self.every_image: gr.Image(value=served(picture), label=f"{short_name(entry)} · one code, every class "
                                                                 f"(left to right: {', '.join(names)})")}
