"""The adapter decides by evidence where it is clear and otherwise asks for the exact keyword.

- The encoder's spread (issue #29): a name or negative values settle it; an unnamed spread that is
  never negative is refused with ``spread="std"|"logvar"``; a code that changes between two
  encodes is a random draw, refused unless ``stochastic=True``.
- The pixels (issue #32): the input range and output reading are chosen by reconstruction error
  over every reading, on models trained here as AntixK's and diffusers' pipelines train them, with
  linear last layers that overshoot the data's range; no clear winner is refused with each
  reading's error and the call that settles it.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from foreign_models import (
    OVERSHOOT_STYLES,
    STYLES,
    ConstantStdEncoder,
    EncoderOutput,
    RandomDrawEncoder,
    digits,
    trained,
)
from torch import nn

from vaescope.adapter import CLEAR_MARGIN, STOCHASTIC_DRAWS, AdapterError, adapt, posterior_from
from vaescope.errors import InputError

SIGMA = 0.755  # issue #29's true σ, shown as exp(0.755 / 2) = 1.459 when read as a log-variance


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits()[2]


@pytest.fixture(scope="module")
def overshooting() -> dict[str, nn.Module]:
    """The models trained here with linear last layers (about 1 s each, cached for the process)."""
    return {style: trained(style) for style in OVERSHOOT_STYLES}


# -- the spread ---------------------------------------------------------------------------------------
def test_an_unnamed_spread_that_is_never_negative_is_refused_with_the_spread_keyword(images) -> None:
    model = ConstantStdEncoder(trained("examples"), SIGMA)
    with pytest.raises(InputError) as info:
        adapt(model, images)
    message = str(info.value)
    assert isinstance(info.value, AdapterError)
    assert "spread='std' or spread='logvar'" in message and "vs.explore(model, images=..., spread='std')" in message
    assert f"σ = {SIGMA:.3g}" in message and f"σ = {math.exp(SIGMA / 2):.3g}" in message  # both readings, in numbers


def test_with_spread_std_sigma_is_shown_right(images) -> None:
    model = adapt(ConstantStdEncoder(trained("examples"), SIGMA), images, spread="std")
    post = model.encode(images[:32])
    torch.testing.assert_close(post.std, torch.full_like(post.std, SIGMA), atol=1e-4, rtol=0)
    kl = 0.5 * (SIGMA**2 + post.mean.pow(2) - 1) - math.log(SIGMA)  # KL(N(mu, σ²) || N(0, 1)) per dim
    torch.testing.assert_close(model.kl_per_dim(post), kl, atol=1e-4, rtol=0)
    assert "spread read as a standard deviation (spread='std')" in model.describe().details
    # a (mu, std) VAE trained as such: the posterior's std is the model's own
    mu_std = trained("mu-std")
    post = adapt(mu_std, images, spread="std").encode(images[:32])
    with torch.no_grad():
        mu, std = mu_std.encode(images[:32])
    torch.testing.assert_close(post.mean, mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(post.std, std, atol=1e-4, rtol=0)


def test_a_spread_with_negative_values_is_a_log_variance_and_a_std_never_is(images) -> None:
    vae = trained("examples")
    model = adapt(vae, images)  # (mu, logvar) without names: its negative values settle it
    assert model.reading.spread == "logvar"
    assert "spread read as a log-variance (it has negative values)" in model.describe().details
    with torch.no_grad():
        _, logvar = vae.encode(images[:16].flatten(1))
    torch.testing.assert_close(model.encode(images[:16]).logvar, logvar, atol=1e-5, rtol=0)
    with pytest.raises(AdapterError, match=r"negative values \(down to .*pass spread='logvar'"):
        adapt(vae, images, spread="std")
    with pytest.raises(AdapterError, match="spread must be 'auto' or one of"):
        adapt(vae, images, spread="variance")


@pytest.mark.parametrize("key, to_logvar", [
    ("logvar", lambda s: s), ("log_var", lambda s: s), ("log_sigma", lambda s: 2 * s),
    ("std", lambda s: 2 * s.log()), ("sigma", lambda s: 2 * s.log()), ("scale", lambda s: 2 * s.log()),
])
def test_a_name_settles_the_spread(key: str, to_logvar) -> None:  # noqa: ANN001
    mean, spread = torch.zeros(2, 3), torch.tensor([[0.2, 0.755, 1.5], [0.9, 0.3, 2.0]])  # never negative
    got_mean, logvar, how = posterior_from({"mu": mean, key: spread})
    torch.testing.assert_close(logvar, to_logvar(spread))
    assert f"its name, '{key}'" in how
    with pytest.raises(AdapterError, match="spread='std' or spread='logvar'"):
        posterior_from((mean, spread))  # the same spread unnamed: either could be
    torch.testing.assert_close(posterior_from((mean, spread), spread="std")[1], 2 * spread.log())


def test_a_diffusers_latent_dist_keeps_working_with_logvar_or_std(images, overshooting) -> None:
    vae = overshooting["diffusers-linear"]
    model = adapt(vae, images)
    assert model.reading.spread == "logvar" and any("(its name, 'logvar')" in d for d in model.describe().details)
    with torch.no_grad():
        dist = vae.encode(2 * images[:8] - 1).latent_dist
    torch.testing.assert_close(model.encode(images[:8]).std, dist.std.flatten(1), atol=1e-5, rtol=1e-4)

    class StdOnly(nn.Module):  # a latent_dist with mean and std, and no logvar
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def encode(self, x: torch.Tensor) -> EncoderOutput:
            inner = self.vae.encode(x).latent_dist
            return EncoderOutput(SimpleNamespace(mean=inner.mean, std=inner.std))  # type: ignore[arg-type]

        def decode(self, z: torch.Tensor) -> object:
            return self.vae.decode(z)

    model = adapt(StdOnly(), images)
    assert model.reading.spread == "std" and (model.reading.input_range, model.reading.output) == ("symmetric", "tanh")
    torch.testing.assert_close(model.encode(images[:8]).std, dist.std.flatten(1), atol=1e-5, rtol=1e-4)


# -- a random code ------------------------------------------------------------------------------------
def test_a_random_code_is_refused_unless_stochastic(images) -> None:
    with pytest.raises(AdapterError, match=r"different codes for the same 64 images .* random draw.*"
                                           r"stochastic=True.*vs.explore\(model, images=..., stochastic=True\)"):
        adapt(RandomDrawEncoder(trained("examples")), images)


def test_with_stochastic_true_a_code_is_the_mean_of_seeded_draws(images) -> None:
    vae = trained("examples")
    model = adapt(RandomDrawEncoder(vae), images, stochastic=True)
    r = model.reading
    assert r.draws == STOCHASTIC_DRAWS and r.prior and (r.input_shape, r.input_range, r.output) == ("flat", "unit", "pixels")
    assert any("random draws" in d and "their standard deviation" in d for d in model.describe().details)
    state = torch.random.get_rng_state()
    post = model.encode(images[:64])
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    torch.testing.assert_close(model.encode(images[:64]).mean, post.mean)  # the same images, the same codes
    with torch.no_grad():
        mu, logvar = vae.encode(images[:64].flatten(1))
    std = (0.5 * logvar).exp()
    # the mean of 16 draws is within std / 4 of mu, typically; the draws' std estimates std within ~18 %
    assert float(((post.mean - mu).abs() / std).median()) < 0.4
    assert 0.8 < float((post.std / std).median()) < 1.2
    assert adapt(vae, images, stochastic=True).reading.draws == 1  # a deterministic encoder: nothing changes


# -- the pixels -----------------------------------------------------------------------------------------
def _raw(vae: nn.Module, style: str, x: torch.Tensor) -> torch.Tensor:
    """What the model decodes from the mean code, as it was trained (its own input range)."""
    with torch.no_grad():
        if style == "vanilla-01":
            return vae.decode(vae.encode(x)[0])
        return vae.decode(vae.encode(2 * x - 1).latent_dist.mode()).sample


@pytest.mark.parametrize("style, reading, to_unit", [
    ("vanilla-01", ("image", "unit", "pixels"), lambda v: v.clamp(0, 1)),  # AntixK's VanillaVAE on [0, 1]
    ("diffusers-linear", ("image", "symmetric", "tanh"), lambda v: ((v + 1) / 2).clamp(0, 1)),  # AutoencoderKL
])
def test_a_linear_decoder_that_overshoots_is_read_by_reconstruction_error(style: str, reading, to_unit, images,  # noqa: ANN001
                                                                         overshooting) -> None:
    vae = overshooting[style]
    raw = _raw(vae, style, images[:64])
    if reading[2] == "pixels":
        assert float(raw.min()) < -0.05  # below any fixed range check's tolerance
    else:
        assert float(raw.abs().max()) > 1.05
    model = adapt(vae, images)  # no keywords
    r = model.reading
    assert (r.input_shape, r.input_range, r.output) == reading
    torch.testing.assert_close(model.decode(model.encode(images[:64]).mean), to_unit(raw), atol=1e-5, rtol=0)
    note = next(d for d in model.describe().details if "chosen by reconstruction error" in d)
    best, runner_up = (float(v) for v in re.findall(r"images: (\d\.\d+) \(next best (\d\.\d+)", note)[0])
    assert best <= CLEAR_MARGIN * runner_up


def test_an_untrained_model_is_refused_listing_every_readings_error_and_the_call(images) -> None:
    torch.manual_seed(0)
    vae = STYLES["antixk"]()
    with pytest.raises(AdapterError) as info:
        adapt(vae, images)
    message = str(info.value)
    listed = {(r, o): float(e) for r, o, e in re.findall(r"input_range='(\w+)', output='(\w+)': (\d\.\d{4})", message)}
    assert set(listed) == {(r, o) for r in ("unit", "symmetric") for o in ("pixels", "logits", "tanh")}
    assert re.search(r"e\.g\. vs\.explore\(model, images=\.\.\., input_range='\w+', output='\w+'\)", message)
    assert f"at most {CLEAR_MARGIN} of the next best's" in message
    for (rng, out), error in listed.items():  # each listed error is what that reading really reconstructs
        model = adapt(vae, images, input_range=rng, output=out)
        x = images[:64]
        got = float((model.decode(model.encode(x).mean) - x).pow(2).mean())
        assert abs(got - error) < 1e-4
    assert "input range and output set by keywords" in model.describe().details


def test_two_open_questions_are_asked_in_one_error(images) -> None:
    torch.manual_seed(0)
    untrained = OVERSHOOT_STYLES["mu-std"]()  # (mu, softplus std): never negative; no reading reconstructs
    with pytest.raises(AdapterError, match=r"(?s)settle both.*1\. .*spread='std' or spread='logvar'.*"
                                           r"2\. cannot tell how this model reads and writes pixels"):
        adapt(untrained, images)
    model = adapt(untrained, images, spread="std", input_range="unit", output="pixels")
    assert model.reading.spread == "std"


def test_vs_explore_takes_the_keywords_the_messages_name(images) -> None:
    """The refusal names ``vs.explore(..., spread='std')``: that call works as written, and the page's
    model shows the right spread."""
    import vaescope as vs

    model = ConstantStdEncoder(trained("examples"), SIGMA)
    with pytest.raises(InputError, match="spread='std'"):
        vs.explore(model, images=images, prevent_thread_lock=True, inbrowser=False)
    app = vs.explore(model, images=images, spread="std", prevent_thread_lock=True, inbrowser=False)
    try:
        entry = app.ctx.store.open_name(app.ctx.store.names()[0])
        assert abs(float(entry.latents.std.mean()) - SIGMA) < 1e-4
    finally:
        app.close()
