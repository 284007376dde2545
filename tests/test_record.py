"""The training record (latent-train --record): when frames are taken, what they hold, that
recording never changes training, and that --resume continues the same record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save as encode_safetensors

from vaescope.training import component_init
from vaescope.training import train as train_mod
from vaescope.training.checkpoint import read_record
from vaescope.training.checks import ConfigError
from vaescope.training.config import TrainConfig
from vaescope.training.data import Split, load_dataset
from vaescope.training.embedded import subset_indices
from vaescope.training.models import build_model
from vaescope.training.record import TARGET_BYTES, Recorder
from vaescope.training.train import model_config_for, seed_everything, train
from vaescope.training.train_state import load_train_state


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset("digits")


def tiny(digits, model_type: str = "vae", **train_overrides):
    mcfg = model_config_for(digits, model_type=model_type, arch="mlp", latent_dim=4, hidden_dim=64)
    tcfg = TrainConfig(**{"dataset": "digits", "epochs": 3, "batch_size": 128, "lr": 2e-3, "eval_k": 5,
                          **train_overrides})
    return mcfg, tcfg


def encode(model, images, labels) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        x = images.float() / 255
        return model.encode(x, model.condition.from_labels(labels)).mean.half().numpy()


def test_frames_at_init_within_the_first_epoch_and_after_each_epoch(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits, record=120)
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False, evaluate_at_end=False)
    rec = read_record(tmp_path / "model.safetensors")
    # 1,497 training images in batches of 128: 12 batches, frames before batches 3, 6 and 9
    assert rec.epochs.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0]
    assert rec.codes.dtype == np.float16 and rec.codes.shape == (7, 120, 4)
    assert np.array_equal(rec.indices, subset_indices(len(digits.test), 120, tcfg.seed))
    picked = torch.from_numpy(rec.indices)
    assert np.array_equal(rec.labels, digits.test.labels[picked].numpy())
    # the first frame is the untrained model's codes, the last the trained model's
    seed_everything(tcfg.seed)
    untrained = build_model(mcfg, digits.info.class_names)
    assert np.array_equal(rec.codes[0], encode(untrained, digits.test.images[picked], None))
    assert np.array_equal(rec.codes[-1], encode(result.model, digits.test.images[picked], None))
    assert not np.allclose(rec.codes[0], rec.codes[-1], atol=0.1)  # the space moved
    moved = [float(np.abs(rec.codes[i + 1].astype(np.float32) - rec.codes[i]).mean()) for i in range(6)]
    assert all(m > 0 for m in moved)


def test_recording_does_not_change_training(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits, record=0)
    plain = train(mcfg, tcfg, tmp_path / "plain", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert read_record(tmp_path / "plain" / "model.safetensors") is None
    mcfg, tcfg = tiny(digits, record=300)
    recorded = train(mcfg, tcfg, tmp_path / "rec", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert read_record(tmp_path / "rec" / "model.safetensors").codes.shape == (7, 300, 4)
    for (k, va), vb in zip(plain.model.state_dict().items(), recorded.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_a_class_conditional_model_is_recorded_with_its_labels(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits, "cvae", record=50, epochs=1)
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False, evaluate_at_end=False)
    rec = read_record(tmp_path / "model.safetensors")
    picked = torch.from_numpy(rec.indices)
    assert np.array_equal(rec.codes[-1], encode(result.model, digits.test.images[picked], digits.test.labels[picked]))


def test_resume_continues_the_same_record(digits, tmp_path, monkeypatch) -> None:
    mcfg, tcfg = tiny(digits, record=100, epochs=4)
    train(mcfg, tcfg, tmp_path / "full", dataset=digits, show_progress=False, evaluate_at_end=False)
    full = read_record(tmp_path / "full" / "model.safetensors")
    original = train_mod._run_epoch

    def stop_in_third_epoch(net, opt, images, labels, cfg, epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(net, opt, images, labels, cfg, epoch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "_run_epoch", stop_in_third_epoch)
    assert train(mcfg, tcfg, tmp_path / "split", dataset=digits, show_progress=False).interrupted
    monkeypatch.undo()
    state = load_train_state(tmp_path / "split" / "train_state.safetensors")
    assert state.record["record.epochs"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 2.0]  # kept in the resume state
    train(mcfg, tcfg, tmp_path / "split", dataset=digits, resume=True, show_progress=False, evaluate_at_end=False)
    resumed = read_record(tmp_path / "split" / "model.safetensors")
    assert resumed.epochs.tolist() == full.epochs.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0, 4.0]
    assert np.array_equal(resumed.indices, full.indices) and np.array_equal(resumed.labels, full.labels)
    np.testing.assert_allclose(resumed.codes.astype(np.float32), full.codes.astype(np.float32), atol=2e-3)


def _fake_init(move_codes: bool):
    def init(model, images, seed):
        with torch.no_grad():
            model.prior_mean.add_(1.0)
            if move_codes:
                model.z_head[-1].bias.add_(0.5)
        return component_init.ComponentInit(sizes=[1] * model.num_components, head_agreement=1.0)
    return init


@pytest.mark.parametrize("move_codes, frames_at_init", [(False, 1), (True, 2)])
def test_frames_around_a_gmvae_component_initialisation(digits, tmp_path, monkeypatch, move_codes,
                                                        frames_at_init) -> None:
    """Before and after the mixture is set at the end of epoch 1; the after-frame only when the
    codes moved (the mean-field GMVAE's encoder is not changed by the real initialisation)."""
    monkeypatch.setattr(component_init, "initialise_components", _fake_init(move_codes))
    mcfg = model_config_for(digits, model_type="gmvae", arch="mlp", latent_dim=4, hidden_dim=32,
                            options={"z_given_y": False, "component_init": "umap", "component_init_epoch": 1})
    tcfg = TrainConfig(dataset="digits", epochs=2, eval_k=5, record=60)
    train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False, evaluate_at_end=False)
    rec = read_record(tmp_path / "model.safetensors")
    assert rec.epochs.tolist() == [0.0, 0.25, 0.5, 0.75] + [1.0] * frames_at_init + [2.0]
    if move_codes:
        assert not np.array_equal(rec.codes[4], rec.codes[5])


