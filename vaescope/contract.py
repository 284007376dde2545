"""The model contract: everything the explorer, the metrics and the exporters may ask of a model.

Any object with the methods of ``ExplorableModel`` can be explored (it is a ``typing.Protocol``:
duck typing, no base class needed). vaescope's own families get them from
``vaescope.training.models.base.LatentModel``; a PyTorch module that vaescope did not define gets
them from one adapter, ``vaescope.adapter.adapt``.

Shapes, everywhere: images x [B, C, H, W] with pixels in [0, 1]; codes z [B, D]; a class
condition y [B] (int64). A code with a shape of its own (a diffusers VAE's C x H x W) is still
[B, D] here; ``Description.latent_shape`` keeps its shape. A table's row of F features is kept as
x [B, 1, 1, F] in [0, 1] (``Description.display`` "features", with the features' names and units).

What differs between families reaches the explorer only through this file: the ``Description``
(its words for the model card and for what it cannot do), the ``Condition`` (what a condition
means), whether there is a prior, and the ``Posterior`` it returns. The explorer never asks which
family a model is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from vaescope.errors import InputError

LOG_2PI = math.log(2 * math.pi)
CONDITION_KINDS = ("none", "class", "component")
DISPLAYS = ("image", "line", "features")  # how a model's x is drawn (``Description.display``)


def gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dim. Shapes broadcast; returns [...]."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) / logvar.exp()).sum(-1)


class ContractError(InputError, TypeError):
    """An object does not answer the contract; the message says what is missing or wrong."""


@dataclass(frozen=True)
class PriorRow:
    """One row of prior samples a condition asks for: draw from ``component`` (a mixture's; None:
    the whole prior), decode with ``decoder_class`` (a class-conditional decoder's; None: none)."""

    label: str
    component: int | None = None
    decoder_class: int | None = None


@dataclass(frozen=True)
class ClassDraw:
    """How codes for one class are drawn (``Condition.class_draw``): from the prior's ``component``
    (None: the whole prior) decoded with ``decoder_class``, or, when ``fitted``, from a Gaussian
    fitted to that class's codes (a model without a class input). ``how`` / ``formula`` say it."""

    component: int | None
    decoder_class: int | None
    fitted: bool
    how: str
    formula: str


@dataclass(frozen=True)
class Condition:
    """What a model's ``condition`` argument means, and what follows from it.

    ``Condition(kind, size)`` builds the class for ``kind``; each owns the behaviour that differs, so
    nothing above the contract asks which one it has:

    - ``"none"`` (``NoCondition``): nothing; ``encode``, ``decode`` and ``sample`` ignore it.
    - ``"class"`` (``ClassCondition``): ``encode(x, y)`` and ``decode(z, y)`` need class labels
      y [B] in 0..size-1 (a CVAE). ``sample(n, c)`` draws codes from the prior, which does not
      depend on the class; decoding them with class c gives images of c.
    - ``"component"`` (``MixtureCondition``): the prior is a mixture of ``size`` components.
      ``sample(n, k)`` draws from component k, and ``encode`` reports the responsibilities q(k|x)
      [B, size] on its posterior. ``encode`` and ``decode`` take no condition.
    """

    kind: str = "none"
    size: int = 0  # classes or components; 0 for "none"

    def __new__(cls, kind: str = "none", size: int = 0) -> Condition:  # noqa: D102 - the class for the kind
        if cls is Condition:
            cls = _CONDITIONS.get(kind, Condition)
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if self.kind not in CONDITION_KINDS:
            raise ContractError(f"condition kind must be one of {CONDITION_KINDS}, got {self.kind!r}")
        if (self.kind == "none") != (self.size == 0) or self.size < 0:
            raise ContractError(f"a {self.kind!r} condition needs size {'0' if self.kind == 'none' else '>= 1'}, "
                                f"got {self.size}")

    def __getnewargs__(self) -> tuple[str, int]:  # copy / pickle rebuild the same subclass
        return (self.kind, self.size)

    # What a flag used to say; kept for code outside the explorer that reads them.
    @property
    def decodes_with_class(self) -> bool:
        """Whether encode and decode take a class label."""
        return False

    @property
    def is_mixture(self) -> bool:
        """Whether the prior is a mixture that ``sample`` can draw one component of."""
        return False

    def from_labels(self, labels: Tensor | None) -> Tensor | None:
        """What encode / decode take for dataset labels [B]: the labels for a class condition (an
        unknown label, -1, becomes class 0), else None."""
        return None

    def for_class(self, label: int | None, n: int, device: torch.device | str = "cpu") -> Tensor | None:
        """The decoder condition [n] for one chosen class (class 0 when none is chosen), else None."""
        return None

    def decoder_class(self, label: int | None) -> int | None:
        """The class a code is decoded with when ``label`` is chosen (class 0 when none is), or None
        when the decoder takes no class."""
        return None

    def class_choices(self, names: tuple[str, ...]) -> list[tuple[str, int]]:
        """(name, class) a decoder's class input offers; empty when there is no class input."""
        return []

    def prior_rows(self, class_name: Callable[[int], str], component_names: list[str], rows: int) -> list[PriorRow]:
        """At most ``rows`` rows of prior samples, one per class or component; empty: plain rows."""
        return []

    def overlays(self, component_names: list[str]) -> list[tuple[str, str]]:
        """(label, value) of the prior overlays a map offers."""
        return [("none", "none"), ("prior samples", "prior")]

    def class_draw(self, c: int, class_name: str, matched: Callable[[int], tuple[int, str]],
                   temperature: float) -> ClassDraw:
        """How to draw codes of class ``c``: without a class input, from a Gaussian fitted to the
        class's codes (``matched`` finds a mixture's component for a class)."""
        return ClassDraw(None, None, True, f"the model has no class input: codes drawn from a Gaussian fitted to "
                                           f"the codes of the “{class_name}” images",
                         f"z ~ N(mu_c, {temperature:g}² Sigma_c) over the class's posterior means")

    def history_without(self) -> tuple[str, ...]:
        """Training-history keys that mean nothing for this model (older checkpoints recorded the
        Gumbel-softmax temperature for every model)."""
        return ("temperature",)


class NoCondition(Condition):
    """No condition: the model takes none."""


class ClassCondition(Condition):
    """A decoder (and encoder) that takes the class: a CVAE."""

    @property
    def decodes_with_class(self) -> bool:
        return True

    def from_labels(self, labels: Tensor | None) -> Tensor | None:
        return None if labels is None else labels.long().clamp(min=0)

    def for_class(self, label: int | None, n: int, device: torch.device | str = "cpu") -> Tensor | None:
        return torch.full((n,), self.decoder_class(label), dtype=torch.long, device=device)

    def decoder_class(self, label: int | None) -> int | None:
        c = 0 if label is None else int(label)
        if not 0 <= c < self.size:
            raise ValueError(f"class {c} out of range 0..{self.size - 1}")
        return c

    def class_choices(self, names: tuple[str, ...]) -> list[tuple[str, int]]:
        return [(names[c] if c < len(names) else str(c), c) for c in range(self.size)]

    def prior_rows(self, class_name: Callable[[int], str], component_names: list[str], rows: int) -> list[PriorRow]:
        return [PriorRow(class_name(c), None, c) for c in range(min(self.size, rows))]

    def class_draw(self, c: int, class_name: str, matched: Callable[[int], tuple[int, str]],
                   temperature: float) -> ClassDraw:
        if not 0 <= c < self.size:
            raise InputError(f"class {c} is out of range 0..{self.size - 1}")
        return ClassDraw(None, c, False, f"codes drawn from the prior and decoded with the class label “{class_name}”",
                         f"z ~ N(0, {temperature:g}² I), decoded with y = {c}")


class MixtureCondition(Condition):
    """A mixture prior with ``size`` components (a GMVAE, a mixture AAE)."""

    @property
    def is_mixture(self) -> bool:
        return True

    def prior_rows(self, class_name: Callable[[int], str], component_names: list[str], rows: int) -> list[PriorRow]:
        return [PriorRow(component_names[k], k, None) for k in range(min(self.size, rows))]

    def overlays(self, component_names: list[str]) -> list[tuple[str, str]]:
        return [("none", "none"), ("prior samples (whole mixture)", "prior"),
                *((f"prior of {name}", f"prior:{k}") for k, name in enumerate(component_names))]

    def class_draw(self, c: int, class_name: str, matched: Callable[[int], tuple[int, str]],
                   temperature: float) -> ClassDraw:
        k, how = matched(c)
        return ClassDraw(k, None, False, f"codes drawn from mixture component {k}, {how}",
                         f"z ~ p(z | k = {k}) with its sd x {temperature:g}")

    def history_without(self) -> tuple[str, ...]:
        return ()


_CONDITIONS: dict[str, type[Condition]] = {"none": NoCondition, "class": ClassCondition,
                                           "component": MixtureCondition}


@dataclass(frozen=True)
class LatentGroup:
    """A named slice ``z[:, start:start + size]`` of the code (a hierarchical model has several)."""

    name: str
    start: int
    size: int


@dataclass(frozen=True)
class Description:
    """What a model says about itself: the model card's words and the facts the panels need."""

    family: str  # the registered family name ("vae", ...), or "foreign" for an adapted module
    title: str  # the card's heading, e.g. "β-VAE (β = 4)" or "GMVAE with 10 components"
    summary: str  # one plain sentence for a student: what this kind of model does
    image_shape: tuple[int, int, int]  # [C, H, W]
    latent_dim: int
    class_names: tuple[str, ...] = ()
    condition: Condition = Condition()
    has_prior: bool = True  # False: codes drawn by ``sample`` are not where the model puts images
    decodes: bool = True  # False: precomputed embeddings, no encoder or decoder to call
    prior_note: str = ""  # what the prior cannot do, in words (why an AE's prior samples are smudged strokes)
    details: tuple[str, ...] = ()  # short technical facts for the card: "conv", "Bernoulli likelihood"
    # Named slices of the code (a hierarchical model's layers); the first is the default for maps and
    # sliders. Empty: one group, the whole code. A model with several may offer
    # ``fill_group(z [B, D], keep: str) -> z``: the other groups set to their conditional means given
    # group ``keep``, which the explorer calls after moving a slider of that group.
    latent_groups: tuple[LatentGroup, ...] = ()
    # The code is unit activations in (0, 1) held near this mean (a sparse AE's ρ): the diagnostics
    # plot each unit's mean activation against it. None: no such target.
    activation_target: float | None = None
    # How x [B, C, H, W] is drawn: "image" (pixels), "line" for a sequence stored as [1, T, 1]
    # (T steps of one value, e.g. the waveforms dataset), shown as a curve of row t against t, or
    # "features" for a row of F = C*H*W named values (a tabular model, stored as [1, 1, F]), shown
    # as a bar chart of the values by name.
    display: str = "image"
    # The code's own shape per image when it is not flat, e.g. (4, 8, 8) for a diffusers
    # AutoencoderKL's C x H x W latent. Codes stay flattened to [B, D] everywhere (maps, sliders,
    # neighbours); the shape names each value by channel and position ("c2 (3,5)", ``dim_name``) and
    # lets the traversal move a whole channel and draw the code as channel maps. (): a flat code.
    latent_shape: tuple[int, ...] = ()
    # display "features": the name of each of the F values (empty: f0, f1, ...) and the values, in
    # the data's own units, that 0 and 1 stand for ((lo, hi) per feature; empty: [0, 1] itself).
    feature_names: tuple[str, ...] = ()
    feature_range: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "latent_shape", tuple(int(v) for v in self.latent_shape))
        object.__setattr__(self, "feature_names", tuple(str(f) for f in self.feature_names))
        object.__setattr__(self, "feature_range", tuple((float(lo), float(hi)) for lo, hi in self.feature_range))
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ContractError(f"image_shape must be [C, H, W] with positive sizes, got {list(self.image_shape)}")
        if self.latent_dim < 1:
            raise ContractError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.display not in DISPLAYS:
            raise ContractError(f"display must be 'image' or 'line' (or 'features' for a table's rows), got "
                                f"{self.display!r}")
        if self.latent_shape and (min(self.latent_shape) < 1 or math.prod(self.latent_shape) != self.latent_dim):
            raise ContractError(f"latent_shape {list(self.latent_shape)} must be positive sizes whose product is the "
                                f"latent_dim, {self.latent_dim}")
        values = math.prod(self.image_shape)
        for name, given in (("feature_names", self.feature_names), ("feature_range", self.feature_range)):
            if given and (self.display != "features" or len(given) != values):
                raise ContractError(f"{name} go with display 'features', one for each of the {values} values of "
                                    f"image_shape {list(self.image_shape)}; got {len(given)} with display "
                                    f"{self.display!r}")
        if any(not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) for lo, hi in self.feature_range):
            raise ContractError("feature_range must be finite (lo, hi) pairs with lo < hi")
        if not self.latent_groups:
            object.__setattr__(self, "latent_groups", (LatentGroup("z", 0, self.latent_dim),))
        if self.activation_target is not None and not 0 < self.activation_target < 1:
            raise ContractError(f"activation_target must lie in (0, 1), got {self.activation_target}")

    def class_name(self, label: int | None) -> str:
        """A label in words: its class name, the number itself past the names, "?" when unknown."""
        if label is None or label < 0:
            return "?"
        return self.class_names[label] if label < len(self.class_names) else str(label)

    @property
    def spatial(self) -> bool:
        """Whether the code keeps a shape of its own (channels and positions, ``latent_shape``)."""
        return len(self.latent_shape) >= 2

    def dim_name(self, d: int) -> str:
        """Code value d of [D] by name: "z5" for a flat code; "c2 (3,5)" (channel 2, row 3, column 5)
        for a spatial one, "c2 (5)" for a [C, L] code, "c2" when a channel holds one value.

        Examples:
            >>> Description("vae", "", "", (1, 8, 8), 256, latent_shape=(4, 8, 8)).dim_name(3 * 64 + 5 * 8 + 2)
            'c3 (5,2)'
        """
        if not self.spatial:
            return f"z{d}"
        channel, rest = divmod(int(d), math.prod(self.latent_shape[1:]))
        where = np.unravel_index(rest, self.latent_shape[1:])
        shown = [str(int(i)) for i, size in zip(where, self.latent_shape[1:], strict=True) if size > 1]
        return f"c{channel}" + (f" ({','.join(shown)})" if shown else "")


