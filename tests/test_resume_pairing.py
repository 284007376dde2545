"""A resume is all or nothing: the resume state is continued only with the model file it belongs
with (the same run, the same epoch, or one epoch behind after a stop between the two writes).
Another run's state, a hand-edited state or model file, or a pair from different epochs is refused
in one line, before anything is written, so the folder's model file is never overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import read_safetensors_raw, rewrite_metadata_json, write_safetensors_raw
from safetensors.torch import load_file, save_file

from vaescope.training import train as train_mod
from vaescope.training.checkpoint import embed_sample, read_metadata
from vaescope.training.cli import main
from vaescope.training.config import TrainConfig
from vaescope.training.data import load_dataset
from vaescope.training.train import model_config_for, train
from vaescope.training.train_state import RUN_KEY, load_train_state, metadata_digest, tensors_digest

MODEL, STATE = "model.safetensors", "train_state.safetensors"
ALTERED = "the metadata differs from the digest recorded when the state was written: the file was altered or damaged"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _run(digits, out: Path, epochs: int, latent_dim: int = 4, resume: bool = False):
    mcfg = model_config_for(digits, model_type="vae", arch="mlp", latent_dim=latent_dim, hidden_dim=32)
    tcfg = TrainConfig(dataset="digits", epochs=epochs, batch_size=128, lr=2e-3, eval_k=2)
    return train(mcfg, tcfg, out, dataset=digits, resume=resume, show_progress=False, evaluate_at_end=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _refused(out: Path, capsys) -> str:  # noqa: ANN001
    """latent-train --resume ``out``: refused in one line, which is returned."""
    assert main(["--resume", str(out), "--epochs", "4", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"latent-train: error: {out / STATE}: "), err
    return err[0]


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory) -> dict:
    """A 4-d run of 3 epochs, stopped after its first and resumed: its folder, and the state and
    model file its first epoch left (the same run, two epochs behind)."""
    out = tmp_path_factory.mktemp("run")
    _run(digits, out, epochs=1)
    first = _files(out)
    _run(digits, out, epochs=3, resume=True)
    return {"folder": out, "state_1": first[STATE], "model_1": first[MODEL]}


@pytest.fixture(scope="module")
def other_runs(digits, tmp_path_factory) -> dict[str, Path]:
    """The resume states of two other runs: one of an 8-d model, one of the very same config."""
    found = {}
    for name, latent_dim in (("8-d", 8), ("same config", 4)):
        out = tmp_path_factory.mktemp(name.replace(" ", "-"))
        _run(digits, out, epochs=2, latent_dim=latent_dim)
        found[name] = out / STATE
    return found


@pytest.fixture
def folder(run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run["folder"], out)
    return out


def test_the_run_id_is_kept_across_resumes(run) -> None:
    state = load_train_state(run["folder"] / STATE)
    assert state.epoch == 3
    assert state.run_id == load_train_state_bytes(run["state_1"], run["folder"].parent).run_id


def load_train_state_bytes(raw: bytes, where: Path):  # noqa: ANN201
    path = where / "state-copy.safetensors"
    path.write_bytes(raw)
    try:
        return load_train_state(path)
    finally:
        path.unlink()


# -- another run's state ------------------------------------------------------------------------------
@pytest.mark.parametrize("other", ["8-d", "same config"])
def test_another_runs_state_is_refused_and_the_model_file_kept(folder, other_runs, capsys, other: str) -> None:
    shutil.copy(other_runs[other], folder / STATE)
    before = _files(folder)
    err = _refused(folder, capsys)
    assert f"cannot resume: the resume state belongs to another run than {folder / MODEL}" in err
    assert "copied from another run folder?), which is left as it was" in err
    assert _files(folder) == before  # the 4-d model file byte for byte, and nothing written beside it
    assert read_metadata(folder / MODEL).model_config.latent_dim == 4


# -- a hand-edited state ------------------------------------------------------------------------------
def _edit_state(path: Path, edit, redigest: bool = False) -> None:  # noqa: ANN001
    """Rewrite the state's metadata with the same tensors; with ``redigest`` its digest is recomputed."""
    tensors, (_, metadata, _) = load_file(path), read_safetensors_raw(path)
    path.unlink()
    save_file(tensors, str(path), metadata=metadata)
    rewrite_metadata_json(path, "train_state", edit)
    if redigest:
        rewrite_metadata_json(path, "train_state", lambda meta: meta.update(metadata_sha256=metadata_digest(meta)))


def _back_to_epoch_1(meta: dict) -> None:
    meta.update(epoch=1, history=meta["history"][:1])


STATE_EDITS = {
    "epoch set back": _back_to_epoch_1,
    "history value": lambda meta: meta["history"][1].update(train_loss=1.0),
    "model config": lambda meta: meta["model_config"].update(beta=4.0),
    "train config": lambda meta: meta["train_config"].update(seed=7),
    "run id": lambda meta: meta.update(run_id="0" * 32),
}


@pytest.mark.parametrize("edit", sorted(STATE_EDITS))
def test_a_hand_edited_state_is_refused(folder, capsys, edit: str) -> None:
    _edit_state(folder / STATE, STATE_EDITS[edit])
    model = (folder / MODEL).read_bytes()
    assert _refused(folder, capsys).endswith(ALTERED)
    assert (folder / MODEL).read_bytes() == model


def _rolled_back_with_its_digest(folder: Path, run: dict) -> None:
    _edit_state(folder / STATE, _back_to_epoch_1, redigest=True)


def _the_first_epochs_own_state(folder: Path, run: dict) -> None:
    (folder / STATE).write_bytes(run["state_1"])


