"""The explorer's trust boundary: what a file or an upload from outside may make the server do.

A checkpoint's dataset block is a hint resolved only among the datasets the server knows; it never
makes the server read, list, create or download anything else, and the page cannot tell an
existing path from a missing one. Sizes from outside are checked before allocation; caches keyed
by values from outside stay bounded; no file stops the listing or the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaescope.explorer.core import evaldata
from vaescope.explorer.core.checkpoints import list_checkpoints
from vaescope.explorer.core.locks import KeyedLocks
from vaescope.explorer.core.projection import ProjectionCache
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.core.uploads import prepare_image
from vaescope.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _pictures(folder: Path) -> Path:
    """An image folder (two classes of 8x8 PNGs), as a user's private data might be."""
    for cls in ("cats", "dogs"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    return folder


def _pointing_at(tiny_checkpoint_dir: Path, dest: Path, dataset: dict, train_config: dict | None = None) -> Path:
    model, meta = load_checkpoint(tiny_checkpoint_dir / "tiny-vae.safetensors")
    meta.dataset = {**meta.dataset, **dataset}
    if train_config is not None:
        meta.train_config = {**meta.train_config, **train_config}
    return save_checkpoint(dest, model, meta)


@pytest.fixture
def guarded_loaders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if anything reads an image folder or starts a download; return the calls."""
    from torchvision import datasets as tv

    from vaescope.training import data

    calls: list[str] = []

    def forbidden(what: str):  # noqa: ANN202
        def refuse(*args: object, **kwargs: object) -> None:
            calls.append(what)
            raise AssertionError(f"a file from outside made the server {what}")
        return refuse

    monkeypatch.setattr(data, "load_folder", forbidden("read an image folder"))
    for name in ("MNIST", "FashionMNIST", "KMNIST"):
        monkeypatch.setattr(tv, name, forbidden("start a download"))
    evaldata._CACHE.clear()
    return calls


def test_a_checkpoint_never_makes_the_server_read_a_folder(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                           guarded_loaders: list[str]) -> None:
    secret = _pictures(tmp_path / "private" / "photos")
    served = tmp_path / "served"
    served.mkdir()
    _pointing_at(tiny_checkpoint_dir, served / "existing.safetensors", {"name": f"folder:{secret}"})
    _pointing_at(tiny_checkpoint_dir, served / "missing.safetensors", {"name": f"folder:{secret}-gone"})
    store = ModelStore(served, torch.device("cpu"))
    existing, missing = (store.open_name(n) for n in ("existing.safetensors", "missing.safetensors"))
    assert not existing.has_points and not missing.has_points
    assert "reads image folders only inside the folder given with --data-dir" in existing.data_note
    # the page cannot tell an existing folder from a missing one: the notes differ only by the name the file itself holds
    assert existing.data_note.replace(str(secret), "X") == missing.data_note.replace(f"{secret}-gone", "X")
    assert "cats" not in existing.data_note and "dogs" not in existing.data_note  # nothing listed
    assert guarded_loaders == []


def test_image_folders_are_read_only_inside_the_operators_data_dir(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    evaldata._CACHE.clear()
    data_dir = tmp_path / "data"
    _pictures(data_dir / "pets")
    outside = _pictures(tmp_path / "elsewhere")
    served = tmp_path / "served"
    served.mkdir()
    _pointing_at(tiny_checkpoint_dir, served / "inside.safetensors",
                 {"name": "folder:pets", "image_shape": [1, 8, 8], "class_names": ["cats", "dogs"]})
    _pointing_at(tiny_checkpoint_dir, served / "escape.safetensors", {"name": f"folder:{data_dir}/../elsewhere"})
    store = ModelStore(served, torch.device("cpu"), data_dir=data_dir)
    escape = store.open_name("escape.safetensors")
    assert not escape.has_points and outside.is_dir()
    inside = store.open_name("inside.safetensors")
    # the folder is RGB, the model greyscale: the shapes disagree, said plainly (read, but not used)
    assert not inside.has_points and "shape" in inside.data_note


def test_a_checkpoints_data_dir_is_never_used_and_nothing_is_downloaded(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                                       guarded_loaders: list[str]) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    served = tmp_path / "served"
    served.mkdir()
    _pointing_at(tiny_checkpoint_dir, served / "m.safetensors", {"name": "kmnist"},
                 {"data_dir": str(planted)})
    store = ModelStore(served, torch.device("cpu"), data_dir=tmp_path / "operator-data")
    entry = store.open_name("m.safetensors")
    assert not entry.has_points and "is not on this server (no download is started" in entry.data_note
    assert guarded_loaders == [] and list(planted.iterdir()) == [] and not (tmp_path / "operator-data").exists()


@pytest.mark.parametrize("block", [
    {"name": ["digits"]}, {"name": 7}, {"name": "x" * 100_000}, {"name": "no-such-set"}, {"name": ""},
    {"name": "digits", "image_shape": "big"}, {"name": "digits", "image_shape": [1, 10**9, 8]},
])
def test_odd_dataset_blocks_give_a_note_not_a_crash(block: dict, guarded_loaders: list[str]) -> None:
    try:
        found = evaldata.resolve_eval_data(block, {"seed": "nine"}, None, folders_allowed=False)
    except evaldata.NoEvalData as why:
        assert len(str(why)) < 300  # a short note, never the whole hostile string echoed back
    else:  # digits with a shape it cannot have: the digits themselves are the server's own
        assert found.images.shape[1:] == (1, 8, 8)


def test_a_thin_upload_never_allocates_more_than_its_own_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 x 20-million-pixel strip passes the pixel cap; padding it to a square must not build a
    20-million-pixel square."""
    sizes: list[tuple[int, int]] = []
    real_new = Image.new
    monkeypatch.setattr(Image, "new", lambda mode, size, *a, **k: sizes.append(size) or real_new(mode, size, *a, **k))
    strip = np.zeros((1, 20_000_000), np.uint8)
    strip[0, ::2] = 255
    x, note = prepare_image(strip, (1, 28, 28))
    assert x.shape == (1, 28, 28) and "padded" in note
    assert all(w * h <= 28 * 28 for w, h in sizes), sizes


def test_listing_survives_loops_and_keeps_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "m.safetensors").write_bytes(b"x")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a folder that contains itself
    (root / "self.safetensors").symlink_to(root / "self.safetensors")  # a symlink to itself
    assert list_checkpoints(root) == ["a/m.safetensors"]


