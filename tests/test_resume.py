"""Resume exactly: the resume state is one self-sufficient file, checked like a checkpoint. A kill at
any moment (between the two writes, in the middle of one) or a full disk leaves the last good files
as they were, and --resume then reaches the uninterrupted run's weights or refuses in one line."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_safetensors_raw, rewrite_metadata_json, write_safetensors_raw
from safetensors.torch import load_file, save_file

from vaescope.training import tensorfile
from vaescope.training.checkpoint import read_metadata
from vaescope.training.cli import main
from vaescope.training.config import TrainConfig
from vaescope.training.data import load_dataset
from vaescope.training.tensorfile import WriteError
from vaescope.training.train import model_config_for, train
from vaescope.training.train_state import (
    TrainStateError,
    load_train_state,
    metadata_digest,
    tensors_digest,
)

EPOCHS = 4
CLI_ARGS = ["--dataset", "digits", "--model", "vae", "--arch", "mlp", "--latent-dim", "4", "--hidden-dim", "32",
            "--batch-size", "64", "--eval-k", "2", "--nll-images", "20", "--quiet"]
# One thread everywhere: the same arithmetic in every process, so weights compare exactly.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODEL, STATE = "model.safetensors", "train_state.safetensors"


# -- in-process runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _configs(digits, epochs: int = 3):
    mcfg = model_config_for(digits, model_type="vae", arch="mlp", latent_dim=4, hidden_dim=32)
    return mcfg, TrainConfig(dataset="digits", epochs=epochs, batch_size=128, lr=2e-3, eval_k=2)


def _run(digits, out: Path, epochs: int = 3, resume: bool = False):
    mcfg, tcfg = _configs(digits, epochs)
    return train(mcfg, tcfg, out, dataset=digits, resume=resume, show_progress=False, evaluate_at_end=False)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """Weights of an uninterrupted 3-epoch run."""
    return _run(digits, tmp_path_factory.mktemp("reference")).model.state_dict()


def _full_disk_at(monkeypatch, failing_call: int, folder: Path, seen: dict) -> None:
    """The ``failing_call``-th file write fills the disk half-way and raises ENOSPC; ``seen`` gets
    the files of ``folder`` as they were just before it."""
    calls = {"n": 0}
    real = tensorfile._write_all

    def write(fh, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == failing_call:
            seen.update({p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")})
            fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, data)

    monkeypatch.setattr(tensorfile, "_write_all", write)


@pytest.mark.parametrize(("failing_call", "model_epochs"), [(3, 1), (4, 2)])  # epoch 2's model, then its state
def test_a_full_disk_keeps_the_last_good_files_and_resumes_exactly(digits, reference, tmp_path, monkeypatch,
                                                                   failing_call, model_epochs) -> None:
    seen: dict[str, bytes] = {}
    _full_disk_at(monkeypatch, failing_call, tmp_path, seen)
    with pytest.raises(WriteError, match=r"cannot write .*: no space left on the disk; the file that was there is kept"):
        _run(digits, tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == seen  # untouched, and no temp file left
    assert len(read_metadata(tmp_path / MODEL).history) == model_epochs
    assert load_train_state(tmp_path / STATE).epoch == 1
    _same_weights(_run(digits, tmp_path, resume=True).model.state_dict(), reference)


def test_a_full_disk_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys) -> None:
    _full_disk_at(monkeypatch, 2, tmp_path, {})
    assert main([*CLI_ARGS, "--epochs", "2", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"latent-train: error: cannot write {tmp_path / STATE}: no space left on the disk; the file "
                   "that was there is kept as it was\n")


def test_a_run_for_another_config_is_not_resumed(digits, tmp_path) -> None:
    _run(digits, tmp_path, epochs=1)
    mcfg, tcfg = _configs(digits)
    mcfg.latent_dim = 5
    with pytest.raises(TrainStateError, match="cannot resume: the resume state was made for another model config"):
        train(mcfg, tcfg, tmp_path, dataset=digits, resume=True, show_progress=False)
    mcfg, tcfg = _configs(digits)
    tcfg.lr = 0.1
    with pytest.raises(TrainStateError, match=r"the train config differs from the resume state's in \['lr'\]"):
        train(mcfg, tcfg, tmp_path, dataset=digits, resume=True, show_progress=False)


# -- hand-edited, truncated and damaged resume states -------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    _run(digits, out, epochs=2)
    return out


def _edit_tensors(path: Path, edit, redigest: bool = True) -> None:  # noqa: ANN001
    """Change the state's tensors; with ``redigest`` record their new digests, as a careful forger would."""
    tensors = load_file(path)
    edit(tensors)
    _, metadata, _ = read_safetensors_raw(path)
    save_file(tensors, str(path), metadata=metadata)
    if redigest:
        def forge(meta: dict) -> None:
            meta.update(tensors_sha256=tensors_digest(tensors))
            meta.update(metadata_sha256=metadata_digest(meta))
        rewrite_metadata_json(path, "train_state", forge)


