"""The model contract, one test suite parametrized over the registry."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from vaescope.contract import Description, Posterior, check_contract
from vaescope.training.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from vaescope.training.config import ModelConfig
from vaescope.training.models import FAMILIES, build_model

D = 4


# Every registered family, plus the GMVAE's mean-field posterior q(z|x) (z_given_y=False).
VARIANTS = [*sorted(FAMILIES), "gmvae-mean-field"]


def tiny_config(variant: str, image_shape=(1, 8, 8), arch: str = "mlp") -> ModelConfig:
    model_type = "gmvae" if variant == "gmvae-mean-field" else variant  # family names may hold a hyphen
    options = {"z_given_y": variant != "gmvae-mean-field"} if model_type == "gmvae" else {}
    return ModelConfig(model_type=model_type, image_shape=image_shape, arch=arch, latent_dim=D,
                       hidden_dim=64, base_channels=8, num_classes=10, options=options)


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
    assert model.kl_per_dim(post).shape == (16, D)
    out = model.decode(post.mean, y)
    assert out.shape == (16, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    cond = 3 if model.condition.size else None
    assert model.sample(5, condition=cond).shape == (5, D)
    assert model.generate(5, condition=cond).shape == (5, 1, 8, 8)
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
    assert type(loaded) is FAMILIES[model.config.model_type]


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
        z = model.sample(200, k, generator=torch.Generator().manual_seed(k))
        nearest = torch.cdist(z, model.prior_mean).argmin(1)
        assert (nearest == k).all()
    gen = torch.Generator().manual_seed(5)
    images = model.generate(4, condition=3, generator=gen)
    expected = model.decode(model.sample(4, 3, generator=torch.Generator().manual_seed(5)))
    assert torch.allclose(images, expected)
    cold = model.sample(200, 3, temperature=0.1, generator=torch.Generator().manual_seed(1))
    warm = model.sample(200, 3, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cold - model.prior_mean[3], 0.1 * (warm - model.prior_mean[3]), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        model.sample(1, condition=10)


def test_ae_prior_samples_are_off_manifold(digits) -> None:
    """The AE has a point posterior: zero KL and no variance."""
    model = build_model(tiny_config("ae"))
    post = model.encode(digits[0][:4])
    assert torch.equal(post.sample(), post.mean)
    assert float(model.kl_per_dim(post).abs().sum()) == 0.0
    assert post.deterministic and float(post.std.abs().sum()) == 0.0
    assert not model.describe().has_prior and "tangled strokes" in model.describe().prior_note


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
    assert (moved > 1e-4) == model.options.z_given_y
    assert not torch.equal(model._component_prior(eye[[0]])[0], model._component_prior(eye[[7]])[0])


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_answers_the_contract(model_type: str, digits) -> None:
    """describe() says what the explorer needs; the condition and the prior are what the family is."""
    model = build_model(tiny_config(model_type), class_names=[str(i) for i in range(10)]).eval()
    description = check_contract(model)
    assert isinstance(description, Description) and description.family == model_type
    assert description.image_shape == (1, 8, 8) and description.latent_dim == D
    assert description.class_names[3] == "3" and description.title and description.summary
    expected = {"ae": ("none", 0, False), "vae": ("none", 0, True), "cvae": ("class", 10, True),
                "gmvae": ("component", 10, True), "linear-ae": ("none", 0, False), "dae": ("none", 0, False),
                "sparse-ae": ("none", 0, False), "contractive-ae": ("none", 0, False), "aae": ("none", 0, True),
                "hvae": ("none", 0, True), "vrae": ("none", 0, True)}[model_type]
    assert (description.condition.kind, description.condition.size, description.has_prior) == expected
    labels = digits[1][:8]
    cond = description.condition.from_labels(labels)
    post = model.encode(digits[0][:8], cond)
    assert isinstance(post, Posterior)
    assert (post.component_probs is not None) == description.condition.is_mixture
    if post.component_probs is not None:
        torch.testing.assert_close(post.component_probs.sum(-1), torch.ones(8))
    assert model.decode(post.mean, cond).shape == (8, 1, 8, 8)


def test_the_beta_shows_in_the_title() -> None:
    config = tiny_config("vae")
    assert build_model(config).describe().title == "VAE"
    config.beta = 4.0
    assert build_model(config).describe().title == "β-VAE (β = 4)"


def test_family_options_are_checked() -> None:
    from vaescope.training.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig(model_type="vae", options={"components": 3})
    with pytest.raises(ConfigError, match="categorical_weight must be a float"):
        ModelConfig(model_type="gmvae", num_classes=10, options={"categorical_weight": "high"})
    with pytest.raises(ConfigError, match="needs num_components >= 2"):
        ModelConfig(model_type="gmvae", num_classes=0)
    with pytest.raises(ConfigError, match="model_type must be one of"):
        ModelConfig(model_type="diffusion")
    filled = ModelConfig(model_type="gmvae", num_classes=10, options={"categorical_weight": 1})
    assert filled.options == {"components": 0, "categorical_weight": 1.0, "z_given_y": True} | GMVAE_TRAINING_DEFAULTS


# the GMVAE's training options (its temperature schedule and component initialisation), at their defaults
GMVAE_TRAINING_DEFAULTS = {"temperature_start": 1.0, "temperature_end": 0.5, "component_init": "random",
                           "component_init_epoch": 3, "component_refit_at_end": False}


def test_a_format_1_model_config_is_upgraded() -> None:
    old = {"model_type": "gmvae", "image_shape": [1, 8, 8], "latent_dim": 4, "arch": "mlp", "hidden_dim": 32,
           "base_channels": 32, "num_classes": 10, "num_components": 10, "likelihood": "bernoulli",
           "gaussian_c": 0.05, "beta": 1.0, "categorical_weight": 0.2, "z_given_y": False}
    config = ModelConfig.from_dict(old)
    assert config.options == {"components": 10, "categorical_weight": 0.2, "z_given_y": False} | GMVAE_TRAINING_DEFAULTS
    vae = ModelConfig.from_dict(old | {"model_type": "vae", "num_components": 0, "categorical_weight": 1.0,
                                       "z_given_y": True})
    assert vae.options == {}
