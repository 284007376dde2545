"""Small models written here, in the styles of the ecosystem, that vaescope did not define.

Each mimics one interface the adapter must understand, trained for a few hundred Adam steps on
scikit-learn's 8x8 digits so that its reconstructions are real:

- ``ExamplesVAE``: PyTorch's examples VAE: flat inputs, ``encode -> (mu, logvar)``, sigmoid pixels.
- ``PythaeStyleVAE``: ``encoder`` / ``decoder`` modules returning ``ModelOutput`` objects
  (``embedding``, ``log_covariance``; ``reconstruction``).
- ``DiffusersStyleVAE``: ``encode(x).latent_dist`` (``mean``, ``logvar``, ``mode()``), spatial
  codes [B, 2, 2, 2], ``decode(z).sample`` in [-1, 1], inputs in [-1, 1].
- ``AntixKStyleVAE``: ``encode -> [mu, log_var]`` (a list), tanh pixels, inputs in [-1, 1].
- ``LogitAE``: a deterministic autoencoder returning a tensor code and logits.

``OVERSHOOT_STYLES`` (kept out of ``STYLES``, whose models every export test also runs) are trained
as their pipelines train them, with a linear last layer whose outputs overshoot the data's range:

- ``VanillaVAE01``: AntixK's VanillaVAE trained its own way: inputs in [0, 1], MSE plus a small KL
  weight; its linear output dips below 0.
- ``DiffusersLinearVAE``: a diffusers AutoencoderKL: ``latent_dist`` with ``mean``, ``logvar`` and
  ``std``, inputs in [-1, 1], MSE plus a tiny KL weight, a linear ``conv_out``: outputs pass +-1.
- ``MuStdVAE``: ``encode -> (mu, std)`` (std through a softplus), sigmoid pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

D = 4


class ModelOutput(OrderedDict):
    """pythae's output type: a dict whose keys are also attributes."""

    def __getattr__(self, key: str) -> object:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class DiagonalGaussian:
    """diffusers' DiagonalGaussianDistribution, as far as the adapter looks."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean, self.logvar = mean, logvar
        self.std = (0.5 * logvar).exp()

    def mode(self) -> Tensor:
        return self.mean

    def sample(self) -> Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)


class EncoderOutput:
    def __init__(self, latent_dist: DiagonalGaussian) -> None:
        self.latent_dist = latent_dist


class DecoderOutput:
    def __init__(self, sample: Tensor) -> None:
        self.sample = sample


class ExamplesVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(64, 64), nn.Linear(64, D), nn.Linear(64, D)
        self.fc3, self.fc4 = nn.Linear(D, 64), nn.Linear(64, 64)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def loss(self, x: Tensor) -> Tensor:
        mu, logvar = self.encode(x.flatten(1))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy(self.decode(z), x.flatten(1), reduction="sum")
        return (recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.mu, self.lv = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU()), nn.Linear(64, D), \
            nn.Linear(64, D)

    def forward(self, x: Tensor) -> ModelOutput:
        h = self.net(x)
        return ModelOutput(embedding=self.mu(h), log_covariance=self.lv(h))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))

    def forward(self, z: Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z))


class PythaeStyleVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = _Encoder(), _Decoder()

    def loss(self, x: Tensor) -> Tensor:
        out = self.encoder(x)
        mu, logvar = out.embedding, out.log_covariance
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy(self.decoder(z).reconstruction, x, reduction="sum")
        return (recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


class DiffusersStyleVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 16))
        self.dec = nn.Sequential(nn.Flatten(), nn.Linear(8, 64), nn.SiLU(), nn.Linear(64, 64), nn.Tanh(),
                                 nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: Tensor) -> EncoderOutput:
        mean, logvar = self.enc(x).view(-1, 4, 2, 2).chunk(2, dim=1)  # spatial codes [B, 2, 2, 2]
        return EncoderOutput(DiagonalGaussian(mean, logvar))

    def decode(self, z: Tensor) -> DecoderOutput:
        return DecoderOutput(self.dec(z))

    def loss(self, x: Tensor) -> Tensor:
        x = 2 * x - 1
        dist = self.encode(x).latent_dist
        recon = (self.decode(dist.sample()).sample - x).pow(2).sum() / 0.1
        kl = -0.5 * torch.sum(1 + dist.logvar - dist.mean.pow(2) - dist.logvar.exp())
        return (recon + kl) / len(x)


class AntixKStyleVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.LeakyReLU(), nn.Flatten(),
                                     nn.Linear(16 * 16, 64), nn.LeakyReLU())
        self.fc_mu, self.fc_var = nn.Linear(64, D), nn.Linear(64, D)
        self.decoder = nn.Sequential(nn.Linear(D, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.Tanh(),
                                     nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: Tensor) -> list[Tensor]:
        h = self.encoder(x)
        return [self.fc_mu(h), self.fc_var(h)]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def loss(self, x: Tensor) -> Tensor:
        x = 2 * x - 1
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        recon = (self.decode(z) - x).pow(2).sum() / 0.1
        return (recon - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())) / len(x)


class LogitAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, D))
        self.dec = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: Tensor) -> Tensor:
        return self.enc(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.dec(z)

    def loss(self, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.decode(self.encode(x)), x, reduction="sum") / len(x)


class VanillaVAE01(nn.Module):
    """AntixK's VanillaVAE (conv + BatchNorm + LeakyReLU encoder, ``fc_mu`` / ``fc_var``) with a linear
    last layer, trained on [0, 1] inputs with its own loss: MSE + kld_weight * KL."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(),
                                     nn.Flatten(), nn.Linear(16 * 16, 64), nn.LeakyReLU())
        self.fc_mu, self.fc_var = nn.Linear(64, D), nn.Linear(64, D)
        self.decoder = nn.Sequential(nn.Linear(D, 64), nn.BatchNorm1d(64), nn.LeakyReLU(), nn.Linear(64, 64),
                                     nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: Tensor) -> list[Tensor]:
        h = self.encoder(x)
        return [self.fc_mu(h), self.fc_var(h)]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def loss(self, x: Tensor) -> Tensor:
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1))
        return F.mse_loss(self.decode(z), x) + 0.00025 * kld  # kld_weight: batch / dataset size, as AntixK's


