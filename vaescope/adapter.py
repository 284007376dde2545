"""One adapter from any encoder / decoder pair to the model contract (``vaescope.contract``).

A model vaescope did not define is explored by duck typing: an object with ``encode`` and
``decode`` methods (or ``encoder`` and ``decoder`` modules, as pythae's models have). The adapter
understands the shapes the ecosystem uses:

- ``encode`` may return a tensor (a deterministic code), a ``(mean, logvar)`` tuple or list (the
  PyTorch examples' VAE, AntixK's PyTorch-VAE), a dict or ``ModelOutput`` (``mu`` / ``mean`` /
  ``loc`` / ``embedding`` with ``logvar`` / ``log_var`` / ``log_covariance`` / ``std`` / ``scale``),
  a ``torch.distributions.Normal``, or an object with ``.latent_dist`` (diffusers), ``.mean`` and
  ``.logvar`` / ``.std``, or ``.mode()``. Spatial codes [B, C, h, w] are flattened to [B, D].
- ``decode`` may return pixels in [0, 1], logits, values in [-1, 1] (tanh), or a dict / object
  holding them (``.sample``, ``reconstruction``, ``recon_x``, ``x_hat``, ``logits``, ...).
- Inputs may be images [B, C, H, W] or flat vectors [B, C*H*W]; inputs in [0, 1] or [-1, 1].

What cannot be read from the outputs alone is settled by calibration on the images given with the
model: every reading of the input range and output kind is tried, and the one that reconstructs
the images clearly best is kept. When none is clearly best, or there are no images to try, the
adapter refuses with an error naming the keyword to set (``output=``, ``input_range=``,
``input_shape=``, ``image_shape=``), never a silently wrong picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
CALIBRATION_IMAGES = 64  # images the calibration reconstructs
CLEAR_MARGIN = 0.6  # the best reading's error must be below this fraction of the next best
MEAN_KEYS = ("mean", "mu", "loc", "z_mean", "means", "embedding", "z", "latent", "code", "encoding")
LOGVAR_KEYS = ("logvar", "log_var", "log_variance", "log_covariance", "logvariance", "z_log_var")
STD_KEYS = ("std", "stddev", "scale", "sigma", "z_std")
LOGSTD_KEYS = ("log_std", "logstd", "log_sigma", "log_scale")
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


def posterior_from(output: Any) -> tuple[Tensor, Tensor | None, str]:
    """(mean, log-variance or None for a point, how it was read) from whatever ``encode`` returned."""
    if isinstance(output, Tensor):
        return output, None, "a tensor (a deterministic code)"
    latent_dist = getattr(output, "latent_dist", None)
    if latent_dist is not None:  # diffusers' AutoencoderKLOutput
        mean, logvar, how = posterior_from(latent_dist)
        return mean, logvar, f"latent_dist: {how}"
    if isinstance(output, tuple | list) and not hasattr(output, "_fields"):
        tensors = [t for t in output if isinstance(t, Tensor)]
        if len(tensors) == 1:
            return tensors[0], None, "a one-tensor sequence"
        if len(tensors) == 2 and tensors[0].shape == tensors[1].shape:
            return tensors[0], tensors[1], "a (mean, logvar) pair"
        raise AdapterError(f"encode returned a sequence of {len(tensors)} tensors "
                           f"{[list(t.shape) for t in tensors]}; vaescope reads one tensor (a code) or two of one "
                           "shape, (mean, logvar). Pass encode_output=lambda out: (mean, logvar) to say which is which.")
    found_mean = _lookup(output, MEAN_KEYS)
    if found_mean is not None:
        key, mean = found_mean
        for keys, kind in ((LOGVAR_KEYS, "logvar"), (STD_KEYS, "std"), (LOGSTD_KEYS, "log_std")):
            found = _lookup(output, keys)
            if found is not None:
                return mean, _as_logvar(found[1], kind), f"{key} with {found[0]}"
        if isinstance(getattr(output, "stddev", None), Tensor):  # torch.distributions
            return mean, _as_logvar(output.stddev, "std"), f"{key} with stddev"
        return mean, None, f"{key} (a deterministic code)"
    mode = getattr(output, "mode", None)
    if callable(mode):
        value = mode()
        if isinstance(value, Tensor):
            return value, None, "mode()"
    fields = list(output.keys()) if isinstance(output, Mapping) else [a for a in dir(output) if not a.startswith("_")]
    raise AdapterError(f"cannot read a code from what encode returned ({type(output).__name__} with {fields[:12]}); "
                       "return a tensor, (mean, logvar), or a dict with 'mean' and 'logvar', or pass "
                       "encode_output=lambda out: (mean, logvar)")


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
                   f"code shape {list(r.latent_shape)}"]
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

    def _encode_raw(self, x: Tensor, reading: Reading | None = None) -> tuple[Tensor, Tensor | None]:
        reading = reading or self.reading
        out = self._encode_fn(self._model_input(x, reading))
        if self._encode_output is not None:
            out = self._encode_output(out)
        mean, logvar, _ = posterior_from(out)
        return mean, logvar

    def _decode_raw(self, z: Tensor, reading: Reading | None = None) -> Tensor:
        reading = reading or self.reading
        z = z.to(self.device, torch.float32)
        batch = z.shape[0]  # a SymInt when exported: len() would fix the batch size in the graph
        if reading.latent_shape and len(reading.latent_shape) > 1:
            z = z.reshape(batch, *reading.latent_shape)
        out = self._decode_fn(z)
        if self._decode_output is not None:
            out = self._decode_output(out)
        values, _ = pixels_from(out)
        c, h, w = reading.image_shape
        if values.numel() != batch * c * h * w:
            raise AdapterError(f"decode returned {list(values.shape)} for {batch} codes, which is not "
                               f"{batch} images of shape {[c, h, w]}; pass image_shape=(C, H, W)")
        return values.reshape(batch, c, h, w)


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
          class_names: tuple[str, ...] | list[str] = (), name: str | None = None,
          encode_output: Callable[[Any], Any] | None = None,
          decode_output: Callable[[Any], Any] | None = None) -> ForeignModel:
    """Wrap a foreign model so that it answers the contract, settling what its outputs leave open.

    ``images`` [N, C, H, W] float in [0, 1] (optional, but needed for ``"auto"`` readings other than
    the obvious ones) are what the calibration reconstructs. Keywords, each ``"auto"`` by default:
    ``input_shape`` ("image" / "flat"), ``input_range`` ("unit" for [0, 1] / "symmetric" for
    [-1, 1]), ``output`` ("pixels" / "logits" / "tanh"), ``prior`` ("normal" / "none"; auto: a
    model whose encoder gives a spread is a VAE with a N(0, I) prior).

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
                                    (output, OUTPUTS, "output"), (prior, ("normal", "none"), "prior")):
        if value != "auto" and value not in allowed:
            raise AdapterError(f"{keyword} must be 'auto' or one of {allowed}, got {value!r}")
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
    with torch.no_grad():
        mean, logvar = model._encode_raw(probe, replace(reading, input_range="unit"))
    latent_shape = tuple(int(v) for v in mean.shape[1:]) or (1,)
    has_prior = logvar is not None if prior == "auto" else prior == "normal"
    reading = replace(reading, latent_shape=latent_shape, prior=has_prior)
    reading = _settle_output(model, images, reading, input_range, output)
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
                model._encode_raw(probe[:2], trial)
            return trial
        except AdapterError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            errors.append(f"{shape} inputs: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    raise AdapterError(f"encode failed on {' and on '.join(errors)}; pass input_shape='image' or 'flat' "
                       "(and image_shape=(C, H, W)) to say what the model takes")


