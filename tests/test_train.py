"""The training loop on real data (sklearn digits): files, reproducibility, resume, failures, DDP."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from serving import free_port

from vaescope.training import train as train_mod
from vaescope.training.checkpoint import load_checkpoint, read_metadata
from vaescope.training.config import TrainConfig
from vaescope.training.data import load_dataset
from vaescope.training.metrics import active_dims, active_units, cluster_accuracy
from vaescope.training.models.gmvae import temperature_at
from vaescope.training.train import (
    TrainingDiverged,
    kl_weight_at,
    model_config_for,
    train,
)
from vaescope.training.train_state import TrainStateError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny(digits, model_type: str = "vae", **train_overrides):
    mcfg = model_config_for(digits, model_type=model_type, arch="mlp", latent_dim=4, hidden_dim=64)
    tcfg = TrainConfig(dataset="digits", epochs=2, batch_size=128, lr=2e-3, eval_k=20, **train_overrides)
    return mcfg, tcfg


def test_run_folder_has_every_artifact(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits)
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    for name in ("model.safetensors", "history.json", "samples.png", "reconstructions.png", "loss.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    model, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert [h["epoch"] for h in meta.history] == [1, 2]
    assert json.loads((tmp_path / "history.json").read_text()) == meta.history
    for key in ("elbo", "recon", "kl", "kl_per_dim", "active_units", "nll_iwae", "probe_accuracy"):
        assert key in meta.metrics, key
    assert len(meta.metrics["kl_per_dim"]) == 4
    assert meta.metrics["nll_iwae"] <= -meta.metrics["elbo"] + 0.5  # IWAE is the tighter bound
    assert meta.dataset["name"] == "digits" and meta.dataset["image_shape"] == [1, 8, 8]
    assert 0.1 < meta.metrics["probe_accuracy"] <= 1.0
    assert result.metrics == meta.metrics


def test_same_seed_gives_identical_weights(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits)
    a = train(mcfg, tcfg, tmp_path / "a", dataset=digits, show_progress=False, evaluate_at_end=False)
    b = train(mcfg, tcfg, tmp_path / "b", dataset=digits, show_progress=False, evaluate_at_end=False)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("model_type", ["vae", "gmvae"])
def test_resume_reaches_the_uninterrupted_result(digits, tmp_path, model_type, monkeypatch) -> None:
    mcfg, tcfg = tiny(digits, model_type, warmup_epochs=2)
    tcfg.epochs = 4
    full = train(mcfg, tcfg, tmp_path / "full", dataset=digits, show_progress=False, evaluate_at_end=False)
    _loss_breaks_at(monkeypatch, epoch=3, batch=4, exc=KeyboardInterrupt())
    stopped = train(mcfg, tcfg, tmp_path / "split", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert stopped.interrupted and len(stopped.history) == 2
    monkeypatch.undo()
    resumed = train(mcfg, tcfg, tmp_path / "split", dataset=digits, resume=True, show_progress=False,
                    evaluate_at_end=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for (k, va), vb in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_resume_without_a_previous_run_is_a_clear_error(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits)
    with pytest.raises(TrainStateError, match="cannot resume: .* holds no resume state from an earlier run"):
        train(mcfg, tcfg, tmp_path, dataset=digits, resume=True)


def _loss_breaks_at(monkeypatch, epoch: int, batch: int, exc: BaseException | None) -> None:
    """Make the model's forward return NaN (or raise ``exc``) at a given (epoch, batch), 1-based."""
    calls = {"n": 0}
    original = train_mod._run_epoch

    def counting_epoch(net, *args, **kwargs):
        ep = args[4]  # (opt, images, labels, cfg, epoch, ...)
        real_forward = net.forward

        def forward(*a, **k):
            calls["n"] += 1
            out = real_forward(*a, **k)
            if ep + 1 == epoch and calls["n"] == batch:
                if exc is not None:
                    raise exc
                return type(out)(total=out.total * float("nan"), recon=out.recon, kl=out.kl)
            return out

        calls["n"] = 0
        net.forward = forward
        try:
            return original(net, *args, **kwargs)
        finally:
            del net.forward

    monkeypatch.setattr(train_mod, "_run_epoch", counting_epoch)


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_last_good_checkpoint(digits, tmp_path, monkeypatch) -> None:
    mcfg, tcfg = tiny(digits)
    tcfg.epochs = 3
    _loss_breaks_at(monkeypatch, epoch=2, batch=3, exc=None)
    with pytest.raises(TrainingDiverged, match="epoch 2, batch 3"):
        train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    model, meta = load_checkpoint(tmp_path / "model.safetensors")
    assert [h["epoch"] for h in meta.history] == [1]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_ctrl_c_keeps_a_checkpoint_and_can_resume(digits, tmp_path, monkeypatch) -> None:
    mcfg, tcfg = tiny(digits)
    tcfg.epochs = 3
    _loss_breaks_at(monkeypatch, epoch=2, batch=2, exc=KeyboardInterrupt())
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    assert result.interrupted
    assert [h["epoch"] for h in read_metadata(tmp_path / "model.safetensors").history] == [1]
    monkeypatch.undo()
    resumed = train(mcfg, tcfg, tmp_path, dataset=digits, resume=True, show_progress=False)
    assert len(resumed.history) == 3 and "elbo" in resumed.metrics


