"""The base of vaescope's own families: the contract (``vaescope.contract``) answered once, plus
the Gaussian-posterior VAE maths they share, and the registry a family joins with ``@register``.

A family is one file: a ``LatentModel`` subclass with ``encode`` and ``decode_logits``, its
``Options`` dataclass, a ``describe`` of itself, and ``@register("name")``. Nothing else in the
project lists the families.

The trainer (``training/train.py``) names no family: what a family adds to training goes through
the hooks at the end of ``LatentModel`` (``check_run``, ``training_schedule``,
``evaluation_options``, ``validation_metrics``, ``after_epoch``), each a no-op by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaescope.contract import (
    Bernoulli,
    Condition,
    Description,
    FunctionPrior,
    Gaussian,
    Likelihood,
    LossOutput,
    Posterior,
    Prior,
    gaussian_log_prob,
)
from vaescope.training.config import ConfigError, FamilyOptions, ModelConfig

if TYPE_CHECKING:
    from vaescope.training.config import TrainConfig

FAMILIES: dict[str, type[LatentModel]] = {}


def seeded_normal(*shape: int, seed: int) -> Tensor:
    """Standard normal draws of ``shape`` on the CPU, from a generator seeded with ``seed``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), device="cpu")


def on_default_device(tensor: Tensor) -> Tensor:
    """``tensor``, computed on the CPU, moved to the current default device. A family computes its
    fixed initial values on the CPU and then moves them: on the ``meta`` device (where the checkpoint
    loader plans a model) a random draw or any arithmetic imports torch's compiler, 1.6 s the first
    time a server opens such a model."""
    return tensor.to(torch.empty(0).device)


def register(name: str):  # noqa: ANN201 - a class decorator
    """Class decorator: make ``cls`` the family ``name`` (``latent-train --model name``)."""
    def add(cls: type[LatentModel]) -> type[LatentModel]:
        if name in FAMILIES and FAMILIES[name] is not cls:
            raise ValueError(f"model family {name!r} is registered twice ({FAMILIES[name].__name__}, {cls.__name__})")
        cls.family = name
        FAMILIES[name] = cls
        return cls
    return add


def family(name: str) -> type[LatentModel]:
    """The registered class of family ``name``; ConfigError naming the known ones otherwise."""
    cls = FAMILIES.get(name)
    if cls is None:
        raise ConfigError(f"model_type must be one of {sorted(FAMILIES)}, got {name!r}")
    return cls


@dataclass
class NoOptions(FamilyOptions):
    """A family without hyper-parameters of its own."""


@dataclass
class EpochEnd:
    """What ``LatentModel.after_epoch`` is given when an epoch of training has ended. Under
    DistributedDataParallel every rank calls the hook; ``replaced`` must be called on all of them."""

    epoch: int  # epochs finished (1-based): the history record being written is this epoch's
    epochs: int  # the run's epochs
    images: Tensor  # the training images [N, C, H, W] (uint8, on the training device)
    seed: int  # the run's seed
    main: bool  # whether this process writes the run's files (rank 0 under DDP)
    # Call before changing the model's weights: the training record keeps the codes from before.
    before_change: Callable[[], None]
    # Call after setting parameters outside the optimizer: their Adam moments are dropped (they
    # belonged to the old values) and, under DDP, rank 0's values are sent to every rank.
    replaced: Callable[[Iterable[nn.Parameter]], None]
    log: Callable[[str], None]  # a line for the console (nothing when the run is quiet)


