"""The families of issue 24, each held to the property that defines it, on sklearn's 8x8 digits
(and the procedural waveforms): linear AE = PCA's subspace, the DAE denoises, the sparse AE's
units reach ρ, the contractive AE's codes resist noise, the AAE's prior samples are digits, both
of the HVAE's layers are used, the VRAE rebuilds sequences. Plus the corruption function, the
waveform dataset, and every new family through the real trainer and the explorer's own code.

Each property test trains tiny models for a few hundred Adam steps on one thread (seconds). The
numbers in the comments were measured with exactly these settings; the thresholds leave room.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from vaescope.contract import check_contract
from vaescope.training.checkpoint import load_checkpoint
from vaescope.training.config import ConfigError, ModelConfig, TrainConfig
from vaescope.training.corruption import CORRUPTIONS, corrupt
from vaescope.training.data import load_digits
from vaescope.training.metrics import active_dims
from vaescope.training.models import LatentModel, build_model
from vaescope.training.waveforms import WAVE_SHAPES, load_waveforms, make_waveforms, render_waves

NEW_FAMILIES = ("linear-ae", "dae", "sparse-ae", "contractive-ae", "aae", "hvae", "vrae")


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    data = load_digits(seed=0)
    return {"x": data.train.float_images(), "y": data.train.labels, "x_test": data.test.float_images(),
            "y_test": data.test.labels}


def config(model_type: str, image_shape=(1, 8, 8), latent_dim: int = 8, hidden_dim: int = 64, **kw) -> ModelConfig:
    return ModelConfig(model_type=model_type, image_shape=image_shape, latent_dim=latent_dim, arch="mlp",
                       hidden_dim=hidden_dim, **kw)


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: these matrices are tiny, and extra threads only contend for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit(cfg: ModelConfig, x: torch.Tensor, steps: int, lr: float = 1e-2, batch: int = 128, seed: int = 0,
        warmup_steps: int = 0) -> LatentModel:
    """Train a fresh model of ``cfg`` with Adam on minibatches of x (a linear KL warm-up over
    ``warmup_steps``, as the trainer's --warmup-epochs), on one thread; returned in eval mode."""
    with one_thread():
        torch.manual_seed(seed)
        model = build_model(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for step in range(steps):
            idx = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
            weight = min(1.0, step / warmup_steps) if warmup_steps else None
            out = model.loss(x[idx], kl_weight=weight)
            opt.zero_grad()
            out.total.backward()
            opt.step()
        return model.eval()


def reconstruct(model: LatentModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(model.encode(x).mean)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


# -- corruption --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_is_pure_seeded_and_stays_in_range(kind: str, digits) -> None:
    x = digits["x_test"][:64]
    before = x.clone()
    a = corrupt(x, kind, 0.3, torch.Generator().manual_seed(1))
    b = corrupt(x, kind, 0.3, torch.Generator().manual_seed(1))
    c = corrupt(x, kind, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(x, before)  # the input is never written
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)
    assert torch.equal(corrupt(x, kind, 0.0), x)


def test_each_corruption_does_what_its_name_says() -> None:
    x = torch.full((200, 1, 8, 8), 0.5)
    gen = torch.Generator().manual_seed(0)
    noisy = corrupt(x, "gaussian", 0.1, gen)  # 5 sd from the clip bounds: the noise is seen unclipped
    assert abs(float((noisy - x).std()) - 0.1) < 0.005 and abs(float((noisy - x).mean())) < 0.005
    masked = corrupt(x, "mask", 0.3, gen)
    assert set(masked.unique().tolist()) == {0.0, 0.5} and abs(float((masked == 0).float().mean()) - 0.3) < 0.02
    salted = corrupt(x, "salt-pepper", 0.3, gen)
    hit = salted != 0.5
    assert abs(float(hit.float().mean()) - 0.3) < 0.02
    assert set(salted[hit].unique().tolist()) == {0.0, 1.0} and abs(float(salted[hit].mean()) - 0.5) < 0.05


def test_a_bad_corruption_is_refused() -> None:
    with pytest.raises(ValueError, match="must be one of"):
        corrupt(torch.zeros(1, 1, 2, 2), "blur", 0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        corrupt(torch.zeros(1, 1, 2, 2), "mask", 1.5)
    with pytest.raises(ConfigError, match="corruption must be one of"):
        config("dae", options={"corruption": "blur"})


# -- linear AE ---------------------------------------------------------------------------------------
def test_linear_ae_code_spans_the_pca_subspace(digits) -> None:
    """Principal angles between the decoder's column space and PCA's top-4 components, after 2,000
    full-batch Adam steps (1-2 s). Measured, seeds 0 / 1 / 2: largest angle 0.001 / 0.084 / 0.003
    degrees (the other three below 0.004); untrained: 65-89 degrees. The encoder's row space converges too, but slowly along pixels the
    digits never use (a zero-variance direction gets no gradient), so the decoder is the reading."""
    x, d = digits["x"], 4
    pcs = PCA(d).fit(x.flatten(1).numpy()).components_.T  # [64, 4]
    torch.manual_seed(0)
    model = build_model(config("linear-ae", latent_dim=d))
    untrained = np.degrees(subspace_angles(model.decoder[0].weight.detach().numpy(), pcs))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000)
    with one_thread():
        for _ in range(2000):
            opt.zero_grad()
            model.loss(x).total.backward()
            opt.step()
            schedule.step()
    angles = np.degrees(subspace_angles(model.decoder[0].weight.detach().numpy(), pcs))
    assert untrained.max() > 20
    assert angles.max() < 1.0, f"principal angles {angles.round(3)} degrees"
    out = model.decode(model.encode(x[:4]).mean)
    assert out.min() >= 0 and out.max() <= 1
    assert model.describe().details == ("linear", "Gaussian likelihood (squared error)")


# -- denoising AE ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, level", [("gaussian", 0.3), ("mask", 0.3), ("salt-pepper", 0.2)])
def test_dae_reconstructs_the_clean_image_better_than_the_identity_and_a_plain_ae(kind, level, digits) -> None:
    """Per-pixel MSE to the clean test image, 400 steps each (0.3 s). Measured (DAE / identity /
    AE): gaussian 0.3: 0.025 / 0.052 / 0.050; mask 0.3: 0.026 / 0.070 / 0.039;
    salt-pepper 0.2: 0.029 / 0.088 / 0.057."""
    options = {"corruption": kind, "corruption_level": level}
    dae = fit(config("dae", options=options), digits["x"], steps=400)
    ae = fit(config("ae"), digits["x"], steps=400)
    clean = digits["x_test"]
    noisy = corrupt(clean, kind, level, torch.Generator().manual_seed(123))
    dae_error, identity, ae_error = mse(reconstruct(dae, noisy), clean), mse(noisy, clean), mse(reconstruct(ae, noisy), clean)
    assert dae_error < 0.6 * identity, (dae_error, identity)
    assert dae_error < 0.85 * ae_error, (dae_error, ae_error)


def test_dae_corrupts_only_while_training(digits) -> None:
    """Like dropout: the training loss scores a corrupted input, eval scores the clean one."""
    model = build_model(config("dae", options={"corruption": "mask", "corruption_level": 0.5}))
    x = digits["x_test"][:32]
    clean = model.recon_nll(model.decode_logits(model.encode(x).mean), x).mean()
    torch.manual_seed(0)
    trained_a = model.loss(x).recon
    torch.manual_seed(0)
    trained_b = model.loss(x).recon
    assert torch.equal(trained_a, trained_b) and not torch.allclose(trained_a, clean)
    torch.testing.assert_close(model.eval().loss(x).recon, clean)
    assert "mask 0.5" in model.describe().title


# -- sparse AE ---------------------------------------------------------------------------------------
def test_sparsity_kl_is_the_bernoulli_kl() -> None:
    from vaescope.training.models.sparse_ae import sparsity_kl

    rho_hat = torch.tensor([0.05, 0.2, 0.5, 0.9])
    expected = torch.distributions.kl_divergence(torch.distributions.Bernoulli(torch.full((4,), 0.05)),
                                                 torch.distributions.Bernoulli(rho_hat))
    torch.testing.assert_close(sparsity_kl(0.05, rho_hat), expected)
    assert float(sparsity_kl(0.05, rho_hat)[0]) == pytest.approx(0.0, abs=1e-7)


def test_sparse_ae_mean_activations_reach_rho(digits) -> None:
    """64 sigmoid units (overcomplete for 64 pixels), ρ = 0.05, 800 steps (0.7 s). Measured on the
    test split: mean activation 0.0515, every unit within 0.043-0.070; without the penalty
    (weight 0) the mean is 0.35 and the reconstruction error about the same (16.0 vs 16.7 nats)."""
    x, x_test = digits["x"], digits["x_test"]
    sparse = fit(config("sparse-ae", latent_dim=64, options={"sparsity_target": 0.05}), x, steps=800)
    free = fit(config("sparse-ae", latent_dim=64, options={"sparsity_weight": 0.0}), x, steps=800)
    rho_hat = sparse.mean_activations(x_test)
    assert rho_hat.shape == (64,) and sparse.hidden_activations(x_test[:5]).shape == (5, 64)
    assert abs(float(rho_hat.mean()) - 0.05) < 0.01, float(rho_hat.mean())
    assert float(rho_hat.min()) > 0.025 and float(rho_hat.max()) < 0.1, (float(rho_hat.min()), float(rho_hat.max()))
    assert float(free.mean_activations(x_test).mean()) > 0.2
    with torch.no_grad():
        assert float(sparse.loss(x_test).recon) < 1.15 * float(free.loss(x_test).recon)
    torch.testing.assert_close(sparse.encode(x_test[:5]).mean, sparse.hidden_activations(x_test[:5]))
    assert "ρ = 0.05" in sparse.describe().details[-1] and sparse.describe().activation_target == 0.05

    # the diagnostics panel plots each unit's mean activation against ρ, through the contract
    from vaescope.explorer.core.diagnostics import kl_panel
    from vaescope.explorer.core.evaldata import EvalData
    from vaescope.explorer.core.store import ModelStore

    store = ModelStore(None, torch.device("cpu"))
    images = (x_test.numpy() * 255).round().astype(np.uint8)
    store.add_model("sparse", sparse, EvalData(images, digits["y_test"].numpy(), "digits"))
    figure, notes = kl_panel(store.open_name("sparse"))
    bars = np.asarray(figure.data[0].y)
    np.testing.assert_allclose(bars, sparse.mean_activations(torch.from_numpy(images).float() / 255).numpy(),
                               atol=1e-5)
    assert figure.layout.shapes[0].y0 == 0.05 and any("target ρ = 0.05" in n for n in notes)


# -- contractive AE ----------------------------------------------------------------------------------
def test_the_exact_jacobian_penalty_is_the_jacobians_frobenius_norm(digits) -> None:
    torch.manual_seed(0)
    model = build_model(config("contractive-ae", latent_dim=6))
    x = digits["x_test"][:5]
    _, penalty = model.jacobian_norm(x)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: model.code(v[None])[0], x[i])  # [6, 1, 8, 8]
        torch.testing.assert_close(penalty[i], jac.pow(2).sum(), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # the validation pass runs under inference mode: the penalty still comes out
        assert torch.isfinite(model.loss(x).extras["jacobian_frobenius_sq"])


def test_the_hutchinson_estimate_for_wide_codes_is_unbiased(digits) -> None:
    """40 code units > exact_max_dim 32: Rademacher projections; their mean converges to the exact
    value (computed with exact_max_dim raised)."""
    torch.manual_seed(0)
    wide = build_model(config("contractive-ae", latent_dim=40, options={"projections": 2000}))
    exact = build_model(config("contractive-ae", latent_dim=40, options={"exact_max_dim": 64}))
    exact.load_state_dict(wide.state_dict())
    x = digits["x_test"][:3]
    _, truth = exact.jacobian_norm(x)
    _, estimate = wide.jacobian_norm(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, truth, rtol=0.05, atol=0)
    _, one_draw = build_model(config("contractive-ae", latent_dim=40)).jacobian_norm(x)
    assert one_draw.shape == (3,) and torch.isfinite(one_draw).all()


def relative_code_movement(model: LatentModel, x: torch.Tensor, sd: float = 0.05) -> float:
    """E||f(x + e) - f(x)||^2 / total variance of f(x) over the images: how far small noise moves a
    code, measured against how far apart the codes of different images are (scale-free: an encoder
    cannot pass by shrinking all its codes)."""
    noise = sd * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z, z_noisy = model.encode(x).mean, model.encode(x + noise).mean
    return float((z_noisy - z).pow(2).sum(-1).mean() / z.var(0).sum())


def test_contractive_ae_codes_move_less_under_small_noise_than_a_plain_aes(digits) -> None:
    """Same backbone, same 400 steps (0.7 s); noise sd 0.05 on the test images. Measured relative
    movement, seeds 0 / 1 / 2: CAE (λ = 0.1) 0.0065 / 0.0059 / 0.0064, AE 0.0157 / 0.0154 / 0.0173,
    ratios 0.41 / 0.38 / 0.37; reconstruction 17.5 vs 16.9 nats (seed 0)."""
    cae = fit(config("contractive-ae"), digits["x"], steps=400)
    ae = fit(config("ae"), digits["x"], steps=400)
    moved_cae, moved_ae = relative_code_movement(cae, digits["x_test"]), relative_code_movement(ae, digits["x_test"])
    assert moved_cae < 0.7 * moved_ae, (moved_cae, moved_ae)
    with torch.no_grad():
        assert float(cae.loss(digits["x_test"]).recon) < 1.1 * float(ae.loss(digits["x_test"]).recon)


# -- adversarial AE ----------------------------------------------------------------------------------
def test_each_aae_player_gets_only_its_own_gradient(digits) -> None:
    """The discriminator's gradient does not depend on the encoder's adversarial term, and the
    encoder's gradient gets nothing from the discriminator's loss."""
    x = digits["x_test"][:64]

    def grads(weight: float, term: str = "total") -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(config("aae", options={"adversarial_weight": weight}))
        torch.manual_seed(1)  # the same prior draws in every call
        getattr(model.loss(x), term).backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}

    with_adversary, without = grads(1.0), grads(0.0)
    recon_only = grads(0.0, "recon")
    for name in with_adversary:
        if name.startswith("discriminator."):
            assert torch.equal(with_adversary[name], without[name]), name  # g_loss never reaches D
            assert float(with_adversary[name].abs().sum()) > 0, name
        else:
            torch.testing.assert_close(without[name], recon_only[name])  # d_loss never reaches the encoder
    assert not torch.equal(with_adversary["head.weight"], without["head.weight"])  # g_loss does reach it


@pytest.fixture(scope="module")
def digit_probe(digits) -> LogisticRegression:
    """A logistic-regression digit classifier on raw pixels (test accuracy 0.96)."""
    probe = LogisticRegression(max_iter=2000).fit(digits["x"].flatten(1).numpy(), digits["y"].numpy())
    assert probe.score(digits["x_test"].flatten(1).numpy(), digits["y_test"].numpy()) > 0.9
    return probe


def probe_confidence(model: LatentModel, probe: LogisticRegression, n: int = 1000) -> tuple[float, float]:
    """(mean max class probability, normalised entropy of the predicted-class histogram) of n
    decoded prior samples: confident when they look like digits, near 1 when all ten appear."""
    images = model.generate(n, generator=torch.Generator().manual_seed(3)).flatten(1).numpy()
    probs = probe.predict_proba(images)
    share = np.bincount(probs.argmax(1), minlength=10) / n
    share = share[share > 0]
    return float(probs.max(1).mean()), float(-(share * np.log(share)).sum() / math.log(10))


def test_aae_prior_samples_are_digits_unlike_the_plain_aes(digits, digit_probe) -> None:
    """8-d codes, 1,000 steps at lr 3e-3 (2 s). The probe's mean confidence on the test digits is
    0.90. Measured on 1,000 prior samples, seeds 0 / 1 / 2: AAE 0.64 / 0.63 / 0.71 with all ten
    digits present (histogram entropy 0.97 / 0.97 / 0.92); the AE's 0.41 / 0.39 / 0.43."""
    aae = fit(config("aae"), digits["x"], steps=1000, lr=3e-3)
    ae = fit(config("ae"), digits["x"], steps=1000, lr=3e-3)
    aae_confidence, aae_spread = probe_confidence(aae, digit_probe)
    ae_confidence, _ = probe_confidence(ae, digit_probe)
    assert aae_confidence > ae_confidence + 0.12, (aae_confidence, ae_confidence)
    assert aae_spread > 0.85, aae_spread


def test_aae_mixture_prior_draws_each_component_and_reports_responsibilities(digits) -> None:
    from vaescope.training.models.aae import MIXTURE_RADIUS, MIXTURE_SD, mixture_means

    model = build_model(config("aae", latent_dim=2, options={"prior": "mixture", "prior_components": 6})).eval()
    description = check_contract(model)
    assert (description.condition.kind, description.condition.size, description.has_prior) == ("component", 6, True)
    means = mixture_means(6, 2)
    torch.testing.assert_close(means.norm(dim=-1), torch.full((6,), MIXTURE_RADIUS))
    torch.testing.assert_close(model.prior_means, means)
    for k in (0, 5):
        z = model.sample(2000, k, generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(z.mean(0), means[k], atol=0.05, rtol=0)
        torch.testing.assert_close(z.std(0), torch.full((2,), MIXTURE_SD), atol=0.03, rtol=0)
        assert (model._responsibilities(z).argmax(1) == k).float().mean() > 0.95
    post = model.encode(digits["x_test"][:16])
    assert post.component_probs is not None and post.component_probs.shape == (16, 6)
    torch.testing.assert_close(post.component_probs.sum(-1), torch.ones(16))
    wide = mixture_means(10, 5)
    assert wide.shape == (10, 5) and torch.equal(wide, mixture_means(10, 5))  # fixed: no state of its own
    with pytest.raises(ValueError, match="out of range"):
        model.sample(1, condition=6)


# -- hierarchical VAE --------------------------------------------------------------------------------
def test_hvae_describes_its_two_layers_and_fills_one_from_the_other(digits) -> None:
    torch.manual_seed(0)
    model = build_model(config("hvae", options={"top_dim": 3})).eval()
    groups = model.describe().latent_groups
    assert [(g.name, g.start, g.size) for g in groups] == [("z1", 0, 5), ("z2", 5, 3)]
    assert [g.size for g in build_model(config("hvae")).describe().latent_groups] == [6, 2]  # default: a quarter
    with torch.no_grad():
        z = model.encode(digits["x_test"][:4]).mean
        other = z.clone()
        other[:, 5:] += 3.0
        assert torch.equal(model.decode(z), model.decode(other))  # decode reads z1 only: p(x|z1)
        top = model.fill_group(other, "z2")
        torch.testing.assert_close(top[:, :5], model.p_z1(other[:, 5:])[0])
        assert torch.equal(top[:, 5:], other[:, 5:])
        bottom = model.fill_group(other, "z1")
        torch.testing.assert_close(bottom[:, 5:], model.q_z2(other[:, :5]).mean)
        assert model.sample(7).shape == (7, 8) and model.kl_per_dim(model.encode(digits["x_test"][:4])).shape == (4, 8)
    with pytest.raises(ValueError, match="keep must be"):
        model.fill_group(z, "z3")
    with pytest.raises(ConfigError, match="latent_dim >= 2"):
        config("hvae", latent_dim=1)


def test_hvae_importance_weights_average_to_its_elbo(digits) -> None:
    """E_q[log w] is the ELBO: the IWAE weights and the loss estimate the same terms."""
    torch.manual_seed(0)
    model = build_model(config("hvae")).eval()
    x = digits["x_test"][:8]
    with torch.no_grad():
        log_w = model.log_importance_weights(x, None, 4000).mean(0)  # [8]
        elbo = -torch.stack([model.loss(x[i:i + 1].expand(4000, -1, -1, -1)).total for i in range(8)])
    torch.testing.assert_close(log_w, elbo, rtol=0, atol=0.1)


def test_hvae_uses_both_layers(digits) -> None:
    """latent 8 = z1 6 + z2 2, 1,000 steps at lr 3e-3 with a KL warm-up over the first 500 (1.2 s).
    Measured on the test split, seeds 0 / 1 / 2: KL of z1 1.77 / 1.78 / 1.65 nats and of z2
    1.59 / 1.56 / 1.56 nats; active units 6 of 6 and 2 of 2."""
    model = fit(config("hvae"), digits["x"], steps=1000, lr=3e-3, warmup_steps=500)
    x = digits["x_test"]
    torch.manual_seed(0)
    with torch.no_grad():
        terms = model.loss(x).extras
        active = active_dims(model.encode(x).mean.numpy())
    assert float(terms["kl_z1"]) > 0.5 and float(terms["kl_z2"]) > 0.5, {k: float(v) for k, v in terms.items()}
    assert active[:6].sum() >= 1 and active[6:].sum() >= 1, active


# -- variational recurrent AE ------------------------------------------------------------------------
def test_an_image_is_read_row_by_row() -> None:
    from vaescope.training.models.vrae import as_image, as_sequence

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # [B, C, H, W]
    seq = as_sequence(x)
    assert seq.shape == (2, 4, 15)
    torch.testing.assert_close(seq[1, 2], x[1, :, 2, :].flatten())  # step 2 = row 2 of every channel
    assert torch.equal(as_image(seq, (3, 4, 5)), x)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_vrae_reconstructs_digit_rows(cell: str, digits) -> None:
    """8 steps of 8 pixels; 600 steps (2-4 s). Measured per-pixel MSE as a share of predicting the
    mean image's (0.074), seeds 0 / 1 / 2: GRU 0.53 / 0.59 / 0.56, LSTM 0.54 / 0.58 / 0.66."""
    model = fit(config("vrae", options={"cell": cell}), digits["x"], steps=600, lr=5e-3)
    baseline = mse(digits["x"].mean(0, keepdim=True).expand_as(digits["x_test"]), digits["x_test"])
    error = mse(reconstruct(model, digits["x_test"]), digits["x_test"])
    assert error < 0.75 * baseline, (error, baseline)
    assert "8 steps of 8 features" in model.describe().details[0]


def test_vrae_reconstructs_waveforms() -> None:
    """The waveforms at 32 steps (the same generator, half the dataset's length, to keep this fast),
    Gaussian likelihood with c = 0.005 (a Bernoulli or c = 0.05 likelihood pays too little for
    the detail, and the code collapses), a 32-wide GRU and a KL warm-up; 500 steps of 64 sequences
    (4-6 s). Measured MSE as a share of predicting the mean sequence's, seeds 0 / 1 / 2:
    0.25 / 0.35 / 0.29."""
    x, x_test = make_waveforms(4000, seed=0, steps=32).float_images(), make_waveforms(300, seed=1, steps=32).float_images()
    cfg = config("vrae", image_shape=(1, 32, 1), hidden_dim=32, likelihood="gaussian", gaussian_c=0.005)
    model = fit(cfg, x, steps=500, lr=5e-3, batch=64, warmup_steps=300)
    baseline = mse(x.mean(0, keepdim=True).expand_as(x_test), x_test)
    error = mse(reconstruct(model, x_test), x_test)
    assert error < 0.5 * baseline, (error, baseline)


# -- the waveform dataset ----------------------------------------------------------------------------
def test_waveforms_hold_their_factors() -> None:
    data = load_waveforms(seed=0)
    assert data.info.image_shape == (1, 64, 1) and data.info.class_names == WAVE_SHAPES
    assert data.info.factor_names == ("shape", "frequency", "phase", "amplitude")
    assert (len(data.train), len(data.test)) == (8000, 2000)
    for split in (data.train, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 64, 1)
        assert torch.equal(split.labels, split.factors[:, 0].long())
    assert set(data.train.labels.tolist()) == {0, 1, 2, 3}
    f = data.train.factors
    assert f[:, 1].min() >= 1 and f[:, 1].max() <= 4 and f[:, 3].min() >= 0.2 and f[:, 3].max() <= 1
    again = load_waveforms(seed=0)
    assert torch.equal(again.train.images, data.train.images) and not torch.equal(
        load_waveforms(seed=1).train.images, data.train.images)
    # the stored sequence is the rendering of its factors, to the uint8 step
    values = data.train.float_images()[:50, 0, :, 0].double().numpy()
    np.testing.assert_allclose(values, render_waves(data.train.factors[:50].double().numpy()), atol=0.5 / 255 + 1e-6)


def test_each_wave_shape_has_its_form() -> None:
    factors = np.array([[s, 2.0, 0.0, 1.0] for s in range(4)])
    waves = render_waves(factors, 64)  # [4, 64], two cycles from phase 0
    t = np.arange(64) / 64
    np.testing.assert_allclose(waves[0], 0.5 + 0.5 * np.sin(4 * np.pi * t), atol=1e-12)  # sine
    assert set(np.round(waves[1], 6)) == {0.0, 1.0}  # square: two levels
    assert waves[2].min() == pytest.approx(0.0) and waves[2][16] == pytest.approx(1.0)  # triangle peaks mid-period
    assert np.all(np.diff(waves[3][:32]) > 0)  # sawtooth rises through each period


# -- every new family through latent-train's options, the trainer, and the explorer ------------------
def test_family_options_become_latent_train_flags() -> None:
    from vaescope.training.cli import build_parser, configs_from_args

    parser = build_parser()
    cases = {
        "dae": (["--corruption", "mask", "--corruption-level", "0.5"], {"corruption": "mask", "corruption_level": 0.5}),
        "sparse-ae": (["--sparsity-target", "0.1", "--sparsity-weight", "3"], {"sparsity_target": 0.1, "sparsity_weight": 3.0}),
        "contractive-ae": (["--contraction-weight", "0.5", "--exact-max-dim", "8", "--projections", "2"],
                           {"contraction_weight": 0.5, "exact_max_dim": 8, "projections": 2}),
        "aae": (["--prior", "mixture", "--prior-components", "4", "--adversarial-weight", "2"],
                {"prior": "mixture", "prior_components": 4, "adversarial_weight": 2.0}),
        "hvae": (["--top-dim", "3"], {"top_dim": 3}),
        "vrae": (["--cell", "lstm"], {"cell": "lstm"}),
    }
    for family, (flags, expected) in cases.items():
        model_kwargs, _ = configs_from_args(parser.parse_args(["--model", family, *flags]), parser)
        assert model_kwargs["options"] == expected, family
    help_text = parser.format_help()
    assert "target mean activation ρ" in help_text and "default 0.05" in help_text


VARIANTS = [(family, {}) for family in NEW_FAMILIES] + [("aae", {"prior": "mixture"}), ("vrae", {"cell": "lstm"})]


@pytest.mark.parametrize("family, options", VARIANTS, ids=[f"{f}-{o.get('prior') or o.get('cell') or ''}".rstrip("-")
                                                          for f, o in VARIANTS])
def test_every_new_family_trains_saves_and_opens_in_the_explorer(family: str, options: dict, tmp_path) -> None:
    """One epoch of the real trainer on digits (with bf16 autocast on the CPU for the first steps'
    dtype paths), the metrics, the saved file, and the explorer's map and slider on it."""
    from vaescope.explorer.core.dims import dim_info
    from vaescope.explorer.core.maps import MapView, map_figure
    from vaescope.explorer.core.projection import fit_projection
    from vaescope.explorer.core.store import ModelStore
    from vaescope.explorer.core.traversal import slider_ranges, traversal_codes
    from vaescope.training.train import model_config_for, train

    data = load_digits(seed=0)
    cfg = model_config_for(data, model_type=family, arch="mlp", latent_dim=4, hidden_dim=32, options=options)
    with one_thread():
        result = train(cfg, TrainConfig(dataset="digits", epochs=1, eval_k=4, lr=3e-3), tmp_path / "run",
                       dataset=data, show_progress=False)
        model = build_model(cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(data.test.float_images()[:32])
        out.total.backward()
    assert math.isfinite(out.total.item())
    metrics = result.metrics
    assert math.isfinite(metrics["recon"]) and metrics["latent_dim"] == 4 and 0 <= metrics["probe_accuracy"] <= 1
    assert ("nll_iwae" in metrics) == (family in ("hvae", "vrae"))  # the families with a posterior spread
    loaded, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    x = data.test.float_images()[:8]
    torch.testing.assert_close(reconstruct(loaded, x), reconstruct(result.model.eval(), x))

    entry = ModelStore(tmp_path / "run", torch.device("cpu")).open_name("model.safetensors")
    assert entry.description.family == family and entry.has_points and len(entry.latents) == 300
    projection = fit_projection(entry.latents.mean, "pca", 2)
    figure = map_figure(entry, MapView(entry.key, projection, np.arange(300), "pca", "class"), "prior")
    assert sum(len(t.x) for t in figure.data if t.customdata is not None) == 300
    order = dim_info(entry).order
    lo, hi = slider_ranges("data", entry.latents.mean)
    codes = traversal_codes(entry.latents.mean[0], order[:1], lo, hi, 5)
    with torch.no_grad():
        images = entry.model.decode(torch.from_numpy(codes).float())
    assert images.shape == (5, 1, 8, 8) and torch.isfinite(images).all()
    assert (images[0] - images[-1]).abs().max() > 1e-4  # the slider moves the picture


def test_the_explorer_maps_and_moves_one_hvae_layer_at_a_time(tmp_path) -> None:
    """The page picker lists both layers; the map of layer z2 projects only z2's coordinates; a
    slider of z2 moves z2 and refills z1 with E[z1|z2] (the picture follows the top layer), while a
    slider of z1 leaves z1's other coordinates alone and refills z2."""
    from vaescope.explorer.core.dims import page_choices, page_dims
    from vaescope.explorer.ui.app import build_app
    from vaescope.explorer.ui.state import Session
    from vaescope.explorer.ui.traversal import moved_in_group
    from vaescope.training.train import model_config_for, train

    data = load_digits(seed=0)
    cfg = model_config_for(data, model_type="hvae", arch="mlp", latent_dim=6, hidden_dim=32, options={"top_dim": 2})
    with one_thread():
        train(cfg, TrainConfig(dataset="digits", epochs=1, eval_k=4, lr=3e-3), tmp_path / "run", dataset=data,
              show_progress=False)
    app = build_app(tmp_path / "run", device="cpu")
    session = Session()
    app.panels["models"].load_checkpoint("model.safetensors", session)
    entry = app.ctx.store.open_name("model.safetensors")
    choices = page_choices(entry)
    assert [value for _, value in choices] == ["z1:0", "z2:0"] and choices[1][0].startswith("layer z2")
    assert sorted(page_dims(entry, "z2:0").tolist()) == [4, 5] and sorted(page_dims(entry, "z1:0").tolist()) == [0, 1, 2, 3]
    assert sorted(page_dims(entry, "nonsense").tolist()) == [0, 1, 2, 3]  # a request value from outside

    out = app.panels["map"].draw_map("pca", 2, "class", "none", 0, "z2:0", session)
    view = session.view
    assert view.group.name == "z2" and "layer z2" in view.title
    expected = PCA(2).fit_transform(entry.latents.mean[:, 4:])  # the map of z2 alone (axes up to sign)
    np.testing.assert_allclose(np.abs(view.projection.coords), np.abs(expected), atol=1e-3)
    assert app.panels["map"].plot in out

    z = entry.latents.mean[0].copy()
    top = moved_in_group(entry, z, 4, 2.5, "z2:0")
    with torch.no_grad():
        expected_z1 = entry.model.p_z1(torch.from_numpy(top[None, 4:]))[0][0].numpy()
    assert top[4] == 2.5 and top[5] == pytest.approx(z[5])
    np.testing.assert_allclose(top[:4], expected_z1, atol=1e-5)
    bottom = moved_in_group(entry, z, 1, -2.0, "z1:0")
    assert bottom[1] == -2.0 and np.allclose(bottom[[0, 2, 3]], z[[0, 2, 3]])
    with torch.no_grad():
        expected_z2 = entry.model.q_z2(torch.from_numpy(bottom[None, :4])).mean[0].numpy()
    np.testing.assert_allclose(bottom[4:], expected_z2, atol=1e-5)