@dataclass
class Posterior:
    """A diagonal Gaussian q(z|x) with mean and log-variance [B, D], or a point (a deterministic
    encoder: zero spread, said by ``deterministic``). ``component_probs`` [B, K] holds a mixture
    model's responsibilities q(k|x).

    As in diffusers' ``DiagonalGaussianDistribution``, the prior is an argument of the KL, not a
    field of the posterior: ``kl_per_dim(prior_mean, prior_logvar)`` defaults to N(0, I).
    """

    mean: Tensor
    logvar: Tensor
    component_probs: Tensor | None = None
    deterministic: bool = False

    @classmethod
    def point(cls, mean: Tensor, component_probs: Tensor | None = None) -> Posterior:
        """The posterior of a deterministic encoder: all its mass on ``mean`` [B, D]."""
        return cls(mean, torch.full_like(mean, -math.inf), component_probs, deterministic=True)

    @property
    def std(self) -> Tensor:
        """[B, D]; zero for a deterministic posterior."""
        return torch.zeros_like(self.mean) if self.deterministic else (0.5 * self.logvar).exp()

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draw z = mean + std * eps (Kingma & Welling 2014). [B, D]"""
        if self.deterministic:
            return self.mean
        if generator is None:  # randn_like: the same draws, and torch.compile traces it with a dynamic batch size
            eps = torch.randn_like(self.mean)
        else:
            eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def kl_per_dim(self, prior_mean: Tensor | None = None, prior_logvar: Tensor | None = None) -> Tensor:
        """Analytic KL(q || N(prior_mean, exp(prior_logvar))) per dimension [B, D] in nats; N(0, I)
        by default; zero for a deterministic posterior (it has no density to compare)."""
        if self.deterministic:
            return torch.zeros_like(self.mean)
        pm = torch.zeros_like(self.mean) if prior_mean is None else prior_mean
        plv = torch.zeros_like(self.logvar) if prior_logvar is None else prior_logvar
        return 0.5 * (plv - self.logvar + (self.logvar.exp() + (self.mean - pm).pow(2)) / plv.exp() - 1)

    def kl(self, prior_mean: Tensor | None = None, prior_logvar: Tensor | None = None) -> Tensor:
        """KL summed over dimensions [B]."""
        return self.kl_per_dim(prior_mean, prior_logvar).sum(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) for z [..., B, D] -> [..., B]."""
        return gaussian_log_prob(z, self.mean, self.logvar)


