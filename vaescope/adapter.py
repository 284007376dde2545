"""One adapter from any encoder / decoder pair to the model contract (``vaescope.contract``).

A model vaescope did not define is explored by duck typing: an object with ``encode`` and
``decode`` methods (or ``encoder`` and ``decoder`` modules, as pythae's models have). The adapter
understands the shapes the ecosystem uses:

- ``encode`` may return a tensor (a deterministic code), a ``(mean, spread)`` tuple or list (the
  PyTorch examples' VAE, AntixK's PyTorch-VAE), a dict or ``ModelOutput`` (``mu`` / ``mean`` /
  ``loc`` / ``embedding`` with ``logvar`` / ``log_var`` / ``log_covariance`` / ``std`` / ``scale``
  / ``log_sigma`` ...), a ``torch.distributions.Normal``, or an object with ``.latent_dist``
  (diffusers), ``.mean`` and ``.logvar`` / ``.std``, or ``.mode()``. Spatial codes [B, C, h, w]
  are flattened to [B, D].
- ``decode`` may return pixels in [0, 1], logits, values in [-1, 1] (tanh), or a dict / object
  holding them (``.sample``, ``reconstruction``, ``recon_x``, ``x_hat``, ``logits``, ...).
- Inputs may be images [B, C, H, W] or flat vectors [B, C*H*W]; inputs in [0, 1] or [-1, 1].

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
"""

from __future__ import annotations

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

OUTPUTS = ("pixels", "logits", "tanh")
INPUT_RANGES = ("unit", "symmetric")
INPUT_SHAPES = ("image", "flat")
SPREADS = ("std", "logvar")
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


