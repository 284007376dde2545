"""The explorer's core store: checkpoint discovery and its path guards, uploads, encoding, loading."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaescope.devices import pick_device
from vaescope.errors import InputError
from vaescope.explorer.core.checkpoints import choose_default, list_checkpoints, resolve_checkpoint
from vaescope.explorer.core.evaldata import EvalData, NoEvalData, load_eval_images
from vaescope.explorer.core.latents import LatentsCache, encode_dataset
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.core.uploads import ImageError, dataset_background, prepare_image
from vaescope.training.checkpoint import CheckpointError, load_checkpoint

SHAPE = (1, 8, 8)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG (valid CRCs) whose header declares width x height 8-bit RGB: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _chunk(b"IEND", b""))


# -- device --------------------------------------------------------------------------------------
def test_pick_device_auto_and_cpu() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without a GPU")
def test_pick_device_cuda_without_gpu_is_refused() -> None:
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        pick_device("cuda")
    with pytest.raises(InputError, match="MPS backend is not available"):
        pick_device("mps")
    with pytest.raises(InputError, match="unknown device"):
        pick_device("tpu:7")


# -- discovery and path guards --------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.safetensors").write_bytes(b"x")
    (root / "sub" / "b.safetensors").write_bytes(b"x")
    (root / "notes.txt").write_text("not a checkpoint")
    (root / ".a.safetensors.tmp").write_bytes(b"x")  # a writer's temp file
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"x")
    (root / "escape.safetensors").symlink_to(outside / "secret.safetensors")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "inner-link.safetensors").symlink_to(root / "a.safetensors")
    return root


def test_list_checkpoints_sorted_relative_and_skips_escaping_symlinks(tree: Path) -> None:
    assert list_checkpoints(tree) == ["a.safetensors", "inner-link.safetensors", "sub/b.safetensors"]


def test_list_checkpoints_of_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path / "nope") == []


def test_a_folder_of_training_runs_lists_the_models_and_not_their_resume_state(tmp_path: Path) -> None:
    """latent-train writes model.safetensors and train_state.safetensors side by side; only the first is a model."""
    from vaescope.training.config import TrainConfig
    from vaescope.training.data import load_dataset
    from vaescope.training.train import model_config_for, train

    digits = load_dataset("digits")
    runs = tmp_path / "runs"
    mcfg = model_config_for(digits, model_type="vae", arch="mlp", latent_dim=2, hidden_dim=16)
    train(mcfg, TrainConfig(dataset="digits", epochs=1, eval_k=2), runs / "r1",
          dataset=digits, show_progress=False)
    assert sorted(p.name for p in (runs / "r1").glob("*.safetensors")) == ["model.safetensors",
                                                                          "train_state.safetensors"]
    assert list_checkpoints(runs) == ["r1/model.safetensors"]
    # Named directly (a typed path or an upload), the resume state gets a message that says what it is.
    with pytest.raises(CheckpointError, match=r"resume state .* not a model; open model\.safetensors"):
        load_checkpoint(runs / "r1" / "train_state.safetensors")


def test_resolve_checkpoint_accepts_files_inside(tree: Path) -> None:
    assert resolve_checkpoint(tree, "sub/b.safetensors") == tree / "sub" / "b.safetensors"
    assert resolve_checkpoint(tree, "inner-link.safetensors").resolve() == (tree / "a.safetensors").resolve()


@pytest.mark.parametrize("name, problem", [
    ("../outside/secret.safetensors", "'..'"),
    ("sub/../../outside/secret.safetensors", "'..'"),
    ("escape.safetensors", "outside the checkpoint folder"),
    ("linkdir/secret.safetensors", "outside the checkpoint folder"),
    ("notes.txt", "not a .safetensors"),
    ("model.pt", "pickles .* never opens them"),
    ("sub/weights.ckpt", "pickles .* never opens them"),
    ("missing.safetensors", "not found"),
    ("", "no checkpoint name"),
])
def test_resolve_checkpoint_refuses(tree: Path, name: str, problem: str) -> None:
    with pytest.raises(CheckpointError, match=problem):
        resolve_checkpoint(tree, name)


def test_resolve_checkpoint_refuses_absolute_paths(tree: Path) -> None:
    with pytest.raises(CheckpointError, match="absolute"):
        resolve_checkpoint(tree, str((tree / "a.safetensors").resolve()))


# -- uploaded images -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "1", "CMYK"])
def test_prepare_image_converts_modes(mode: str) -> None:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16))
        assert img.mode == "I;16"
    else:
        img = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert(mode)
    arr, note = prepare_image(_png_bytes(img) if mode != "CMYK" else img, SHAPE)
    assert arr.shape == SHAPE and arr.dtype == np.float32
    assert arr.min() >= 0.0 and arr.max() <= 1.0
    if mode == "L":
        assert note == ""
    else:
        assert note, f"a {mode} image should come with a note of its conversion"


def test_prepare_image_high_bit_depth_is_rescaled() -> None:
    img = Image.fromarray(np.linspace(0, 4000, 64, dtype=np.uint16).reshape(8, 8))
    arr, note = prepare_image(_png_bytes(img), SHAPE)
    assert "8 bits" in note
    assert arr.min() == pytest.approx(0.0) and arr.max() == pytest.approx(1.0)


def test_prepare_image_rgb_model_from_grey() -> None:
    arr, note = prepare_image(Image.new("L", (8, 8), 128), (3, 8, 8))
    assert arr.shape == (3, 8, 8) and "RGB" in note
    assert np.allclose(arr, 128 / 255)


@pytest.mark.parametrize("size", [(28, 28), (100, 37), (5, 3), (8, 9)])
def test_prepare_image_resizes_odd_sizes_with_a_note(size: tuple[int, int]) -> None:
    img = Image.new("L", size, 0)
    img.paste(255, (size[0] // 4, size[1] // 4, size[0] // 2 + 1, size[1] // 2 + 1))
    arr, note = prepare_image(_png_bytes(img), SHAPE)
    assert arr.shape == SHAPE
    assert "resized" in note
    assert arr.max() > 0.1  # the bright square survives resizing
    if size[0] != size[1]:
        assert "padded" in note


def test_prepare_image_numpy_and_float_input() -> None:
    arr, _ = prepare_image(np.full((8, 8, 3), 0.5, np.float32), SHAPE)
    assert arr.shape == SHAPE and np.allclose(arr, 128 / 255, atol=1e-2)
    arr, _ = prepare_image(np.full((8, 8, 4), 200, np.uint8), SHAPE)
    assert arr.shape == SHAPE


def test_prepare_image_inverts_to_match_the_training_background() -> None:
    drawing = Image.new("L", (8, 8), 255)  # dark pen on white paper
    drawing.paste(0, (3, 1, 5, 7))
    arr, note = prepare_image(drawing, SHAPE, background="dark")
    assert "inverted" in note
    assert arr[0, 0, 0] == pytest.approx(0.0) and arr[0, 4, 4] == pytest.approx(1.0)
    same, note = prepare_image(drawing, SHAPE, background="light")
    assert "inverted" not in note and same[0, 0, 0] == pytest.approx(1.0)


def test_prepare_image_flattens_transparency_onto_the_background() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.paste((255, 255, 255, 255), (2, 2, 6, 6))
    arr, note = prepare_image(_png_bytes(img), SHAPE, background="dark")
    assert "transparency" in note
    assert arr[0, 0, 0] == pytest.approx(0.0) and arr[0, 3, 3] == pytest.approx(1.0)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, this is plain text and not an image\n" * 3, "not an image"),
    (_png_header(100_000, 100_000), "pixels"),
    (_png_header(6000, 6000), "pixels"),
])
def test_prepare_image_rejects_bad_uploads(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare_image(data, SHAPE)


def test_prepare_image_rejects_truncated_png() -> None:
    data = _png_bytes(Image.new("L", (64, 64), 7))
    with pytest.raises(ImageError):
        prepare_image(data[: len(data) // 2], SHAPE)


def test_image_error_is_an_input_error() -> None:
    assert issubclass(ImageError, InputError) and issubclass(InputError, ValueError)


def test_dataset_background() -> None:
    dark = np.zeros((4, 1, 8, 8), np.float32)
    assert dataset_background(dark) == "dark"
    assert dataset_background(1 - dark) == "light"
    assert dataset_background(np.full((2, 1, 8, 8), 250, np.uint8)) == "light"
    assert dataset_background(None) is None


# -- loading and encoding ------------------------------------------------------------------------
def test_opening_a_corrupt_file_names_it(tmp_path: Path, tiny_checkpoint_dir: Path) -> None:
    store = ModelStore(tmp_path, torch.device("cpu"))
    good = (tiny_checkpoint_dir / "tiny-vae.safetensors").read_bytes()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        store.open_path(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        store.open_name("junk.safetensors")


def test_an_opened_checkpoint_fills_the_entry(tiny_checkpoint_dir: Path) -> None:
    entry = ModelStore(tiny_checkpoint_dir, torch.device("cpu")).open_path(
        tiny_checkpoint_dir / "tiny-gmvae.safetensors", name="x")
    assert entry.name == "x" and entry.meta.model_type == "gmvae" and entry.description.family == "gmvae"
    assert len(entry.key) == 64 and entry.device == torch.device("cpu")
    assert not entry.model.training and entry.description.class_names[7] == "7"
    assert entry.data_origin == "the 300 test images of digits" and entry.has_points


def test_load_eval_images_digits_and_unknown() -> None:
    data = load_eval_images({"name": "digits", "image_shape": [1, 8, 8]})
    assert isinstance(data, EvalData) and data.images.shape == (300, 1, 8, 8) and data.images.dtype == np.uint8
    assert data.labels.shape == (300,)
    with pytest.raises(NoEvalData, match="'no-such-dataset' could not be loaded"):
        load_eval_images({"name": "no-such-dataset", "image_shape": [1, 8, 8]})
    with pytest.raises(NoEvalData, match=r"has images of shape \[1, 8, 8\] but the model was trained on \[1, 28, 28\]"):
        load_eval_images({"name": "digits", "image_shape": [1, 28, 28]})


@pytest.mark.parametrize("model_type", ["ae", "vae", "cvae", "gmvae"])
def test_encode_dataset_shapes_and_values(model_type: str, tiny_checkpoint_dir: Path,
                                          digits_test: tuple[np.ndarray, np.ndarray]) -> None:
    model, _ = load_checkpoint(tiny_checkpoint_dir / f"tiny-{model_type}.safetensors")
    images, labels = digits_test
    cache = encode_dataset(model, images, labels, batch_size=128)
    n, d = len(images), model.describe().latent_dim
    assert isinstance(cache, LatentsCache) and len(cache) == n
    assert cache.mean.shape == cache.std.shape == (n, d)
    assert cache.recon_error.shape == cache.kl.shape == (n,) and cache.kl_per_dim.shape == (d,)
    assert np.isfinite(cache.mean).all() and (cache.std >= 0).all()
    assert (cache.recon_error >= 0).all() and (cache.recon_error < 0.25).all()
    np.testing.assert_array_equal(cache.labels, labels)
    assert cache.images.shape == images.shape and cache.images.dtype == np.uint8
    np.testing.assert_allclose(cache.float_images(slice(None)), images, atol=0.5 / 255 + 1e-6)
    # The per-dim mean KL sums to the mean per-point KL.
    assert cache.kl_per_dim.sum() == pytest.approx(cache.kl.mean(), rel=1e-4, abs=1e-6)
    if model_type == "ae":
        assert (cache.std == 0).all() and (cache.kl == 0).all()
    else:
        assert (cache.kl > 0).all()
    if model_type == "gmvae":
        assert cache.component_probs is not None and cache.component_probs.shape == (n, 10)
        np.testing.assert_allclose(cache.component_probs.sum(1), 1.0, rtol=1e-5)
    else:
        assert cache.component_probs is None
    # Batching does not change the result.
    again = encode_dataset(model, images, labels, batch_size=1000)
    np.testing.assert_allclose(again.mean, cache.mean, rtol=1e-5, atol=1e-5)


def test_model_store_single_flight_and_lru(tiny_checkpoint_dir: Path) -> None:
    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"), max_models=2)
    assert store.names() == [f"tiny-{m}.safetensors" for m in ("ae", "cvae", "gmvae", "vae")]
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.open_name("tiny-vae.safetensors")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in results}) == 1  # one load, shared
    entry = results[0]
    assert entry.latents is not None and len(entry.latents) == 300 and entry.data_note == ""
    assert entry.background == "dark"
    assert store.get(entry.key) is entry
    store.open_name("tiny-ae.safetensors")
    store.open_name("tiny-cvae.safetensors")
    assert entry.key not in store._entries  # evicted: two models at most
    again = store.get(entry.key)  # ... and reloaded from its file on demand
    assert again is not entry and again.key == entry.key and again.name == "tiny-vae.safetensors"
    with pytest.raises(KeyError):
        store.get("0" * 64)
    with pytest.raises(CheckpointError, match=r"'\.\.'"):
        store.open_name("../x.safetensors")


def test_choose_default_prefers_a_vae(tmp_path: Path, tiny_checkpoint_dir: Path) -> None:
    names = list_checkpoints(tiny_checkpoint_dir)
    assert choose_default(tiny_checkpoint_dir, names) == "tiny-vae.safetensors"
    assert choose_default(tiny_checkpoint_dir, ["tiny-ae.safetensors", "tiny-cvae.safetensors"]) == \
        "tiny-cvae.safetensors"
    assert choose_default(tiny_checkpoint_dir, ["tiny-ae.safetensors", "tiny-cvae.safetensors",
                                                "tiny-gmvae.safetensors"]) == "tiny-gmvae.safetensors"
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert choose_default(tmp_path, ["junk.safetensors"]) == "junk.safetensors"
    assert choose_default(tmp_path, []) is None