@pytest.mark.parametrize("make", [_rolled_back_with_its_digest, _the_first_epochs_own_state],
                         ids=["forged with its digest", "the run's own old state"])
def test_a_state_two_epochs_behind_its_model_file_is_refused(folder, run, capsys, make) -> None:
    """Epoch 1's state beside epoch 3's model file of the same run: training epochs 2-3 again from
    it would be a valid run, but the pair is not one a stop can leave, so it is refused."""
    make(folder, run)
    model = (folder / MODEL).read_bytes()
    err = _refused(folder, capsys)
    assert (f"the resume state is after epoch 1 but {folder / MODEL} of the same run is after epoch 3; only the model "
            "file written with the state, or the one written right after it (one epoch ahead), can be continued") in err
    assert (folder / MODEL).read_bytes() == model


def test_a_model_file_behind_its_state_is_refused(folder, run, capsys) -> None:
    (folder / MODEL).write_bytes(run["model_1"])
    err = _refused(folder, capsys)
    assert f"the resume state is after epoch 3 but {folder / MODEL} of the same run is after epoch 1" in err
    assert (folder / MODEL).read_bytes() == run["model_1"]


# -- the model file -----------------------------------------------------------------------------------
def _edit_model_history(path: Path) -> None:
    rewrite_metadata_json(path, "vaescope", lambda meta: meta["history"][0].update(train_loss=1.0))


def _drop_the_run_block(path: Path) -> None:
    table, metadata, data = read_safetensors_raw(path)
    del metadata[RUN_KEY]
    write_safetensors_raw(path, table, metadata, data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


MODEL_EDITS = {
    "edited history": (_edit_model_history, "'s metadata or weights differ from the digest recorded when the run "
                                            "wrote it: the file was altered"),
    "no run block": (_drop_the_run_block, " names no run (written by an older vaescope, saved again, or copied from "
                                          "elsewhere), so nothing shows it belongs with this resume state; move it out "
                                          "of"),
    "truncated": (_truncate, " cannot be read: not a readable safetensors file (truncated or corrupt?)"),
}


@pytest.mark.parametrize("edit", sorted(MODEL_EDITS))
def test_a_model_file_that_cannot_be_shown_to_belong_is_refused(folder, capsys, edit: str) -> None:
    change, fragment = MODEL_EDITS[edit]
    change(folder / MODEL)
    model = (folder / MODEL).read_bytes()
    assert f"cannot resume: {folder / MODEL}{fragment}" in _refused(folder, capsys)
    assert (folder / MODEL).read_bytes() == model


def test_a_model_file_given_a_new_sample_still_belongs(folder, digits, capsys) -> None:
    """embed_sample keeps the weights and the metadata byte for byte, and so the pairing."""
    embed_sample(folder / MODEL, digits.test.images[:5], digits.test.labels[:5])
    assert main(["--resume", str(folder), "--epochs", "4", "--quiet"]) == 0
    assert f"note: {folder / MODEL} is not the one saved with the resume state" in capsys.readouterr().err
    assert [h["epoch"] for h in read_metadata(folder / MODEL).history] == [1, 2, 3, 4]


# -- a stop between the two writes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_behind(digits, tmp_path_factory) -> tuple[Path, dict]:
    """A 3-epoch run stopped after epoch 2's model file was written and before its state was
    (epoch 1's state, epoch 2's model file), and the weights of the same run uninterrupted."""
    reference = _run(digits, tmp_path_factory.mktemp("reference"), epochs=3).model.state_dict()
    out = tmp_path_factory.mktemp("stopped")
    real = train_mod.save_train_state

    def stop_before_the_second_state(path, model, opt, epoch, *args, **kwargs):  # noqa: ANN001, ANN202
        if epoch == 2:
            raise KeyboardInterrupt
        return real(path, model, opt, epoch, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_mod, "save_train_state", stop_before_the_second_state)
        assert _run(digits, out, epochs=3).interrupted
    assert len(read_metadata(out / MODEL).history) == 2 and load_train_state(out / STATE).epoch == 1
    return out, reference


def test_a_state_one_epoch_behind_its_model_file_resumes_exactly(one_behind, tmp_path, digits, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(one_behind[0], out)
    run_id = load_train_state(out / STATE).run_id
    resumed = _run(digits, out, epochs=3, resume=True)
    assert f"note: {out / MODEL} is not the one saved with the resume state" in capsys.readouterr().err
    for key, value in one_behind[1].items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert load_train_state(out / STATE).run_id == run_id


def test_a_state_the_model_file_was_not_written_after_is_refused(one_behind, tmp_path, capsys) -> None:
    """Epoch 1's state with other weights and both its digests recomputed: the same run, the same
    epoch and history, but not the state epoch 2's model file was written after."""
    out = tmp_path / "run"
    shutil.copytree(one_behind[0], out)
    tensors = load_file(out / STATE)
    tensors["model.head.bias"] += 0.5
    _, metadata, _ = read_safetensors_raw(out / STATE)
    save_file(tensors, str(out / STATE), metadata=metadata)

    def forge(meta: dict) -> None:
        meta.update(tensors_sha256=tensors_digest(tensors))
        meta.update(metadata_sha256=metadata_digest(meta))

    rewrite_metadata_json(out / STATE, "train_state", forge)
    model = (out / MODEL).read_bytes()
    assert _refused(out, capsys).endswith(f"cannot resume: {out / MODEL} is one epoch ahead but was not written after "
                                          "this resume state (the state was replaced or altered)")
    assert (out / MODEL).read_bytes() == model
