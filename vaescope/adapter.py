"""One adapter from any encoder / decoder pair to the model contract (``vaescope.contract``).

A model vaescope did not define is explored by duck typing: an object with ``encode`` and
``decode`` methods (or ``encoder`` and ``decoder`` modules, as pythae's models have). The adapter
understands the shapes the ecosystem uses:

- ``encode`` may return a tensor (a deterministic code), a ``(mean, spread)`` tuple or list (the
  PyTorch examples' VAE, AntixK's PyTorch-VAE), a dict or ``ModelOutput`` (``mu`` / ``mean`` /
  ``loc`` / ``embedding`` with ``logvar`` / ``log_var`` / ``log_covariance`` / ``std`` / ``scale``
  / ``log_sigma`` ...), a ``torch.distributions.Normal``, or an object with ``.latent_dist``
  (diffusers), ``.mean`` and ``.logvar`` / ``.std``, or ``.mode()``. Spatial codes [B, C, h, w]
  are flattened to [B, D] everywhere, and their shape is kept in the description
  (``latent_shape``): the explorer names each value by channel and position and moves whole channels.
- ``decode`` may return pixels in [0, 1], logits, values in [-1, 1] (tanh), or a dict / object
  holding them (``.sample``, ``reconstruction``, ``recon_x``, ``x_hat``, ``logits``, ...).
- Inputs may be images [B, C, H, W] or flat vectors [B, C*H*W]; inputs in [0, 1] or [-1, 1].
- A tabular model reads rows of F features [B, F] in their own units (``features=``, a
  ``FeatureScale`` from ``given_features``): the explorer keeps each row as a [1, 1, F] "image" in
  [0, 1] (each feature's data range, widened by ``FEATURE_MARGIN``, mapped to [0, 1]); the adapter
  gives the model the values in their own units and reads its output in the same units.

The adapter decides by evidence where the evidence is clear, and otherwise refuses with an
AdapterError that names the keyword to set, never a silently wrong picture:

- The spread: a name says what it is (``logvar``, ``log_var``, ``log_sigma``, ``std``, ``sigma``,
  ``scale``, ...); an unnamed spread with negative values is a log-variance (a standard deviation
  is never negative); an unnamed, never-negative spread could be either (σ = 0.755 read as a
  log-variance shows as 1.459), so the adapter asks: ``spread="std"`` or ``spread="logvar"``.
- A random code: the calibration images are encoded twice in eval mode; codes that differ are a
  random draw (z = mean + std * noise), not a mean, and are refused unless ``stochastic=True``.
  Then each code shown is the mean of ``STOCHASTIC_DRAWS`` encodes (seeded, so the same images
  give the same codes) and its spread the model's own, or else the draws' standard deviation.
- The input range and output kind: every reading (inputs in [0, 1] or [-1, 1]; outputs read as
  pixels, logits or tanh values, each clipped to its range) reconstructs the images given with the
  model, and the one with clearly the least error is kept (``CLEAR_MARGIN``); else the error lists
  each reading's error and the call that settles it (``output=``, ``input_range=``). Without
  images only a decoder whose values all lie in [0, 1] is read (as pixels) without keywords.
- A decoder that gives NaN is refused in one sentence that counts the images it failed on; a
  ``decode`` that raises on codes [B, D] is refused with the call's shape and ``decode_input=``
  (e.g. ``decode_input=lambda z: z[:, None]`` for AntixK's IWAE, whose decode takes [B, S, D]).
- A class-conditional model (``condition="class", classes=K``, with the images' labels) gets the
  class the way it takes it (``condition_format``): ``"index"``: a second argument y [B] (int64),
  ``encode(x, y)`` / ``decode(z, y)``; ``"onehot"``: a second argument, one-hot [B, K];
  ``"concat"``: one argument, the one-hot class joined to it: to the image as an extra channel
  through the model's own ``embed_class`` / ``embed_data`` (AntixK's ConditionalVAE, as its
  ``forward`` does), else as K constant channels (or K values of a flat input), and to the code
  (``decode(cat([z, onehot], 1))``). The signature decides between one argument and two; the two
  second-argument forms are both tried, and when both run but disagree the adapter asks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaescope.contract import Condition, Description, Posterior
from vaescope.errors import InputError
from vaescope.limits import MAX_CLASS_NAME_CHARS, MAX_CLASSES

OUTPUTS = ("pixels", "logits", "tanh")
INPUT_RANGES = ("unit", "symmetric")
INPUT_SHAPES = ("image", "flat")
SPREADS = ("std", "logvar")
CONDITIONS = ("none", "class")
CONDITION_FORMATS = ("index", "onehot", "concat")
FORMAT_WORDS = {"index": "a second argument y [B] (class indices)", "onehot": "a second argument, one-hot [B, K]",
                "concat": "one-hot, joined to the input and to the code"}
SUBSET_SEED = 0  # every seeded subset of what a user hands over (images, labels, codes) uses this seed
CALIBRATION_IMAGES = 64  # images the calibration reconstructs
# A reading is taken without keywords when its mean squared error (outputs clipped to the reading's
# range, compared in [0, 1]) is below the mean image's and at most CLEAR_MARGIN of the next best
# reading's. Measured on the tiny 8x8 models of tests/foreign_models.py (600 Adam steps), the right
# reading's ratio to the next is 0.26-0.65 (a blurry model's own error dilutes it; half would refuse
# the logit AE and AntixK's [0, 1] VAE); untrained models' best ratio is 0.996-1.0.
CLEAR_MARGIN = 0.75
RANDOM_TOLERANCE = 1e-4  # two encodes of one batch differing by more (relative to 1 + max |code|) are random
STOCHASTIC_DRAWS = 16  # encodes averaged per code for a random encoder (stochastic=True): error ~ std / 4
STOCHASTIC_SEED = 0  # the draws are seeded (in a forked RNG): the same images give the same codes
MEAN_KEYS = ("mean", "mu", "loc", "z_mean", "means", "embedding", "z", "latent", "code", "encoding")
LOGVAR_KEYS = ("logvar", "log_var", "log_variance", "log_covariance", "logvariance", "z_log_var")
STD_KEYS = ("std", "stddev", "scale", "sigma", "z_std")
LOGSTD_KEYS = ("log_std", "logstd", "log_sigma", "log_scale")
SPREAD_NAMES = ((LOGVAR_KEYS, "logvar"), (STD_KEYS, "std"), (LOGSTD_KEYS, "log_std"))
SPREAD_WORDS = {"logvar": "a log-variance", "std": "a standard deviation", "log_std": "a log standard deviation"}
PIXEL_KEYS = ("reconstruction", "recon_x", "x_recon", "x_hat", "recon", "sample", "output", "probs", "mean",
              "images", "decoded")
LOGIT_KEYS = ("logits", "x_logits")
# Each feature's [0, 1] stands for its data's min..max widened by this fraction of the span on each
# side, so a decoded value a little beyond the data is drawn as it is rather than clipped.
FEATURE_MARGIN = 0.1


class AdapterError(InputError):
    """A foreign model cannot be read as it is; the message names the keyword that settles it."""


class ModelFailed(AdapterError):
    """The foreign model itself failed: it gave NaN, or its decode raised on the codes it was given."""


@dataclass(frozen=True)
class FeatureScale:
    """How a row of F features in the data's own units maps to the [0, 1] the explorer keeps: feature
    f's ``lo[f]`` is 0 and ``hi[f]`` is 1. Build it with ``given_features``."""

    names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @property
    def ranges(self) -> tuple[tuple[float, float], ...]:
        return tuple(zip(self.lo, self.hi, strict=True))

    def _bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        lo = torch.tensor(self.lo, dtype=torch.float32, device=like.device)
        return lo, torch.tensor(self.hi, dtype=torch.float32, device=like.device) - lo

    def from_unit(self, x: Tensor) -> Tensor:
        """[B, F] in [0, 1] -> the features in their own units [B, F]."""
        lo, span = self._bounds(x)
        return lo + x.float() * span

    def to_unit(self, values: Tensor) -> Tensor:
        """Features in their own units [B, F] -> [0, 1] [B, F], clipped."""
        lo, span = self._bounds(values)
        return ((values.float() - lo) / span).clamp(0, 1)


