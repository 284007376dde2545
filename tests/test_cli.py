"""`latent-train`: argparse-style errors for bad arguments, and a real run's JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaescope.training.checkpoint import load_checkpoint
from vaescope.training.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--beta", "-1"], "--beta: must be >= 0"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--latent-dim", "0"], "--latent-dim: must be >= 1"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--model", "diffusion"], "invalid choice: 'diffusion'"),
    (["--lr", "abc"], "expected a float"),
    (["--device", "tpu"], "device must be auto, cpu, cuda[:N] or mps"),
])
def test_bad_arguments_give_argparse_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_file_with_flags_overriding(tmp_path, capsys) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"model": {"model_type": "cvae", "latent_dim": 3, "hidden_dim": 32},
                               "train": {"dataset": "digits", "epochs": 5, "eval_k": 5}}))
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["checkpoint"] == str(out / "model.safetensors")
    assert {"elbo", "nll_iwae", "active_units", "probe_accuracy"} <= set(line)
    _, meta = load_checkpoint(out / "model.safetensors")
    assert meta.model_type == "cvae" and meta.model_config.latent_dim == 3 and meta.model_config.arch == "mlp"
    assert meta.train_config["epochs"] == 1 and len(meta.history) == 1


def test_compile_flag_and_config_key(tmp_path) -> None:
    """--compile sets TrainConfig.compile; left out, the config file's value (else False) stands."""
    from vaescope.training.cli import build_parser, configs_from_args

    parser = build_parser()
    assert configs_from_args(parser.parse_args(["--compile"]), parser)[1].compile is True
    assert configs_from_args(parser.parse_args([]), parser)[1].compile is False
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": {"compile": True}}))
    assert configs_from_args(parser.parse_args(["--config", str(cfg)]), parser)[1].compile is True


def test_bad_config_file(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"train": {"epochz": 3}}))
    with pytest.raises(SystemExit):
        main(["--config", str(cfg)])
    assert "unknown key(s) ['epochz']" in capsys.readouterr().err


def test_dataset_errors_are_one_line_not_a_traceback(tmp_path, capsys) -> None:
    code = main(["--dataset", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("latent-train: error:") and "Traceback" not in err


def test_resume_a_missing_run(tmp_path, capsys) -> None:
    assert main(["--resume", str(tmp_path / "nothing"), "--quiet"]) == 1
    assert "holds no resume state from an earlier run" in capsys.readouterr().err


def test_evaluate_a_checkpoint_with_more_importance_samples(capsys) -> None:
    from vaescope.training.evaluate import main as evaluate_main

    assert evaluate_main(["assets/checkpoints/digits/vae.safetensors", "--eval-k", "20", "--nll-images", "50"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["nll_k"] == 20 and line["nll_images"] == 50 and 5 < line["nll_iwae"] < 60
    assert evaluate_main(["assets/checkpoints/missing.safetensors"]) == 1
    assert "file not found" in capsys.readouterr().err


def _bad_checkpoint(kind: str, tmp_path) -> tuple[str, str]:
    """Write one kind of bad checkpoint; returns (path, expected message fragment)."""
    import os
    import pickle
    import shutil

    from safetensors.torch import save_file
    from torch import zeros

    good = "assets/checkpoints/digits/vae.safetensors"
    path = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 3])
        return str(path), "truncated or corrupt"
    if kind == "random":
        path.write_bytes(os.urandom(2048))
        return str(path), "truncated or corrupt"
    if kind == "empty":
        path.write_bytes(b"")
        return str(path), "empty"
    if kind == "foreign":
        save_file({"w": zeros(2)}, str(path))
        return str(path), "without vaescope metadata"
    if kind == "pickle":
        path = tmp_path / "model.pt"
        path.write_bytes(pickle.dumps({"w": 1}))
        return str(path), "pickles"
    shutil.copy(good, path)
    return str(path), ""


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "foreign", "pickle"])
def test_bad_checkpoints_give_one_clear_line_in_the_cli(kind, tmp_path, capsys) -> None:
    from vaescope.training.evaluate import main as evaluate_main

    path, fragment = _bad_checkpoint(kind, tmp_path)
    assert evaluate_main([path, "--eval-k", "2", "--nll-images", "2"]) == 1
    err = capsys.readouterr().err
    assert fragment in err and path in err and "Traceback" not in err
