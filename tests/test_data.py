"""Tests for training/data.py: every dataset loads with the documented shapes and never downloads."""

from __future__ import annotations

import gzip
import json
import math
import struct
import time
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from vaescope.training import data
from vaescope.training.data import (
    DATASETS,
    DatasetError,
    DatasetInfo,
    Split,
    dataset_names,
    load_dataset,
    make_shapes,
    read_idx,
    to_float,
)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _NoNetwork:
    """Stands in for torchvision's dataset classes: records the call and fails like an offline fetch."""

    calls: list[dict] = []

    def __init__(self, root: str, train: bool = True, download: bool = False, **kwargs: object) -> None:
        _NoNetwork.calls.append({"root": root, "train": train, "download": download})
        raise URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """No test may reach the network: torchvision's downloaders fail as they would offline."""
    _NoNetwork.calls = []
    for name in ("MNIST", "KMNIST", "FashionMNIST"):
        monkeypatch.setattr(torchvision.datasets, name, _NoNetwork)
    return _NoNetwork.calls


# -- IDX helpers -------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The real IDX format: 0, 0, dtype code 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(idx_bytes(array))
    else:
        path.write_bytes(idx_bytes(array))
    return path


def write_idx_dataset(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5,
                      hw: tuple[int, int] = (6, 5)) -> dict[str, np.ndarray]:
    """Four small IDX files with non-square images (so an H / W mix-up shows); returns the arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, *hw)), IDX_FILES[1]: np.arange(n_train) % 10,
        IDX_FILES[2]: rng.integers(0, 256, (n_test, *hw)), IDX_FILES[3]: (np.arange(n_test) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def assert_matches(ds: data.Dataset, arrays: dict[str, np.ndarray]) -> None:
    for split, (images, labels) in ((ds.train, IDX_FILES[:2]), (ds.test, IDX_FILES[2:])):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape == (len(arrays[images]), 1, 6, 5)
        np.testing.assert_array_equal(split.images[:, 0].numpy(), arrays[images])
        np.testing.assert_array_equal(split.labels.numpy(), arrays[labels])
    assert ds.info.image_shape == (1, 6, 5) and ds.info.num_classes == 10


# -- IDX datasets ------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_override_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool,
                                         no_downloads: list[dict]) -> None:
    arrays = write_idx_dataset(tmp_path / "system", gz)
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "system"))
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    assert_matches(ds, arrays)
    assert ds.info.name == "fashion-mnist" and ds.info.class_names[0] == "T-shirt/top"
    assert no_downloads == []


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "no-system-copy"))
    arrays = write_idx_dataset(tmp_path / "data" / layout, gz=True)
    assert_matches(load_dataset("fashion-mnist", data_dir=tmp_path / "data"), arrays)


@pytest.mark.parametrize(("name", "layout", "gz"), [("mnist", "mnist", False), ("mnist", "MNIST/raw", True),
                                                     ("kmnist", "kmnist", True)])
def test_mnist_like_from_data_dir(tmp_path: Path, name: str, layout: str, gz: bool,
                                  no_downloads: list[dict]) -> None:
    arrays = write_idx_dataset(tmp_path / layout, gz)
    ds = load_dataset(name, data_dir=str(tmp_path))
    assert_matches(ds, arrays)
    assert ds.info.name == name and no_downloads == []


def test_read_idx_roundtrip_and_gzip_detected_by_content(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    plain = write_idx(tmp_path / "a", array, gz=False)
    gzipped = write_idx(tmp_path / "b", array, gz=True).rename(tmp_path / "b-without-suffix")
    for path in (plain, gzipped):
        out = read_idx(path, data.IDX_IMAGES_MAGIC)
        assert out.dtype == np.uint8 and out.flags.writeable
        np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("damage", ["wrong-magic", "truncated", "trailing", "truncated-gzip", "garbage"])
def test_corrupt_idx_raises(tmp_path: Path, damage: str) -> None:
    good = idx_bytes(np.zeros((4, 6, 5)))
    broken = {
        "wrong-magic": idx_bytes(np.zeros(4)),  # a well-formed labels file where images belong
        "truncated": good[:-7],
        "trailing": good + b"\0",
        "truncated-gzip": gzip.compress(good)[:-20],
        "garbage": b"<html>404 Not Found</html>",
    }[damage]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(broken)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        read_idx(path, data.IDX_IMAGES_MAGIC)


def test_corrupt_idx_in_dataset_names_the_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist", gz=False)
    target = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_image_label_count_mismatch(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "mnist", gz=False)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.zeros(11), gz=False)
    with pytest.raises(DatasetError, match="12 images but .* 11 labels"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_download_offline_gives_clear_error(tmp_path: Path, name: str, no_downloads: list[dict]) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert "offline" in message and "download" in message
    assert str(tmp_path / name) in message and "digits" in message and "shapes" in message
    assert no_downloads and no_downloads[0] == {"root": str(tmp_path), "train": True, "download": True}


def test_download_runtime_error_also_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fail)
    with pytest.raises(DatasetError, match="offline.*dataset-fashion-mnist"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.skipif(not Path(data.FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.FASHION_MNIST_DIR_ENV, raising=False)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.train.images.shape[1:] == (1, 28, 28) and ds.info.image_shape == (1, 28, 28)
    assert torch.bincount(ds.train.labels).tolist() == [6000] * 10
    assert ds.info.class_names[9] == "Ankle boot"
    assert 0.2 < ds.test.float_images().mean() < 0.4  # Fashion-MNIST's mean pixel is about 0.29


# -- digits ------------------------------------------------------------------------------------
def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.train.images.shape[1:] == (1, 8, 8) and ds.train.images.dtype == torch.uint8
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == data.DIGITS_TEST_SIZE
    x = ds.train.float_images()
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    assert ds.info.class_names == tuple("0123456789") and ds.info.image_shape == (1, 8, 8)
    assert set(ds.test.labels.tolist()) == set(range(10))
    assert torch.bincount(ds.test.labels).min() >= 29  # stratified: ~30 per class


def test_digits_split_is_seeded() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.test.images, c.test.images)
    # the same 1,797 images, just split differently
    for ds in (a, c):
        assert torch.bincount(torch.cat([ds.train.labels, ds.test.labels])).tolist() == \
            torch.bincount(torch.cat([b.train.labels, b.test.labels])).tolist()


# -- shapes ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes() -> data.Dataset:
    return load_dataset("shapes")


def test_shapes_layout(shapes: data.Dataset) -> None:
    assert shapes.train.images.shape == (data.SHAPES_TRAIN, 1, 32, 32)
    assert shapes.test.images.shape == (data.SHAPES_TEST, 1, 32, 32)
    assert shapes.train.images.dtype == torch.uint8
    assert set(shapes.train.images.unique().tolist()) == {0, 255}
    assert set(shapes.test.float_images().unique().tolist()) == {0.0, 1.0}
    assert shapes.info.factor_names == ("shape", "scale", "rotation", "pos_x", "pos_y")
    assert shapes.info.class_names == ("square", "ellipse", "triangle")
    assert not torch.equal(shapes.train.images[:100], shapes.test.images[:100])


def test_shapes_factors(shapes: data.Dataset) -> None:
    f, labels = shapes.train.factors, shapes.train.labels
    assert f is not None and f.shape == (data.SHAPES_TRAIN, 5) and f.dtype == torch.float32
    assert set(labels.tolist()) == {0, 1, 2} and torch.equal(f[:, 0].long(), labels)
    assert torch.bincount(labels).min() > 3500  # roughly balanced
    for column, (low, high) in zip(f.T[1:], [data.SCALE_RANGE, data.ROTATION_RANGE, (0, 1), (0, 1)],
                                   strict=True):
        assert low <= column.min() and column.max() <= high
        assert column.max() - column.min() > 0.9 * (high - low)  # the whole range is used
    pixels = shapes.train.images.flatten(1).sum(1)
    assert pixels.min() >= 255 * 10  # even the smallest shape covers at least 10 pixels
    assert (shapes.train.images[:, 0, [0, -1], :] == 0).all() and (shapes.train.images[:, 0, :, [0, -1]] == 0).all()


def test_shapes_seeded(shapes: data.Dataset) -> None:
    a, b, c = make_shapes(300, 5), make_shapes(300, 5), make_shapes(300, 6)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.factors, c.factors)
    other = load_dataset("shapes", seed=1)
    assert not torch.equal(shapes.train.images[:50], other.train.images[:50])


def _moments(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel count [N], centroid (x, y) [N, 2], central second moments (mu20, mu02, mu11) [N, 3]."""
    m = split.float_images()[:, 0].numpy()
    ys, xs = np.mgrid[: m.shape[1], : m.shape[2]]
    area = m.sum((1, 2))
    cx, cy = (m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    second = np.stack([(m * dx**2).sum((1, 2)), (m * dy**2).sum((1, 2)), (m * dx * dy).sum((1, 2))], 1)
    return area, np.stack([cx, cy], 1), second / area[:, None]


def test_shapes_factors_control_the_image() -> None:
    split = make_shapes(2000, 1)
    f = split.factors.numpy()
    area, centroid, second = _moments(split)
    assert np.corrcoef(centroid[:, 0], f[:, 3])[0, 1] > 0.99  # pos_x moves the shape right
    assert np.corrcoef(centroid[:, 1], f[:, 4])[0, 1] > 0.99  # pos_y moves it down
    for shape in range(3):
        keep = f[:, 0] == shape
        assert np.corrcoef(area[keep], f[keep, 1] ** 2)[0, 1] > 0.95  # area grows as scale^2
    # An ellipse's major axis points along its rotation (angle from the second moments).
    ellipse = (f[:, 0] == 1) & (f[:, 1] > 0.75)
    mu20, mu02, mu11 = second[ellipse].T
    angle = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)
    error = np.angle(np.exp(2j * (angle - f[ellipse, 2]))) / 2  # difference modulo a half turn
    assert np.median(np.abs(error)) < 0.1