class DiffusersLinearVAE(nn.Module):
    """A diffusers AutoencoderKL in miniature: spatial codes [B, 2, 2, 2], a linear decoder output,
    trained on [-1, 1] inputs with MSE and a tiny KL weight (diffusers' training scripts use ~1e-6)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 16))
        self.dec = nn.Sequential(nn.Flatten(), nn.Linear(8, 64), nn.SiLU(), nn.Linear(64, 64),
                                 nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: Tensor) -> EncoderOutput:
        mean, logvar = self.enc(x).view(-1, 4, 2, 2).chunk(2, dim=1)
        return EncoderOutput(DiagonalGaussian(mean, logvar.clamp(-30, 20)))

    def decode(self, z: Tensor) -> DecoderOutput:
        return DecoderOutput(self.dec(z))

    def loss(self, x: Tensor) -> Tensor:
        x = 2 * x - 1
        dist = self.encode(x).latent_dist
        kl = 0.5 * torch.sum(dist.mean.pow(2) + dist.logvar.exp() - 1 - dist.logvar) / len(x)
        return F.mse_loss(self.decode(dist.sample()).sample, x) + 1e-6 * kl


class MuStdVAE(nn.Module):
    """``encode -> (mu, std)``: a spread that is a standard deviation, not a log-variance."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc_mu, self.fc_std = nn.Linear(64, 64), nn.Linear(64, D), nn.Linear(64, D)
        self.fc3, self.fc4 = nn.Linear(D, 64), nn.Linear(64, 64)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc_mu(h), F.softplus(self.fc_std(h)) + 1e-4

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))).view(-1, 1, 8, 8)

    def loss(self, x: Tensor) -> Tensor:
        mu, std = self.encode(x)
        z = mu + torch.randn_like(mu) * std
        recon = F.binary_cross_entropy(self.decode(z), x, reduction="sum")
        return (recon - 0.5 * torch.sum(1 + 2 * std.log() - mu.pow(2) - std.pow(2))) / len(x)


class RandomDrawEncoder(nn.Module):
    """A trained ``ExamplesVAE`` whose encode returns only a random draw, ``{"z": mu + std * noise}``:
    a different code on every call, even in eval mode."""

    def __init__(self, base: ExamplesVAE) -> None:
        super().__init__()
        self.base = base

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.base.encode(x)
        return {"z": mu + torch.randn_like(mu) * (0.5 * logvar).exp()}

    def decode(self, z: Tensor) -> Tensor:
        return self.base.decode(z)