@pytest.mark.parametrize("model_type", ["vae", "gmvae"])
def test_mixed_precision_path_trains_on_cpu(digits, tmp_path, model_type, monkeypatch) -> None:
    """The CUDA path's bf16 autocast, run on the CPU: finite, falling loss, fp32 weights saved, and
    the first epoch's loss close to the fp32 run's."""
    mcfg, tcfg = tiny(digits, model_type)
    tcfg.epochs = 3
    fp32 = train(mcfg, tcfg, tmp_path / "fp32", dataset=digits, show_progress=False, evaluate_at_end=False)
    calls = []
    monkeypatch.setattr(train_mod, "amp_enabled", lambda cfg, device: calls.append(device.type) or cfg.amp)
    mixed = train(mcfg, tcfg, tmp_path / "bf16", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert calls == ["cpu"] * 3
    losses = [h["train_loss"] for h in mixed.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert losses[0] == pytest.approx(fp32.history[0]["train_loss"], rel=0.05)
    # bf16 matmuls round differently, so the weights differ from the fp32 run's (autocast was on)
    assert any(not torch.equal(a, b) for a, b in zip(mixed.model.parameters(), fp32.model.parameters(), strict=True))
    saved, _ = load_checkpoint(tmp_path / "bf16" / "model.safetensors")
    assert all(p.dtype == torch.float32 for p in saved.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["vae", "gmvae"])
def test_compiled_training_step_matches_eager(digits, tmp_path, model_type, monkeypatch) -> None:
    """--compile (torch.compile, the GPU path's option) run on the CPU: the compiled step is the one
    used, the losses follow the eager run's, and the checkpoint holds the plain model's weights."""
    mcfg, tcfg = tiny(digits, model_type)
    eager = train(mcfg, tcfg, tmp_path / "eager", dataset=digits, show_progress=False, evaluate_at_end=False)
    compiled_nets = []
    real_run_epoch = train_mod._run_epoch
    monkeypatch.setattr(train_mod, "_run_epoch", lambda net, *a: compiled_nets.append(net) or real_run_epoch(net, *a))
    tcfg.compile = True
    from torch._inductor import config as inductor_config

    with inductor_config.patch(fallback_random=True):  # eager's random draws, to compare with
        compiled = train(mcfg, tcfg, tmp_path / "compiled", dataset=digits, show_progress=False, evaluate_at_end=False)
    assert len(compiled_nets) == 2 and all(hasattr(net, "_orig_mod") for net in compiled_nets)
    for a, b in zip(compiled.history, eager.history, strict=True):  # fused kernels round differently
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    saved, meta = load_checkpoint(tmp_path / "compiled" / "model.safetensors")  # no "_orig_mod." prefixes
    assert meta.train_config["compile"] is True
    for (name, p), q in zip(saved.state_dict().items(), eager.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_gmvae_reports_clustering_metrics(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits, "gmvae")
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    assert 0.0 < result.metrics["cluster_accuracy"] <= 1.0
    assert 0.0 <= result.metrics["nmi"] <= 1.0
    assert math.isfinite(result.metrics["nll_iwae"])
    # every epoch records the same clustering accuracy on the test split; the last one is the final model's
    assert [0.0 < rec["val_cluster_accuracy"] <= 1.0 for rec in result.history] == [True, True]
    assert result.history[-1]["val_cluster_accuracy"] == round(result.metrics["cluster_accuracy"], 4)
    temperatures = [rec["temperature"] for rec in result.history]  # Gumbel-softmax, annealed over the run
    assert temperatures[0] > temperatures[1] >= mcfg.options["temperature_end"]


@pytest.mark.parametrize("model_type", ["ae", "vae", "cvae"])  # the CVAE cannot encode without labels
def test_models_without_components_record_no_clustering(digits, tmp_path, model_type) -> None:
    mcfg, tcfg = tiny(digits, model_type)
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    assert all("val_cluster_accuracy" not in rec for rec in result.history) and "cluster_accuracy" not in result.metrics
    assert all("temperature" not in rec and "kl_weight" in rec for rec in result.history)  # no mixture, no Gumbel-softmax


def test_ae_has_no_nll_but_reconstructs(digits, tmp_path) -> None:
    mcfg, tcfg = tiny(digits, "ae")
    result = train(mcfg, tcfg, tmp_path, dataset=digits, show_progress=False)
    assert "nll_iwae" not in result.metrics and result.metrics["elbo"] is None
    assert result.metrics["kl"] == 0.0 and result.metrics["recon"] > 0


def test_schedules() -> None:
    assert kl_weight_at(0.0, 4.0, 10) == 0.0
    assert kl_weight_at(5.0, 4.0, 10) == pytest.approx(2.0)
    assert kl_weight_at(50.0, 4.0, 10) == 4.0
    assert kl_weight_at(0.0, 1.0, 0) == 1.0
    assert temperature_at(0.0, 1.0, 0.5) == 1.0
    assert temperature_at(1.0, 1.0, 0.5) == pytest.approx(0.5)
    assert 0.5 < temperature_at(0.5, 1.0, 0.5) < 1.0


def test_metric_helpers() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(np.array([2, 2, 0, 0, 1, 1]), labels, 3) == 1.0
    assert cluster_accuracy(np.array([0, 0, 0, 0, 0, 0]), labels, 3) == pytest.approx(1 / 3)
    means = np.stack([np.linspace(-1, 1, 100), np.full(100, 0.3), np.random.default_rng(0).normal(0, 0.01, 100)], 1)
    assert active_units(means) == 1
    np.testing.assert_array_equal(active_dims(means), [True, False, False])  # varies / constant / noise 1e-4
    np.testing.assert_array_equal(active_dims(means, threshold=1.0), [False, False, False])  # Var = 0.34



def _ddp_worker(rank: int, port: int, out: str) -> None:
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = load_dataset("digits")
    mcfg, tcfg = tiny(data)
    result = train(mcfg, tcfg, f"{out}/run", dataset=data, show_progress=False, evaluate_at_end=False)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_ranks_end_with_identical_weights(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    initial = train_mod.build_model(tiny(load_dataset("digits"))[0]).state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # it did train
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_data_no_checkpoint_could_describe_is_refused_before_training(digits, tmp_path) -> None:
    """latent-train never writes a checkpoint its own loader would refuse: it checks first."""
    import dataclasses

    from vaescope.training.config import ConfigError
    from vaescope.training.data import Dataset, Split

    long_names = Dataset(dataclasses.replace(digits.info, class_names=tuple("x" * 300 for _ in range(10))),
                         digits.train, digits.test)
    mcfg, tcfg = tiny(long_names)
    with pytest.raises(ConfigError, match=r"cannot be described in a checkpoint: dataset.class_names\[0\] is 300 "):
        train(mcfg, tcfg, tmp_path, dataset=long_names, show_progress=False)
    no_test = Dataset(digits.info, digits.train, Split(digits.test.images[:0], digits.test.labels[:0]))
    with pytest.raises(ConfigError, match="has 1497 training and 0 test images; training needs at least one of each"):
        train(*tiny(no_test), tmp_path, dataset=no_test, show_progress=False)
    assert not any(tmp_path.iterdir())