# -- image folders -----------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes of PNGs in mixed sizes and modes, plus files that must be skipped or ignored."""
    root = tmp_path / "pics"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "cats" / "red.png")
    Image.new("L", (64, 64), 128).save(root / "cats" / "grey.png")
    Image.new("RGBA", (50, 80), (0, 0, 255, 0)).save(root / "cats" / "transparent.png")
    Image.new("P", (20, 60), 3).save(root / "cats" / "palette.png")
    Image.new("RGB", (100, 100), (0, 255, 0)).save(root / "cats" / "green.jpg")
    for i in range(5):
        Image.new("RGBA", (33 + i, 47), (10 * i, 20, 30, 255)).save(root / "dogs" / f"dog{i}.png")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "dogs" / "notes.txt").write_text("not an image, ignored without a warning")
    (root / ".hidden").mkdir()
    return root


def _load_folder_with_one_skip(name: str, **kwargs: object) -> data.Dataset:
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        return load_dataset(name, **kwargs)


def test_folder_loads_rgb(image_folder: Path) -> None:
    ds = _load_folder_with_one_skip(f"folder:{image_folder}")
    assert ds.info.class_names == ("cats", "dogs") and ds.info.image_shape == (3, 64, 64)
    assert ds.info.name == f"folder:{image_folder.resolve()}"
    assert len(ds.train) + len(ds.test) == 10
    assert ds.train.images.shape[1:] == (3, 64, 64) and ds.train.images.dtype == torch.uint8
    assert set(ds.test.labels.tolist()) == {0, 1}  # at least one test image per class
    everything = torch.cat([ds.train.images, ds.test.images])
    pixels = {tuple(im[:, 32, 32].tolist()) for im in everything}
    assert {(255, 0, 0), (128, 128, 128), (255, 255, 255)} <= pixels  # red, grey, transparent->white
    assert ds.train.float_images().max() <= 1.0


