"""The model contract, one test suite parametrized over the registry."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from vaescope.training.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from vaescope.training.config import ModelConfig
from vaescope.training.models import MODELS, build_model

D = 4


# Every registered family, plus the GMVAE's mean-field posterior q(z|x) (z_given_y=False).
VARIANTS = [*sorted(MODELS), "gmvae-mean-field"]


def tiny_config(variant: str, image_shape=(1, 8, 8), arch: str = "mlp") -> ModelConfig:
    model_type = variant.split("-")[0]
    return ModelConfig(model_type=model_type, image_shape=image_shape, arch=arch, latent_dim=D,
                       hidden_dim=64, base_channels=8, num_classes=10, z_given_y=variant != "gmvae-mean-field")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:128] / 16, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y[:128])


@pytest.mark.parametrize("model_type", VARIANTS)
def test_shapes_and_ranges(model_type: str, digits) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(model_type))
    x, y = digits[0][:16], digits[1][:16]
    post = model.encode(x, y)
    assert post.mean.shape == (16, D)
    assert post.sample().shape == (16, D)
    assert post.kl().shape == (16,)
    out = model.decode(post.mean, y)
    assert out.shape == (16, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    cond = 3 if model.is_conditional or model.num_components else None
    assert model.sample(5, condition=cond).shape == (5, 1, 8, 8)
    loss = model.loss(x, y, temperature=0.5)
    assert torch.isfinite(loss.total) and torch.isfinite(loss.recon) and torch.isfinite(loss.kl)
    assert loss.recon > 0


@pytest.mark.parametrize("model_type", VARIANTS)
def test_loss_falls_on_tiny_data(model_type: str, digits) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(model_type))
    x, y = digits
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def eval_loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return float(model.loss(x, y, temperature=0.5).total)

    before = eval_loss()
    for _ in range(40):
        opt.zero_grad()
        model.loss(x, y, temperature=0.5).total.backward()
        opt.step()
    assert eval_loss() < 0.8 * before


@pytest.mark.parametrize("model_type", VARIANTS)
def test_save_load_gives_identical_outputs(model_type: str, digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(model_type)).eval()
    meta = CheckpointMeta(model_config=model.config, train_config={}, dataset={"name": "digits"})
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    x, y = digits[0][:8], digits[1][:8]
    z = torch.randn(8, D)
    with torch.no_grad():
        assert torch.equal(model.encode(x, y).mean, loaded.encode(x, y).mean)
        assert torch.equal(model.decode(z, y), loaded.decode(z, y))
    assert loaded_meta.model_config == model.config
    assert type(loaded) is MODELS[model.config.model_type]


def test_cvae_output_depends_on_label() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("cvae")).eval()
    z = torch.zeros(1, D)
    with torch.no_grad():
        a = model.decode(z, torch.tensor([0]))
        b = model.decode(z, torch.tensor([7]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="labels"):
        model.decode(z)


def test_gmvae_sample_draws_from_the_requested_component() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("gmvae")).eval()
    with torch.no_grad():  # put the component means far apart so membership is unambiguous
        model.prior_mean.copy_(torch.arange(10.0)[:, None].expand(10, D) * 10)
        model.prior_logvar.fill_(-4.0)
    for k in (0, 3, 9):
        z = model.prior_sample(200, k, torch.Generator().manual_seed(k))
        nearest = torch.cdist(z, model.prior_mean).argmin(1)
        assert (nearest == k).all()
    gen = torch.Generator().manual_seed(5)
    images = model.sample(4, condition=3, generator=gen)
    expected = model.decode(model.prior_sample(4, 3, torch.Generator().manual_seed(5)))
    assert torch.allclose(images, expected)
    with pytest.raises(ValueError, match="out of range"):
        model.sample(1, condition=10)


def test_ae_prior_samples_are_off_manifold(digits) -> None:
    """The AE has a point posterior: zero KL and no variance."""
    model = build_model(tiny_config("ae"))
    post = model.encode(digits[0][:4])
    assert torch.equal(post.sample(), post.mean)
    assert float(post.kl().abs().sum()) == 0.0


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (1, 32, 32), (1, 64, 64), (3, 64, 64), (3, 32, 32)])
def test_backbones_fit_every_image_size(arch: str, image_shape) -> None:
    for model_type in ("vae", "gmvae"):
        model = build_model(tiny_config(model_type, image_shape, arch))
        x = torch.rand(2, *image_shape)
        assert model.decode(model.encode(x).mean).shape == x.shape


def test_gmvae_categorical_kl_splits_exactly() -> None:
    from vaescope.training.models.gmvae import categorical_kl_parts

    log_q = torch.randn(32, 5).log_softmax(-1)
    per_image, balance = categorical_kl_parts(log_q)
    direct = (log_q.exp() * (log_q + torch.log(torch.tensor(5.0)))).sum(-1).mean()
    assert torch.allclose(per_image + balance, direct, atol=1e-5)
    assert per_image >= 0 and balance >= 0
    uniform = torch.full((8, 5), 0.2).log()
    assert torch.allclose(torch.stack(categorical_kl_parts(uniform)), torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("variant", ["gmvae", "gmvae-mean-field"])
def test_gmvae_posterior_depends_on_y_only_when_z_given_y(variant: str, digits) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant)).eval()
    h = model.encoder(digits[0][:8])
    eye = torch.eye(10)
    with torch.no_grad():
        a = model._z_posterior(h, eye[[0] * 8], eye[[0] * 8])
        b = model._z_posterior(h, eye[[7] * 8], eye[[7] * 8])
    moved = (a.mean - b.mean).abs().max().item()
    assert (moved > 1e-4) == model.config.z_given_y
    assert not torch.equal(a.prior_mean, b.prior_mean)  # p(z|y) always follows y
