"""The diagnostics panel: how much each latent dimension is used, the training curves, and the
model's reconstructions beside its prior samples."""

from __future__ import annotations

from typing import Any

import gradio as gr

from vaescope.explorer.core.diagnostics import diagnostics
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.ui.common import served, short_name
from vaescope.explorer.ui.state import Session

CAPTION = ("**Diagnostics.** Left: how much information each latent dimension carries (its KL, in nats); grey "
           "bars are dimensions the model does not use. Right: the loss over training. Below: test images with "
           "their reconstructions, and images decoded from random codes drawn from the prior.")


class DiagnosticsPanel:
    def __init__(self, session: gr.State) -> None:
        self.session = session

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        self.note = gr.Markdown("", elem_id="diag-note")
        with gr.Row():
            self.kl = gr.Plot(label="KL per dimension", elem_id="diag-kl")
            self.curves = gr.Plot(label="Training curves", elem_id="diag-curves")
        with gr.Row():
            self.recon = gr.Image(label="Test images (columns 1, 3) and their reconstructions (columns 2, 4)", format="png",
                                  height=340, interactive=False, elem_id="diag-recon", elem_classes="pixelated",
                                  buttons=["fullscreen"])
            self.prior = gr.Image(label="Samples from the prior", format="png", height=340, interactive=False,
                                  elem_id="diag-prior", elem_classes="pixelated", buttons=["fullscreen"])

    def model_outputs(self) -> list[Any]:
        return [self.note, self.kl, self.curves, self.recon, self.prior]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        shown = diagnostics(entry)
        name = short_name(entry)
        return {self.note: f"**{name}**\n\n{shown.notes}", self.kl: shown.kl_figure, self.curves: shown.curves,
                self.recon: gr.Image(value=None if shown.reconstructions is None else served(shown.reconstructions),
                                     label=f"{name} · test images (columns 1, 3) and their reconstructions (columns 2, 4)"),
                self.prior: gr.Image(value=None if shown.prior_grid is None else served(shown.prior_grid),
                                     label=f"{name} · samples from the prior")}

    def wire(self) -> None:
        """Nothing to wire: the panel is redrawn when the model changes."""