class LatentModel(nn.Module):
    """Base class: the contract answered for a Gaussian-posterior model with a N(0, I) prior.

    Subclasses provide ``encode`` and ``decode_logits`` and describe themselves; everything else
    follows. ``class_names`` is set by whoever knows the data (the trainer, the checkpoint loader).
    """

    family: ClassVar[str] = ""
    Options: ClassVar[type[FamilyOptions]] = NoOptions
    has_prior: ClassVar[bool] = True
    # Which checkpoint the explorer opens first: the lowest rank, what a first-time visitor learns most from.
    showcase_rank: ClassVar[int] = 10

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.options = config.family_options()
        self.class_names: tuple[str, ...] = ()

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Raise ConfigError when ``config`` cannot build this family (e.g. a CVAE without classes)."""

    # -- the contract (vaescope.contract.ExplorableModel) --------------------------------------
    @property
    def condition(self) -> Condition:
        """What ``condition`` means for this model (none by default)."""
        return Condition()

    def describe(self) -> Description:
        """The card's words and the facts the explorer needs (subclasses add theirs in ``_words``)."""
        title, summary, prior_note = self._words()
        cfg = self.config
        return Description(
            family=self.family, title=title, summary=summary, image_shape=cfg.image_shape,
            latent_dim=cfg.latent_dim, class_names=self.class_names, condition=self.condition,
            has_prior=self.has_prior, prior_note=prior_note,
            details=(cfg.arch, f"{cfg.likelihood} likelihood"), display=cfg.display)

    def _words(self) -> tuple[str, str, str]:
        """(title, one-sentence summary, prior note) for the model card."""
        raise NotImplementedError

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:  # pragma: no cover
        """x [B, C, H, W] -> q(z|x) with mean / logvar [B, D]."""
        raise NotImplementedError

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:  # pragma: no cover
        """[B, D] -> pre-sigmoid outputs [B, C, H, W]."""
        raise NotImplementedError

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """[B, D] -> pixel means [B, C, H, W] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, condition))

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z) [n, D]: standard noise scaled by ``temperature`` through ``prior_transform``. A
        mixture draws from component ``condition`` (a uniformly drawn one per code when None)."""
        components = self._components(n, condition, generator)
        eps = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return self.prior_transform(eps, components)

    def prior_transform(self, eps: Tensor, components: Tensor | None = None) -> Tensor:
        """The prior as a deterministic function of noise eps [n, D] (standard normal, already scaled
        by the temperature) and mixture components [n]: z [n, D]. N(0, I): the noise itself. This
        half of sampling is what an ONNX bundle exports (vaescope/bundle.py)."""
        return eps

    @property
    def prior(self) -> Prior | None:
        """p(z) as a contract object (None for a family without a prior, an AE): it samples through
        ``sample`` (so ``prior_transform``) and its density is ``prior_log_prob``. A mixture family
        returns a ``GaussianMixture``."""
        if not self.has_prior:
            return None
        return FunctionPrior(self.config.latent_dim, lambda n, k, t, g: self.sample(n, k, t, g), self.prior_log_prob)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) [..] for codes [.., D]: N(0, I) unless a family says otherwise."""
        return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))

    def _components(self, n: int, condition: int | None, generator: torch.Generator | None) -> Tensor | None:
        """Mixture components [n] for ``sample`` (None for a model without a mixture prior)."""
        if not self.condition.is_mixture:
            return None
        k = self.condition.size
        if condition is None:
            return torch.randint(k, (n,), generator=generator, device=self.device)
        if not 0 <= int(condition) < k:
            raise ValueError(f"component {condition} out of range 0..{k - 1}")
        return torch.full((n,), int(condition), dtype=torch.long, device=self.device)

    @property
    def likelihood(self) -> Likelihood:
        """What ``decode``'s pixel means are the mean of: the config's Bernoulli or Gaussian (variance
        ``gaussian_c``). The explorer's scores and the metrics read it through the contract."""
        return Bernoulli() if self.config.likelihood == "bernoulli" else Gaussian(self.config.gaussian_c)

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        """KL(q(z|x) || p(z)) per dimension [B, D] in nats, against N(0, I)."""
        return posterior.kl_per_dim()

    @torch.no_grad()
    def generate(self, n: int, condition: int | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """n images [n, C, H, W] from the prior: ``sample`` then ``decode`` (with the class, for a
        class-conditional model; its class 0 when ``condition`` is None)."""
        z = self.sample(n, condition, temperature, generator)
        return self.decode(z, self.condition.for_class(condition, n, self.device))

    # -- the training side ----------------------------------------------------------------------
    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """Negative ELBO: E_q[-log p(x|z)] + w * KL(q(z|x) || p(z)), w = beta unless scheduled.

        ``target`` [B, C, H, W] is what the reconstruction is scored against (default: ``x``): the
        trainer's ``--corrupt`` encodes a corrupted x and scores against the clean image. Every
        family's ``loss`` takes it."""
        post = self.encode(x, condition)
        logits = self.decode_logits(post.sample(), condition)
        recon = self.recon_nll(logits, x if target is None else target).mean()
        kl = self.kl_per_dim(post).sum(-1).mean()
        w = self.config.beta if kl_weight is None else kl_weight
        return LossOutput(total=recon + w * kl, recon=recon, kl=kl)

    def forward(self, x: Tensor, condition: Tensor | None = None, kl_weight: float | None = None,
                temperature: float | None = None, target: Tensor | None = None, **options: Any) -> LossOutput:
        """``loss`` under the name DistributedDataParallel wraps (``options``: further keywords of
        a family's ``training_schedule``)."""
        return self.loss(x, condition, kl_weight=kl_weight, temperature=temperature, target=target, **options)

    def recon_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) per image [B] (or [..., B] for leading sample dims), in nats.

        Bernoulli: binary cross-entropy on logits. Gaussian with fixed variance c:
        |x - x'|^2 / 2c + D/2 log(2 pi c), so the value is a true NLL usable for IWAE.
        """
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        else:
            c = self.config.gaussian_c
            nll = (torch.sigmoid(logits) - x).pow(2) / (2 * c) + 0.5 * math.log(2 * math.pi * c)
        return nll.flatten(-3).sum(-1)

    def log_importance_weights(self, x: Tensor, condition: Tensor | None, k: int) -> Tensor:
        """log p(x, z_i) - log q(z_i|x) for k posterior samples [k, B] (the IWAE bound's terms)."""
        post = self.encode(x, condition)
        z = post.mean + post.std * torch.randn(k, *post.mean.shape, device=x.device)  # [k, B, D]
        logits = self.decode_logits(z.flatten(0, 1), None if condition is None else condition.repeat(k))
        log_px = -self.recon_nll(logits.unflatten(0, (k, x.shape[0])), x)
        return log_px + self.prior.log_prob(z) - post.log_prob(z)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- the trainer's hooks (training/train.py calls them; each is a no-op by default) ----------
    @classmethod
    def check_run(cls, options: FamilyOptions, train: TrainConfig) -> None:
        """Raise ConfigError when this family, with ``options`` (its ``Options``), cannot be trained
        with the run options ``train`` (e.g. ``--corrupt`` on a family that corrupts its input
        itself). latent-train calls it before the dataset is read; the trainer again at the start."""

    def training_schedule(self, progress: float, epochs: int) -> dict[str, float]:
        """Keyword arguments of ``loss`` for the step at ``progress`` epochs into a run of
        ``epochs`` (epoch + batch / batches), for the family's own schedules (a GMVAE's
        Gumbel-softmax temperature). Each is also recorded in the epoch's history, at its value of
        the epoch's last step. The KL warm-up (``kl_weight``) is the trainer's, for every family."""
        return {}

    def evaluation_options(self) -> dict[str, float]:
        """Keyword arguments of ``loss`` for validation and the final metrics (the end values of
        ``training_schedule``); the metrics take ``temperature``."""
        return {}

    def validation_metrics(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """Numbers added to each epoch's history after validation, from the test split: uint8
        images [N, C, H, W] and class labels [N], watched, never trained on. A mixture (the
        contract's ``condition.is_mixture``) reports how well its components match the classes
        (``val_cluster_accuracy``, Hungarian-matched)."""
        if not self.condition.is_mixture:
            return {}
        from vaescope.training import metrics  # metrics imports the models: import late

        assignments = metrics.component_assignments(self, images)
        return {"val_cluster_accuracy": round(metrics.cluster_accuracy(
            assignments, labels.numpy(), self.condition.size), 4)}

    def after_epoch(self, end: EpochEnd) -> dict[str, Any]:
        """Called after every epoch, before its checkpoint is written: a family may change itself
        here (a GMVAE sets its mixture from a clustering of its codes). Returns entries for the
        epoch's history record (JSON values); none by default."""
        return {}