# -- the likelihood p(x | z): how a model scores an image against what it decoded -----------------
PIXEL_EPS = 1e-6  # decoded pixel means are clamped into (0, 1) before a Bernoulli log-likelihood


class Likelihood:
    """p(x | z) as a function of what ``decode(z)`` returned (pixel means [B, C, H, W] in [0, 1]).

    ``log_prob(x, decoded)`` gives log p(x | z) per image [B] in nats, summed over pixels;
    ``mean(decoded)`` what to show (the decoded means themselves). ``spec()`` is a small JSON-able
    dict that ``likelihood_from_spec`` turns back into the same object (bundles carry it).
    """

    name = "likelihood"

    def log_prob(self, x: Tensor, decoded: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, decoded: Tensor) -> Tensor:
        return decoded

    def spec(self) -> dict[str, object]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Likelihood) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.spec().items())))


class Bernoulli(Likelihood):
    """Each pixel an independent Bernoulli with the decoded mean: sum x log p + (1 - x) log(1 - p)."""

    name = "Bernoulli"

    def log_prob(self, x: Tensor, decoded: Tensor) -> Tensor:
        p = decoded.float().clamp(PIXEL_EPS, 1 - PIXEL_EPS)
        x = x.float().expand_as(p)
        return (x * p.log() + (1 - x) * (1 - p).log()).flatten(-3).sum(-1)

    def spec(self) -> dict[str, object]:
        return {"kind": "bernoulli"}


