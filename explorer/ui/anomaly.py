"""The anomaly panel: how unusual each test image is to the model, its most and least typical
images, the score of an uploaded image, and an out-of-distribution check against another dataset."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from vaescope.errors import InputError
from vaescope.explorer.core.codes import encode_image
from vaescope.explorer.core.scores import (
    auroc,
    ood_datasets,
    ood_scores,
    percentile,
    preferred_ood,
    score_images,
    score_kind,
    score_kinds,
    test_scores,
)
from vaescope.explorer.core.store import ModelEntry
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
from vaescope.explorer.ui.traversal import _filename, read_upload

CAPTION = ("**Anomaly detection.** Every test image gets a score: how badly the model explains it (the ELBO's "
           "cost for a model with a prior, the reconstruction error for one without). Images the model finds "
           "unusual score high. Images of another dataset should score higher still: the AUROC says how well the "
           "score tells them apart (1 is perfect, 0.5 is chance). A model with a prior offers three scores: its "
           "−ELBO, its reconstruction error, and the −ELBO corrected for input complexity (Serrà et al. 2020), "
           "which stops simple images from looking likely.")
EXTREMES = 8  # the most typical and most unusual images shown, in rows of EXTREMES_ROW
EXTREMES_ROW = 4


class AnomalyPanel:
    def __init__(self, ctx: Context, session: gr.State) -> None:
        self.ctx = ctx
        self.session = session

    def build(self) -> None:
        gr.Markdown(CAPTION, elem_classes="caption")
        with gr.Row(equal_height=True):
            self.score = gr.Dropdown([], label="Score", elem_id="anomaly-score-kind", scale=3)
            self.score_btn = gr.Button("Score the test images", variant="primary", elem_id="anomaly-score-btn",
                                       scale=1)
        self.note = gr.Markdown("", elem_id="anomaly-note")
        self.histogram = gr.Plot(label="Scores", elem_id="anomaly-histogram")
        with gr.Row():
            self.typical = gr.Image(label="Most typical", format="png", interactive=False, height=190, buttons=[],
                                    elem_id="anomaly-typical", elem_classes="pixelated")
            self.unusual = gr.Image(label="Most unusual", format="png", interactive=False, height=190, buttons=[],
                                    elem_id="anomaly-unusual", elem_classes="pixelated")
        with gr.Row():
            self.upload = gr.File(label="Score your own image", file_types=["image"], height=90,
                                  elem_id="anomaly-upload")
            self.upload_note = gr.Markdown("", elem_id="anomaly-upload-note")
        with gr.Row():
            self.other = gr.Dropdown([], label="Out-of-distribution data (resized to the model's images)",
                                     elem_id="anomaly-other")
            self.compare_btn = gr.Button("Compare", elem_id="anomaly-compare-btn")
        self.compare_note = gr.Markdown("", elem_id="anomaly-compare-note")

    def model_outputs(self) -> list[Any]:
        return [self.note, self.histogram, self.typical, self.unusual, self.upload_note, self.other, self.compare_note,
                self.score_btn, self.compare_btn, self.score]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        others = ood_datasets(entry, self.ctx.store.data_dir) if entry.generator is not None else []
        first = preferred_ood(entry, self.ctx.store.data_dir) if others else None
        note = "" if entry.generator is not None else f"**{short_name(entry)}** has no decoder: nothing scores images."
        kinds = score_kinds(entry) if entry.generator is not None else []
        return {self.note: note, self.histogram: None, self.typical: None, self.unusual: None, self.upload_note: "",
                self.other: gr.Dropdown(choices=others, value=first),
                self.score: gr.Dropdown(choices=[(kind.name, kind.key) for kind in kinds],
                                     value=kinds[0].key if kinds else None, visible=len(kinds) > 1),
                self.compare_note: ""} | decoder_buttons(entry, [self.score_btn, self.compare_btn])

    def wire(self) -> None:
        s = self.session
        self.score_btn.click(self.score_test_images, [s, self.score],
                             [self.note, self.histogram, self.typical, self.unusual],
                             api_name="anomaly_scores", show_progress_on=[self.histogram])
        self.upload.upload(self.score_upload, [self.upload, s, self.score], [self.upload_note],
                           api_name="anomaly_upload")
        self.compare_btn.click(self.compare, [self.other, s, self.score], [self.histogram, self.compare_note],
                               api_name="anomaly_compare", show_progress_on=[self.histogram])

    @handler
    def score_test_images(self, session: Session, score: str | None = None) -> dict[Any, Any]:
        """The test images' scores by ``score`` (a key of ``score_kinds``; the model's default when None)."""
        _, entry = self.ctx.current(session)
        kind = score_kind(entry, score or None)
        scores = test_scores(entry, kind.key)
        order = np.argsort(scores)
        images = entry.latents.float_images(slice(None))
        low, high = order[:EXTREMES], order[::-1][:EXTREMES]
        name = short_name(entry)
        note = (f"**{name}** · {len(scores):,} test images · {kind.name}: median {np.median(scores):.3g}, "
                f"95th percentile {np.percentile(scores, 95):.3g}. A high score means {kind.higher}.")
        return {self.note: note, self.histogram: histogram(name, kind.name, {"test images": scores}),
                self.typical: gr.Image(value=served(grid(entry, images[low], EXTREMES_ROW, STRIP_PX,
                                                          captions=[f"{scores[i]:.3g}" for i in low])),
                                       label=f"{name} · most typical (lowest scores)"),
                self.unusual: gr.Image(value=served(grid(entry, images[high], EXTREMES_ROW, STRIP_PX,
                                                          captions=[f"{scores[i]:.3g}" for i in high])),
                                       label=f"{name} · most unusual (highest scores)")}

    @handler
    def score_upload(self, path: str | None, session: Session, score: str | None = None) -> dict[Any, Any]:
        _, entry = self.ctx.current(session)
        kind = score_kind(entry, score or None)
        code, conversion = encode_image(entry, read_upload(path), None, f"uploaded {_filename(path)}")
        value = float(score_images(entry, code.image[None], score=kind.key)[0])
        share = percentile(test_scores(entry, kind.key), value)
        said = f" ({conversion})" if conversion else ""
        return {self.upload_note: f"**{short_name(entry)}** · {_filename(path)}{said}: {kind.name} **{value:.3g}**, "
                                  f"more unusual than **{share:.0f} %** of the test images."}

    @handler
    def compare(self, other: Any, session: Session, score: str | None = None) -> dict[Any, Any]:
        """How well each score tells ``other``'s images from the test images: the chosen score's
        histograms, and every score's AUROC (one pass through the model scores them all)."""
        _, entry = self.ctx.current(session)
        kind = score_kind(entry, score or None)
        allowed = ood_datasets(entry, self.ctx.store.data_dir)
        if other not in allowed:
            raise InputError(f"choose one of the datasets on this server: {allowed}")
        table = ood_scores(entry, str(other), self.ctx.store.data_dir)
        areas = {k.key: auroc(test_scores(entry, k.key), table[k.key]) for k in score_kinds(entry)}
        inside, outside = test_scores(entry, kind.key), table[kind.key]
        name = short_name(entry)
        note = (f"**{name}** · AUROC **{areas[kind.key]:.3f}** telling {len(outside):,} {other} images from the "
                f"{len(inside):,} test images by {kind.name} (1 is a perfect separation, 0.5 is chance; below 0.5 "
                f"the other images look *more* usual).")
        rest = [f"{k.name}: {areas[k.key]:.3f}" for k in score_kinds(entry) if k.key != kind.key]
        if rest:
            note += " By the other scores: " + "; ".join(rest) + "."
        return {self.histogram: histogram(name, kind.name, {"test images": inside, f"{other} (resized)": outside}),
                self.compare_note: note}


def histogram(name: str, score_name: str, groups: dict[str, np.ndarray]) -> go.Figure:
    """Overlaid, normalised histograms of score groups."""
    figure = go.Figure()
    for label, values in groups.items():
        figure.add_trace(go.Histogram(x=values, name=label, histnorm="probability", opacity=0.6, nbinsx=60))
    figure.update_layout(barmode="overlay", title=f"{name} · {score_name}", xaxis={"title": score_name},
                         yaxis={"title": "share of images"}, legend={"orientation": "h", "y": 1.02, "x": 0,
                                                                     "yanchor": "bottom"},
                         height=250, margin={"t": 60, "b": 50, "l": 60, "r": 20})
    return figure