def _settle_output(model: ForeignModel, images: Tensor | None, reading: Reading, input_range: str,
                   output: str) -> Reading:
    """Choose the input range and output kind that reconstruct the calibration images best."""
    ranges = INPUT_RANGES if input_range == "auto" else (input_range,)
    outputs = OUTPUTS if output == "auto" else (output,)
    if len(ranges) == 1 and len(outputs) == 1:
        return replace(reading, input_range=ranges[0], output=outputs[0])
    if images is None:
        return _settle_without_images(model, reading, ranges, outputs)
    errors: dict[tuple[str, str], float] = {}
    for rng in ranges:
        trial = replace(reading, input_range=rng)
        with torch.no_grad():
            mean, _ = model._encode_raw(images, trial)
            raw = model._decode_raw(mean.float().flatten(1), trial).float().cpu()
        name_says = pixels_from(model._decode_fn(mean))[1] if model._decode_output is None else None
        for out in outputs:
            if name_says == "logits" and out != "logits" and output == "auto":
                continue
            if out == "pixels" and (raw.min() < -0.05 or raw.max() > 1.05):
                continue  # clamping would hide values far outside [0, 1]: not pixels
            if out == "tanh" and (raw.min() < -1.05 or raw.max() > 1.05):
                continue  # a tanh never leaves [-1, 1]
            errors[(rng, out)] = float((to_unit(raw, out) - images.cpu()).pow(2).mean())
    ranked = sorted(errors.items(), key=lambda kv: kv[1])
    baseline = float((images - images.mean(0, keepdim=True)).pow(2).mean())  # predicting the mean image
    (best, best_err), runner_up = ranked[0], (ranked[1][1] if len(ranked) > 1 else math.inf)
    if best_err < CLEAR_MARGIN * runner_up and best_err < baseline:
        return replace(reading, input_range=best[0], output=best[1])
    tried = ", ".join(f"input_range={r!r}, output={o!r}: {e:.4f}" for (r, o), e in ranked[:4])
    raise AdapterError("cannot tell how this model reads and writes pixels: no reading reconstructs the images "
                       f"clearly best (mean squared error {tried}; the mean image scores {baseline:.4f}). "
                       "Pass output='pixels', 'logits' or 'tanh' and input_range='unit' ([0, 1]) or 'symmetric' "
                       "([-1, 1]).")


def _settle_without_images(model: ForeignModel, reading: Reading, ranges: tuple[str, ...],
                           outputs: tuple[str, ...]) -> Reading:
    """Without images: pixels when the decoder's values all lie in [0, 1], logits when some leave
    [-1, 1], else a refusal; inputs in [0, 1] unless ``input_range`` says otherwise."""
    if len(outputs) > 1:
        z = torch.randn(16, max(1, math.prod(reading.latent_shape)), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            raw = model._decode_raw(z, reading)
        lo, hi = float(raw.min()), float(raw.max())
        if lo >= 0 and hi <= 1 and "pixels" in outputs:
            outputs = ("pixels",)
        elif (lo < -1.05 or hi > 1.05) and "logits" in outputs:
            outputs = ("logits",)  # neither pixels nor a tanh leave [-1, 1]
        else:
            raise AdapterError(f"decode gives values in [{lo:.2f}, {hi:.2f}]: without images the adapter cannot "
                               "tell logits from tanh values in [-1, 1]; pass output='logits' or 'tanh' (and "
                               "input_range=), or give images")
    return replace(reading, input_range=ranges[0] if len(ranges) == 1 else "unit", output=outputs[0])


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