class AdapterError(InputError):
    """A foreign model cannot be read as it is; the message names the keyword that settles it."""


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
                 decode_output: Callable[[Any], Any] | None = None) -> None:
        self.module = module
        self.reading = reading
        self.name = name
        self.class_names = tuple(str(c) for c in class_names)
        self._encode_fn, self._decode_fn = _methods(module)
        self._encode_output = encode_output
        self._decode_output = decode_output

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
        kind = "VAE" if r.prior else "autoencoder"
        details = [f"inputs {'flat' if r.input_shape == 'flat' else 'images'} in "
                   f"{'[0, 1]' if r.input_range == 'unit' else '[-1, 1]'}", f"decoder gives {r.output}",
                   f"code shape {list(r.latent_shape)}", *r.notes]
        prior_note = "" if r.prior else (
            "This model's encoder gives one code per image and no spread, so it has no prior: codes drawn from "
            "N(0, I) may land where no image is, and decode to noise.")
        summary = (f"Your model, {self.name}, explored through vaescope's adapter: "
                   + ("a VAE whose codes are compared with a standard normal prior." if r.prior else
                      "an autoencoder with one code per image."))
        return Description(family="foreign", title=f"{type(self.module).__name__} ({kind}, your model)",
                           summary=summary, image_shape=r.image_shape, latent_dim=max(1, math.prod(r.latent_shape)),
                           class_names=self.class_names, condition=Condition(), has_prior=r.prior,
                           prior_note=prior_note, details=tuple(details))

    @torch.no_grad()
    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] in [0, 1] -> the posterior, codes flattened to [B, D]."""
        mean, logvar = self._encode_raw(x)
        mean = mean.float().flatten(1)
        if logvar is None or not self.reading.prior:
            return Posterior.point(mean)
        return Posterior(mean, logvar.float().flatten(1).clamp(-30, 20))

    @torch.no_grad()
    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """z [B, D] -> pixels [B, C, H, W] in [0, 1]."""
        return to_unit(self._decode_raw(z).float(), self.reading.output)

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, temperature^2 I) [n, D]: the standard prior a foreign VAE is assumed to have."""
        d = self.describe().latent_dim
        return temperature * torch.randn(n, d, generator=generator, device=self.device)

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        return posterior.kl_per_dim() if self.reading.prior else torch.zeros_like(posterior.mean)

    # -- raw calls --
    def _model_input(self, x: Tensor, reading: Reading) -> Tensor:
        x = x.to(self.device, torch.float32)
        if reading.input_range == "symmetric":
            x = 2 * x - 1
        return x.flatten(1) if reading.input_shape == "flat" else x

    def _encode_once(self, x: Tensor, reading: Reading) -> Parsed:
        """One call of the model's encode on x [B, C, H, W] in [0, 1], as read by ``reading``."""
        out = self._encode_fn(self._model_input(x, reading))
        if self._encode_output is not None:
            out = self._encode_output(out)
        return parse_encoded(out)

    def _encode_raw(self, x: Tensor, reading: Reading | None = None) -> tuple[Tensor, Tensor | None]:
        """(mean, log-variance or None) in the model's own code shape [B, ...]. A random encoder
        (``reading.draws`` > 1) is encoded that many times under a fixed seed: the mean of the draws,
        and the model's own spread, or else the draws' variance."""
        reading = reading or self.reading
        if reading.draws <= 1:
            parsed = self._encode_once(x, reading)
            spread = parsed.spread
            return parsed.mean, None if spread is None else _as_logvar(spread.float(), reading.spread)
        with _seeded(self.device):
            draws = [self._encode_once(x, reading) for _ in range(reading.draws)]
        means = torch.stack([d.mean.float() for d in draws])
        if draws[0].spread is not None:
            return means.mean(0), _as_logvar(torch.stack([d.spread.float() for d in draws]).mean(0), reading.spread)
        return means.mean(0), means.var(0).clamp_min(1e-12).log()

    def _decode_raw(self, z: Tensor, reading: Reading | None = None) -> Tensor:
        return self._decode_values(z, reading)[0]

    def _decode_values(self, z: Tensor, reading: Reading | None = None) -> tuple[Tensor, str | None]:
        """(decoder values [B, C, H, W] as the model gives them, "logits" when a name says so)."""
        reading = reading or self.reading
        z = z.to(self.device, torch.float32)
        batch = z.shape[0]  # a SymInt when exported: len() would fix the batch size in the graph
        if reading.latent_shape and len(reading.latent_shape) > 1:
            z = z.reshape(batch, *reading.latent_shape)
        out = self._decode_fn(z)
        if self._decode_output is not None:
            out = self._decode_output(out)
        values, named = pixels_from(out)
        c, h, w = reading.image_shape
        if values.numel() != batch * c * h * w:
            raise AdapterError(f"decode returned {list(values.shape)} for {batch} codes, which is not "
                               f"{batch} images of shape {[c, h, w]}; pass image_shape=(C, H, W)")
        return values.reshape(batch, c, h, w), named


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
          encode_output: Callable[[Any], Any] | None = None,
          decode_output: Callable[[Any], Any] | None = None) -> ForeignModel:
    """Wrap a foreign model so that it answers the contract, settling what its outputs leave open.

    ``images`` [N, C, H, W] float in [0, 1] (optional, but needed for ``"auto"`` readings other than
    the obvious ones) are what the calibration reconstructs. Keywords, each ``"auto"`` by default:
    ``input_shape`` ("image" / "flat"), ``input_range`` ("unit" for [0, 1] / "symmetric" for
    [-1, 1]), ``output`` ("pixels" / "logits" / "tanh"), ``prior`` ("normal" / "none"; auto: a
    model whose encoder gives a spread is a VAE with a N(0, I) prior), ``spread`` ("std" /
    "logvar": what an unnamed spread holds). ``stochastic=True`` accepts an encoder whose code is a
    random draw (see the module's docstring). What the evidence does not settle raises AdapterError
    naming the keywords to set.

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
                                    (spread, SPREADS, "spread")):
        if value != "auto" and value not in allowed:
            raise AdapterError(f"{keyword} must be 'auto' or one of {allowed}, got {value!r}")
    if not isinstance(stochastic, bool):
        raise AdapterError(f"stochastic must be True or False, got {stochastic!r}")
    _methods(module)  # refuse early, with its message
    if images is not None:
        images = images[:CALIBRATION_IMAGES].float()
    shape = _image_shape_from(images, image_shape)
    probe = images if images is not None else torch.full((2, *shape), 0.5)
    label = name or type(module).__name__
    if hasattr(module, "eval"):
        module.eval()
    model = ForeignModel(module, Reading(shape), name=label, class_names=tuple(class_names),
                         encode_output=encode_output, decode_output=decode_output)
    reading = _settle_input_shape(model, probe, Reading(shape), input_shape)
    ranges = INPUT_RANGES if input_range == "auto" else (input_range,)
    with torch.no_grad():
        encoded = [model._encode_once(probe, replace(reading, input_range=rng)) for rng in ranges]
        reading = _settle_draws(model, probe, replace(reading, input_range=ranges[0]), encoded[0], stochastic)
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
        reading = _settle_output(model, images, reading, input_range, output)
    except AdapterError as exc:
        questions.append(str(exc))
    if len(questions) == 1:
        raise AdapterError(questions[0])
    if questions:
        raise AdapterError("the evidence leaves two things open; settle both (the keywords go together in one call):\n"
                           + "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1)))
    model.reading = reading
    return model


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
                       "(and image_shape=(C, H, W)) to say what the model takes")


def _settle_draws(model: ForeignModel, probe: Tensor, reading: Reading, first: Parsed, stochastic: bool) -> Reading:
    """Encode the probe a second time: a code that changes between two calls in eval mode is a random
    draw, refused unless ``stochastic`` (then each code is the mean of STOCHASTIC_DRAWS encodes)."""
    second = model._encode_once(probe, reading)
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


def _settle_output(model: ForeignModel, images: Tensor | None, reading: Reading, input_range: str,
                   output: str) -> Reading:
    """Choose the input range and output reading that reconstruct the calibration images with clearly
    the least error: every reading is tried, its outputs clipped to its range (``to_unit``), and
    the best is kept when its mean squared error is below the mean image's and at most CLEAR_MARGIN
    of the next best's. A decoder output named ``logits`` is read only as logits."""
    ranges = INPUT_RANGES if input_range == "auto" else (input_range,)
    outputs = OUTPUTS if output == "auto" else (output,)
    if len(ranges) == 1 and len(outputs) == 1:
        return replace(reading, input_range=ranges[0], output=outputs[0],
                       notes=(*reading.notes, "input range and output set by keywords"))
    if images is None:
        return _settle_without_images(model, reading, ranges, outputs)
    errors: dict[tuple[str, str], float] = {}
    for rng in ranges:
        trial = replace(reading, input_range=rng)
        with torch.no_grad():
            mean, _ = model._encode_raw(images, trial)
            raw, named = model._decode_values(mean.float().flatten(1), trial)
        for out in outputs:
            if named == "logits" and out != "logits" and output == "auto":
                continue  # the decoder's own name for its output settles the kind
            errors[(rng, out)] = float((to_unit(raw.float().cpu(), out) - images.cpu()).pow(2).mean())
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


def images_as_tensor(images: Any, limit: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Images from a numpy array, a torch tensor or a torch ``Dataset`` as float [N, C, H, W] in
    [0, 1], with labels [N] when a dataset yields (image, label) pairs. ``limit`` keeps a seeded
    subset. Raises InputError for what it cannot read."""
    labels = None
    if (hasattr(images, "__getitem__") and hasattr(images, "__len__")
            and not isinstance(images, np.ndarray | Tensor | str | bytes | Mapping)):
        images, labels = _from_dataset(images, limit)
    if isinstance(images, np.ndarray):
        if images.dtype == object:
            raise InputError("images must be a numeric array, not an array of objects")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a numpy array, a torch tensor or a torch Dataset, got {type(images).__name__}")
    if limit is not None and len(images) > limit:
        keep = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(images), limit, replace=False)))
        images = images[keep]
        labels = None if labels is None else labels[keep]
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


def _from_dataset(dataset: Any, limit: int | None) -> tuple[Tensor, Tensor | None]:
    """Stack a torch Dataset's items ((image, label) pairs or images); PIL images become arrays."""
    n = len(dataset)
    indices = range(n) if limit is None or n <= limit else np.sort(np.random.default_rng(0).choice(n, limit, replace=False))
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