def test_a_model_with_nan_weights_is_refused_by_name_and_the_rest_still_load(tiny_checkpoint_dir: Path,
                                                                             tmp_path: Path) -> None:
    model, meta = load_checkpoint(tiny_checkpoint_dir / "tiny-vae.safetensors")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.safetensors", model, meta)
    (tmp_path / "good.safetensors").write_bytes((tiny_checkpoint_dir / "tiny-vae.safetensors").read_bytes())
    store = ModelStore(tmp_path, torch.device("cpu"))
    with pytest.raises(CheckpointError, match=r"nan\.safetensors.*(NaN|not finite)"):
        store.open_name("nan.safetensors")
    assert store.open_name("good.safetensors").has_points


def test_lock_tables_forget_keys_once_done() -> None:
    locks = KeyedLocks()
    for i in range(1000):
        with locks.hold(("upload", i)):
            assert len(locks) == 1
    assert len(locks) == 0


def test_the_projection_disk_cache_is_bounded(tmp_path: Path) -> None:
    cache = ProjectionCache(tmp_path, max_items=2, max_disk_files=3)
    rng = np.random.default_rng(0)
    for i in range(6):
        cache.get(f"model-{i}", rng.normal(size=(40, 4)).astype(np.float32), "pca", 2)
    assert len(list(tmp_path.glob("*.npz"))) == 3  # the newest three maps
    assert len(cache._memory) == 2


def test_the_store_remembers_a_bounded_number_of_evicted_files(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from vaescope.explorer.core import store as store_module

    monkeypatch.setattr(store_module, "MAX_MODELS_KNOWN", 3)
    store = ModelStore(tmp_path, torch.device("cpu"), max_models=1)
    model, meta = load_checkpoint(tiny_checkpoint_dir / "tiny-ae.safetensors")
    for i in range(6):  # six different uploads (other bytes each)
        meta.metrics = {"elbo": float(i)}
        store.open_path(save_checkpoint(tmp_path / f"u{i}.safetensors", model, meta))
    assert len(store._known) == 3 and len(store._entries) == 1
