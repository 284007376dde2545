"""Maps that are ready: latent-maps writes a checkpoint's t-SNE / UMAP coordinates to a sidecar
beside it, the explorer draws them without fitting when its images are the very ones mapped, and a
sidecar for other images, or one that is not a maps file, is ignored (the map is fitted)."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vaescope.explorer.core import mapfiles, projection
from vaescope.explorer.core.mapfiles import (
    MapFileError,
    images_digest,
    read_maps,
    sidecar_path,
    write_maps,
)
from vaescope.explorer.core.maps import draw_map
from vaescope.explorer.core.projection import ProjectionCache
from vaescope.explorer.core.store import ModelStore

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def test_write_and_read_keep_each_image_sets_maps(tmp_path: Path) -> None:
    path = tmp_path / "m.maps.npz"
    a, b = np.random.default_rng(0).normal(size=(2, 50, 2)).astype(np.float32)
    write_maps(path, "a" * 16, {("umap", 2): a})
    write_maps(path, "b" * 16, {("tsne", 2): b})  # another set of images: the first one's maps stay
    np.testing.assert_array_equal(read_maps(path, "a" * 16, 50)[("umap", 2)], a)
    np.testing.assert_array_equal(read_maps(path, "b" * 16, 50)[("tsne", 2)], b)
    assert read_maps(path, "c" * 16, 50) == {}


def _zip(path: Path, members: dict[str, np.ndarray | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                data = io.BytesIO()
                np.save(data, value)
                value = data.getvalue()
            archive.writestr(name, value)
    return path


@pytest.mark.parametrize("members, message", [
    ({"evil.npy": np.zeros(3)}, "holds 'evil.npy', which a maps file never does"),
    ({"aaaaaaaaaaaaaaaa-umap-2d.npy": np.zeros((50, 3), np.float32)}, "is larger than 50 points in 2D"),
    ({"aaaaaaaaaaaaaaaa-umap-2d.npy": np.zeros((25, 2), np.float64)}, "not finite float32"),
    ({"aaaaaaaaaaaaaaaa-umap-2d.npy": np.full((50, 2), np.nan, np.float32)}, "not finite float32"),
    ({"aaaaaaaaaaaaaaaa-umap-2d.npy": b"\x93NUMPY junk"}, "not a readable maps file"),
])
def test_a_file_that_is_not_a_maps_file_is_refused(tmp_path: Path, members: dict, message: str) -> None:
    with pytest.raises(MapFileError, match=message):
        read_maps(_zip(tmp_path / "x.maps.npz", members), "a" * 16, 50)


def test_latent_maps_writes_a_sidecar_the_explorer_draws_without_fitting(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    file = shutil.copy(tiny_checkpoint_dir / "tiny-vae.safetensors", folder / "tiny-vae.safetensors")
    assert mapfiles.main([str(file)]) == 0
    side = sidecar_path(file)
    assert side.name == "tiny-vae.maps.npz" and side.is_file()
    entry = ModelStore(folder, torch.device("cpu")).open_name("tiny-vae.safetensors")
    stored = read_maps(side, images_digest(entry.latents.images, entry.latents.labels), len(entry.latents))
    assert set(stored) == {("umap", 2), ("tsne", 2)}

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a map with a sidecar was fitted")

    monkeypatch.setattr(projection, "fit_projection", no_fit)
    view, figure = draw_map(entry, ProjectionCache(), "umap", 2)
    np.testing.assert_array_equal(view.projection.coords, stored[("umap", 2)])
    assert len(view.projection.transform(entry.latents.mean[:3])) == 3  # new codes are placed near their images


def test_a_sidecar_for_other_images_is_not_used(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    file = shutil.copy(tiny_checkpoint_dir / "tiny-vae.safetensors", folder / "tiny-vae.safetensors")
    entry = ModelStore(folder, torch.device("cpu")).open_name("tiny-vae.safetensors")
    n = len(entry.latents)
    write_maps(sidecar_path(file), "0" * 16, {("umap", 2): np.zeros((n, 2), np.float32)})
    assert mapfiles.prefitted(entry, "umap", 2, np.arange(n)) is None
    assert mapfiles.prefitted(entry, "pca", 2, np.arange(n)) is None  # PCA is never stored
    assert mapfiles.default_method(entry) == "pca"  # a map it would have to fit opens on PCA


def test_a_model_opens_on_the_umap_its_sidecar_holds(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """The map panel's projection for a model just loaded: the stored UMAP where its sidecar has
    one for these very images (every shipped model), PCA otherwise; the panel sets it on a switch."""
    from vaescope.explorer.ui.app import build_app
    from vaescope.explorer.ui.state import Session

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(tiny_checkpoint_dir / "tiny-vae.safetensors", folder / "tiny-vae.safetensors")
    store = ModelStore(folder, torch.device("cpu"))
    assert mapfiles.default_method(store.open_name("tiny-vae.safetensors")) == "pca"
    assert mapfiles.write_sidecar(folder / "tiny-vae.safetensors", say=lambda _: None).is_file()
    entry = ModelStore(folder, torch.device("cpu")).open_name("tiny-vae.safetensors")
    assert mapfiles.default_method(entry) == "umap"
    panel = build_app(folder, device="cpu").panels["map"]
    assert panel.on_model(entry, Session())[panel.method] == "umap"


@pytest.mark.slow
def test_the_shipped_models_open_on_ready_maps() -> None:
    """Every shipped checkpoint has a sidecar with its UMAP and t-SNE maps of the images this
    machine maps (the embedded sample, or the dataset where it is installed, as in CI)."""
    store = ModelStore(SHIPPED, torch.device("cpu"), max_models=2)
    missing = []
    for name in store.names():
        entry = store.open_name(name)
        if mapfiles.prefitted(entry, "umap", 2, np.arange(len(entry.latents))) is None:
            missing.append(name)
    assert missing == []


@pytest.mark.slow
def test_latent_train_embed_maps_writes_the_sidecar_beside_the_checkpoint(tmp_path: Path) -> None:
    from vaescope.training.cli import main

    out = tmp_path / "run"
    assert main(["--dataset", "digits", "--model", "vae", "--latent-dim", "2", "--epochs", "1", "--out", str(out),
                 "--embed-maps", "--quiet", "--record", "0"]) == 0
    entry = ModelStore(out, torch.device("cpu")).open_name("model.safetensors")
    assert (out / "model.maps.npz").is_file()
    assert mapfiles.prefitted(entry, "tsne", 2, np.arange(len(entry.latents))) is not None


@pytest.mark.slow
def test_vs_save_maps_writes_the_sidecar_of_the_sample_it_embeds(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    import vaescope as vs
    from vaescope.errors import InputError
    from vaescope.training.data import load_dataset

    model = vs.load(tiny_checkpoint_dir / "tiny-vae.safetensors", device="cpu")
    test = load_dataset("digits").test
    with pytest.raises(InputError, match="give images= as well"):
        vs.save(model, tmp_path / "none.safetensors", maps=True)
    path = vs.save(model, tmp_path / "m.safetensors", images=test.images[:300], labels=test.labels[:300], maps=True)
    assert sidecar_path(path).is_file()
    entry = ModelStore(tmp_path, torch.device("cpu")).open_name("m.safetensors")
    assert len(entry.latents) == 300
    for method, dims in mapfiles.STORED:
        found = mapfiles.prefitted(entry, method, dims, np.arange(300))
        assert found is not None and found.coords.shape == (300, dims), (method, dims)
    assert mapfiles.default_method(entry) == "umap"