def test_folder_image_size_and_seed(image_folder: Path) -> None:
    small = _load_folder_with_one_skip(f"folder:{image_folder}", image_size=32)
    assert small.train.images.shape[1:] == (3, 32, 32) and small.info.image_shape == (3, 32, 32)
    again = _load_folder_with_one_skip(f"folder:{image_folder}", image_size=32)
    assert torch.equal(small.test.images, again.test.images)


@pytest.mark.parametrize(("setup", "match"), [
    ("missing", "does not exist"), ("file", "not a directory"), ("empty", "no class subfolders"),
    ("no-images", "no readable images"), ("", "without a path"),
])
def test_folder_errors(tmp_path: Path, setup: str, match: str) -> None:
    target = tmp_path / setup
    if setup == "file":
        target.write_text("x")
    elif setup == "empty":
        target.mkdir()
        Image.new("RGB", (8, 8)).save(target / "loose.png")  # images, but not in a class folder
    elif setup == "no-images":
        (target / "a").mkdir(parents=True)
        (target / "a" / "readme.md").write_text("x")
    name = f"folder:{target}" if setup else "folder:"
    with pytest.raises(DatasetError, match=match):
        load_dataset(name)


def test_folder_skips_empty_class_with_warning(image_folder: Path) -> None:
    (image_folder / "birds").mkdir()
    with pytest.warns(UserWarning, match=r"1 class folder\(s\) with no readable images \['birds'\]"):
        ds = load_dataset(f"folder:{image_folder}")
    assert ds.info.class_names == ("cats", "dogs")