def _set_meta(**values):  # noqa: ANN202
    return lambda path: rewrite_metadata_json(path, "train_state", lambda meta: meta.update(values))


def _set_train_config(**values):  # noqa: ANN202
    return lambda path: rewrite_metadata_json(path, "train_state", lambda meta: meta["train_config"].update(values))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _flip_a_data_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x40
    path.write_bytes(bytes(raw))


def _scale_moment(path: Path) -> None:
    _edit_tensors(path, lambda t: t.update({"optim.0.exp_avg_sq": -t["optim.0.exp_avg_sq"] - 1}))


def _nan_weight(path: Path) -> None:
    def poison(t: dict) -> None:
        t["model.head.bias"][0] = float("nan")
    _edit_tensors(path, poison)


def _wrong_shape(path: Path) -> None:
    _edit_tensors(path, lambda t: t.update({"optim.0.exp_avg": torch.zeros(3, 3)}))


def _a_model_instead(path: Path) -> None:
    shutil.copy(path.parent / MODEL, path)


def _deep_metadata(path: Path) -> None:
    table, metadata, data = read_safetensors_raw(path)
    metadata["train_state"] = "[" * 50_000 + "]" * 50_000
    write_safetensors_raw(path, table, metadata, data)


BAD_STATES = {
    "negative epoch": (_set_meta(epoch=-1), "epoch must be >= 1, got -1"),
    "fractional epoch": (_set_meta(epoch=1.5), "epoch must be an integer, got 1.5"),
    "epoch as text": (_set_meta(epoch="2"), "epoch must be an integer, got '2'"),
    "boolean epoch": (_set_meta(epoch=True), "epoch must be an integer, got True"),
    "huge epoch": (_set_meta(epoch=10**30), "epoch must be <= 5000"),
    "epoch and history disagree": (_set_meta(epoch=1), "epoch is 1 but the history holds 2 epochs"),
    "negative learning rate": (_set_train_config(lr=-0.001), "invalid train_config: lr must be > 0, got -0.001"),
    "NaN learning rate": (_set_train_config(lr=float("nan")), "invalid train_config: lr must be a finite number"),
    "old version": (_set_meta(state_version=1), "written by another version of vaescope"),
    "unknown key": (_set_meta(surprise=1), "unknown key(s) ['surprise']"),
    "truncated": (_truncate, "(truncated or corrupt?)"),
    "flipped byte": (_flip_a_data_byte, "the tensors differ from the digest recorded when the state was written"),
    "negative second moment": (_scale_moment, "tensor 'optim.0.exp_avg_sq' holds negative values"),
    "NaN weight": (_nan_weight, "tensor(s) ['model.head.bias'] hold NaN or infinite values"),
    "wrong moment shape": (_wrong_shape, "tensor 'optim.0.exp_avg' has shape [3, 3] but the model_config needs"),
    "a model checkpoint": (_a_model_instead, "this is a model checkpoint, not latent-train's resume state"),
    "deeply nested": (_deep_metadata, "is nested 50000 levels deep"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_a_bad_resume_state_is_refused_in_one_line(finished_run, tmp_path, capsys, case: str) -> None:
    edit, fragment = BAD_STATES[case]
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    edit(out / STATE)
    assert main(["--resume", str(out), "--epochs", "3", "--quiet"]) in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("latent-train: error: ") and "Traceback" not in err, err
    assert fragment in err, err


def test_resume_accepts_only_flags_that_keep_the_run_the_same(finished_run, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--resume", str(finished_run), "--lr", "0.5"])
    assert info.value.code == 2
    assert "only --epochs, --device, --data-dir and --quiet may be given with it, not --lr" in capsys.readouterr().err
    assert main(["--resume", str(finished_run), "--epochs", "1", "--quiet"]) == 1
    assert "the run has already finished 2 epochs, more than the 1 asked for" in capsys.readouterr().err


# -- killed training processes --------------------------------------------------------------------
def _cli(out: Path, *extra: str, prelude: str = "") -> subprocess.Popen:
    """latent-train in a subprocess; ``prelude`` runs first (to arrange a kill at a chosen moment)."""
    code = f"{prelude}\nimport sys\nfrom vaescope.training.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *CLI_ARGS, "--out", str(out), *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _timed_run(out: Path, epochs: int, *extra: str) -> tuple[dict, float]:
    """An uninterrupted latent-train run: (weights, seconds its epochs after the first took, from
    the history, so without the start-up and the final evaluation)."""
    code, err = _finish(_cli(out, "--epochs", str(epochs), *extra))
    assert code == 0, err
    return load_file(out / MODEL), sum(h["seconds"] for h in read_metadata(out / MODEL).history[1:])


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Return when ``path`` appears (polled every 5 ms) or ``proc`` ends."""
    while not path.exists() and proc.poll() is None:
        time.sleep(0.005)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """Weights of a latent-train run of EPOCHS epochs that nothing stops."""
    return _timed_run(tmp_path_factory.mktemp("uninterrupted"), EPOCHS)[0]


def _resume_and_compare(out: Path, weights: dict) -> str:
    code, err = _finish(subprocess.Popen([sys.executable, "-m", "vaescope.training.cli", "--resume", str(out),
                                          "--quiet"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    assert code == 0, err
    _same_weights(load_file(out / MODEL), weights)
    assert not list(out.glob(".*.tmp"))  # the killed writes' temporaries were cleared
    return err


KILL_BETWEEN_WRITES = """
import os, signal
from vaescope.training import train as t
real = t.save_train_state
def save(path, model, opt, epoch, *args, **kwargs):
    if epoch == 2:  # epoch 2's model file is written; its resume state is not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, model, opt, epoch, *args, **kwargs)
t.save_train_state = save
"""

KILL_MID_WRITE = """
import os, signal
from vaescope.training import tensorfile
real, calls = tensorfile._write_all, []
def write(fh, data):
    calls.append(1)
    if len(calls) == 4:  # half of epoch 2's resume state is on the disk
        fh.write(data[: len(data) // 2]); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)
    real(fh, data)
tensorfile._write_all = write
"""


@pytest.mark.slow
@pytest.mark.parametrize("prelude", [KILL_BETWEEN_WRITES, KILL_MID_WRITE], ids=["between-writes", "mid-write"])
def test_a_kill_at_the_worst_moment_resumes_to_the_uninterrupted_weights(uninterrupted, tmp_path, prelude) -> None:
    code, _ = _finish(_cli(tmp_path, "--epochs", str(EPOCHS), prelude=prelude))
    assert code == -9  # SIGKILL
    assert len(read_metadata(tmp_path / MODEL).history) == 2  # the model file is one epoch ahead
    assert load_train_state(tmp_path / STATE).epoch == 1
    err = _resume_and_compare(tmp_path, uninterrupted)
    assert f"note: {tmp_path / MODEL} is not the one saved with the resume state" in err


@pytest.mark.slow
def test_kills_at_random_moments_resume_to_the_uninterrupted_weights(tmp_path) -> None:
    """SIGKILL at random moments: one during start-up, the others anywhere in the epochs after the
    first (training, validation, either write). Each time --resume reaches the uninterrupted
    weights, or, when no epoch had finished, refuses in one line."""
    epochs, wider = 10, ("--hidden-dim", "512", "--batch-size", "16")  # epochs of about 0.3 s
    weights, span = _timed_run(tmp_path / "reference", epochs, *wider)
    rng = random.Random(21)
    for i in range(6):
        out = tmp_path / f"run{i}"
        proc = _cli(out, "--epochs", str(epochs), *wider)
        if i == 0:
            time.sleep(rng.uniform(0.2, 1.0))  # start-up: imports, data loading
        else:
            _wait_for(out / MODEL, proc)
            time.sleep(rng.uniform(0.0, span))
        proc.kill()
        proc.communicate(timeout=60)
        if (out / STATE).exists():
            _resume_and_compare(out, weights)
            continue
        code, err = _finish(subprocess.Popen([sys.executable, "-m", "vaescope.training.cli", "--resume", str(out)],
                                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        assert code == 1 and err.count("\n") == 1 and "holds no resume state" in err, (i, err)


def test_a_missing_model_file_is_rebuilt_from_the_resume_state(finished_run, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / MODEL).unlink()
    assert main(["--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert f"note: {out / MODEL} is missing" in capsys.readouterr().err
    assert [h["epoch"] for h in read_metadata(out / MODEL).history] == [1, 2, 3]