@dataclass(frozen=True)
class Reading:
    """How to talk to a foreign model: the settled keywords."""

    image_shape: tuple[int, int, int]
    input_shape: str = "image"  # "image": x [B, C, H, W]; "flat": x [B, C*H*W]
    input_range: str = "unit"  # "unit": pixels in [0, 1]; "symmetric": in [-1, 1]
    output: str = "pixels"  # "pixels" in [0, 1], "logits", or "tanh" values in [-1, 1]
    latent_shape: tuple[int, ...] = ()  # the model's own code shape per image, e.g. (4, 8, 8); () until known
    prior: bool = True  # a N(0, I) prior over the codes (a VAE); False for a deterministic AE
    spread: str = "logvar"  # what the encoder's spread holds: "logvar", "std" or "log_std"
    draws: int = 1  # encodes averaged per code: > 1 only for a random encoder explored with stochastic=True
    classes: int = 0  # K for a class-conditional model (condition="class"), else 0
    features: FeatureScale | None = None  # a tabular model: rows [B, F] in these units; None for images
    condition_format: str = ""  # how it takes the class: one of CONDITION_FORMATS; "" without a class
    notes: tuple[str, ...] = ()  # how each reading was settled, for the model card


def _tensor(value: Any) -> Tensor | None:
    return value if isinstance(value, Tensor) else None


def _lookup(container: Any, keys: tuple[str, ...]) -> tuple[str, Tensor] | None:
    """The first of ``keys`` that ``container`` (a mapping or an object) holds as a tensor."""
    for key in keys:
        if isinstance(container, Mapping):
            value = container.get(key)
        else:
            value = getattr(container, key, None)
            if callable(value) and not isinstance(value, Tensor):
                continue
        if isinstance(value, Tensor):
            return key, value
    return None


@dataclass(frozen=True)
class Parsed:
    """What one call of ``encode`` returned: the code, its spread (as returned, or None), what a name
    says the spread is ("logvar" / "std" / "log_std", or None when it has no name), and in words."""

    mean: Tensor
    spread: Tensor | None
    named: str | None
    how: str
    key: str = ""  # the spread's name, when it has one


def parse_encoded(output: Any) -> Parsed:
    """Find the code and its spread in whatever ``encode`` returned (see the module's docstring)."""
    if isinstance(output, Tensor):
        return Parsed(output, None, None, "a tensor (a deterministic code)")
    latent_dist = getattr(output, "latent_dist", None)
    if latent_dist is not None:  # diffusers' AutoencoderKLOutput
        inner = parse_encoded(latent_dist)
        return replace(inner, how=f"latent_dist: {inner.how}")
    if isinstance(output, tuple | list) and not hasattr(output, "_fields"):
        tensors = [t for t in output if isinstance(t, Tensor)]
        if len(tensors) == 1:
            return Parsed(tensors[0], None, None, "a one-tensor sequence")
        if len(tensors) == 2 and tensors[0].shape == tensors[1].shape:
            return Parsed(tensors[0], tensors[1], None, "a (mean, spread) pair")
        raise AdapterError(f"encode returned a sequence of {len(tensors)} tensors "
                           f"{[list(t.shape) for t in tensors]}; vaescope reads one tensor (a code) or two of one "
                           "shape, (mean, spread). Pass encode_output=lambda out: {'mean': ..., 'logvar': ...} "
                           "(or 'std') to say which is which.")
    found_mean = _lookup(output, MEAN_KEYS)
    if found_mean is not None:
        key, mean = found_mean
        for keys, kind in SPREAD_NAMES:
            found = _lookup(output, keys)
            if found is not None:
                return Parsed(mean, found[1], kind, f"{key} with {found[0]}", found[0])
        if isinstance(getattr(output, "stddev", None), Tensor):  # torch.distributions
            return Parsed(mean, output.stddev, "std", f"{key} with stddev", "stddev")
        return Parsed(mean, None, None, f"{key} (a deterministic code)")
    mode = getattr(output, "mode", None)
    if callable(mode):
        value = mode()
        if isinstance(value, Tensor):
            return Parsed(value, None, None, "mode()")
    fields = list(output.keys()) if isinstance(output, Mapping) else [a for a in dir(output) if not a.startswith("_")]
    raise AdapterError(f"cannot read a code from what encode returned ({type(output).__name__} with {fields[:12]}); "
                       "return a tensor, (mean, logvar), or a dict with 'mean' and 'logvar', or pass "
                       "encode_output=lambda out: {'mean': ..., 'logvar': ...}")


def posterior_from(output: Any, spread: str = "auto") -> tuple[Tensor, Tensor | None, str]:
    """(mean, log-variance or None for a point, how it was read) from whatever ``encode`` returned.

    ``spread`` ("std" / "logvar") says what an unnamed spread holds; "auto" reads it by its name,
    or as a log-variance when it has negative values, and otherwise raises AdapterError.

    Examples:
        >>> import torch
        >>> posterior_from((torch.zeros(1, 2), torch.tensor([[-1.0, 0.5]])))[2]
        'a (mean, spread) pair; spread: a log-variance (it has negative values)'
    """
    parsed = parse_encoded(output)
    if parsed.spread is None:
        return parsed.mean, None, parsed.how
    kind, why = spread_kind(parsed.spread, parsed.named, spread, parsed.key)
    return parsed.mean, _as_logvar(parsed.spread, kind), f"{parsed.how}; spread: {SPREAD_WORDS[kind]} ({why})"


def spread_kind(spread: Tensor, named: str | None, keyword: str = "auto", key: str = "") -> tuple[str, str]:
    """(what ``spread`` holds, why): the keyword, else its name, else the evidence of negative values
    (a log-variance). Raises AdapterError, naming ``spread=``, when the evidence is not clear or
    contradicts what the keyword or the name says (a standard deviation is never negative)."""
    lowest = float(spread.min())
    kind, why = ((keyword, f"spread={keyword!r}") if keyword != "auto" else
                 (named, f"its name, {key!r}" if key else "its name") if named is not None else
                 ("logvar", "it has negative values") if lowest < 0 else (None, ""))
    if kind is None:
        raise AdapterError(_spread_question(spread))
    if kind == "std" and lowest < 0:
        raise AdapterError(f"the encoder's spread is read as a standard deviation ({why}) but has negative values "
                           f"(down to {lowest:.3g}), which a standard deviation never has. If it is a log-variance, "
                           "pass spread='logvar'; else say what it is with encode_output=lambda out: "
                           "{'mean': ..., 'log_std': ...}")
    return kind, why


def _spread_question(spread: Tensor) -> str:
    s = float(spread.float().median())
    return (f"encode returns a code with an unnamed spread that is never negative (in [{float(spread.min()):.3g}, "
            f"{float(spread.max()):.3g}]): it may be a standard deviation or a log-variance, and the evidence cannot "
            f"tell. Its median read as a standard deviation is σ = {s:.3g}; read as a log-variance it is "
            f"σ = {math.exp(0.5 * s):.3g}. Say which: spread='std' or spread='logvar', e.g. "
            "vs.explore(model, images=..., spread='std') (the same keyword for vaescope.adapter.adapt and vs.export).")


def _as_logvar(spread: Tensor, kind: str) -> Tensor:
    if kind == "logvar":
        return spread
    if kind == "log_std":
        return 2 * spread
    return 2 * torch.log(spread.clamp_min(1e-12))


def pixels_from(output: Any) -> tuple[Tensor, str | None]:
    """(the tensor ``decode`` returned, "logits" when its name says so else None)."""
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, torch.distributions.Distribution):  # Bernoulli, Normal, ...: its mean
        return output.mean, "pixels"
    found = _lookup(output, LOGIT_KEYS)
    if found is not None:
        return found[1], "logits"
    found = _lookup(output, PIXEL_KEYS)
    if found is not None:
        return found[1], None
    if isinstance(output, tuple | list):
        first = next((t for t in output if isinstance(t, Tensor)), None)
        if first is not None:
            return first, None
    raise AdapterError(f"cannot read images from what decode returned ({type(output).__name__}); return a tensor "
                       "[B, C, H, W] or a dict with 'reconstruction', or pass decode_output=lambda out: images")