def _split(n: int) -> Split:
    return Split(torch.zeros(n, 1, 8, 8, dtype=torch.uint8), torch.arange(n) % 10)


def test_long_runs_record_every_kth_epoch_and_always_the_last() -> None:
    recorder = Recorder.create(_split(100), 50, seed=0, latent_dim=2, epochs=250)
    assert recorder.stride == 3
    assert [e for e in range(1, 251) if recorder.due(e, 250)][:3] == [3, 6, 9]
    assert recorder.due(250, 250) and not recorder.due(248, 250)
    assert len([e for e in range(1, 251) if recorder.due(e, 250)]) == 84
    assert Recorder.create(_split(100), 0, seed=0, latent_dim=2, epochs=5) is None


def test_a_full_record_keeps_its_last_frame(digits) -> None:
    model = build_model(model_config_for(digits, model_type="vae", arch="mlp", latent_dim=2, hidden_dim=8))
    recorder = Recorder.create(digits.test, 10, seed=0, latent_dim=2, epochs=5)
    recorder.capacity = 3
    for epoch in range(5):
        with torch.no_grad():
            model.head.bias.add_(1.0)  # new codes every time
        recorder.capture(model, float(epoch))
    assert recorder.record().epochs.tolist() == [0.0, 1.0, 4.0]


def test_a_record_stays_small(digits) -> None:
    """The --record help's figure: 20 epochs x 2,000 points x 16 dims (24 frames) in a file."""
    big_test = Split(digits.test.images.repeat(7, 1, 1, 1)[:2000], digits.test.labels.repeat(7)[:2000])
    model = build_model(model_config_for(digits, model_type="vae", arch="mlp", latent_dim=16, hidden_dim=8))
    recorder = Recorder.create(big_test, 2000, seed=0, latent_dim=16, epochs=20)
    for i, epoch in enumerate([0, 0.25, 0.5, 0.75, *range(1, 21)]):
        with torch.no_grad():
            model.head.bias.add_(0.01 * (i + 1))
        recorder.capture(model, epoch)
    size = len(encode_safetensors(recorder.tensors()))
    assert recorder.record().codes.shape == (24, 2000, 16)
    assert 1.5e6 < size < 1.6e6  # 1.54 MB
    # a wide code records fewer points, so the record stays under TARGET_BYTES
    wide = Recorder.create(Split(torch.zeros(5000, 1, 8, 8, dtype=torch.uint8), torch.zeros(5000)), 2000, seed=0,
                           latent_dim=1024, epochs=20)
    assert len(wide.indices) < 2000 and len(wide.indices) * 1024 * 2 * 27 <= TARGET_BYTES


def test_a_resumed_record_must_match_the_test_split(digits) -> None:
    saved = {"record.codes": torch.zeros(1, 3, 2, dtype=torch.float16), "record.epochs": torch.zeros(1),
             "record.labels": torch.tensor([0, 1, 2]), "record.indices": torch.tensor([0, 1, 5000])}
    with pytest.raises(ConfigError, match="records test image 5000 but the test split has 300"):
        Recorder.resumed(digits.test, saved, 2, 3)
    saved["record.indices"] = torch.tensor([0, 1, 2])
    saved["record.labels"] = digits.test.labels[:3] + 1
    with pytest.raises(ConfigError, match="recorded labels differ"):
        Recorder.resumed(digits.test, saved, 2, 3)
