"""The lessons: the lectures' teaching points as one-click demonstrations on shipped models.

A ``Lesson`` names the checkpoints it needs (two: the side-by-side view; one: the Explore page),
the view settings and buttons that make its point, and an ``explain`` function that writes its two
or three sentences from numbers measured on the loaded models (``measures``), so what the text says
is what the models show. ``?lesson=NAME`` opens one.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import plotly.graph_objects as go

from vaescope.errors import InputError
from vaescope.explorer.core import figures, measures
from vaescope.explorer.core.compare import (
    ACTIONS,
    CLOUD,
    DENOISE,
    POSTERIOR_SAMPLES,
    answer,
    posterior_spread,
)
from vaescope.explorer.core.locks import KeyedLocks
from vaescope.explorer.core.maps import draw_map, project
from vaescope.explorer.core.projection import ProjectionCache
from vaescope.explorer.core.sampling import component_names
from vaescope.explorer.core.store import ModelEntry


class Shelf(Protocol):
    """Where a lesson finds further models (the explorer's ``ModelStore``)."""

    def names(self) -> list[str]: ...

    def open_name(self, name: str) -> ModelEntry: ...




@dataclass(frozen=True)
class Picture:
    """Images a lesson's screen shows: [M, C, H, W] of ``entry``'s model, ``columns`` a row."""

    label: str
    entry: ModelEntry
    images: np.ndarray
    columns: int


@dataclass(frozen=True)
class Stage:
    """What a lesson's own screen shows in the presenter layout (``?present=1``, 1280x720), beside its
    words: both models' maps (the lesson's colouring and overlay, with the marks its buttons put
    there), both models' answer figures (a training timeline, KL per dimension), its ``chart``, and a
    few images of each model's answer, each at least ``cell`` px. A lesson's words say only what
    this screen shows (the side-by-side view shows the same, and more)."""

    maps: bool = False
    figures: bool = False
    rows: tuple[int, ...] = ()  # which rows of each model's answer images (-1: the last)
    columns: int = 5  # images a row: evenly spaced over the answer's row, both ends kept
    cell: int = 128  # px per image at least (whole upscaling factors)
    pictures: Callable[[list[ModelEntry], Shelf], list[Picture]] | None = None  # images of its own
    beside: bool = False  # the lesson's chart beside the maps, in one row (static/style.css)


@dataclass(frozen=True)
class Lesson:
    name: str  # its link: ?lesson=NAME
    title: str
    summary: str  # one line, for the list of lessons
    models: tuple[str, ...]  # checkpoint names: two for the side-by-side view, one for the Explore page
    explain: Callable[[list[ModelEntry], Shelf], str]  # the lesson's words, measured on its models
    view: str = "compare"  # "compare", or the Explore page's tab: "map", "denoising", "anomalies"
    method: str = "pca"
    color: str = "class"
    overlay: str = "none"
    actions: tuple[str, ...] = ()  # side-by-side buttons pressed once the models are drawn
    picks: Callable[[list[ModelEntry]], list[int]] = field(default=lambda entries: [])  # images clicked first
    chart: Callable[[list[ModelEntry], Shelf], go.Figure] | None = None  # a figure of its own
    stage: Stage = Stage()  # its screen in the presenter layout


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _pct1(x: float) -> str:
    return f"{100 * x:.1f}%"


def _name(entry: ModelEntry) -> str:
    return entry.name.removesuffix(".safetensors")


# -- 1. AE vs VAE -----------------------------------------------------------------------------------
def explain_ae_vae(entries: list[ModelEntry], _: Shelf) -> str:
    ae, vae = entries
    probe = measures.pixel_probe(vae)
    a, v = measures.judge_prior_samples(ae, probe), measures.judge_prior_samples(vae, probe)
    radius, inside_ae, norm_ae = measures.prior_ball(ae)
    _, inside_vae, norm_vae = measures.prior_ball(vae)
    d, n = ae.latents.mean.shape[1], len(ae.latents)
    ae_inside = f"not one of its {n:,} test codes" if inside_ae == 0 else f"only {_pct1(inside_ae)} of its test codes"
    return (f"Black × marks are codes drawn from the prior N(0, I); each model decodes them into its samples. In "
            f"{d} dimensions, 95% of those draws lie within {radius:.1f} of the origin. The **VAE** was trained "
            f"to keep its codes there: {_pct1(inside_vae)} of its test codes lie within that distance (on average "
            f"{norm_vae:.1f} from the origin), so its draws land among them. The **AE** was never asked to: its "
            f"codes lie {norm_ae:.1f} from the origin on average and {ae_inside} within {radius:.1f}, so its draws "
            f"fall in the empty middle of its code cloud. On the AE's map the × marks seem to sit among its "
            f"digits: the map flattens {d} dimensions onto 2, and the hollow middle of a ball looks full when "
            f"flattened. A digit classifier (the {measures.NEIGHBOURS} most similar real test digits vote) finds "
            f"{v.classes_seen} different digits among {measures.PROBE_SAMPLES} of the VAE's samples, none in more "
            f"than {_pct(v.top_share)} of them; among the AE's it finds {a.classes_seen}, and takes "
            f"{_pct(a.top_share)} of them for the same one, “{vae.description.class_name(a.top_class)}”.")


# -- 2. Interpolation -------------------------------------------------------------------------------
def _ends(entries: list[ModelEntry]) -> list[int]:
    """The lesson's endpoints: of measures.WALK_PAIRS random pairs, the one whose walk shows the AE's
    holes best (the same pair in both models)."""
    return list(measures.clearest_walk(entries[0], entries[1]))


def explain_interpolation(entries: list[ModelEntry], shelf: Shelf) -> str:
    ae, vae = entries
    start, end = _ends(entries)
    gap_ae, gap_vae = measures.path_gap(ae, start, end), measures.path_gap(vae, start, end)
    typical_ae, typical_vae = measures.typical_path_gap(ae), measures.typical_path_gap(vae)
    verdict = ("so on these two models most of the AE's walks leave its data too"
               if typical_ae >= 1.5 * typical_vae and typical_ae >= 1.5 else
               "so on these two models the difference is small: most of the AE's walks stay near its data too, "
               "and its holes show on a few")
    return (f"Both strips walk a straight line between the codes of the same two test images (#{start} → "
            f"#{end}); the red paths show the walk on each map. The chart plots how far each step lies from "
            f"the data: its distance to the nearest test code, in units of the usual distance between "
            f"neighbouring test codes (1: among the data). Where a walk leaves the data, the decoder was never "
            f"trained. Of {measures.WALK_PAIRS} random pairs, this is the one whose walk strays furthest in the "
            f"**AE** against the **VAE**: {gap_ae:.1f} against {gap_vae:.1f} at its furthest. Over all "
            f"{measures.WALK_PAIRS}, the median walk strays {typical_ae:.1f} in the AE and {typical_vae:.1f} in "
            f"the VAE, {verdict}. Click any two points to walk between them.")


def walk_chart(entries: list[ModelEntry], _: Shelf) -> go.Figure:
    """How far each step of the lesson's walk lies from the data, one line per model."""
    start, end = _ends(entries)
    steps = np.linspace(0, 1, measures.PATH_STEPS)
    fig = go.Figure()
    for entry, colour in zip(entries, ("#d62728", "#1f77b4"), strict=False):
        gaps = measures.path_gaps(entry, start, end)
        fig.add_trace(go.Scatter(x=steps, y=gaps, mode="lines+markers", name=_name(entry).split("/")[-1].upper(),
                                 line={"color": colour, "width": 3}, marker={"size": 7}))
    fig.add_hline(y=1, line={"color": "#888", "dash": "dot"}, annotation_text="among the data",
                  annotation_position="top left")
    fig.update_layout(title="Off the data?", height=300,
                      xaxis={"title": "the walk", "tickvals": [0, 1], "ticktext": [f"#{start}", f"#{end}"]},
                      yaxis={"title": "× usual spacing", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"},
                      margin={"t": 70, "b": 50, "l": 60, "r": 20})
    return fig


# -- 3. The beta trade-off --------------------------------------------------------------------------
def _beta(entry: ModelEntry) -> float:
    return float(entry.meta.model_config.beta) if entry.meta is not None else float("nan")


def sweep_names(names: list[str], prefix: str = "shapes/beta-") -> list[str]:
    """The checkpoints of a beta sweep among ``names``: ``prefix`` then the β, e.g. shapes/beta-0.5
    (not shapes/beta-vae, trained otherwise)."""
    pattern = re.compile(re.escape(prefix) + r"[0-9]+(\.[0-9]+)?\.safetensors")
    return [n for n in names if pattern.fullmatch(n)]


def _sweep(entries: list[ModelEntry], shelf: Shelf) -> list[ModelEntry]:
    """The lesson's models and every other checkpoint of the sweep on the shelf, by β."""
    found = {e.name: e for e in entries}
    for name in sweep_names(shelf.names()):
        if name not in found:
            found[name] = shelf.open_name(name)
    return sorted(found.values(), key=_beta)


def explain_beta(entries: list[ModelEntry], shelf: Shelf) -> str:
    low, high = entries
    sweep = _sweep(entries, shelf)
    rows = []
    for e in sweep:
        mig = measures.factor_mig(e)
        rows.append(f"β = {_beta(e):g}: KL {measures.kl_total(e):.1f} nats, {measures.active_units(e)} active units"
                    + (f", MIG {mig[0]:.2f}" if mig else ""))
    mig_low, mig_high = measures.factor_mig(low), measures.factor_mig(high)
    shape_low = mig_low[1].get("shape", float("nan")) if mig_low else float("nan")
    shape_high = mig_high[1].get("shape", float("nan")) if mig_high else float("nan")
    return (f"β weighs the KL term: a larger β pays for a code that says less about each image (lower KL, fewer "
            f"active units) with worse reconstructions, the trade-off the chart plots. Each row of images sweeps "
            f"one model's most used dimension from −3 to +3 prior sd, the rest of the code kept. The mutual "
            f"information gap (MIG: how much one dimension alone captures each true factor) of the shape factor is "
            f"{shape_low:.2f} at β = {_beta(low):g} and {shape_high:.2f} at β = {_beta(high):g}. The sweep: "
            + "; ".join(rows) + ".")


def beta_chart(entries: list[ModelEntry], shelf: Shelf) -> go.Figure:
    """Rate (KL) against distortion (reconstruction error) across the sweep, one point per β."""
    sweep = _sweep(entries, shelf)
    rate = [measures.kl_total(e) for e in sweep]
    distortion = [float(e.latents.recon_error.mean()) for e in sweep]
    labels = []
    for e in sweep:
        mig = measures.factor_mig(e)
        labels.append(f"β = {_beta(e):g}" + (f" · MIG {mig[0]:.2f}" if mig else ""))
    fig = go.Figure(go.Scatter(x=rate, y=distortion, mode="lines+markers+text", text=labels,
                               textposition="top center", marker={"size": 10}, cliponaxis=False))
    x_pad, y_pad = 0.12 * (max(rate) - min(rate) + 1e-9), 0.25 * (max(distortion) - min(distortion) + 1e-9)
    fig.update_layout(title="Rate–distortion across the β sweep", height=300, showlegend=False,
                      xaxis={"title": "rate: KL(q(z|x) ‖ p(z)), nats", "range": [min(rate) - x_pad, max(rate) + x_pad]},
                      yaxis={"title": "distortion: squared error per pixel",
                             "range": [min(distortion) - y_pad, max(distortion) + y_pad]},
                      margin={"t": 40, "b": 40, "l": 60, "r": 30})
    return fig


# -- 4. Posterior collapse --------------------------------------------------------------------------
def _warmup(entry: ModelEntry) -> int:
    config = entry.meta.train_config if entry.meta is not None else {}
    return int(config.get("warmup_epochs", 0) if isinstance(config, dict) else getattr(config, "warmup_epochs", 0))


def explain_collapse(entries: list[ModelEntry], _: Shelf) -> str:
    cold, warm = entries
    kl_cold, kl_warm = measures.kl_total(cold), measures.kl_total(warm)
    d = cold.description.latent_dim
    same = abs(kl_warm - kl_cold) <= 0.25 * max(kl_cold, kl_warm)
    total = (f"In all they carry about the same information ({kl_cold:.1f} and {kl_warm:.1f} nats of KL): warm-up "
             f"spread it over more dimensions rather than adding any." if same else
             f"Warm-up also carries more in all: {kl_warm:.1f} nats of KL against {kl_cold:.1f}.")
    return (f"Both are the same VAE (β = {_beta(cold):g}, {d} dimensions), trained the same way except that "
            f"**{_name(warm)}** raises the KL weight from 0 over its first {_warmup(warm)} epochs. Without it, the "
            f"KL term pushes codes to the prior before the decoder has learned to use them, and most never come "
            f"back: **{_name(cold)}** keeps {measures.used_units(cold)} of {d} dimensions in use; "
            f"**{_name(warm)}** keeps {measures.used_units(warm)}. {total} The bars show the KL per dimension; "
            f"the last row of each traversal moves the least used dimension, and an unused one changes nothing. "
            f"This is partial collapse: in the full collapse of the lecture the KL falls to zero and the "
            f"decoder ignores the code, which takes a decoder that can draw the images without it (an "
            f"autoregressive one); these decoders draw every pixel from the code alone, so some dimensions stay in use.")


# -- 5. One Gaussian vs a mixture -------------------------------------------------------------------
def explain_mixture(entries: list[ModelEntry], _: Shelf) -> str:
    vae, gmvae = entries
    accuracy = gmvae.metrics.get("cluster_accuracy")
    names = [n.split("≈ ")[1] for n in component_names(gmvae) if "≈" in n]
    acc = f"{_pct(accuracy)} of the test images" if isinstance(accuracy, float) else "most test images"
    return (f"The **VAE**'s prior is one Gaussian; the **GMVAE**'s is a mixture of "
            f"{gmvae.description.condition.size}, and nobody told it the labels. Coloured by mixture component, "
            f"its codes fall into groups that match the classes for {acc} (each component named after the "
            f"class it holds most: {', '.join(names[:10])}); PCA flattens {gmvae.description.latent_dim} "
            f"dimensions onto 2, so the groups overlap on these maps (UMAP, in the side-by-side view, pulls them "
            f"apart). Each row of its samples comes from one component; the VAE's come from its one Gaussian.")


# -- 6. The reparameterisation trick ----------------------------------------------------------------
def explain_reparameterisation(entries: list[ModelEntry], _: Shelf) -> str:
    low, high = entries
    index = _first(entries)[0]
    return (f"A VAE's encoder does not give one code but a Gaussian q(z|x) = N(μ, σ²), and training samples "
            f"z = μ + σ·ε with ε ~ N(0, I) so the gradient flows through μ and σ. The gold dots with black rims "
            f"are {POSTERIOR_SAMPLES} such samples for test image #{index}, and the images decode some of them. "
            f"With β = {_beta(low):g} its posterior is narrow (mean σ {posterior_spread(low, index):.2f} on the "
            f"used dimensions); with β = {_beta(high):g} the KL term pulls it towards the prior's σ = 1 (mean σ "
            f"{posterior_spread(high, index):.2f}), so the samples of one image vary more.")


# -- 7. Watching a latent space form -----------------------------------------------------------------
def _record(entry: ModelEntry):  # noqa: ANN202
    from vaescope.explorer.core.timeline import training_timeline

    training_timeline(entry)  # reads and keeps the record (an InputError when there is none)
    return entry.derived.record


def explain_forming(entries: list[ModelEntry], _: Shelf) -> str:
    parts = []
    for entry in entries:
        record = _record(entry)
        accuracy = measures.frame_separation(record.codes, record.labels)
        epochs = [float(e) for e in record.epochs]
        after = next((i for i, e in enumerate(epochs) if e >= 1), len(epochs) - 1)
        parts.append(f"**{_name(entry)}**: {_pct(accuracy[0])} at the start, {_pct(accuracy[after])} after one "
                     f"epoch, {_pct(accuracy[-1])} at the end ({len(epochs)} frames)")
    return ("Press ▶ Play on both maps: each shows where the same test images sat at each recorded moment of "
            "training, on fixed axes. At the start the untrained encoder puts every image in one blob; the "
            "classes pull apart as the model learns. How well a 5-nearest-neighbour classifier tells the classes "
            "apart from the codes alone: " + "; ".join(parts) + ".")


# -- 8. Linear AE = PCA; denoising; anomaly detection -----------------------------------------------
def explain_linear(entries: list[ModelEntry], _: Shelf) -> str:
    linear, ae = entries
    kept, best, kept_ae = measures.variance_kept(linear), measures.pca_variance_kept(linear), measures.variance_kept(ae)
    d = linear.description.latent_dim
    return (f"A linear encoder and decoder trained with squared error learn the same subspace as PCA. The "
            f"**linear AE**'s reconstructions keep {_pct1(kept)} of the test images' variance; PCA with {d} "
            f"components, fitted on these very images (the most any {d}-number linear code can keep of them), "
            f"keeps {_pct1(best)}. Its codes are a rotation and stretch of the PCA coefficients, and each "
            f"traversal row adds one fixed image to the picture. The nonlinear **AE** beside it, with codes of "
            f"the same size, bends the space and keeps {_pct1(kept_ae)}.")


def explain_denoising(entries: list[ModelEntry], _: Shelf) -> str:
    dae, ae = entries
    kind, level = DENOISE
    a, b = measures.denoise_score(dae, kind, level), measures.denoise_score(ae, kind, level)

    def spread(values: np.ndarray) -> str:
        return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"

    return (f"The **denoising AE** was trained on corrupted inputs with the clean images as targets; the plain "
            f"**AE** beside it only ever saw clean ones. Both get the same noisy copy of test image "
            f"#{_a_three(entries)[0]} ({kind} noise, level {level:g}). Over all {a.images} test images and "
            f"{len(a.noisy)} noise draws (mean squared error per pixel, ± one sd over the draws): the noisy "
            f"input is {spread(a.noisy)} away from the clean image; the denoising AE brings it to "
            f"{spread(a.rebuilt)}, the plain AE to {spread(b.rebuilt)}.")


def _ood_scores(model: ModelEntry, shelf: Shelf) -> tuple[str, np.ndarray, np.ndarray]:
    """(the other dataset's name, the test images' scores [N], the other images' scores [M])."""
    from vaescope.explorer.core.scores import ood_scores, preferred_ood, score_kind, test_scores

    data_dir = getattr(shelf, "data_dir", None)
    other = preferred_ood(model, data_dir)
    if other is None:
        raise InputError("no second dataset is on this server to compare with")
    key = score_kind(model).key  # the model's default: its −ELBO
    return other, test_scores(model, key), ood_scores(model, other, data_dir, (key,))[key]


def explain_anomaly(entries: list[ModelEntry], shelf: Shelf) -> str:
    from vaescope.explorer.core.scores import auroc

    other, inside, outside = _ood_scores(entries[0], shelf)
    return (f"Every test image gets a score: how badly the model explains it (−ELBO, in nats). The chart "
            f"overlays the scores of the test images and of another dataset's images ({other}, resized), "
            f"which score higher: the score tells them from test images with an AUROC of "
            f"{auroc(inside, outside):.2f} (1 is perfect, 0.5 is chance). Below it, the test images the model "
            f"finds most typical, and the most unusual ones.")


def anomaly_chart(entries: list[ModelEntry], shelf: Shelf) -> go.Figure:
    """The test images' scores and the other dataset's, as overlaid histograms (shares of each)."""
    other, inside, outside = _ood_scores(entries[0], shelf)
    fig = go.Figure()
    for label, values in ((f"{_name(entries[0]).split('/')[0]} test images", inside), (f"{other} (resized)", outside)):
        fig.add_trace(go.Histogram(x=values, name=label, histnorm="probability", opacity=0.6, nbinsx=60))
    fig.update_layout(title="−ELBO of each image, nats", barmode="overlay", height=300,
                      xaxis={"title": "−ELBO (nats): higher is more unusual"}, yaxis={"title": "share of images"},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
                      margin={"t": 40, "b": 40, "l": 60, "r": 30})
    return fig


def anomaly_pictures(entries: list[ModelEntry], _: Shelf) -> list[Picture]:
    """The five test images the model finds most typical (lowest scores) and most unusual."""
    from vaescope.explorer.core.scores import test_scores

    (model,) = entries
    order = np.argsort(test_scores(model), kind="stable")
    typical, unusual = model.latents.float_images(order[:5]), model.latents.float_images(order[::-1][:5])
    return [Picture(f"{_name(model)} · the most typical test images", model, typical, 5),
            Picture(f"{_name(model)} · the most unusual test images", model, unusual, 5)]


# -- 11. What a likelihood does not know --------------------------------------------------------------
SCORE_WORDS = {"elbo": "−ELBO", "recon": "reconstruction error", "complexity": "−ELBO minus PNG length"}


def _likelihood_table(entries: list[ModelEntry]) -> list[tuple[str, str, dict[str, float]]]:
    """(model, the other data, score key -> AUROC) for each model scoring the other's images."""
    a, b = entries
    return [(_name(a), _name(b), measures.ood_aurocs(a, b)), (_name(b), _name(a), measures.ood_aurocs(b, a))]


def _data(entry_name: str) -> str:
    return entry_name.split("/")[0]


def explain_likelihood(entries: list[ModelEntry], _: Shelf) -> str:
    (fashion, mnist_data, fa), (mnist, fashion_data, ma) = _likelihood_table(entries)
    fooled = fa["elbo"] < 0.5
    return (f"Each model scores the other's test images. **{mnist}** finds {_data(fashion_data)} images unusual "
            f"by its −ELBO (AUROC {ma['elbo']:.3f}). But **{fashion}** finds {_data(mnist_data)} digits "
            + (f"*more* likely than its own test images: AUROC {fa['elbo']:.3f}, below chance (Nalisnick et al. "
               "2019). " if fooled else f"only weakly unusual: AUROC {fa['elbo']:.3f}. ")
            + f"Simple images (black background, few strokes) are cheap to explain whatever the model learned. "
            f"Its reconstruction error tells them apart ({fa['recon']:.3f}); correcting the −ELBO for input "
            f"complexity (minus the image's PNG length; Serrà et al. 2020) gives {fa['complexity']:.3f} — but the "
            f"same correction on **{mnist}** gives {ma['complexity']:.3f}: no score is safe on every pair. "
            "The chart shows all six numbers.")


def likelihood_chart(entries: list[ModelEntry], _: Shelf) -> go.Figure:
    """AUROC of each score, for each model scoring the other's test images (0.5: chance)."""
    fig = go.Figure()
    for model, other, aurocs in _likelihood_table(entries):
        keys = list(aurocs)
        fig.add_trace(go.Bar(name=f"{model} scoring {_data(other)}", x=[SCORE_WORDS[k] for k in keys],
                             y=[aurocs[k] for k in keys], text=[f"{aurocs[k]:.3f}" for k in keys],
                             textposition="outside", cliponaxis=False))
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="chance", annotation_position="bottom right")
    fig.update_layout(title="Telling the other dataset apart: AUROC by score", barmode="group", height=300,
                      yaxis={"title": "AUROC", "range": [0, 1.12]}, legend={"orientation": "h", "y": -0.2},
                      margin={"t": 40, "b": 40, "l": 60, "r": 30})
    return fig


# -- what a lesson measures, once per set of models ---------------------------------------------------
MEASURED_KEPT = 32  # lessons' words and charts kept (each a few kB), the oldest dropped first
_measured: dict[tuple, tuple[str, dict | None]] = {}  # the chart as a plain dict (see ``measured``)
_measured_lock = threading.Lock()
_measuring = KeyedLocks()  # single flight: a lesson's events ask at once (its words, its screen)


def measured(lesson: Lesson, entries: list[ModelEntry], shelf: Shelf) -> tuple[str, go.Figure | None]:
    """The lesson's words and chart on these models (``lesson.explain``, ``lesson.chart``), measured
    once per set of loaded models and shelf, so a lesson opened again (another page, a reload, the
    presenter's screen) costs nothing; the chart is a copy the caller may restyle. Callers asking at
    the same time wait for one measurement (on two cores, measuring twice at once took each twice
    as long). The chart is kept as a plain dict and each caller builds its figure from a deep copy:
    plotly briefly takes a trace's "type" out of the dict (or figure) it builds from, so two threads
    building from one source at once got a scatter from a histogram, and raised."""
    key = (lesson.name, tuple(entry.key for entry in entries), tuple(shelf.names()))
    with _measuring.hold(key):
        with _measured_lock:
            found = _measured.get(key)
        if found is None:
            found = (lesson.explain(entries, shelf),
                     lesson.chart(entries, shelf).to_dict() if lesson.chart is not None else None)
            with _measured_lock:
                _measured[key] = found
                while len(_measured) > MEASURED_KEPT:
                    _measured.pop(next(iter(_measured)))
    words, chart = found
    return words, (go.Figure(copy.deepcopy(chart)) if chart is not None else None)


# -- a lesson's own screen (the presenter layout) -----------------------------------------------------


@dataclass(frozen=True)
class StageContent:
    """What a lesson's screen shows beyond its words and chart, per model: maps, figures, pictures."""

    maps: list[go.Figure]
    figures: list[go.Figure]
    pictures: list[Picture]


def stage_content(lesson: Lesson, entries: list[ModelEntry], shelf: Shelf, projections: ProjectionCache
                  ) -> StageContent:
    """The lesson's screen (``lesson.stage``) on its loaded models: each model's answer to the
    lesson's buttons (``core.compare.answer``, from the lesson's picks), its map with what those
    answers mark on it, its answer figure, and a few of its answer images (the rows and columns
    the stage names). A model that cannot answer shows nothing for it."""
    stage = lesson.stage
    picks = [int(i) for i in lesson.picks(entries)]
    maps: list[go.Figure] = []
    found: list[go.Figure] = []
    pictures: list[Picture] = list(stage.pictures(entries, shelf)) if stage.pictures is not None else []
    for entry in entries:
        answers = []
        for kind in lesson.actions:
            try:
                answers.append(answer(kind, entry, picks))
            except InputError:
                continue
        marks: dict[str, Any] = {"you are here": [entry.latents.mean[picks[-1]]]} if picks else {}
        for reply in answers:
            marks |= reply.overlay
        if stage.maps:
            view, fig = draw_map(entry, projections, lesson.method, 2, lesson.color, lesson.overlay,
                                 path=marks.get("path"), marker=list(marks.get("you are here", [])) or None)
            if "cloud" in marks:
                figures.add_points(fig, project(view, marks["cloud"]), 2, "cloud", CLOUD)
            maps.append(_small_map(fig, _name(entry)))
        if stage.figures:
            for reply in [reply for reply in answers if reply.figure is not None][-1:]:
                if not reply.figure.layout.updatemenus:  # a still chart: named by its model, no legend
                    reply.figure.update_layout(title={"text": _name(entry)}, showlegend=False)
                found.append(reply.figure)
        shown = next((reply for reply in answers if reply.rows is not None), None)
        if stage.rows and shown is not None and shown.rows is not None:
            rows = shown.rows
            count = len(rows.images) // rows.columns
            chosen = [r % count for r in stage.rows if -count <= r < count]
            columns = _spread(rows.columns, stage.columns)
            images = np.concatenate([rows.images[r * rows.columns + columns] for r in chosen])
            labels = [rows.row_labels[r] for r in chosen if r < len(rows.row_labels) and rows.row_labels[r]]
            label = f"{_name(entry)} · {_picture_words(shown.kind, len(columns), rows.columns)}" + \
                (f" · {', '.join(labels)}" if labels else "")
            pictures.append(Picture(label, entry, images, len(columns)))
    return StageContent(maps, found, pictures)


def _picture_words(kind: str, shown: int, total: int) -> str:
    """What a picture of answer ``kind`` shows, ``shown`` of a row's ``total`` images."""
    some = f"{shown} of {total}" if shown < total else f"all {total}"
    return {"samples": "prior samples", "interpolate": f"the walk, {some} steps",
            "traverse": "swept −3 → +3 sd", "posterior": "posterior samples of one image",
            "denoise": "clean · noisy · rebuilt"}.get(kind, ACTIONS.get(kind, kind).lower())


def _spread(total: int, wanted: int) -> np.ndarray:
    """``wanted`` of ``total`` column indices, evenly spaced, the first and last kept."""
    if wanted >= total:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, wanted)).astype(np.int64))


