"""The words the page shows about a model: its card, what each number means, why a panel is empty.

All text comes from the model's own ``Description`` and its checkpoint's metrics; nothing here asks
which family a model is.
"""

from __future__ import annotations

import html
from typing import Any

from vaescope.explorer.core.store import ModelEntry

# key -> (label, unit, what it means and which way is better), in the order the card shows them
METRICS: dict[str, tuple[str, str, str]] = {
    "elbo": ("ELBO", "nats", "the evidence lower bound: how well the model explains a test image, counting both the "
             "reconstruction and the cost of its code. Higher (closer to 0) is better."),
    "nll_iwae": ("NLL", "nats", "negative log-likelihood of a test image, estimated with many samples of its code "
                 "(the IWAE bound). Lower is better; one nat is log(e), a unit of information."),
    "recon": ("reconstruction", "nats", "how many nats it costs to rebuild a test image from its code. Lower is "
              "better."),
    "kl": ("KL", "nats", "how far the codes are pushed from the prior, i.e. how much information the code holds. "
           "Neither high nor low is better by itself: it is the price of the reconstruction."),
    "active_units": ("active units", "", "latent dimensions whose code moves with the image (variance of the "
                     "posterior mean over the test images above 0.01). The rest are unused."),
    "probe_accuracy": ("probe accuracy", "", "accuracy of a simple linear classifier that reads the class from the "
                       "code. Higher means the classes are easy to tell apart in the latent space."),
    "cluster_accuracy": ("clustering accuracy", "", "how often an image's mixture component matches its class, "
                         "after pairing each component with one class. Higher is better; labels were never "
                         "used in training."),
    "nmi": ("NMI", "", "normalised mutual information between components and classes, from 0 (unrelated) "
            "to 1 (the same grouping)."),
}


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; anything else as it is."""
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def metric_label(key: str) -> str:
    """The metric's label with its meaning as a hover tooltip."""
    label, _, meaning = METRICS[key]
    return f'<abbr title="{html.escape(meaning)}">{label}</abbr>'


def card_metrics(metrics: dict[str, Any], latent_dim: int) -> list[str]:
    """The checkpoint's final metrics that it has, as "label **value** unit" strings with tooltips."""
    shown = []
    for key, (_, unit, _) in METRICS.items():
        value = metrics.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        text = f"{int(value)} of {latent_dim}" if key == "active_units" else fmt(value, 3 if not unit else 2)
        shown.append(f"{metric_label(key)} **{text}**" + (f" {unit}" if unit else ""))
    return shown


def model_card(entry: ModelEntry) -> str:
    """Markdown: the model's name, what it is in one plain sentence, its facts, its key metrics."""
    description = entry.description
    facts = [f"**{description.title}**"]
    if entry.dataset_name:
        facts.append(f"trained on **{entry.dataset_name}**")
    facts.append(f"image {'×'.join(str(v) for v in description.image_shape)}")
    facts.append(f"latent dim **{description.latent_dim}**")
    if entry.history:
        facts.append(f"{len(entry.history)} epochs")
    facts.append(f"runs on **{entry.device}**")
    metrics = card_metrics(entry.metrics, description.latent_dim)
    lines = [f"### {entry.name}", description.summary, " · ".join(facts)]
    if metrics:
        lines.append(" · ".join(metrics) + "  <small>(test split; hover a name for what it means)</small>")
    if description.details:
        lines.append(f"<small>{html.escape(' · '.join(description.details))}</small>")
    return "\n\n".join(lines)


def data_note(entry: ModelEntry) -> str:
    """Where the map's images came from, or why there is no map (markdown)."""
    if entry.data_note:
        return (f"⚠️ **{entry.data_note}.** The map, the test images and the per-class statistics need "
                f"evaluation images; traversal, sampling and interpolation of uploaded images still work.")
    if entry.data_origin:
        return f"Each dot on the map is one of {entry.data_origin}."
    return ""
