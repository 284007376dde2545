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


# -- absurd flags and config values: one argparse-style line, never a traceback --------------------
def _one_line_exit(argv: list[str], capsys, code: int = 2) -> str:
    """Run latent-train; it must exit with ``code`` and print no traceback. Returns the error line."""
    try:
        result = main(argv)
    except SystemExit as exc:
        result = exc.code
    assert result == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("latent-train: error: "), err
    return line


@pytest.mark.parametrize(("argv", "message"), [
    (["--lr", "nan"], "--lr: must be a finite number, got 'nan'"),
    (["--beta", "1e400"], "--beta: must be a finite number, got '1e400'"),
    (["--temperature-end=-inf"], "--temperature-end: must be a finite number, got '-inf'"),
    (["--epochs", "100000"], "--epochs: must be <= 5000 (a documented limit), got 100000"),
    (["--epochs", "1.5"], "--epochs: expected an integer, got '1.5'"),
    (["--epochs", "9" * 5000], "--epochs: expected an integer"),
    (["--batch-size", "10000000"], "--batch-size: must be <= 65536"),
    (["--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["--seed", str(2**40)], "--seed: must be <= 4294967295"),
    (["--eval-k", "1000000"], "--eval-k: must be <= 5000"),
    (["--temperature-end", "0"], "--temperature-end: must be >= 0.001, got 0"),
    (["--gaussian-c", "1e-30"], "--gaussian-c: must be >= 1e-06"),
    (["--hidden-dim", "100000"], "--hidden-dim: must be <= 4096"),
    (["--image-size", "7"], "--image-size: invalid choice: 7"),
    (["--components", "nan"], "--components: expected an integer, got 'nan'"),
    (["--categorical-weight", "inf"], "--categorical-weight: must be a finite number"),
    (["--device", "cuda:abc"], "device must be auto, cpu, cuda[:N] or mps, got 'cuda:abc'"),
    (["--model", "gmvae", "--components", "2000000"], "--components: must be <= 1000000"),
    (["--model", "vae", "--components", "3"], "--components is an option of gmvae; --model vae has no such option"),
])
def test_absurd_flags_give_one_line(argv, message, capsys) -> None:
    assert message in _one_line_exit(argv, capsys)


BAD_CONFIGS = {
    "NaN": ('{"train": {"lr": NaN}}', "lr must be a finite number, got nan"),
    "bool for int": ({"train": {"epochs": True}}, "epochs must be an integer, got True"),
    "fraction for int": ({"train": {"epochs": 2.5}}, "epochs must be an integer, got 2.5"),
    "text for int": ({"model": {"latent_dim": "8"}}, "latent_dim must be an integer, got '8'"),
    "null": ({"train": {"lr": None}}, "lr must be a float, got None"),
    "huge batch": ({"train": {"batch_size": 10**12}}, "batch_size must be <= 65536"),
    "list for section": ({"model": [1, 2]}, "section 'model' must be a JSON object"),
    "list for file": ([1, 2], "the file must be a JSON object"),
    "unknown section": ({"eval": {}}, "unknown key(s) ['eval']"),
    "unknown model key": ({"model": {"latent_dims": 3}}, "model: unknown key(s) ['latent_dims']"),
    "text for options": ({"model": {"options": "x"}}, "options must be a JSON object"),
    "unknown family": ({"model": {"model_type": "diffusion"}}, "model_type must be one of"),
    "int for device": ({"train": {"device": 0}}, "device must be a string, got 0"),
    "huge option": ({"model": {"model_type": "gmvae", "options": {"components": 10**6}}},
                    "the config describes a model of"),
    "deep": ("[" * 100_000 + "]" * 100_000, "is nested 100000 levels deep; the limit is 8"),
    "huge int": ('{"train": {"epochs": ' + "9" * 5000 + "}}", "is not valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00", "is not UTF-8 text"),
    "not JSON": ("epochs = 3", "is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_values_give_one_line(case, tmp_path, capsys) -> None:
    content, message = BAD_CONFIGS[case]
    path = tmp_path / "run.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    argv = ["--config", str(path), "--dataset", "digits", "--arch", "mlp", "--out", str(tmp_path / "o")]
    assert message in _one_line_exit(argv, capsys)


def test_a_config_file_that_cannot_be_read(tmp_path, capsys) -> None:
    assert "cannot read it" in _one_line_exit(["--config", str(tmp_path)], capsys)
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20) + "{}")
    assert "the limit is 1,048,576" in _one_line_exit(["--config", str(big)], capsys)


def test_an_out_folder_that_is_a_file(tmp_path, capsys) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert f"--out {target} is a file, not a folder" in _one_line_exit(["--out", str(target)], capsys)


def test_an_unexpected_failure_is_still_one_line(tmp_path, capsys, monkeypatch) -> None:
    from vaescope.training import cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "load_dataset", broken)
    line = _one_line_exit(["--dataset", "digits", "--out", str(tmp_path / "o")], capsys, code=1)
    assert line == ("latent-train: error: unexpected ZeroDivisionError: a bug (set VAESCOPE_DEBUG=1 to see where)")
    monkeypatch.setenv("VAESCOPE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["--dataset", "digits", "--out", str(tmp_path / "o")])


def test_sample_and_record_flags(tmp_path, capsys) -> None:
    """--embed-sample N and --record N reach the train config and the checkpoint; 0 turns each off;
    the defaults embed all 300 digits test images (8x8) and record 2,000 points (all 300 here)."""
    from vaescope.training.checkpoint import read_metadata, read_record, read_sample

    common = ["--dataset", "digits", "--latent-dim", "2", "--hidden-dim", "16", "--epochs", "1", "--eval-k", "2",
              "--nll-images", "10", "--quiet"]
    assert main([*common, "--embed-sample", "40", "--record", "25", "--out", str(tmp_path / "a")]) == 0
    path = tmp_path / "a" / "model.safetensors"
    assert read_metadata(path).train_config["embed_sample"] == 40 and read_metadata(path).train_config["record"] == 25
    assert read_sample(path)[0].shape == (40, 1, 8, 8) and read_record(path).codes.shape == (5, 25, 2)
    assert main([*common, "--embed-sample", "0", "--record", "0", "--out", str(tmp_path / "b")]) == 0
    assert read_sample(tmp_path / "b" / "model.safetensors") is None
    assert read_record(tmp_path / "b" / "model.safetensors") is None
    assert main([*common, "--out", str(tmp_path / "c")]) == 0
    path = tmp_path / "c" / "model.safetensors"
    assert read_metadata(path).train_config["embed_sample"] == -1 and read_metadata(path).model_config.arch == "mlp"
    assert read_sample(path)[0].shape == (300, 1, 8, 8) and read_record(path).codes.shape == (5, 300, 2)
    capsys.readouterr()
    for flag, value, message in (("--embed-sample", "-1", "--embed-sample: must be >= 0"),
                                 ("--embed-sample", "20001", "must be <= 20000"),
                                 ("--record", "20001", "--record: must be <= 20000")):
        with pytest.raises(SystemExit):
            main([flag, value])
        assert message in capsys.readouterr().err
