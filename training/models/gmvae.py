"""Gaussian-mixture VAE (Dilokthanakul et al. 2016; Rui Shu, "Gaussian Mixture VAE" notes).

Generative model: y ~ Cat(1/K), z | y ~ N(mu_y, sigma_y^2) with learned mu_y, sigma_y per component,
x | z ~ p(x|z). Inference: q(y|x) is categorical, relaxed with Gumbel-softmax (Jang et al. 2017) at
an annealed temperature, and q(z|x, y) is a diagonal Gaussian. Labels are never used.

Loss = E[-log p(x|z)] + KL(q(z|x,y) || p(z|y)) + KL(q(y|x) || Cat(1/K)).

When q(z|x, y) sees y, its network can move z to whichever component y names, so y is only weakly
tied to the data and the clusters found depend on the seed. ``z_given_y=False`` uses the mean-field
q(y|x) q(z|x) instead (as in VaDE, Jiang et al. 2017): z is fixed by x, and KL(q(z|x) || p(z|y))
rewards the y whose Gaussian covers z, so q(y|x) learns the mixture's responsibilities.

The categorical KL splits exactly into a per-image part and a balance part (the batch average
q(y) = E_x q(y|x) stands for the aggregate posterior, as in Hoffman & Johnson 2016):
    E_x KL(q(y|x) || U) = E_x KL(q(y|x) || q(y)) + KL(q(y) || U).
The first term pushes every q(y|x) towards the average, which fights confident cluster
assignments; ``categorical_weight`` scales only that term (1 gives the plain ELBO), while the
balance term, which keeps all K components in use, always has weight 1.

Training: the Gumbel-softmax temperature is annealed over the run (``training_schedule``), and
``component_init umap`` sets the mixture from a clustering of the codes after a few epochs, and
with ``component_refit_at_end`` once more after the last (``after_epoch``; training/component_init.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaescope import limits
from vaescope.contract import Condition, GaussianMixture, LossOutput, Posterior, gaussian_log_prob
from vaescope.training.checks import Range
from vaescope.training.config import ConfigError, FamilyOptions, ModelConfig, TrainConfig
from vaescope.training.models.base import (
    EpochEnd,
    LatentModel,
    on_default_device,
    register,
    seeded_normal,
)
from vaescope.training.models.nets import ImageDecoder, ImageEncoder

PRIOR_SPREAD = 1.0  # scale of the initial component means: apart enough to break symmetry
COMPONENT_INITS = ("random", "umap")  # the component_init option (training/component_init.py)


def temperature_at(progress: float, start: float, end: float) -> float:
    """Exponential Gumbel-softmax annealing (Jang et al. 2017), progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return start * (end / start) ** progress


@dataclass
class GMVAEOptions(FamilyOptions):
    components: int = field(default=0, metadata={"help": "mixture components K (default: the number of classes)"})
    # 1 is the plain ELBO; < 1 allows confident cluster assignments (see the module docstring)
    categorical_weight: float = field(default=1.0, metadata={
        "help": "weight of the per-image part E KL(q(y|x) || q(y)) of the categorical KL (1 = plain ELBO)"})
    # True: q(z|x, y), whose network sees the component; False: the mean-field q(z|x) of VaDE
    z_given_y: bool = field(default=True, metadata={
        "help": "'yes' = q(z|x,y); 'no' = mean-field q(z|x), clusters set by the mixture"})
    # Annealed exponentially from start to end over the run (Jang et al. 2017 anneal towards ~0.5;
    # lower is closer to one-hot but gives noisier gradients); validation and the final metrics use
    # the end value.
    temperature_start: float = field(default=1.0, metadata={
        "help": "Gumbel-softmax temperature of q(y|x) at the start"})
    temperature_end: float = field(default=0.5, metadata={
        "help": "Gumbel-softmax temperature at the end (annealed exponentially), also used for validation"})
    # "random" keeps the initial mixture; "umap" sets it after component_init_epoch epochs from a
    # clustering of the codes (training/component_init.py): clusters that depend far less on the
    # seed (docs/gmvae-clustering.md)
    component_init: str = field(default="random", metadata={
        "choices": COMPONENT_INITS,
        "help": "'umap' re-initialises the mixture from a UMAP + GMM clustering of the codes (needs --z-given-y no)"})
    component_init_epoch: int = field(default=3, metadata={"help": "epochs trained before --component-init umap runs"})
    # the mixture drifts from the clustering while the codes keep improving (docs/gmvae-clustering.md)
    component_refit_at_end: bool = field(default=False, metadata={
        "help": "with --component-init umap: after the last epoch, set the mixture once more from a clustering "
                "of the trained codes"})

    RANGES: ClassVar[dict[str, Range]] = {
        "temperature_start": Range(*limits.TEMPERATURE_RANGE), "temperature_end": Range(*limits.TEMPERATURE_RANGE),
        "component_init_epoch": Range(1, limits.MAX_EPOCHS)}
    # format-1 checkpoints kept the first three at the top of model_config; train configs (checkpoints,
    # resume states and --config files before the trainer named no family) held the rest
    FROM_MODEL_CONFIG: ClassVar[dict[str, str]] = {
        "num_components": "components", "categorical_weight": "categorical_weight", "z_given_y": "z_given_y"}
    FROM_TRAIN_CONFIG: ClassVar[tuple[str, ...]] = (
        "temperature_start", "temperature_end", "component_init", "component_init_epoch", "component_refit_at_end")

    def check(self) -> None:
        if self.components < 0 or self.categorical_weight < 0:
            raise ConfigError("components and categorical_weight must be >= 0")
        if self.component_init not in COMPONENT_INITS:
            raise ConfigError(f"component_init must be one of {COMPONENT_INITS}, got {self.component_init!r}")
        if self.component_refit_at_end and self.component_init == "random":
            raise ConfigError("component_refit_at_end (--component-refit-at-end) re-runs the component "
                              "initialisation: also set component_init to umap (--component-init umap)")
        if self.component_init != "random" and self.z_given_y:
            # with q(z|x, y) the codes would depend on the very assignments being set
            raise ConfigError(f"component_init={self.component_init!r} is for the mean-field GMVAE: set "
                              "--z-given-y no, or leave --component-init at random")