class ConstantStdEncoder(nn.Module):
    """A trained ``ExamplesVAE`` whose encode returns ``(mu, std)`` with std = ``sigma`` everywhere."""

    def __init__(self, base: ExamplesVAE, sigma: float) -> None:
        super().__init__()
        self.base, self.sigma = base, sigma

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, _ = self.base.encode(x)
        return mu, torch.full_like(mu, self.sigma)

    def decode(self, z: Tensor) -> Tensor:
        return self.base.decode(z)


STYLES = {"examples": ExamplesVAE, "pythae": PythaeStyleVAE, "diffusers": DiffusersStyleVAE,
          "antixk": AntixKStyleVAE, "logit-ae": LogitAE}
# what the adapter must find for each: (input_shape, input_range, output, has a prior)
EXPECTED = {"examples": ("flat", "unit", "pixels", True), "pythae": ("image", "unit", "pixels", True),
            "diffusers": ("image", "symmetric", "tanh", True), "antixk": ("image", "symmetric", "tanh", True),
            "logit-ae": ("image", "unit", "logits", False)}
OVERSHOOT_STYLES = {"vanilla-01": VanillaVAE01, "diffusers-linear": DiffusersLinearVAE, "mu-std": MuStdVAE}


@cache
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images [N, 1, 8, 8] float in [0, 1], train labels, test images, test labels)."""
    from vaescope.training.data import load_digits

    data = load_digits(seed=0)
    return (data.train.float_images(), data.train.labels, data.test.float_images(), data.test.labels)


@cache
def trained(style: str, steps: int = 600, seed: int = 0) -> nn.Module:
    """A ``style`` model trained on digits with Adam (seeded; one intra-op thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = (STYLES | OVERSHOOT_STYLES)[style]()
        x = digits()[0]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = x[torch.randint(len(x), (128,), generator=gen)]
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


# -- researchers' own models as they really are (issue #32) -----------------------------------------
# Kept out of STYLES (whose models every export test runs); trained by ``trained_more``.
K = 10  # digit classes


class AntixKConditionalVAE(nn.Module):
    """AntixK's ConditionalVAE in miniature, faithfully: ``forward(input, labels=onehot)`` embeds the
    class as one extra image channel (``embed_class``: a linear map of the one-hot [B, K] to H*W)
    beside the image (``embed_data``: a 1x1 conv), ``encode`` takes that 2-channel input and returns
    ``[mu, log_var]``, and ``decode`` takes ``cat([z, onehot])``; tanh outputs, inputs in [-1, 1]."""

    def __init__(self, num_classes: int = K, img_size: int = 8) -> None:
        super().__init__()
        self.img_size = img_size
        self.embed_class = nn.Linear(num_classes, img_size * img_size)
        self.embed_data = nn.Conv2d(1, 1, kernel_size=1)
        self.encoder = nn.Sequential(nn.Conv2d(2, 16, 3, stride=2, padding=1), nn.LeakyReLU(), nn.Flatten(),
                                     nn.Linear(16 * 16, 64), nn.LeakyReLU())
        self.fc_mu, self.fc_var = nn.Linear(64, D), nn.Linear(64, D)
        self.decoder_input = nn.Linear(D + num_classes, 64)
        self.decoder = nn.Sequential(nn.LeakyReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, input: Tensor) -> list[Tensor]:  # noqa: A002 - AntixK's name
        result = self.encoder(input)
        return [self.fc_mu(result), self.fc_var(result)]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.decoder_input(z))

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, input: Tensor, **kwargs: Tensor) -> list[Tensor]:  # noqa: A002
        y = kwargs["labels"].float()
        embedded_class = self.embed_class(y).view(-1, self.img_size, self.img_size).unsqueeze(1)
        embedded_input = self.embed_data(input)
        x = torch.cat([embedded_input, embedded_class], dim=1)
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        z = torch.cat([z, y], dim=1)
        return [self.decode(z), input, mu, log_var]

    def loss(self, x: Tensor, labels: Tensor) -> Tensor:
        x = 2 * x - 1
        recons, _, mu, log_var = self(x, labels=F.one_hot(labels, K).float())
        recon = (recons - x).pow(2).sum() / 0.1
        return (recon - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())) / len(x)