def _small_map(fig: go.Figure, title: str) -> go.Figure:
    """A map for a lesson's screen: its model's name as the title, no legend or tick labels (the
    colours are the side-by-side view's; the axes of a projection carry no meaning), drawn as SVG:
    a still picture beside the live views' WebGL maps needs no WebGL context of its own."""
    fig.data = [go.Scatter({k: v for k, v in trace.to_plotly_json().items() if k != "type"})
                if isinstance(trace, go.Scattergl) else trace for trace in fig.data]
    fig.update_layout(title={"text": title, "font": {"size": 20}}, showlegend=False,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"showticklabels": False, "title": None}, yaxis={"showticklabels": False, "title": None})
    return fig


LESSON_VAE = "mnist/vae.safetensors"


# -- the list ---------------------------------------------------------------------------------------
def _a_three(entries: list[ModelEntry]) -> list[int]:
    return [measures.first_of_class(entries[0], 3)]


def _first(entries: list[ModelEntry]) -> list[int]:
    return [0]


LESSONS: tuple[Lesson, ...] = (
    Lesson("ae-vs-vae", "AE vs VAE: why a VAE can sample",
           "The same prior draws: among the VAE's codes, in the empty middle of the AE's.",
           ("mnist/ae.safetensors", LESSON_VAE), explain_ae_vae,
           overlay="prior", actions=("samples",), stage=Stage(maps=True, rows=(0,))),
    Lesson("interpolation", "Interpolation: smooth or through holes",
           "The same two images, a straight walk in each model's code space.",
           ("mnist/ae.safetensors", LESSON_VAE), explain_interpolation, chart=walk_chart,
           actions=("interpolate",), picks=_ends, stage=Stage(maps=True, rows=(0,), beside=True)),
    Lesson("beta", "The β trade-off", "Reconstruction against a simple, disentangled code, across a β sweep.",
           ("shapes/beta-1.safetensors", "shapes/beta-10.safetensors"), explain_beta, color="factor:0",
           actions=("traverse",), picks=lambda entries: [0], chart=beta_chart, stage=Stage(rows=(0,))),
    Lesson("collapse", "Posterior collapse and KL warm-up", "Two identical models, one with warm-up.",
           ("digits/collapse-no-warmup.safetensors", "digits/collapse-warmup.safetensors"), explain_collapse,
           actions=("kl", "traverse"), picks=_a_three, stage=Stage(figures=True, rows=(-1,))),
    Lesson("mixture", "One Gaussian vs a mixture", "A VAE and a GMVAE on the same digits.",
           ("mnist/vae.safetensors", "mnist/gmvae.safetensors"), explain_mixture, color="component",
           actions=("samples",), stage=Stage(maps=True, rows=(0,))),
    Lesson("reparameterisation", "The reparameterisation trick", "One image's posterior, sampled.",
           ("shapes/beta-1.safetensors", "shapes/beta-10.safetensors"), explain_reparameterisation,
           actions=("posterior",), picks=_first, stage=Stage(maps=True, rows=(0,))),
    Lesson("forming", "Watching a latent space form", "The maps of a VAE and a GMVAE, frame by frame of training.",
           ("mnist/vae-2d.safetensors", "mnist/gmvae.safetensors"), explain_forming, actions=("timeline",),
           stage=Stage(figures=True)),
    Lesson("linear-pca", "A linear AE is PCA", "Its decoder spans the principal components.",
           ("digits/linear-ae.safetensors", "digits/ae.safetensors"), explain_linear, actions=("traverse",),
           picks=_a_three, stage=Stage(rows=(0, 1))),
    Lesson("denoising", "Denoising", "Corrupt an image; the denoising AE rebuilds it.",
           ("digits/dae.safetensors", "digits/ae.safetensors"), explain_denoising, actions=("denoise",),
           picks=_a_three, stage=Stage(maps=True, rows=(0,), cell=160)),
    Lesson("anomaly", "Anomaly detection", "Images the model explains badly are unusual.",
           ("mnist/vae.safetensors",), explain_anomaly, view="anomalies", chart=anomaly_chart,
           stage=Stage(pictures=anomaly_pictures)),
    Lesson("likelihood", "What a likelihood does not know",
           "A Fashion-MNIST VAE finds MNIST digits more likely than its own clothes.",
           ("fashion-mnist/vae.safetensors", "mnist/vae.safetensors"), explain_likelihood,
           actions=("samples",), chart=likelihood_chart, stage=Stage(rows=(0,))),
)
BY_NAME = {lesson.name: lesson for lesson in LESSONS}


def find(name: object) -> Lesson | None:
    """The lesson a request names (``?lesson=NAME``), or None."""
    return BY_NAME.get(str(name)) if isinstance(name, str) else None


def missing_models(lesson: Lesson, names: list[str]) -> list[str]:
    """The checkpoints ``lesson`` needs that are not among ``names``."""
    return [n for n in lesson.models if n not in names]


def page_model(name: object) -> str | None:
    """The model a page opened at ``?lesson=NAME`` shows on its Explore page: a one-model lesson's."""
    lesson = find(name)
    return lesson.models[0] if lesson is not None and len(lesson.models) == 1 else None