def to_unit(values: Tensor, output: str) -> Tensor:
    """Decoder values -> pixels in [0, 1] under an output reading."""
    if output == "logits":
        return torch.sigmoid(values)
    if output == "tanh":
        return ((values + 1) / 2).clamp(0, 1)
    return values.clamp(0, 1)


class ForeignModel:
    """A foreign encoder / decoder behind the model contract. Build it with ``adapt``."""

    def __init__(self, module: Any, reading: Reading, *, name: str, class_names: tuple[str, ...] = (),
                 encode_output: Callable[[Any], Any] | None = None,
                 decode_output: Callable[[Any], Any] | None = None,
                 decode_input: Callable[[Tensor], Any] | None = None) -> None:
        self.module = module
        self.reading = reading
        self.name = name
        self.class_names = tuple(str(c) for c in class_names)
        self._encode_fn, self._decode_fn = _methods(module)
        self._encode_output = encode_output
        self._decode_output = decode_output
        self._decode_input = decode_input

    # -- the contract --
    @property
    def device(self) -> torch.device:
        params = getattr(self.module, "parameters", None)
        if callable(params):
            first = next(iter(params()), None)
            if first is not None:
                return first.device
        return torch.device("cpu")

    def describe(self) -> Description:
        r = self.reading
        kind = ("conditional VAE" if r.classes else "VAE") if r.prior else "autoencoder"
        if r.features is not None:
            f = len(r.features.names)
            details = [f"inputs: rows of {f} features [B, {f}] in their own units", "decoder gives feature values in "
                       "the same units", f"code shape {list(r.latent_shape)}", *r.notes]
        else:
            details = [f"inputs {'flat' if r.input_shape == 'flat' else 'images'} in "
                       f"{'[0, 1]' if r.input_range == 'unit' else '[-1, 1]'}", f"decoder gives {r.output}",
                       f"code shape {list(r.latent_shape)}", *r.notes]
        spatial = r.latent_shape if sum(size > 1 for size in r.latent_shape) > 1 else ()  # [B, 1, D] is flat
        if spatial:
            details.append(f"codes flattened to {math.prod(r.latent_shape)} values for maps and sliders; sliders "
                           "named by channel and position")
        if r.classes:
            details.insert(0, f"{r.classes} classes, given as {FORMAT_WORDS[r.condition_format]} "
                              f"(condition_format={r.condition_format!r})")
        prior_note = "" if r.prior else (
            "This model's encoder gives one code per image and no spread, so it has no prior: codes drawn from "
            "N(0, I) may land where no image is, and decode to noise.")
        summary = (f"Your model, {self.name}, explored through vaescope's adapter: "
                   + ("a VAE whose codes are compared with a standard normal prior." if r.prior else
                      "an autoencoder with one code per image.")
                   + (" It encodes and decodes with the class of each image." if r.classes else ""))
        return Description(family="foreign", title=f"{type(self.module).__name__} ({kind}, your model)",
                           summary=summary, image_shape=r.image_shape, latent_dim=max(1, math.prod(r.latent_shape)),
                           class_names=self.class_names,
                           condition=Condition("class", r.classes) if r.classes else Condition(), has_prior=r.prior,
                           prior_note=prior_note, details=tuple(details),
                           latent_shape=spatial,
                           display="features" if r.features is not None else "image",
                           feature_names=() if r.features is None else r.features.names,
                           feature_range=() if r.features is None else r.features.ranges)

    @torch.no_grad()
    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] in [0, 1] (with classes y [B] for a conditional model; class 0 when None)
        -> the posterior, codes flattened to [B, D]."""
        mean, logvar = self._encode_raw(x, None, condition)
        mean = mean.float().flatten(1)
        if logvar is None or not self.reading.prior:
            return Posterior.point(mean)
        return Posterior(mean, logvar.float().flatten(1).clamp(-30, 20))

    @torch.no_grad()
    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """z [B, D] (with classes y [B] for a conditional model) -> pixels [B, C, H, W] in [0, 1] (a
        tabular model's features, [B, 1, 1, F], scaled as its ``FeatureScale`` says)."""
        return self._to_unit(self._decode_raw(z, None, condition).float(), self.reading)

    @staticmethod
    def _to_unit(values: Tensor, reading: Reading) -> Tensor:
        """Decoder values [B, C, H, W] -> [0, 1] under ``reading``."""
        if reading.features is not None:
            return reading.features.to_unit(values.flatten(1)).reshape(values.shape)
        return to_unit(values, reading.output)

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, temperature^2 I) [n, D]: the standard prior a foreign VAE is assumed to have (a
        conditional one's too: the class goes to the decoder, not the prior)."""
        d = self.describe().latent_dim
        return temperature * torch.randn(n, d, generator=generator, device=self.device)

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        return posterior.kl_per_dim() if self.reading.prior else torch.zeros_like(posterior.mean)

    # -- raw calls --
    def _model_input(self, x: Tensor, reading: Reading) -> Tensor:
        x = x.to(self.device, torch.float32)
        if reading.features is not None:  # a row of features, in their own units
            return reading.features.from_unit(x.flatten(1))
        if reading.input_range == "symmetric":
            x = 2 * x - 1
        return x.flatten(1) if reading.input_shape == "flat" else x

    def _classes(self, y: Tensor | None, like: Tensor) -> Tensor:
        """Class indices [B] int64 on the model's device (class 0 for each of ``like``'s B rows where
        none are given). ``shape[0]``, not ``len()``: len() would fix the batch size of an export."""
        if y is None:
            return torch.zeros(like.shape[0], dtype=torch.long, device=self.device)
        return y.to(self.device).long().clamp_min(0)

    def _one_hot(self, y: Tensor, reading: Reading) -> Tensor:
        """[B, K] float; built by comparison, which ONNX exports as it is."""
        return (y[:, None] == torch.arange(reading.classes, device=y.device)).float()

    def _call_encode(self, inp: Tensor, y: Tensor | None, reading: Reading) -> Any:
        """The model's encode on its input, with the class the way it takes it."""
        if not reading.condition_format:
            return self._encode_fn(inp)
        y = self._classes(y, inp)
        if reading.condition_format == "index":
            return self._encode_fn(inp, y)
        onehot = self._one_hot(y, reading)
        if reading.condition_format == "onehot":
            return self._encode_fn(inp, onehot)
        return self._encode_fn(self._joined(inp, onehot, reading))

    def _joined(self, inp: Tensor, onehot: Tensor, reading: Reading) -> Tensor:
        """The input with the one-hot class joined to it (``condition_format="concat"``): AntixK's
        ConditionalVAE embeds both in ``forward`` before ``encode`` (``embed_data``, a 1x1 conv of
        the image, and ``embed_class``, a linear map of the one-hot to one H x W channel), and the
        adapter does the same; without ``embed_class``, K constant channels (or K values)."""
        if reading.input_shape == "flat":
            return torch.cat([inp, onehot], 1)
        b, _, h, w = inp.shape
        embed_class = getattr(self.module, "embed_class", None)
        if callable(embed_class):
            embed_data = getattr(self.module, "embed_data", None)
            data = embed_data(inp) if callable(embed_data) else inp
            return torch.cat([data, embed_class(onehot).view(b, 1, h, w)], 1)
        return torch.cat([inp, onehot[:, :, None, None].expand(b, onehot.shape[1], h, w)], 1)

    def _call_decode(self, z: Tensor, y: Tensor | None, reading: Reading) -> Any:
        """The model's decode on codes in its own shape, with the class the way it takes it."""
        second: tuple[Tensor, ...] = ()
        if reading.condition_format:
            y = self._classes(y, z)
            if reading.condition_format == "index":
                second = (y,)
            elif reading.condition_format == "onehot":
                second = (self._one_hot(y, reading),)
            else:
                z = torch.cat([z.flatten(1), self._one_hot(y, reading)], 1)
        if self._decode_input is not None:
            z = self._decode_input(z)
        return self._decode_fn(z, *second)

    def _encode_once(self, x: Tensor, reading: Reading, y: Tensor | None = None) -> Parsed:
        """One call of the model's encode on x [B, C, H, W] in [0, 1], as read by ``reading``."""
        out = self._call_encode(self._model_input(x, reading), y, reading)
        if self._encode_output is not None:
            out = self._encode_output(out)
        return parse_encoded(out)

    def _encode_raw(self, x: Tensor, reading: Reading | None = None, y: Tensor | None = None
                    ) -> tuple[Tensor, Tensor | None]:
        """(mean, log-variance or None) in the model's own code shape [B, ...]. A random encoder
        (``reading.draws`` > 1) is encoded that many times under a fixed seed: the mean of the draws,
        and the model's own spread, or else the draws' variance."""
        reading = reading or self.reading
        if reading.draws <= 1:
            parsed = self._encode_once(x, reading, y)
            spread = parsed.spread
            return parsed.mean, None if spread is None else _as_logvar(spread.float(), reading.spread)
        with _seeded(self.device):
            draws = [self._encode_once(x, reading, y) for _ in range(reading.draws)]
        means = torch.stack([d.mean.float() for d in draws])
        if draws[0].spread is not None:
            return means.mean(0), _as_logvar(torch.stack([d.spread.float() for d in draws]).mean(0), reading.spread)
        return means.mean(0), means.var(0).clamp_min(1e-12).log()

    def _decode_raw(self, z: Tensor, reading: Reading | None = None, y: Tensor | None = None) -> Tensor:
        return self._decode_values(z, reading, y)[0]

    def _decode_values(self, z: Tensor, reading: Reading | None = None, y: Tensor | None = None
                       ) -> tuple[Tensor, str | None]:
        """(decoder values [B, C, H, W] as the model gives them, "logits" when a name says so).
        A decode that raises on the codes is refused with the shape it was called with."""
        reading = reading or self.reading
        z = z.to(self.device, torch.float32)
        batch = z.shape[0]  # a SymInt when exported: len() would fix the batch size in the graph
        if reading.latent_shape and len(reading.latent_shape) > 1:
            z = z.reshape(batch, *reading.latent_shape)
        try:
            out = self._call_decode(z, y, reading)
        except InputError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ModelFailed(_decode_failure(exc, z, reading, self._decode_input is not None)) from None
        if self._decode_output is not None:
            out = self._decode_output(out)
        values, named = pixels_from(out)
        c, h, w = reading.image_shape
        if values.numel() != batch * c * h * w:
            raise AdapterError(f"decode returned {list(values.shape)} for {batch} codes, which is not "
                               f"{batch} images of shape {[c, h, w]}; pass image_shape=(C, H, W)")
        return values.reshape(batch, c, h, w), named


def _decode_failure(exc: BaseException, z: Tensor, reading: Reading, has_input: bool) -> str:
    """One sentence for a decode that raised: the call, the model's own words, the keyword to set."""
    shape = "[B, " + ", ".join(map(str, z.shape[1:])) + "]"
    what = "the codes" if len(z.shape) == 2 else "the codes in the shape encode gave them"
    cls = (f" and the class as {FORMAT_WORDS[reading.condition_format]}" if reading.condition_format
           and reading.condition_format != "concat" else
           " (the one-hot class joined to the code)" if reading.condition_format else "")
    own = (str(exc).strip().splitlines() or [""])[0][:200]
    hint = ("check decode_input=, which gave the decode its input" if has_input else
            "if the model's decode takes another shape, say how with decode_input=, e.g. decode_input=lambda z: "
            "z[:, None] for a decode that takes [B, S, D] (AntixK's IWAE), and decode_output=lambda out: ... for what "
            "it returns (the same keywords for vaescope.adapter.adapt and vs.export)")
    return (f"decode(z {list(z.shape)}) raised {type(exc).__name__}: {own}; the adapter calls decode with {what}, "
            f"shape {shape}{cls}: {hint}")


@contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Seed the draws of a random encoder in a forked RNG: the caller's RNG state is left as it was."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(STOCHASTIC_SEED)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(STOCHASTIC_SEED)
        yield


def _methods(module: Any) -> tuple[Callable[[Tensor], Any], Callable[[Tensor], Any]]:
    """The encode and decode callables: ``encode`` / ``decode`` methods, else ``encoder`` / ``decoder``."""
    encode, decode = getattr(module, "encode", None), getattr(module, "decode", None)
    if callable(encode) and callable(decode):
        return encode, decode
    encoder, decoder = getattr(module, "encoder", None), getattr(module, "decoder", None)
    if callable(encoder) and callable(decoder):
        return encoder, decoder
    raise AdapterError(f"{type(module).__name__} has no encode and decode methods (nor encoder and decoder "
                       "modules); vaescope explores a model through those two")


def _image_shape_from(images: Tensor | None, image_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    if image_shape is not None:
        shape = tuple(int(v) for v in image_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
            raise AdapterError(f"image_shape must be (C, H, W) with C 1 or 3, got {list(image_shape)}")
        return shape  # type: ignore[return-value]
    if images is None:
        raise AdapterError("without images the adapter cannot know the image shape; pass image_shape=(C, H, W)")
    return tuple(int(v) for v in images.shape[1:])  # type: ignore[return-value]


def adapt(module: Any, images: Tensor | None = None, *, image_shape: tuple[int, ...] | None = None,
          input_shape: str = "auto", input_range: str = "auto", output: str = "auto", prior: str = "auto",
          spread: str = "auto", stochastic: bool = False,
          class_names: tuple[str, ...] | list[str] = (), name: str | None = None,
          labels: Tensor | np.ndarray | None = None, condition: str = "none", classes: int | None = None,
          condition_format: str = "auto", features: FeatureScale | None = None,
          encode_output: Callable[[Any], Any] | None = None,
          decode_output: Callable[[Any], Any] | None = None,
          decode_input: Callable[[Tensor], Any] | None = None) -> ForeignModel:
    """Wrap a foreign model so that it answers the contract, settling what its outputs leave open.

    ``images`` [N, C, H, W] float in [0, 1] (optional, but needed for ``"auto"`` readings other than
    the obvious ones) are what the calibration reconstructs. Keywords, each ``"auto"`` by default:
    ``input_shape`` ("image" / "flat"), ``input_range`` ("unit" for [0, 1] / "symmetric" for
    [-1, 1]), ``output`` ("pixels" / "logits" / "tanh"), ``prior`` ("normal" / "none"; auto: a
    model whose encoder gives a spread is a VAE with a N(0, I) prior), ``spread`` ("std" /
    "logvar": what an unnamed spread holds). ``stochastic=True`` accepts an encoder whose code is a
    random draw (see the module's docstring). What the evidence does not settle raises AdapterError
    naming the keywords to set.

    A class-conditional model: ``condition="class"`` with ``classes=K`` (else the number of
    ``class_names``, else the labels' largest + 1) and the images' ``labels`` [N] (class indices;
    class 0 for each image without them); ``condition_format`` ("index" / "onehot" / "concat")
    says how the model takes the class (see the module's docstring). ``decode_input`` turns the
    codes [B, D] into what the model's decode takes; ``encode_output`` / ``decode_output`` read
    what encode and decode return.

    A tabular model: ``features`` (the ``FeatureScale`` of ``given_features``) with ``images`` the
    rows it gives, [N, 1, 1, F] in [0, 1]; the model reads rows [B, F] in their own units and its
    decoder gives rows in the same units (no input range or output to settle).

    Examples:
        >>> import torch
        >>> class Tiny(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.enc, self.dec = torch.nn.Linear(4, 2), torch.nn.Linear(2, 4)
        ...     def encode(self, x): return self.enc(x.flatten(1))
        ...     def decode(self, z): return torch.sigmoid(self.dec(z))
        >>> model = adapt(Tiny(), image_shape=(1, 2, 2))
        >>> model.describe().latent_dim, model.reading.output
        (2, 'pixels')
    """
    for value, allowed, keyword in ((input_shape, INPUT_SHAPES, "input_shape"), (input_range, INPUT_RANGES, "input_range"),
                                    (output, OUTPUTS, "output"), (prior, ("normal", "none"), "prior"),
                                    (spread, SPREADS, "spread"), (condition_format, CONDITION_FORMATS, "condition_format")):
        if value != "auto" and value not in allowed:
            raise AdapterError(f"{keyword} must be 'auto' or one of {allowed}, got {value!r}")
    if not isinstance(stochastic, bool):
        raise AdapterError(f"stochastic must be True or False, got {stochastic!r}")
    _methods(module)  # refuse early, with its message
    y = None if labels is None else torch.as_tensor(np.asarray(labels)).long().flatten()
    k = _classes_of(condition, classes, tuple(class_names), y, condition_format)
    if images is not None:
        images = images[:CALIBRATION_IMAGES].float()
    if features is not None:
        image_shape = _features_shape(features, images, image_shape, input_shape, input_range, output)
        input_shape, input_range, output = "flat", "unit", "pixels"  # unused: the FeatureScale says
    shape = _image_shape_from(images, image_shape)
    probe = images if images is not None else torch.full((2, *shape), 0.5)
    probe_y = None
    if k:
        probe_y = (torch.zeros(len(probe), dtype=torch.long) if y is None or images is None else
                   y[:len(probe)].clamp_min(0))
    label = name or type(module).__name__
    if hasattr(module, "eval"):
        module.eval()
    model = ForeignModel(module, Reading(shape), name=label, class_names=tuple(class_names),
                         encode_output=encode_output, decode_output=decode_output, decode_input=decode_input)
    start = Reading(shape, features=features)
    if k:
        reading = _settle_condition(model, probe, probe_y, replace(start, classes=k), input_shape, condition_format)
        if y is None:
            reading = replace(reading, notes=(*reading.notes, "calibrated with class 0 for every image (no labels)"))
    else:
        reading = _settle_input_shape(model, probe, start, input_shape)
    ranges = INPUT_RANGES if input_range == "auto" else (input_range,)
    with torch.no_grad():
        encoded = [model._encode_once(probe, replace(reading, input_range=rng), probe_y) for rng in ranges]
        reading = _settle_draws(model, probe, replace(reading, input_range=ranges[0]), encoded[0], stochastic,
                                probe_y)
    latent_shape = tuple(int(v) for v in encoded[0].mean.shape[1:]) or (1,)
    gives_spread = encoded[0].spread is not None or reading.draws > 1
    has_prior = gives_spread if prior == "auto" else prior == "normal"
    reading = replace(reading, latent_shape=latent_shape, prior=has_prior)
    questions = []
    if has_prior and encoded[0].spread is not None:
        try:
            reading = _settle_spread(reading, encoded, spread)
        except AdapterError as exc:
            questions.append(str(exc))
    try:
        reading = (_settle_features(model, probe, reading, probe_y) if features is not None else
                   _settle_output(model, images, reading, input_range, output, probe_y))
    except ModelFailed:  # NaN, or a decode that raised: nothing else matters until it is fixed
        raise
    except AdapterError as exc:
        questions.append(str(exc))
    if len(questions) == 1:
        raise AdapterError(questions[0])
    if questions:
        raise AdapterError("the evidence leaves two things open; settle both (the keywords go together in one call):\n"
                           + "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1)))
    model.reading = reading
    return model


def _features_shape(features: FeatureScale, images: Tensor | None, image_shape: tuple[int, ...] | None,
                    input_shape: str, input_range: str, output: str) -> tuple[int, int, int]:
    """The [1, 1, F] shape a tabular model's rows are kept in; AdapterError, in one sentence, for an
    image keyword given with ``features``."""
    if not isinstance(features, FeatureScale):
        raise AdapterError(f"features= takes the FeatureScale of vaescope.adapter.given_features, got "
                           f"{type(features).__name__}; vs.explore(model, features=X) builds it from the rows X [N, F]")
    shape = (1, 1, len(features.names))
    given = {"image_shape": image_shape is not None, "input_range": input_range != "auto", "output": output != "auto",
             "input_shape": input_shape not in ("auto", "flat")}
    if any(given.values()):
        keyword = next(k for k, v in given.items() if v)
        raise AdapterError(f"{keyword}= is for images; with features= the model reads rows [B, F] in the features' own "
                           "units and its decoder gives rows in the same units: leave it out")
    if images is not None and tuple(images.shape[1:]) != shape:
        raise AdapterError(f"the rows are {list(images.shape[1:])} but features= names {shape[2]} features")
    return shape


def _settle_features(model: ForeignModel, probe: Tensor, reading: Reading, y: Tensor | None) -> Reading:
    """A tabular model reads and writes its features in their own units: nothing to choose, but its
    encoder and decoder must give finite values (one sentence counting the rows otherwise)."""
    with torch.no_grad():
        mean, _ = model._encode_raw(probe, reading, y)
        _finite(mean, "encode", "rows given")
        raw, _ = model._decode_values(mean.float().flatten(1), reading, y)
        _finite(raw, "decode", "rows given (decoding their codes)")
    return replace(reading, notes=(*reading.notes, "features given and read in their own units"))


def _classes_of(condition: str, classes: int | None, class_names: tuple[str, ...], labels: Tensor | None,
                condition_format: str) -> int:
    """K for ``condition="class"`` (the keyword, else the class names, else the labels), 0 without."""
    if condition not in CONDITIONS:
        raise AdapterError(f"condition must be one of {CONDITIONS} for a model vaescope did not define, got "
                           f"{condition!r}")
    if condition == "none":
        if classes is not None or condition_format != "auto":
            raise AdapterError("classes= and condition_format= go with condition='class'; pass condition='class' "
                               "for a model that encodes and decodes with the class")
        return 0
    if classes is None:
        classes = len(class_names) or (int(labels.max()) + 1 if labels is not None and len(labels) else 0)
    if isinstance(classes, bool) or not isinstance(classes, int | np.integer) or not 1 <= classes <= MAX_CLASSES:
        raise AdapterError(f"condition='class' needs the number of classes the model takes, classes=K with K in 1.."
                           f"{MAX_CLASSES}, got {classes!r} (pass classes=, or labels or class_names to count them)")
    if labels is not None and len(labels) and int(labels.max()) >= classes:
        raise AdapterError(f"labels go up to {int(labels.max())} but the model takes {classes} classes "
                           f"(classes={classes}); its classes are 0..{classes - 1}")
    return int(classes)


def _takes_second_argument(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` can be called with two positional arguments (by its signature; True when the
    signature cannot be read, so that both ways are tried)."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _needs_second_argument(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s signature requires a second positional argument (a class, most likely)."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(required) >= 2


def _conditional_hint(model: ForeignModel) -> str:
    """Why a model whose encode failed looks class-conditional, and the keywords for it; "" if it does not."""
    why = ("it has embed_class, as AntixK's ConditionalVAE has" if callable(getattr(model.module, "embed_class", None))
           else "its encode and decode take a second argument" if _needs_second_argument(model._encode_fn)
           and _needs_second_argument(model._decode_fn) else "")
    return (f". It looks class-conditional ({why}): pass condition='class' and classes=K with the images' labels, "
            "e.g. vs.explore(model, images=x, labels=y, condition='class', classes=10)") if why else ""


def _settle_input_shape(model: ForeignModel, probe: Tensor, reading: Reading, input_shape: str) -> Reading:
    """Try image inputs, then flat ones, unless the keyword says which."""
    candidates = INPUT_SHAPES if input_shape == "auto" else (input_shape,)
    errors = []
    for shape in candidates:
        trial = replace(reading, input_shape=shape)
        try:
            with torch.no_grad():
                model._encode_once(probe[:2], trial)
            return trial
        except AdapterError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            errors.append(f"{shape} inputs: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    raise AdapterError(f"encode failed on {' and on '.join(errors)}; pass input_shape='image' or 'flat' "
                       "(and image_shape=(C, H, W)) to say what the model takes" + _conditional_hint(model))


def _settle_condition(model: ForeignModel, probe: Tensor, y: Tensor, reading: Reading, input_shape: str,
                      condition_format: str) -> Reading:
    """How a class-conditional model takes the class, and its input shape: each way the signature
    allows (one argument: ``concat``; two: ``index``, then ``onehot``) is tried on encode and decode;
    the one that runs is kept. When two run and give different results, the adapter asks."""
    shapes = INPUT_SHAPES if input_shape == "auto" else (input_shape,)
    if condition_format != "auto":
        formats: tuple[str, ...] = (condition_format,)
    elif _takes_second_argument(model._encode_fn) and _takes_second_argument(model._decode_fn):
        formats = ("index", "onehot")
    else:
        formats = ("concat",)
    failures: list[str] = []
    for shape in shapes:
        worked: dict[str, tuple[Tensor, Tensor]] = {}
        for fmt in formats:
            trial = replace(reading, input_shape=shape, condition_format=fmt)
            try:
                with torch.no_grad():
                    mean = model._encode_once(probe[:2], trial, y[:2]).mean
                    trial = replace(trial, latent_shape=tuple(mean.shape[1:]) or (1,))
                    values, _ = model._decode_values(mean.float().flatten(1), trial, y[:2])
            except (AdapterError, RuntimeError, ValueError, TypeError, IndexError) as exc:
                failures.append(f"{shape} inputs with condition_format={fmt!r}: {type(exc).__name__}: "
                                f"{(str(exc).splitlines() or [''])[0][:160]}")
                continue
            worked[fmt] = (mean.float(), values.float())
        if not worked:
            continue
        first, *others = worked
        agree = all(torch.allclose(worked[first][0], worked[o][0], atol=1e-5, equal_nan=True)
                    and torch.allclose(worked[first][1], worked[o][1], atol=1e-5, equal_nan=True) for o in others)
        if not agree:
            raise AdapterError(
                f"the model runs with the class given as {' and as '.join(FORMAT_WORDS[f] for f in worked)}, and "
                "the results differ, so the evidence cannot tell how it takes the class. Say which: "
                + " or ".join(f"condition_format={f!r}" for f in worked)
                + f", e.g. vs.explore(model, images=..., labels=..., condition='class', classes={reading.classes}, "
                f"condition_format={first!r}) (the same keywords for vaescope.adapter.adapt and vs.export)")
        how = "the keyword" if condition_format != "auto" else (
            "the only way it runs" if len(formats) == 1 or not others else "every way it runs agrees")
        return replace(reading, input_shape=shape, condition_format=first,
                       notes=(*reading.notes, f"class given as {FORMAT_WORDS[first]} ({how})"))
    raise AdapterError(
        f"the model fails with the class given every way the adapter tries ({'; '.join(failures)}). Say how it "
        "takes the class: condition_format='index' (encode(x, y), decode(z, y), y [B] int64), 'onehot' (y one-hot "
        "[B, K]) or 'concat' (encode and decode take one argument, the one-hot class joined to it), and "
        "input_shape='image' or 'flat'; a model that takes no class needs no condition=")


def _settle_draws(model: ForeignModel, probe: Tensor, reading: Reading, first: Parsed, stochastic: bool,
                  y: Tensor | None = None) -> Reading:
    """Encode the probe a second time: a code that changes between two calls in eval mode is a random
    draw, refused unless ``stochastic`` (then each code is the mean of STOCHASTIC_DRAWS encodes)."""
    second = model._encode_once(probe, reading, y)
    pairs = [(first.mean, second.mean)] + ([] if first.spread is None or second.spread is None else
                                           [(first.spread, second.spread)])
    differs = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
    scale = float(first.mean.float().abs().max())
    if not differs > RANDOM_TOLERANCE * (1 + scale):  # "not >": a NaN difference is not evidence of a draw
        return reading
    if not stochastic:
        raise AdapterError(
            f"encode gave different codes for the same {len(probe)} images on two calls in eval mode (they differ "
            f"by up to {differs:.3g}; the codes reach {scale:.3g}): it returns a random draw (mean + std * noise), "
            "not the code's mean, and a map of draws moves every time it is drawn. Return the mean (e.g. "
            "encode_output=lambda out: {'mean': ..., 'logvar': ...}), or pass stochastic=True to explore it as it "
            f"is: each image's code is then the mean of {STOCHASTIC_DRAWS} encodes and its spread their standard "
            "deviation, e.g. vs.explore(model, images=..., stochastic=True) (the same keyword for "
            "vaescope.adapter.adapt and vs.export).")
    note = (f"the encoder returns random draws (stochastic=True): a code is the mean of {STOCHASTIC_DRAWS} seeded "
            "encodes, " + ("its spread the model's own" if first.spread is not None else
                           "its spread their standard deviation"))
    return replace(reading, draws=STOCHASTIC_DRAWS, notes=(*reading.notes, note))


def _settle_spread(reading: Reading, encoded: list[Parsed], spread: str) -> Reading:
    """What the encoder's spread holds: the keyword, its name, or the evidence of negative values
    in any of the encodes (one per input range tried); else AdapterError naming ``spread=``."""
    first = encoded[0]
    values = torch.cat([e.spread.float().flatten() for e in encoded if e.spread is not None])
    kind, why = spread_kind(values, first.named, spread, first.key)
    return replace(reading, spread=kind, notes=(*reading.notes, f"spread read as {SPREAD_WORDS[kind]} ({why})"))


def _call(**keywords: str) -> str:
    """The vs.explore call that sets ``keywords``, as the user would type it."""
    return "vs.explore(model, images=..., " + ", ".join(f"{k}={v!r}" for k, v in keywords.items()) + ")"


def _finite(values: Tensor, what: str, of: str) -> None:
    """Refuse, in one sentence, values [B, ...] with NaN or infinities: how many of the B rows."""
    bad = ~torch.isfinite(values.float()).flatten(1).all(1)
    count = int(bad.sum())
    if count:
        kind = "NaN" if bool(torch.isnan(values.float()).any()) else "infinite values"
        raise ModelFailed(f"{what} returned {kind} for {count:,} of the {len(values):,} {of}; the adapter cannot read "
                           "a model that gives them (a diverged run or broken weights?): fix the model, or pass "
                           f"{'encode_output' if what == 'encode' else 'decode_output'}= to return finite values")


def _settle_output(model: ForeignModel, images: Tensor | None, reading: Reading, input_range: str,
                   output: str, y: Tensor | None = None) -> Reading:
    """Choose the input range and output reading that reconstruct the calibration images with clearly
    the least error: every reading is tried, its outputs clipped to its range (``to_unit``), and
    the best is kept when its mean squared error is below the mean image's and at most CLEAR_MARGIN
    of the next best's. A decoder output named ``logits`` is read only as logits. An encoder or
    decoder that gives NaN is refused first, counting the images."""
    ranges = INPUT_RANGES if input_range == "auto" else (input_range,)
    outputs = OUTPUTS if output == "auto" else (output,)
    if images is None:
        if len(ranges) == 1 and len(outputs) == 1:
            return replace(reading, input_range=ranges[0], output=outputs[0],
                           notes=(*reading.notes, "input range and output set by keywords"))
        return _settle_without_images(model, reading, ranges, outputs)
    errors: dict[tuple[str, str], float] = {}
    for rng in ranges:
        trial = replace(reading, input_range=rng)
        with torch.no_grad():
            mean, _ = model._encode_raw(images, trial, y)
            _finite(mean, "encode", "images given")
            raw, named = model._decode_values(mean.float().flatten(1), trial, y)
            _finite(raw, "decode", "images given (decoding their codes)")
        for out in outputs:
            if named == "logits" and out != "logits" and output == "auto":
                continue  # the decoder's own name for its output settles the kind
            errors[(rng, out)] = float((to_unit(raw.float().cpu(), out) - images.cpu()).pow(2).mean())
    if len(ranges) == 1 and len(outputs) == 1:
        return replace(reading, input_range=ranges[0], output=outputs[0],
                       notes=(*reading.notes, "input range and output set by keywords"))
    ranked = sorted(errors.items(), key=lambda kv: kv[1])
    baseline = float((images - images.mean(0, keepdim=True)).pow(2).mean())  # predicting the mean image
    (best, best_err), runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    if best_err < baseline and (runner_up is None or best_err <= CLEAR_MARGIN * runner_up[1]):
        against = ("the only reading tried" if runner_up is None else
                   f"next best {runner_up[1]:.4f}, input_range={runner_up[0][0]!r}, output={runner_up[0][1]!r}")
        note = f"input range and output chosen by reconstruction error on {len(images)} images: {best_err:.4f} ({against})"
        return replace(reading, input_range=best[0], output=best[1], notes=(*reading.notes, note))
    tried = "\n".join(f"  input_range={r!r}, output={o!r}: {e:.4f}" for (r, o), e in ranked)
    raise AdapterError(
        f"cannot tell how this model reads and writes pixels: no reading reconstructs the {len(images)} images "
        f"clearly best (a reading is taken when its mean squared error is below the mean image's, {baseline:.4f}, "
        f"and at most {CLEAR_MARGIN} of the next best's). Each reading's error (outputs clipped to its range):\n"
        f"{tried}\nSay how the model was trained, e.g. {_call(input_range=best[0], output=best[1])} for the best "
        "here (the same keywords for vaescope.adapter.adapt and vs.export). Pass output='pixels', 'logits' or "
        "'tanh' and input_range='unit' ([0, 1]) or 'symmetric' ([-1, 1]).")


def _settle_without_images(model: ForeignModel, reading: Reading, ranges: tuple[str, ...],
                           outputs: tuple[str, ...]) -> Reading:
    """Without images there is no reconstruction to compare: a decoder whose values all lie in [0, 1]
    gives pixels (and was trained on [0, 1] images); anything else needs ``output=``. Inputs are in
    [0, 1] unless ``input_range`` says otherwise."""
    rng = ranges[0] if len(ranges) == 1 else "unit"
    if len(outputs) == 1:
        return replace(reading, input_range=rng, output=outputs[0], notes=(
            *reading.notes, "output set by keyword" + ("" if len(ranges) == 1 else "; inputs in [0, 1]: no images")))
    z = torch.randn(16, max(1, math.prod(reading.latent_shape)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw, named = model._decode_values(z, reading)
    _finite(raw, "decode", "codes drawn from N(0, I)")
    lo, hi = float(raw.min()), float(raw.max())
    if named == "logits":
        out, why = "logits", "the decoder names its output 'logits'"
    elif lo >= 0 and hi <= 1:
        out, why = "pixels", "decoded values all in [0, 1]"
    else:
        raise AdapterError(
            f"decode gives values in [{lo:.3g}, {hi:.3g}] for codes drawn from N(0, I): without images the adapter "
            "cannot tell pixels that overshoot [0, 1], logits and tanh values in [-1, 1] apart. Give images "
            "(vs.explore(model, images=...)), or pass output='pixels', 'logits' or 'tanh' (and input_range='unit' "
            "or 'symmetric') to say how the model was trained.")
    return replace(reading, input_range=rng, output=out, notes=(*reading.notes, f"output read without images: {why}"))


def subset_rows(n: int, limit: int | None, seed: int = SUBSET_SEED) -> np.ndarray | None:
    """Sorted row indices of a seeded subset of ``limit`` of ``n`` rows; None when all are kept."""
    if limit is None or n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


@dataclass(frozen=True)
class Given:
    """Images a user handed over, with their labels, after a seeded subset where there were too many."""

    images: Tensor  # [n, C, H, W] float in [0, 1]
    labels: Tensor | None  # [n] int64, -1 unknown; None: no labels
    class_names: tuple[str, ...] | None  # named by string labels or class_names; None: not named
    total: int  # images given
    subset: bool  # whether a seeded subset (SUBSET_SEED) was kept

    def origin(self, where: str, what: str = "images") -> str:
        """Where the images came from, in words, e.g. "a seeded subset (seed 0) of 70,000 of the
        70,001 images given to vs.explore"."""
        if not self.subset:
            return f"the {len(self.images):,} {what} given to {where}"
        return (f"a seeded subset (seed {SUBSET_SEED}) of {len(self.images):,} of the {self.total:,} {what} given to "
                f"{where}")


def given_images(images: Any, labels: Any = None, class_names: Any = None, *, limit: int | None = None) -> Given:
    """Images (see ``images_as_tensor``) with their ``labels`` (see ``labels_as_classes``), both cut
    to the same seeded subset of ``limit`` when there are more: the labels are counted against
    every image given, then the same rows of both are kept. A torch ``Dataset`` is read only at
    the rows kept. Raises InputError for what it cannot read.

    Examples:
        >>> import numpy as np
        >>> given = given_images(np.zeros((7, 1, 2, 2), np.uint8), ["b", "a"] * 3 + ["c"], limit=5)
        >>> len(given.images), given.class_names, given.origin("vs.explore")
        (5, ('a', 'b', 'c'), 'a seeded subset (seed 0) of 5 of the 7 images given to vs.explore')
    """
    n = _count(images)
    y, names = (None, None if class_names is None else tuple(str(c) for c in class_names))
    if labels is not None:
        y, names = labels_as_classes(labels, n, class_names)
    rows = subset_rows(n, limit)
    x, own = _rows_of(images, rows)
    if y is not None:
        labels_t: Tensor | None = torch.from_numpy(y if rows is None else y[rows])
    else:
        labels_t = own
    return Given(x, labels_t, names, n, rows is not None)


def given_features(features: Any, labels: Any = None, class_names: Any = None, feature_names: Any = None, *,
                   limit: int | None = None) -> tuple[Given, FeatureScale]:
    """Rows of a table, ``features`` [N, F] (a numpy array, a torch tensor, or a pandas DataFrame,
    whose column names are the default ``feature_names``), with their ``labels`` (see
    ``labels_as_classes``), as (the rows kept as "images" [n, 1, 1, F] in [0, 1], their scale).
    Each feature's [0, 1] stands for its min..max over all N rows, widened by ``FEATURE_MARGIN`` of
    that span on each side (a constant feature: its value ± 0.5). Above ``limit`` rows, a seeded
    subset of the rows and the same labels is kept. Raises InputError in one sentence for what it
    cannot read.

    Examples:
        >>> import numpy as np
        >>> given, scale = given_features(np.array([[0.0, 10.0], [1.0, 30.0]]), feature_names=["a", "b"])
        >>> given.images.shape, scale.names, scale.lo
        (torch.Size([2, 1, 1, 2]), ('a', 'b'), (-0.1, 8.0))
    """
    columns = getattr(features, "columns", None)
    if columns is not None and callable(getattr(features, "to_numpy", None)):  # a pandas DataFrame
        array = features.to_numpy()
        feature_names = feature_names if feature_names is not None else [str(c) for c in columns]
    elif isinstance(features, Tensor):
        array = features.detach().cpu().numpy()
    elif isinstance(features, np.ndarray):
        array = features
    else:
        raise InputError(f"features must be rows of numbers [N, F] (a numpy array, a torch tensor or a pandas "
                         f"DataFrame), got {type(features).__name__}")
    if array.ndim != 2 or min(array.shape) < 1:
        raise InputError(f"features must be rows of numbers [N, F] (one row per example, one column per feature), "
                         f"got shape {list(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise InputError(f"features must be numbers (float or integer), got {array.dtype}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(1).sum())
        raise InputError(f"features must be finite: {bad:,} of the {len(values):,} rows hold NaN or infinite values "
                         "(drop or impute them first)")
    n, f = values.shape
    if feature_names is None:
        names = tuple(f"f{i}" for i in range(f))
    else:
        if isinstance(feature_names, str | bytes) or not hasattr(feature_names, "__len__"):
            raise InputError(f"feature_names must be a list of {f} names, one per column of features, got "
                             f"{type(feature_names).__name__}")
        names = tuple(str(name) for name in feature_names)
        if len(names) != f:
            raise InputError(f"feature_names must name each of the {f} columns of features, got {len(names)} names")
        if any(not name.strip() or len(name) > MAX_CLASS_NAME_CHARS for name in names):
            raise InputError(f"feature_names must be non-empty names of at most {MAX_CLASS_NAME_CHARS} characters")
    y, class_list = (None, None if class_names is None else tuple(str(c) for c in class_names))
    if labels is not None:
        y, class_list = labels_as_classes(labels, n, class_names)
    lo, hi = values.min(0), values.max(0)
    span = hi - lo
    flat = span <= 1e-12 * np.maximum(1.0, np.abs(lo))
    lo, hi = np.where(flat, lo - 0.5, lo - FEATURE_MARGIN * span), np.where(flat, hi + 0.5, hi + FEATURE_MARGIN * span)
    rows = subset_rows(n, limit)
    kept = values if rows is None else values[rows]
    unit = torch.from_numpy(((kept - lo) / (hi - lo)).astype(np.float32)).clamp(0, 1).reshape(len(kept), 1, 1, f)
    labels_t = None if y is None else torch.from_numpy(y if rows is None else y[rows])
    scale = FeatureScale(names, tuple(round(float(v), 12) for v in lo), tuple(round(float(v), 12) for v in hi))
    return Given(unit, labels_t, class_list, n, rows is not None), scale


def labels_as_classes(labels: Any, n: int, class_names: Any = None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """(labels [n] int64 with -1 where unknown, the class names or None) from one label per image.

    Integer labels (and whole floats) are classes 0..K-1, a negative one unknown. String labels are
    class names: numbered in the order of ``class_names`` when given (a label not among them is
    refused), else in sorted order. Anything else is refused in one InputError sentence.
    """
    names = None if class_names is None else tuple(str(c) for c in class_names)
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        array = np.asarray(labels)
    except (ValueError, TypeError) as exc:
        raise InputError(f"labels must be one class per image, as integers or strings: {_first_line(exc)}") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        hint = " (one-hot rows? pass labels.argmax(1))" if array.ndim == 2 and len(array) == n else ""
        raise InputError(f"labels must be one class per image, of shape [{n}], got {list(array.shape)}{hint}")
    if len(array) != n:
        raise InputError(f"labels must give one label per image: {len(array)} labels for {n} images")
    if isinstance(labels, list | tuple) and array.dtype.kind in "US":  # numpy turned a mix into strings
        array = np.array(labels, dtype=object)
    if array.dtype == object:
        values = array.tolist()
        if all(isinstance(v, str | bytes) for v in values):
            array = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values], dtype=str)
        elif all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
            array = np.array(values, np.int64)
        else:
            text = next((v for v in values if isinstance(v, str | bytes)), None)
            other = next(v for v in values if not isinstance(v, str | bytes))
            found = f"{other!r:.40} and {text!r:.40}" if text is not None else f"{type(other).__name__} {other!r:.40}"
            raise InputError(f"labels must be integers or strings (class names), not a mix: found {found}")
    if array.dtype.kind in "US":
        words = np.char.decode(array, "utf-8", "replace") if array.dtype.kind == "S" else array
        found = np.unique(words)
        order = names if names is not None else tuple(str(w) for w in found)
        index = {w: i for i, w in enumerate(order)}
        missing = [str(w) for w in found if str(w) not in index]
        if missing:
            shown = ", ".join(repr(w) for w in order[:8]) + (", ..." if len(order) > 8 else "")
            raise InputError(f"label {missing[0]!r} is not among the class_names ({shown}); give class_names that "
                             "name every label, or leave class_names out to number the labels in sorted order")
        lookup = np.array([index[str(w)] for w in found], np.int64)
        return lookup[np.searchsorted(found, words)], order
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            raise InputError(f"labels must be whole numbers (classes 0, 1, ...) or strings, got "
                             f"{float(array[~whole][0]):g} among them")
    elif array.dtype.kind not in "iu":
        raise InputError(f"labels must be integers or strings (class names), got {array.dtype}")
    y = array.astype(np.int64)
    return np.where(y < 0, -1, y), names


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _is_dataset(images: Any) -> bool:
    return (hasattr(images, "__getitem__") and hasattr(images, "__len__")
            and not isinstance(images, np.ndarray | Tensor | str | bytes | Mapping))


def _count(images: Any) -> int:
    """How many images ``images`` holds, without reading them (InputError for what is not images)."""
    if isinstance(images, np.ndarray | Tensor):
        if images.ndim < 2:
            raise InputError(f"images must be [N, C, H, W] (C = 1 or 3), [N, H, W], [N, H, W, C] or flat "
                             f"[N, C*H*W], got {list(images.shape)}")
        return int(images.shape[0])
    if _is_dataset(images):
        return len(images)
    raise InputError(f"images must be a numpy array, a torch tensor or a torch Dataset, got {type(images).__name__}")


def values_per_image(images: Any) -> int:
    """Values (pixels x channels) in one image of ``images``, from its shape or its first item."""
    if isinstance(images, np.ndarray | Tensor):
        return max(1, math.prod(int(v) for v in images.shape[1:]))
    if _is_dataset(images) and len(images):
        x, _ = _from_dataset(images, np.array([0]))
        return max(1, math.prod(int(v) for v in x.shape[1:]))
    return 1


def images_as_tensor(images: Any, limit: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Images from a numpy array, a torch tensor or a torch ``Dataset`` as float [N, C, H, W] in
    [0, 1], with labels [N] when a dataset yields (image, label) pairs. ``limit`` keeps a seeded
    subset (``given_images`` keeps the same rows of labels given apart). Raises InputError for
    what it cannot read."""
    return _rows_of(images, subset_rows(_count(images), limit))


def _rows_of(images: Any, rows: np.ndarray | None) -> tuple[Tensor, Tensor | None]:
    """``images`` at ``rows`` (None: all) as float [n, C, H, W] in [0, 1], with a dataset's labels."""
    labels = None
    if _is_dataset(images):
        images, labels = _from_dataset(images, rows)
        rows = None
    if isinstance(images, np.ndarray):
        if images.dtype == object:
            raise InputError("images must be a numeric array, not an array of objects")
        images = torch.from_numpy(np.ascontiguousarray(images if rows is None else images[rows]))
        rows = None
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a numpy array, a torch tensor or a torch Dataset, got {type(images).__name__}")
    if rows is not None:
        images = images[torch.from_numpy(rows).to(images.device)]
    x = images.detach().cpu()
    if x.ndim == 3:  # [N, H, W] grey
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # channels last
        x = x.permute(0, 3, 1, 2)
    if x.ndim == 2:
        x = _unflatten(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"images must be [N, C, H, W] (C = 1 or 3), [N, H, W], [N, H, W, C] or flat [N, C*H*W], "
                         f"got {list(images.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255, labels
    if not x.is_floating_point():
        raise InputError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise InputError("images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; a model fed [-1, 1] "
                         "is handled by the adapter (input_range='symmetric'): pass images as (x + 1) / 2")
    return x.clamp(0, 1), labels


def _unflatten(x: Tensor) -> Tensor:
    d = x.shape[1]
    side = math.isqrt(d)
    if side * side == d:
        return x.reshape(len(x), 1, side, side)
    side = math.isqrt(d // 3)
    if d % 3 == 0 and side * side * 3 == d:
        return x.reshape(len(x), 3, side, side)
    raise InputError(f"flat images of {d} values are not square grey or RGB images; reshape them to [N, C, H, W]")


def _from_dataset(dataset: Any, rows: np.ndarray | None) -> tuple[Tensor, Tensor | None]:
    """Stack a torch Dataset's items at ``rows`` (None: all; (image, label) pairs or images); PIL
    images become arrays. Only the items at ``rows`` are read."""
    indices = range(len(dataset)) if rows is None else rows
    xs, ys = [], []
    for i in indices:
        item = dataset[int(i)]
        image, label = (item[0], item[1]) if isinstance(item, tuple | list) and len(item) >= 2 else (item, None)
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            image = np.array(image)
        try:
            xs.append(torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image)
            if label is not None:
                ys.append(int(label))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"item {int(i)} of the dataset is not an (image, label) pair of numbers: {exc}") from None
    if not xs:
        raise InputError("the dataset is empty")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise InputError(f"the dataset's images have different shapes {sorted(shapes)[:4]}; resize them first")
    return torch.stack(xs), (torch.tensor(ys) if len(ys) == len(xs) else None)