# -- registry and containers -------------------------------------------------------------------
def test_unknown_name_lists_known() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'") as info:
        load_dataset("cifar")
    for name in ("digits", "shapes", "fashion-mnist", "mnist", "kmnist", "folder:PATH"):
        assert name in str(info.value)
    assert set(dataset_names()) == {*DATASETS, "folder:PATH"}


def test_info_roundtrips_through_json(shapes: data.Dataset) -> None:
    info = shapes.info
    d = json.loads(json.dumps(info.to_dict()))
    assert d["image_shape"] == [1, 32, 32] and isinstance(d["class_names"], list)
    assert DatasetInfo.from_dict(d) == info
    with pytest.raises(DatasetError, match="unknown key"):
        DatasetInfo.from_dict({**d, "colour": "red"})
    with pytest.raises(DatasetError, match="missing key"):
        DatasetInfo.from_dict({"name": "x"})


def test_to_float_and_split_checks() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    split = Split(images, torch.tensor([0, 1, 2], dtype=torch.int32))
    assert split.labels.dtype == torch.int64 and len(split) == 3
    assert split.float_images().flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert split.float_images(torch.tensor([2])).shape == (1, 1, 1, 1)
    with pytest.raises(TypeError):
        to_float(images.float())
    with pytest.raises(DatasetError, match="uint8"):
        Split(images.float(), torch.zeros(3))
    with pytest.raises(DatasetError, match="labels"):
        Split(images, torch.zeros(2))


# -- hostile and tiny folders ------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` pixels but holds no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return path


class _OddDecoderError(Exception):
    """Not one of Pillow's usual errors: what a crafted file may make a decoder plugin raise."""


def test_files_pillow_chokes_on_are_skipped_and_counted(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cats = image_folder / "cats"
    _png_header(cats / "bomb.png", 100_000, 100_000)  # 10^10 pixels declared: a decompression bomb
    _png_header(cats / "thin.png", 1, 30_000_000)  # over the pixel limit in one very thin row
    (cats / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2)
    errors = {"odd.png": _OddDecoderError("crafted"), "struct.png": struct.error("unpack"),
              "index.png": IndexError("tile"), "memory.png": MemoryError()}
    for name in errors:
        Image.new("RGB", (8, 8)).save(cats / name)
    real_open = Image.open

    def hostile_open(fp, *args, **kwargs):  # noqa: ANN001, ANN202 - Image.open's signature
        if Path(fp).name in errors:
            raise errors[Path(fp).name]
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", hostile_open)
    started = time.perf_counter()
    with pytest.warns(UserWarning, match=r"skipped 8 unreadable image file\(s\) \(e\.g\. "):
        ds = load_dataset(f"folder:{image_folder}", image_size=16)
    assert time.perf_counter() - started < 10  # the bombs' pixels were never decoded
    assert len(ds.train) + len(ds.test) == 10 and ds.info.class_names == ("cats", "dogs")


def test_a_folder_with_one_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "all").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "all" / "only.png")
    with pytest.raises(DatasetError, match="only 1 readable image .* at least 2 are needed, one to train on and one to test on"):
        load_dataset(f"folder:{tmp_path}")


def test_one_image_per_class_still_leaves_a_test_image(tmp_path: Path) -> None:
    for i, name in enumerate(("a", "b", "c")):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(tmp_path / name / "x.png")
    for seed in range(4):
        ds = load_dataset(f"folder:{tmp_path}", image_size=8, seed=seed)
        assert (len(ds.train), len(ds.test)) == (2, 1)
        assert sorted(ds.train.labels.tolist() + ds.test.labels.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("layout", ["one-subfolder", "one-per-class"])
def test_tiny_and_unlabelled_folders_train_and_evaluate_end_to_end(tmp_path: Path, layout: str, capsys) -> None:
    """The unlabelled layout latent-train recommends (one subfolder) and one image per class both
    train, validate every epoch and evaluate at the end. A probe needs two classes in the training
    split, which neither has (the second class's only image is the test image), so neither
    reports a probe accuracy."""
    from vaescope.training.cli import main

    root = tmp_path / "images"
    names = ["all"] * 6 if layout == "one-subfolder" else ["a", "b"]
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), (40 * i, 200 - 30 * i, 90)).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    assert main(["--dataset", f"folder:{root}", "--image-size", "8", "--epochs", "2", "--eval-k", "2",
                 "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["test_images"] == 1 and math.isfinite(line["elbo"]) and math.isfinite(line["nll_iwae"])
    assert "probe_accuracy" not in line
    assert (out / "reconstructions.png").stat().st_size > 0