class Gaussian(Likelihood):
    """Each pixel N(decoded mean, ``variance``): -|x - x'|^2 / 2c - 1/2 log(2 pi c) summed over pixels."""

    name = "Gaussian"

    def __init__(self, variance: float) -> None:
        if not (isinstance(variance, int | float) and math.isfinite(variance) and variance > 0):
            raise ContractError(f"a Gaussian likelihood needs a finite variance > 0, got {variance!r}")
        self.variance = float(variance)

    def log_prob(self, x: Tensor, decoded: Tensor) -> Tensor:
        d = decoded.float()
        c = self.variance
        return (-(x.float() - d).pow(2) / (2 * c) - 0.5 * math.log(2 * math.pi * c)).flatten(-3).sum(-1)

    def spec(self) -> dict[str, object]:
        return {"kind": "gaussian", "variance": self.variance}


def likelihood_from_spec(spec: object) -> Likelihood:
    """The Likelihood a ``spec()`` dict describes; ContractError for anything else."""
    if isinstance(spec, dict) and spec.get("kind") == "bernoulli" and len(spec) == 1:
        return Bernoulli()
    if isinstance(spec, dict) and spec.get("kind") == "gaussian" and set(spec) == {"kind", "variance"}:
        return Gaussian(spec["variance"])  # type: ignore[arg-type]
    raise ContractError(f"not a likelihood vaescope knows: {str(spec)[:80]} (bernoulli, or gaussian with a variance)")


