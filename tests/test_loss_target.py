"""Every family's loss scores its reconstruction against ``target=`` (the clean image of
``latent-train --corrupt``), and against its input when no target is given."""

from __future__ import annotations

import pytest
import torch

from vaescope.training.config import ModelConfig
from vaescope.training.data import load_digits
from vaescope.training.models import FAMILIES, build_model


def _model(family: str):
    cfg = ModelConfig(model_type=family, image_shape=(1, 8, 8), latent_dim=4, arch="mlp", hidden_dim=32,
                      num_classes=10)
    torch.manual_seed(0)
    return build_model(cfg, tuple("0123456789"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loss_reconstructs_the_target(family: str) -> None:
    torch.set_num_threads(1)
    data = load_digits().test
    x, y = data.float_images()[:32], data.labels[:32]
    clean = data.float_images()[32:64]
    model = _model(family).eval()  # eval: the dae encodes its input as it is (no corruption of its own)

    def loss(**kwargs):
        torch.manual_seed(1)  # the same posterior samples, Gumbel draws and prior draws every call
        return model.loss(x, y, kl_weight=1.0, temperature=1.0, **kwargs)

    plain, same, other = loss(), loss(target=x), loss(target=clean)
    assert torch.equal(plain.recon, same.recon) and torch.equal(plain.total, same.total)
    assert not torch.allclose(other.recon, plain.recon)
    assert torch.equal(other.kl, plain.kl)  # only the reconstruction term changes
    # forward (what DDP and torch.compile call) passes it on
    torch.manual_seed(1)
    assert torch.equal(model(x, y, 1.0, 1.0, target=clean).recon, other.recon)


def test_the_recon_term_is_the_nll_of_the_target() -> None:
    """For a deterministic family the term is exactly -log p(target | z = f(x))."""
    data = load_digits().test
    x, clean = data.float_images()[:16], data.float_images()[16:32]
    model = _model("ae").eval()
    expected = model.recon_nll(model.decode_logits(model.encode(x).mean), clean).mean()
    assert torch.allclose(model.loss(x, target=clean).recon, expected)