class IndexCVAE(nn.Module):
    """A home-made CVAE taking the class as indices: ``encode(x, y)`` / ``decode(z, y)``, y [B] int64
    through an ``nn.Embedding``; sigmoid pixels, inputs in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(K, 8)
        self.fc1, self.fc_mu, self.fc_var = nn.Linear(64 + 8, 64), nn.Linear(64, D), nn.Linear(64, D)
        self.fc3, self.fc4 = nn.Linear(D + 8, 64), nn.Linear(64, 64)

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(torch.cat([x.flatten(1), self.embed(y)], 1)))
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(torch.cat([z, self.embed(y)], 1))))).view(-1, 1, 8, 8)

    def loss(self, x: Tensor, labels: Tensor) -> Tensor:
        mu, logvar = self.encode(x, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy(self.decode(z, labels), x, reduction="sum")
        return (recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


class OneHotCVAE(nn.Module):
    """The tutorials' CVAE: ``encode(x, c)`` / ``decode(z, c)`` with c one-hot [B, K] joined to flat
    inputs and to the code; sigmoid pixels, flat inputs in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc_mu, self.fc_var = nn.Linear(64 + K, 64), nn.Linear(64, D), nn.Linear(64, D)
        self.fc3, self.fc4 = nn.Linear(D + K, 64), nn.Linear(64, 64)

    def encode(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(torch.cat([x, c], 1)))
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: Tensor, c: Tensor) -> Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(torch.cat([z, c], 1)))))

    def loss(self, x: Tensor, labels: Tensor) -> Tensor:
        c = F.one_hot(labels, K).float()
        mu, logvar = self.encode(x.flatten(1), c)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy(self.decode(z, c), x.flatten(1), reduction="sum")
        return (recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


class IWAEStyleVAE(nn.Module):
    """AntixK's IWAE: ``encode(x) -> [mu, log_var]``, but ``decode`` takes S samples per image,
    z [B, S, D], and returns [B, S, C, H, W] (``B, _, _ = z.size()`` fails on [B, D])."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.fc_mu, self.fc_var = nn.Linear(64, D), nn.Linear(64, D)
        self.decoder = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Linear(64, 64), nn.Sigmoid())

    def encode(self, input: Tensor) -> list[Tensor]:  # noqa: A002
        h = self.encoder(input)
        return [self.fc_mu(h), self.fc_var(h)]

    def decode(self, z: Tensor) -> Tensor:
        B, _, _ = z.size()  # noqa: N806 - AntixK's code
        z = z.contiguous().view(-1, D)
        return self.decoder(z).view(B, -1, 1, 8, 8)

    def loss(self, x: Tensor) -> Tensor:
        mu, log_var = self.encode(x)
        z = (mu + torch.randn_like(mu) * (0.5 * log_var).exp())[:, None]  # S = 1
        recon = F.binary_cross_entropy(self.decode(z)[:, 0], x, reduction="sum")
        return (recon - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())) / len(x)


class NaNDecoder(nn.Module):
    """A trained ``ExamplesVAE`` whose decoder gives NaN for every code whose first value is above 0."""

    def __init__(self, base: ExamplesVAE) -> None:
        super().__init__()
        self.base = base

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        out = self.base.decode(z)
        return torch.where((z[:, :1] > 0), torch.full_like(out, float("nan")), out)


MORE_STYLES = {"antixk-cvae": AntixKConditionalVAE, "index-cvae": IndexCVAE, "onehot-cvae": OneHotCVAE,
               "iwae": IWAEStyleVAE}
CONDITIONAL = ("antixk-cvae", "index-cvae", "onehot-cvae")  # their loss takes the labels


@cache
def trained_more(style: str, steps: int = 600, seed: int = 0) -> nn.Module:
    """A ``MORE_STYLES`` model trained on digits with Adam (seeded; one intra-op thread), with the
    labels for the conditional ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = MORE_STYLES[style]()
        x, y = digits()[:2]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(len(x), (128,), generator=gen)
            opt.zero_grad()
            (model.loss(x[idx], y[idx]) if style in CONDITIONAL else model.loss(x[idx])).backward()
            opt.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


# -- spatial codes and tables (issue #32) -------------------------------------------------------------
LATENT_CHANNELS = 4  # a diffusers AutoencoderKL's latent channels (Stable Diffusion 1.x / 2.x)
SPATIAL_SIDE = 16  # the digits upsampled to 16x16; the code is 4 x 8 x 8 = 256 values


class AutoencoderKLOutput:
    """diffusers' ``AutoencoderKLOutput``: ``latent_dist`` only."""

    def __init__(self, latent_dist: DiagonalGaussian) -> None:
        self.latent_dist = latent_dist


class TinyAutoencoderKL(nn.Module):
    """diffusers' AutoencoderKL in miniature, as the adapter meets it: a conv encoder down to 2 * 4
    channels at 8x8 (``quant_conv`` gives the moments), ``encode(x).latent_dist`` with ``mean`` and
    ``logvar`` (the moments chunked in two along the channels, the log-variance clamped to [-30, 20]
    as diffusers' ``DiagonalGaussianDistribution`` does), a conv decoder (``post_quant_conv``, a
    nearest upsampling, a linear ``conv_out``) returning ``DecoderOutput(sample=...)``; inputs in
    [-1, 1]. Codes are [B, 4, 8, 8]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c = LATENT_CHANNELS
        self.encoder = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, 2 * c, 3, padding=1))
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.SiLU(), nn.Upsample(scale_factor=2),
                                     nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.conv_out = nn.Conv2d(width, 1, 3, padding=1)

    def encode(self, x: Tensor) -> AutoencoderKLOutput:
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return AutoencoderKLOutput(DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0)))

    def decode(self, z: Tensor) -> DecoderOutput:
        return DecoderOutput(self.conv_out(self.decoder(self.post_quant_conv(z))))

    def loss(self, x: Tensor) -> Tensor:
        """A Gaussian likelihood (variance 0.05) on [-1, 1] pixels plus a light KL from N(0, I) (weight
        0.02: latent-diffusion autoencoders keep theirs small, and every channel then carries some)."""
        x = 2 * x - 1
        dist = self.encode(x).latent_dist
        recon = (self.decode(dist.sample()).sample - x).pow(2).sum() / (2 * 0.05)
        kl = 0.5 * torch.sum(dist.mean.pow(2) + dist.logvar.exp() - 1 - dist.logvar)
        return (recon + 0.02 * kl) / len(x)


@cache
def digits16() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``digits()`` upsampled (bilinear) to [N, 1, 16, 16] in [0, 1]."""
    train_x, train_y, test_x, test_y = digits()
    up = lambda x: F.interpolate(x, size=SPATIAL_SIDE, mode="bilinear", align_corners=False).clamp(0, 1)  # noqa: E731
    return up(train_x), train_y, up(test_x), test_y


@cache
def trained_spatial(steps: int = 300, seed: int = 0) -> TinyAutoencoderKL:
    """A ``TinyAutoencoderKL`` trained on 16x16 digits with Adam (seeded; one intra-op thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = TinyAutoencoderKL()
        x = digits16()[0]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            opt.zero_grad()
            model.loss(x[torch.randint(len(x), (64,), generator=gen)]).backward()
            opt.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


class TabularVAE(nn.Module):
    """A tabular VAE as a researcher writes one: ``encode(x [B, F]) -> (mu, logvar)``, ``decode(z) ->
    [B, F]`` with a linear output, trained on standardised features (mean 0, sd 1)."""

    def __init__(self, features: int, latent: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.fc_mu, self.fc_logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, features))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.dec(z)

    def loss(self, x: Tensor) -> Tensor:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = (self.decode(z) - x).pow(2).sum() / (2 * 0.1)
        return (recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())) / len(x)


@cache
def wine() -> tuple[Tensor, Tensor, tuple[str, ...], tuple[str, ...]]:
    """scikit-learn's wine table, standardised: (features [178, 13] float32, labels [178] (3
    cultivars), feature names, class names)."""
    from sklearn.datasets import load_wine

    data = load_wine()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return (torch.from_numpy(x.astype("float32")), torch.from_numpy(data.target.astype("int64")),
            tuple(data.feature_names), tuple(str(n) for n in data.target_names))


@cache
def trained_tabular(steps: int = 400, seed: int = 0) -> TabularVAE:
    """A ``TabularVAE`` trained on the standardised wine table (full batches, Adam, seeded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        x = wine()[0]
        model = TabularVAE(x.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            model.loss(x).backward()
            opt.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)