def likelihood_of(model: object) -> Likelihood | None:
    """The model's declared likelihood (its ``likelihood`` attribute), or None when it declares none:
    then nothing computes a log-likelihood for it, and scores fall back to the reconstruction error."""
    found = getattr(model, "likelihood", None)
    if found is None:
        return None
    if not isinstance(found, Likelihood):
        raise ContractError(f"{type(model).__name__}.likelihood must be a vaescope.contract.Likelihood "
                            f"(Bernoulli() or Gaussian(variance)), got {type(found).__name__}")
    return found


# -- the prior p(z): what sample() draws from and what the KL is measured against -------------------
class Prior:
    """p(z) over codes [.., D]: ``sample(n, component, temperature, generator) -> z [n, D]`` and
    ``log_prob(z) -> [..]``. A mixture prior also gives ``component_log_prob(z) -> [.., K]``. A model
    without a prior (an AE) has none: ``prior_of`` returns None for it."""

    dim: int

    def sample(self, n: int, component: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class StandardNormal(Prior):
    """N(0, I) in ``dim`` dimensions."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim, self.device = int(dim), torch.device(device)

    def sample(self, n: int, component: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        return temperature * torch.randn(n, self.dim, generator=generator, device=self.device)

    def log_prob(self, z: Tensor) -> Tensor:
        return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))


class GaussianMixture(Prior):
    """An equally weighted mixture of K diagonal Gaussians: ``means`` and ``logvars`` [K, D]."""

    def __init__(self, means: Tensor, logvars: Tensor) -> None:
        if means.shape != logvars.shape or means.dim() != 2:
            raise ContractError(f"a mixture needs means and log-variances [K, D], got {list(means.shape)} and "
                                f"{list(logvars.shape)}")
        self.means, self.logvars = means, logvars
        self.dim = means.shape[1]

    @property
    def components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; mu_k, sigma_k^2) for every component: [.., K]."""
        return gaussian_log_prob(z.unsqueeze(-2), self.means, self.logvars)

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(z), -1) - math.log(self.components)

    def sample(self, n: int, component: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        device = self.means.device
        if component is None:
            k = torch.randint(self.components, (n,), generator=generator, device=device)
        elif not 0 <= int(component) < self.components:
            raise ValueError(f"component {component} out of range 0..{self.components - 1}")
        else:
            k = torch.full((n,), int(component), dtype=torch.long, device=device)
        eps = temperature * torch.randn(n, self.dim, generator=generator, device=device)
        return self.means[k] + (0.5 * self.logvars[k]).exp() * eps


class FunctionPrior(Prior):
    """A prior given by a model's own functions (a hierarchical model's p(z2) p(z1 | z2)):
    ``draw(n, component, temperature, generator)`` and ``density(z)``; ``density`` None when the
    model only knows how to sample (an ONNX bundle's prior graph)."""

    def __init__(self, dim: int, draw: Callable[..., Tensor], density: Callable[[Tensor], Tensor] | None) -> None:
        self.dim, self._draw, self._density = int(dim), draw, density

    def sample(self, n: int, component: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        return self._draw(n, component, temperature, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        if self._density is None:
            raise NotImplementedError("this prior can be sampled, but its density is not known")
        return self._density(z)


def prior_of(model: object) -> Prior | None:
    """The model's prior: its ``prior`` attribute (a ``Prior``, or None for a model without one);
    for a model that has no such attribute, N(0, I) when its description says it has a prior (a
    foreign VAE) and None otherwise (an autoencoder)."""
    if hasattr(model, "prior"):
        found = model.prior  # type: ignore[attr-defined]
        if found is not None and not isinstance(found, Prior):
            raise ContractError(f"{type(model).__name__}.prior must be a vaescope.contract.Prior or None, got "
                                f"{type(found).__name__}")
        return found
    description = model.describe()  # type: ignore[attr-defined]
    return StandardNormal(description.latent_dim, getattr(model, "device", "cpu")) if description.has_prior else None


@runtime_checkable
class ExplorableModel(Protocol):
    """What the explorer, the metrics and the exporters may ask of a model, and nothing more.

    - ``describe()``: the ``Description`` (shapes, class names, condition, prior, the card's words).
    - ``encode(x [B, C, H, W], condition=None) -> Posterior`` with mean / spread [B, D].
    - ``decode(z [B, D], condition=None) -> [B, C, H, W]`` pixel means in [0, 1].
    - ``sample(n, condition=None, temperature=1.0, generator=None) -> z [n, D]``: codes from the
      prior, the spread scaled by ``temperature``; for a mixture, ``condition`` names a component.
    - ``kl_per_dim(posterior) -> [B, D]``: KL of the posterior from the model's own prior, per
      dimension, in nats (zeros when the model has none).
    - ``device``: where its tensors live.
    - optional ``prior``: a ``Prior`` (or None: the model has none); ``prior_of`` falls back to
      N(0, I) for a model that says it has a prior and offers no object.
    - optional ``likelihood``: a ``Likelihood`` (``Bernoulli()``, ``Gaussian(variance)``), what the
      decoder's output means. Scores that need log p(x|z) (the ELBO, the anomaly score) use it, and
      a model without one is scored by its reconstruction error instead, never by a guessed one.

    See ``Condition`` for what ``condition`` means in each case.
    """

    @property
    def device(self) -> torch.device: ...

    def describe(self) -> Description: ...

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior: ...

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor: ...

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor: ...

    def kl_per_dim(self, posterior: Posterior) -> Tensor: ...


CONTRACT_METHODS = ("describe", "encode", "decode", "sample", "kl_per_dim")
GENERATOR_METHODS = ("encode", "decode", "sample", "kl_per_dim")  # all of them, or none (codes only)


@runtime_checkable
class CodeSource(Protocol):
    """What any map source has: a ``Description`` and a device. Precomputed embeddings (an
    embeddings file, codes handed to vs.explore) are only this: their codes are all there is."""

    @property
    def device(self) -> torch.device: ...

    def describe(self) -> Description: ...


@runtime_checkable
class Generator(CodeSource, Protocol):
    """A model that encodes and decodes: ``encode``, ``decode``, ``sample`` and ``kl_per_dim`` (see
    ``ExplorableModel``). The panels that decode, sample or score ask ``generator_of`` for one."""

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior: ...

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor: ...

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor: ...

    def kl_per_dim(self, posterior: Posterior) -> Tensor: ...


def generator_of(source: object) -> Generator | None:
    """``source`` when it encodes and decodes (it has every method of ``Generator``), else None:
    a source of codes only. Whether a model decodes is what it can do, never a flag it sets."""
    return source if all(callable(getattr(source, m, None)) for m in GENERATOR_METHODS) else None  # type: ignore[return-value]


def fill_other_groups(model: object, z: Tensor, group: str) -> Tensor:
    """z [B, D] with the groups other than ``group`` set to their conditional means, when the model
    says how (its optional ``fill_group``); else z unchanged."""
    fill = getattr(model, "fill_group", None)
    return fill(z, group) if callable(fill) and len(model.describe().latent_groups) > 1 else z


def check_contract(model: object) -> Description:
    """The model's ``Description`` once it is checked to answer the contract; else ContractError.

    Examples:
        >>> from vaescope.training.models import build_model
        >>> from vaescope.training.config import ModelConfig
        >>> check_contract(build_model(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, arch="mlp"))).latent_dim
        2
    """
    has = [name for name in GENERATOR_METHODS if callable(getattr(model, name, None))]
    missing = [name for name in CONTRACT_METHODS if not callable(getattr(model, name, None))]
    codes_only = not has and callable(getattr(model, "describe", None))  # precomputed embeddings
    if (missing and not codes_only) or not hasattr(model, "device"):
        raise ContractError(f"{type(model).__name__} does not answer the vaescope model contract: it lacks "
                            f"{missing + ([] if hasattr(model, 'device') else ['device'])}; wrap a module with "
                            "vaescope.adapter.adapt (vs.explore does it for objects with encode and decode)")
    description = model.describe()  # type: ignore[attr-defined]
    if not isinstance(description, Description):
        raise ContractError(f"{type(model).__name__}.describe() returned a {type(description).__name__}, "
                            "not a vaescope.contract.Description")
    if description.decodes != (not codes_only):  # the words must say what the object can do
        raise ContractError(f"{type(model).__name__}.describe() says decodes={description.decodes}, but it "
                            f"{'has no' if codes_only else 'has'} encode / decode / sample / kl_per_dim")
    return description


@dataclass(frozen=True)
class LossOutput:
    """The training side of the contract: batch-mean loss terms in nats per image.

    ``total`` is what the optimiser minimises; ``kl`` is the unweighted KL of all latent terms,
    so ``recon + kl`` is the negative ELBO. ``extras`` holds a family's own named terms.
    """

    total: Tensor
    recon: Tensor
    kl: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