def categorical_kl_parts(log_q_y: Tensor) -> tuple[Tensor, Tensor]:
    """(E_x KL(q(y|x) || q(y)), KL(q(y) || uniform)) for log q(y|x) [B, K]; they sum to E_x KL(q(y|x) || U)."""
    q = log_q_y.exp()
    log_q_bar = torch.logsumexp(log_q_y, 0) - math.log(len(log_q_y))  # log of the batch-mean q(y)
    per_image = (q * (log_q_y - log_q_bar)).sum(-1).mean()
    balance = (log_q_bar.exp() * log_q_bar).sum() + math.log(log_q_y.shape[-1])
    return per_image, balance


@register("gmvae")
class GMVAE(LatentModel):
    Options = GMVAEOptions
    showcase_rank = 1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        k, d, h = self.components_of(config), config.latent_dim, config.hidden_dim
        self.num_components = k
        self.encoder = ImageEncoder(config)
        self.y_head = nn.Linear(h, k)  # logits of q(y|x)
        self.z_given_y = self.options.z_given_y
        self.z_head = nn.Sequential(nn.Linear(h + k if self.z_given_y else h, h), nn.LeakyReLU(0.2),
                                    nn.Linear(h, 2 * d))
        self.decoder = ImageDecoder(config, d)
        self.prior_mean = nn.Parameter(on_default_device(PRIOR_SPREAD * seeded_normal(k, d, seed=0)))  # mu_y [K, D]
        self.prior_logvar = nn.Parameter(torch.zeros(k, d))  # log sigma_y^2 [K, D]

    @staticmethod
    def components_of(config: ModelConfig) -> int:
        """K: the ``components`` option, or the number of classes when it is 0."""
        return config.options.get("components") or config.num_classes

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        if cls.components_of(config) < 2:
            raise ConfigError("a gmvae needs num_components >= 2 (set --components)")

    @classmethod
    def check_run(cls, options: GMVAEOptions, train: TrainConfig) -> None:  # type: ignore[override]
        if options.component_init != "random" and options.component_init_epoch >= train.epochs:
            raise ConfigError(f"component_init_epoch={options.component_init_epoch} must be below "
                              f"epochs={train.epochs}: the mixture is initialised after that many epochs and "
                              "then trained")

    @property
    def condition(self) -> Condition:
        return Condition("component", self.num_components)

    def _words(self) -> tuple[str, str, str]:
        k = self.num_components
        return (f"GMVAE with {k} components",
                f"A Gaussian-mixture VAE: its prior is {k} Gaussian clusters, learnt without labels, and each "
                "image is assigned to the cluster that explains it best.", "")

    def _component_prior(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """p(z|y) (mean, logvar) [B, D] for a (relaxed) one-hot y [B, K]."""
        return y @ self.prior_mean, (y @ self.prior_logvar).clamp(-12, 8)

    def _z_posterior(self, h: Tensor, y_soft: Tensor, probs: Tensor) -> Posterior:
        """q(z|x, y) (or q(z|x) when not ``z_given_y``) for a (relaxed) one-hot y [B, K]."""
        z_input = torch.cat([h, y_soft], dim=-1) if self.z_given_y else h
        mean, logvar = self.z_head(z_input).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8), component_probs=probs)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """q(z|x, y*) with y* = argmax q(y|x); ``component_probs`` holds q(y|x) [B, K]."""
        return self.features_and_posterior(x)[1]

    def features_and_posterior(self, x: Tensor) -> tuple[Tensor, Posterior]:
        """(encoder features h [B, H], the posterior of ``encode``)."""
        h = self.encoder(x)
        logits = self.y_head(h)
        y_hard = F.one_hot(logits.argmax(-1), self.num_components).to(h.dtype)
        return h, self._z_posterior(h, y_hard, logits.softmax(-1))

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        """KL from the prior of each image's most probable component, p(z|y*) [B, D]."""
        assert posterior.component_probs is not None, "a GMVAE posterior carries q(y|x)"
        y_hard = F.one_hot(posterior.component_probs.argmax(-1), self.num_components).to(posterior.mean.dtype)
        return posterior.kl_per_dim(*self._component_prior(y_hard))

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    @property
    def prior(self) -> GaussianMixture:
        """p(z) = 1/K sum_k N(mu_k, sigma_k^2): the mixture its components make."""
        return GaussianMixture(self.prior_mean, self.prior_logvar)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.prior.log_prob(z)

    def prior_transform(self, eps: Tensor, components: Tensor | None = None) -> Tensor:
        """z = mu_k + sigma_k * eps for each code's component k, p(z|y=k) [n, D]."""
        assert components is not None, "a mixture prior needs the components"
        return self.prior_mean[components] + (0.5 * self.prior_logvar[components]).exp() * eps

    def generate(self, n: int, condition: int | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """n images of component ``condition`` (or of the whole mixture)."""
        with torch.no_grad():
            return self.decode(self.sample(n, condition, temperature, generator))

    def loss(self, x: Tensor, condition: Tensor | None = None, *, kl_weight: float | None = None,
             temperature: float | None = None, target: Tensor | None = None) -> LossOutput:
        """The labels are never passed in: the GMVAE is unsupervised."""
        h = self.encoder(x)
        logits = self.y_head(h)
        log_q_y = logits.log_softmax(-1)
        tau = 1.0 if temperature is None else temperature
        y_soft = F.gumbel_softmax(logits, tau=tau, hard=False)
        post = self._z_posterior(h, y_soft, log_q_y.exp())
        recon = self.recon_nll(self.decode_logits(post.sample()), x if target is None else target).mean()
        gauss_kl = post.kl(*self._component_prior(y_soft)).mean()
        per_image, balance = categorical_kl_parts(log_q_y)
        cat_kl = per_image + balance  # = mean KL(q(y|x) || uniform)
        w = self.config.beta if kl_weight is None else kl_weight
        total = recon + w * (gauss_kl + self.options.categorical_weight * per_image + balance)
        return LossOutput(total=total, recon=recon, kl=gauss_kl + cat_kl,
                          extras={"gauss_kl": gauss_kl.detach(), "cat_kl": cat_kl.detach(),
                                  "balance_kl": balance.detach()})

    # -- training: the temperature's schedule and the mixture's (re)initialisation -----------------
    def training_schedule(self, progress: float, epochs: int) -> dict[str, float]:
        """The Gumbel-softmax temperature, annealed from ``temperature_start`` to ``temperature_end``."""
        o = self.options
        return {"temperature": temperature_at(progress / epochs, o.temperature_start, o.temperature_end)}

    def evaluation_options(self) -> dict[str, float]:
        return {"temperature": self.options.temperature_end}

    def after_epoch(self, end: EpochEnd) -> dict[str, Any]:
        """After epoch ``component_init_epoch``, and after the last one with ``component_refit_at_end``,
        set the mixture from a clustering of the codes; the history gets ``component_init`` or,
        for the final refit, ``component_refit`` (training/component_init.py)."""
        o = self.options
        refit = o.component_refit_at_end and end.epoch == end.epochs  # never the init's epoch: check_run
        if o.component_init == "random" or not (end.epoch == o.component_init_epoch or refit):
            return {}
        from vaescope.training import component_init  # it imports this module

        return component_init.during_training(self, end, refit)

    def log_importance_weights(self, x: Tensor, condition: Tensor | None, k: int) -> Tensor:
        """Joint proposal q(y, z|x): log p(x|z) + log p(z|y) + log p(y) - log q(z|x,y) - log q(y|x)."""
        h = self.encoder(x)
        log_q_y = self.y_head(h).log_softmax(-1)  # [B, K]
        comps = torch.multinomial(log_q_y.exp(), k, replacement=True).T  # [k, B]
        y_hot = F.one_hot(comps, self.num_components).to(h.dtype).flatten(0, 1)  # [k * B, K]
        post = self._z_posterior(h.expand(k, *h.shape).flatten(0, 1), y_hot, log_q_y)
        z = post.sample()
        log_px = -self.recon_nll(self.decode_logits(z), x.repeat(k, 1, 1, 1))
        log_pz = gaussian_log_prob(z, *self._component_prior(y_hot))
        log_w = (log_px + log_pz - post.log_prob(z)
                 - math.log(self.num_components) - log_q_y.gather(1, comps.T).T.flatten())
        return log_w.view(k, x.shape[0])
