"""Embeddings files from outside (issue #28, items 3 and 4): every declared size is checked before
anything is allocated. Small files that declared gigabytes (compressed zeros, lying .npy headers,
a parquet row of 3e8 floats), ragged or non-finite vectors, objects, records and over-long strings
are refused with one EmbeddingsError sentence that names the file, and refusing costs a few
megabytes; valid files still load with the right values."""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaescope.explorer.core import embeddings
from vaescope.explorer.core.embeddings import EmbeddingsError, EmbeddingTable, read_embeddings

BLOCK = 16 << 20
REFUSAL_GROWTH_MB = 100  # the most resident memory all the refusals together may add (they take ~1 MB)
SLACK_MB = 200  # added to the bounds where the peak cannot be reset after the imports


# -- crafted files -------------------------------------------------------------------------------
def npy_header(shape: object, descr: object, fortran: bool = False) -> bytes:
    """A version 1.0 .npy header, as np.save writes it (padded to 64 bytes, ending in a newline)."""
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


@functools.cache
def _deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes ending on a full flush: byte aligned, with no
    history, so copies of it can follow each other in one stream."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(bytes(size)) + c.flush(zlib.Z_FULL_FLUSH)


def zeros_npz(path: Path, arrays: dict[str, tuple[tuple[int, ...], str]]) -> Path:
    """A genuine compressed .npz of zeros, as ``np.savez_compressed(path, name=np.zeros(shape, dtype))``
    writes it: a deflated zip entry per array, CRCs and sizes right, ~1000:1. The zero blocks are
    compressed once and repeated, so a 4 GB array costs a second of CRC, not a minute of zlib."""
    central, count = b"", 0
    with path.open("wb") as fh:
        for name, (shape, dtype) in arrays.items():
            header = npy_header(shape, np.dtype(dtype).str)
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            usize = len(header) + nbytes
            assert usize < 2**32  # no zip64 needed
            full, rest = divmod(nbytes, BLOCK)
            crc, zeros = zlib.crc32(header), bytes(BLOCK if full else rest)
            for _ in range(full):
                crc = zlib.crc32(zeros, crc)
            if rest:
                crc = zlib.crc32(zeros[:rest], crc)
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            first = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
            last = (_deflated_zeros(rest) if rest else b"") + zlib.compressobj(6, zlib.DEFLATED, -15).flush()
            csize = len(first) + full * len(_deflated_zeros(BLOCK) if full else b"") + len(last)
            name_bytes, offset = f"{name}.npy".encode(), fh.tell()
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, csize, usize,
                                 len(name_bytes), 0) + name_bytes + first)
            for _ in range(full):
                fh.write(_deflated_zeros(BLOCK))
            fh.write(last)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, csize, usize,
                                   len(name_bytes), 0, 0, 0, 0, 0, offset) + name_bytes
            count += 1
        start = fh.tell()
        fh.write(central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0))
    return path


def raw_npz(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    """An .npz whose entries hold exactly the given bytes (a header may lie about what follows)."""
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def lying_npz(path: Path, shape: object, descr: object = "<f4", payload: bytes = b"\0" * 64) -> Path:
    return raw_npz(path, {"latents.npy": npy_header(shape, descr) + payload})


def parquet(path: Path, **columns: object) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# -- the attacks ---------------------------------------------------------------------------------
# name -> (make the file in a folder, what the refusal says after "<file name>: ")
ZERO_BOMBS = {
    "float64-latents.npz": ({"latents": ((2_000_000, 50), "<f8")},
                            "latents declared as float64 [2,000,000 x 50] take 763 MiB; at most 512 MiB of codes "
                            "are read (float32 takes half the room of float64)"),
    "complex-latents.npz": ({"latents": ((2_000_000, 50), "<c16")},
                            "the latents array holds complex numbers (complex128 [2,000,000 x 50]); codes must be real "
                            "numbers: floats or integers of at most 8 bytes"),
    "float64-images.npz": ({"latents": ((4000, 8), "<f4"), "images": ((4000, 256, 256), "<f8")},
                           "images declared as float64 [4,000 x 256 x 256] take 2,000 MiB; at most 1,024 MiB of "
                           "thumbnails are read"),
    "long-labels.npz": ({"latents": ((10_000, 8), "<f4"), "labels": ((10_000,), "<U100000")},
                        "the labels array holds strings of up to 100,000 characters (U100000 [10,000]); labels and class "
                        "names up to 256 characters are read"),
    "long-class-names.npz": ({"latents": ((500, 8), "<f4"), "class_names": ((500,), "<U1000000")},
                             "the class_names array holds strings of up to 1,000,000 characters (U1000000 [500]); labels and "
                             "class names up to 256 characters are read"),
}


def _crafted_bombs(folder: Path) -> dict[Path, str]:
    """Files of a few hundred bytes whose headers declare what no limit allows."""
    table = pa.table({"vector": pa.array([[0.0] * 10_000], pa.list_(pa.float32()))})
    pq.write_table(table, folder / "giant-row.parquet")
    return {
        lying_npz(folder / "billion-rows.npz", (10**9, 16)):
            "latents of shape [1000000000, 16] exceed the limits: at most 20,000,000 points (above 2,000,000, a "
            "seeded subset of that many is read), 8192 dimensions and 100,000,000 values",
        lying_npz(folder / "objects.npz", (10, 4), "|O"): "the latents array holds Python objects, which are never unpickled",
        lying_npz(folder / "records.npz", (10,), [("a", "<f4"), ("b", "<f4")]):
            "the latents array holds records (a structured dtype) (V8 [10]); only plain arrays of numbers or strings are read",
        lying_npz(folder / "short-entry.npz", (100, 4)):
            "latents.npy declares 1,600 bytes of data but its zip entry holds 64",
        lying_npz(folder / "long-entry.npz", (2, 4), payload=b"\0" * 4096):
            "latents.npy declares 32 bytes of data but its zip entry holds 4,096",
        folder / "giant-row.parquet":
            "the vector column declares 10,000 values for 1 row; at most 8192 a row and 100,000,000 in all are read",
        parquet(folder / "ragged.parquet", vector=pa.array([[0.0, 1.0], [2.0, 3.0, 4.0], [5.0]])):
            "the vector column's vectors do not all have one length: lengths 1, 2 and 3 were seen",
    }


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, str]:
    folder = tmp_path_factory.mktemp("bombs")
    found = {zeros_npz(folder / name, arrays): message for name, (arrays, message) in ZERO_BOMBS.items()}
    return {**found, **_crafted_bombs(folder)}


def test_the_zero_bombs_are_small_genuine_npz_files(tmp_path: Path, bombs: dict[Path, str]) -> None:
    """The writer makes what np.savez_compressed makes: numpy reads a small one back as zeros."""
    path = zeros_npz(tmp_path / "small.npz", {"latents": ((40_000, 50), "<f8"), "labels": ((40_000,), "<i8")})
    with np.load(path) as data:
        assert data["latents"].shape == (40_000, 50) and not data["latents"].any() and not data["labels"].any()
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    table = read_embeddings(path)
    assert table.latents.dtype == np.float32 and table.latents.shape == (40_000, 50) and (table.labels == 0).all()
    for bomb in bombs:
        assert bomb.stat().st_size < 5 << 20, bomb  # at most a few megabytes, declaring up to 4 GB


def test_each_bomb_is_refused_with_one_sentence_naming_the_file(bombs: dict[Path, str]) -> None:
    for path, message in bombs.items():
        with pytest.raises(EmbeddingsError) as caught:
            read_embeddings(path)
        assert str(caught.value) == f"{path.name}: {message}"


MEASURE = """
import gc, json, re, sys
from vaescope.explorer.core.embeddings import EmbeddingsError, read_embeddings

def memory(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

for warm in sys.argv[1:3]:
    read_embeddings(warm)  # imports and initialises zipfile, numpy's .npy reader and pyarrow once
gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak resident size (VmHWM) starts again from the current one
    reset = True
except OSError:  # not allowed here: the peak then includes the imports', and the bound is looser
    reset = False
before = memory("VmRSS")
outcomes = {}
for path in sys.argv[3:]:
    try:
        outcomes[path] = "read %s" % (read_embeddings(path).latents.shape,)
    except EmbeddingsError as exc:
        outcomes[path] = str(exc)
print(json.dumps({"before_mb": before, "growth_mb": memory("VmHWM") - before, "reset": reset, "outcomes": outcomes}))
"""


def measure(paths: list[Path], warm: tuple[Path, Path]) -> dict:
    """Read ``paths`` in a fresh process (Linux); its resident memory after imports and warm-up reads,
    and how far above that reading them took its peak, in MB."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, warm), *map(str, paths)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("warm")
    np.savez(folder / "warm.npz", latents=np.ones((4, 3), np.float32))
    return folder / "warm.npz", parquet(folder / "warm.parquet", vector=[[1.0, 2.0]], label=["a"])


def test_refusing_every_bomb_costs_a_few_megabytes(bombs: dict[Path, str], warm: tuple[Path, Path]) -> None:
    """In a fresh process, the refusals of files that declare up to 4 GB (and that numpy or pyarrow
    would allocate 2-5 GB for) together raise the peak resident memory by less than 100 MB."""
    result = measure(list(bombs), warm)
    assert result["outcomes"] == {str(p): f"{p.name}: {m}" for p, m in bombs.items()}
    assert result["growth_mb"] < REFUSAL_GROWTH_MB + (0 if result["reset"] else SLACK_MB), result


def test_float64_codes_are_converted_block_by_block(tmp_path: Path, warm: tuple[Path, Path]) -> None:
    """240 MB of float64 codes (within the limit) become 120 MB of float32 without a float64 copy of
    the whole: np.load and astype would hold both, 360 MB."""
    path = zeros_npz(tmp_path / "f64.npz", {"latents": ((600_000, 50), "<f8")})
    result = measure([path], warm)
    assert result["outcomes"] == {str(path): "read (600000, 50)"}
    assert result["growth_mb"] < 120 + 80 + (0 if result["reset"] else SLACK_MB), result


# -- .npz refusals, one at a time ----------------------------------------------------------------
def _savez(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: _savez(p / "a.npz", latents=np.array([[np.inf, 0.0]])), "a.npz: latents contain NaN or infinite values"),
    (lambda p: _savez(p / "a.npz", latents=np.array([[1e300, 0.0]])),
     "a.npz: latents hold values beyond float32's range (about 3.4e38)"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2), np.longdouble)),
     "codes must be real numbers: floats or integers of at most 8 bytes"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2), "datetime64[s]")), "the latents array holds dates"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2)), labels=np.zeros(3)),
     "a.npz: the labels array holds floats (float64 [3]); labels must be integers or strings"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2)), labels=np.array(["a", "b", "x" * 300])),
     "a.npz: the labels array holds strings of up to 300 characters (U300 [3]); labels and class names up to 256"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2)), class_names=np.array([b"y" * 257])),
     "a.npz: the class_names array holds strings of up to 257 characters (S257 [1]); labels"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2)), images=np.zeros((3, 1, 8, 8), np.int16)),
     "a.npz: the images array holds integers (int16 [3 x 1 x 8 x 8]); images must be uint8, or floats in [0, 1]"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((3, 2)), images=np.full((3, 8, 8), np.nan)),
     "a.npz: images must be uint8, or finite floats in [0, 1]; got float64 with NaN or infinities"),
    (lambda p: _savez(p / "a.npz", latents=np.zeros((0, 2))), "a.npz: latents must be [N, D] with N >= 1 and D >= 1"),
    (lambda p: lying_npz(p / "a.npz", (-5, 2)), "a.npz: latents declares a negative size [-5, 2]"),
    (lambda p: raw_npz(p / "a.npz", {"latents.npy": b"\x93NUMPY\x03\x00" + b"\0" * 60}),
     "a.npz: latents has no readable .npy header (.npy format version 3.0 is not read)"),
    (lambda p: raw_npz(p / "a.npz", {"latents.npy": b"not an npy file at all"}), "a.npz: latents has no readable .npy header"),
    (lambda p: raw_npz(p / "a.npz", {f"x{i}.npy": b"" for i in range(100)}),
     "a.npz: its zip directory lists 100 entries in 5,"),
    (lambda p: ((p / "a.npz").write_bytes(b"PK not a zip"), p / "a.npz")[1],
     "a.npz: not a readable .npz embeddings file (no zip directory)"),
])
def test_bad_npz_files_are_refused(make, message: str, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingsError) as caught:
        read_embeddings(make(tmp_path))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_arrays_not_used_are_never_read(tmp_path: Path) -> None:
    """An extra member whose header declares 4 TB (and whose data is missing) does not matter."""
    path = raw_npz(tmp_path / "a.npz", {"latents.npy": npy_header((2, 3), "<f4") + np.arange(6, dtype="<f4").tobytes(),
                                        "other.npy": npy_header((10**6, 10**6), "<f4")})
    np.testing.assert_array_equal(read_embeddings(path).latents, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_a_corrupt_member_is_refused_by_its_crc(tmp_path: Path) -> None:
    path = raw_npz(tmp_path / "a.npz", {"latents.npy": npy_header((4, 4), "<f4") + b"\0" * 64}, zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"\0" * 64) + 10] = 1  # one byte of data changed after the CRC was written
    path.write_bytes(bytes(raw))
    with pytest.raises(EmbeddingsError, match=r"a.npz: not a readable .npz embeddings file \(BadZipFile: Bad CRC-32"):
        read_embeddings(path)


# -- .npz that load ------------------------------------------------------------------------------
def test_valid_npz_files_load_with_the_right_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(50, 7)).astype(np.float32)
    images = rng.integers(0, 256, (50, 1, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, 50)
    table = read_embeddings(_savez(tmp_path / "f32.npz", latents=codes, images=images, labels=labels,
                                   class_names=np.array(["a", "b", "c"])))
    np.testing.assert_array_equal(table.latents, codes)
    np.testing.assert_array_equal(table.images, images)
    assert (table.labels == labels).all() and table.class_names == ("a", "b", "c")
    assert table.origin == "the 50 points of f32.npz"

    f64 = rng.normal(size=(50, 7))
    pixels = rng.random((50, 6, 5, 3))  # [N, H, W, C] floats in [0, 1]
    words = np.array(["cat", "dog", "ant"])[labels]
    table = read_embeddings(_savez(tmp_path / "f64.npz", z=np.asfortranarray(f64), images=pixels, labels=words))
    np.testing.assert_array_equal(table.latents, f64.astype(np.float32))
    assert table.latents.flags.c_contiguous
    np.testing.assert_array_equal(table.images, (pixels.transpose(0, 3, 1, 2) * 255 + 0.5).astype(np.uint8))
    assert table.class_names == ("ant", "cat", "dog") and [table.class_names[i] for i in table.labels] == list(words)

    big_endian = codes.astype(">f4")
    table = read_embeddings(_savez(tmp_path / "be.npz", codes=big_endian, labels=words.astype("S"),
                                   class_names=np.array([b"dog", b"cat"])))
    np.testing.assert_array_equal(table.latents, codes)
    assert table.class_names == ("dog", "cat")  # given names decide the classes; "ant" is unknown
    assert list(table.labels) == [{"dog": 0, "cat": 1}.get(w, -1) for w in words]

    ints = rng.integers(-100, 100, (20, 4)).astype(np.int16)
    table = read_embeddings(_savez(tmp_path / "int.npz", embeddings=ints, images=rng.random((20, 3, 4, 4), np.float32)))
    np.testing.assert_array_equal(table.latents, ints.astype(np.float32))
    assert table.images.shape == (20, 3, 4, 4) and (table.labels == -1).all()


# -- .parquet refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize("columns, message", [
    ({"vector": pa.array([[float("nan"), 1.0], [2.0, 3.0]])}, "v.parquet: latents contain NaN or infinite values"),
    ({"vector": pa.array([[float("inf"), 1.0]], pa.list_(pa.float32()))}, "latents contain NaN or infinite values"),
    ({"vector": pa.array([[1, 2], [3, 4]])},
     "v.parquet: the vector column holds list<element: int64>; vectors must be lists of floats (float16, float32 or float64)"),
    ({"vector": ["a", "b"]}, "v.parquet: the vector column holds string; it must hold one list of floats (a vector) per row"),
    ({"embedding": pa.array([{"x": 1.0}])}, "the embedding column holds struct<x: double>; it must hold one list"),
    ({"vector": pa.array([[1.0, 2.0], None])}, "v.parquet: row 1 of the vector column has no vector"),
    ({"vector": pa.array([[1.0, None]])}, "v.parquet: the vector column's vectors hold missing values (nulls)"),
    ({"vector": pa.array([[], []], pa.list_(pa.float32()))}, "vector must be [N, D] with N >= 1 and D >= 1, got [2, 0]"),
    ({"vector": pa.array([[1.0, 2.0]]), "label": ["x" * 300]},
     "v.parquet: a label is 300 characters long; labels up to 256 characters are read"),
    ({"vector": pa.array([[1.0, 2.0]]), "label": [1.5]},
     "v.parquet: the label column holds double; labels must be integers or strings"),
    ({"vector": pa.array([[1.0, 2.0]]), "image": ["not bytes"]},
     "v.parquet: the image column holds string; it must hold PNG / JPEG bytes"),
    ({"vector": pa.array([[1.0, 2.0]]), "image": [b"not a png"]}, "v.parquet: image 0 cannot be read"),
    ({"vector": pa.array([[1.0, 2.0]] * 2), "image": [png(np.zeros((4, 4), np.uint8)), png(np.zeros((5, 4), np.uint8))]},
     "v.parquet: the images have different sizes; give thumbnails of one size"),
    ({"other": [1]}, "v.parquet: no vector column: name it vector, embedding or latents (found ['other'])"),
])
def test_bad_parquet_files_are_refused(columns: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingsError) as caught:
        read_embeddings(parquet(tmp_path / "v.parquet", **columns))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a column was read before the declared sizes were checked")

    for method in ("read", "read_row_group", "read_row_groups", "iter_batches"):
        monkeypatch.setattr(pq.ParquetFile, method, fail)


def test_a_row_of_3e8_floats_is_refused_from_the_footer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 36 KB file with one row of 3e8 floats: pyarrow can only write it from 1.2 GB in memory, so
    the limits are scaled down 1,000 times and the same file is one row of 300,000 floats. Its
    declared values are refused from the row groups' metadata, and no column is read."""
    path = tmp_path / "row.parquet"
    pq.write_table(pa.table({"vector": pa.array([np.zeros(300_000, np.float32)], pa.list_(pa.float32()))}), path)
    assert path.stat().st_size < 64 << 10
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_VALUES", 100_000)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_DIM", 10**9)
    _never_read(monkeypatch)
    with pytest.raises(EmbeddingsError, match=r"^row.parquet: the vector column declares 300,000 values for 1 row; "
                                              r"at most 1000000000 a row and 100,000 in all are read$"):
        read_embeddings(path)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_VALUES", 10**9)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_BYTES", 1 << 20)
    with pytest.raises(EmbeddingsError, match=r"^row.parquet: the vector column declares 1.1 MiB of float vectors; "
                                              r"at most 1 MiB are read$"):
        read_embeddings(path)


def test_rows_and_labels_are_counted_from_the_footer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = parquet(tmp_path / "r.parquet", vector=pa.array([[1.0, 2.0]] * 10), label=[f"class {i}" for i in range(10)])
    _never_read(monkeypatch)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_POINTS", 5)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_FILE_ROWS", 5)  # below it, a seeded subset is read instead
    with pytest.raises(EmbeddingsError, match=r"^r.parquet: 10 rows; between 1 and 5 are read$"):
        read_embeddings(path)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_POINTS", 10)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_FILE_ROWS", 100)
    monkeypatch.setattr(embeddings, "MAX_EMBEDDING_LABEL_BYTES", 64)
    with pytest.raises(EmbeddingsError, match=r"^r.parquet: the label column declares \d+ bytes of labels; at most 64"):
        read_embeddings(path)


def test_arrow_errors_become_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + b"\x07" * 100 + (50).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(EmbeddingsError, match=r"^junk.parquet: not a readable .parquet embeddings file \(\w+: "):
        read_embeddings(junk)
    footer = tmp_path / "footer.parquet"
    footer.write_bytes(b"PAR1" + b"\0" * 100 + (1 << 30).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(EmbeddingsError, match=r"^footer.parquet: its footer \(schema and row groups\) takes 1,024 MiB; "
                                              r"at most 4 MiB are read$"):
        read_embeddings(footer)
    path = parquet(tmp_path / "ok.parquet", vector=pa.array([[1.0, 2.0]]))

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise pa.ArrowMemoryError("malloc of size 1200000000 failed\nand a long traceback")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", out_of_memory)
    with pytest.raises(EmbeddingsError) as caught:
        read_embeddings(path)
    assert str(caught.value) == ("ok.parquet: not a readable .parquet embeddings file "
                                 "(ArrowMemoryError: malloc of size 1200000000 failed)")


# -- .parquet that load --------------------------------------------------------------------------
def test_valid_parquet_files_load_with_the_right_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(30, 6)).astype(np.float32)
    words = [["cat", "dog", None, "ant"][i % 4] for i in range(30)]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"vector": pa.array(list(codes), pa.list_(pa.float32())), "label": words}), path,
                   row_group_size=7)  # several row groups, each with its own dictionary
    table = read_embeddings(path)
    np.testing.assert_array_equal(table.latents, codes)
    assert table.class_names == ("ant", "cat", "dog")
    assert [table.class_names[i] if i >= 0 else None for i in table.labels] == words  # a missing label is unknown
    assert table.origin == "the 30 rows of list.parquet"

    half = codes.astype(np.float16)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(half.ravel(), pa.float16()), 6)
    table = read_embeddings(parquet(tmp_path / "fixed.parquet", embedding=fixed, label=pa.array(range(30), pa.uint8())))
    np.testing.assert_array_equal(table.latents, half.astype(np.float32))
    assert list(table.labels) == list(range(30)) and table.class_names == ()

    f64 = rng.normal(size=(30, 6))
    thumbs = rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    table = read_embeddings(parquet(tmp_path / "large.parquet", latents=pa.array(list(f64), pa.large_list(pa.float64())),
                                    image=[png(thumbs[i % 3]) for i in range(30)]))  # each image 10 times
    np.testing.assert_array_equal(table.latents, f64.astype(np.float32))
    np.testing.assert_array_equal(table.images, thumbs[np.arange(30) % 3].transpose(0, 3, 1, 2))


# -- fuzzing: every crafted file is read or refused with the one error type -----------------------
SIZES = st.sampled_from([0, 1, 2, 3, 5, 8, 256, 257, 8192, 8193, 10**6, 2**31, 10**9, 2**63, -1])
WILD_DESCRS = ["<c16", "|O", "<U300", "|V8", "<f16", "<M8[s]", "<U0", "|b1", "bogus", [("a", "<f4")], "(2,)<f4"]
DESCRS = {"latents": ["<f4", "<f8", ">f4", "<f2", "<i8", "|u1"], "images": ["|u1", "<f4", "<f8"],
          "labels": ["<i8", "|u1", "<U5", "|S4", ">i4"], "class_names": ["<U5", "|S3", "<i4"]}


@st.composite
def npy_members(draw: st.DrawFn, role: str, n: int, d: int) -> bytes:
    """A .npy entry: two times in three a plausible one for ``role`` over ``n`` points of ``d``
    dimensions (its data of the declared size); else a wild one: sizes around the limits and far
    beyond, odd dtypes, malformed header text, data cut short or running long, random bytes."""
    if draw(st.integers(0, 2)):
        shape = {"latents": (n, d), "labels": (n,), "class_names": (draw(st.integers(0, 4)),),
                 "images": draw(st.sampled_from([(n, 1, 3, 2), (n, 3, 2), (n, 2, 2, 3), (n, 3, 2, 2)]))}[role]
        descr = draw(st.sampled_from(DESCRS[role]))
        header = npy_header(shape, descr, draw(st.booleans()))
        return header + draw(st.sampled_from([b"\0", b"\1"])) * (int(np.prod(shape)) * np.dtype(descr).itemsize)
    shape, descr = tuple(draw(st.lists(SIZES, max_size=4))), draw(st.sampled_from(DESCRS[role] + WILD_DESCRS))
    if draw(st.integers(0, 4)) == 0:
        header = draw(st.sampled_from([b"\x93NUMPY\x01\x00\x05\x00{}  \n", b"\x93NUMPY\x02\x00" + b"\xff" * 4,
                                       b"\x93NUMPY", npy_header(list(shape), descr), npy_header(shape, descr)[:-3]]))
    else:
        header = npy_header(shape, descr, draw(st.booleans()))
    try:
        declared = int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize
    except TypeError:
        declared = 64
    size = declared if 0 <= declared <= 4096 and draw(st.booleans()) else draw(st.integers(0, 256))
    return header + np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


@st.composite
def crafted_npz(draw: st.DrawFn) -> tuple[str, bytes]:
    n, d = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    key = draw(st.sampled_from(["latents", "latents", "latents", "z", "codes", "other"]))
    members = {f"{key}.npy": draw(npy_members("latents", n, d))}
    for role in ("images", "labels", "class_names"):
        if draw(st.booleans()):
            members[f"{role}.npy"] = draw(npy_members(role, n, d))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:  # damaged bytes
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return ".npz", raw


@st.composite
def crafted_parquet(draw: st.DrawFn) -> tuple[str, bytes]:
    """A parquet file of random row counts, list lengths (equal or ragged), value types, nulls and
    non-finite values, list types, labels and row group sizes, now and then with a byte changed."""
    rows = draw(st.integers(1, 12))
    d = draw(st.integers(0, 4))
    lengths = [d] * rows if draw(st.integers(0, 3)) else draw(st.lists(st.integers(0, 4), min_size=rows, max_size=rows))
    values = draw(st.sampled_from([pa.float32(), pa.float64(), pa.float16(), pa.int32()]))
    special = draw(st.sampled_from([None, None, None, float("nan"), float("inf"), "null-row", "null-value"]))
    vectors: list = [[float(i + j) / 7 for j in range(n)] for i, n in enumerate(lengths)]
    if special == "null-row":
        vectors[draw(st.integers(0, rows - 1))] = None
    elif special is not None and any(lengths):
        row = next(i for i, n in enumerate(lengths) if n)
        vectors[row][0] = None if special == "null-value" else special
    if values == pa.float16():
        vectors = [None if v is None else [None if x is None else np.float16(x) for x in v] for v in vectors]
    if values == pa.int32():
        vectors = [None if v is None else [None if x is None or x != x or abs(x) == float("inf") else int(x) for x in v]
                   for v in vectors]
    kind = draw(st.sampled_from(["list", "large", "fixed"]))
    if kind == "fixed" and len(set(lengths)) == 1 and special not in ("null-row",):
        array = pa.array(vectors, pa.list_(values, lengths[0]))
    else:
        array = pa.array(vectors, (pa.large_list if kind == "large" else pa.list_)(values))
    columns = {draw(st.sampled_from(["vector", "embedding", "z", "vector", "other"])): array}
    label = draw(st.sampled_from([None, "int", "str", "long", "float"]))
    if label is not None:
        columns["label"] = {"int": list(range(rows)), "str": [f"c{i % 3}" for i in range(rows)],
                            "long": ["x" * draw(st.sampled_from([256, 257]))] * rows, "float": [0.5] * rows}[label]
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=draw(st.integers(1, 12)))
    raw = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return ".parquet", raw


def check_read(path: Path) -> str:
    """Read ``path``: "ok" (a valid, finite table) or "refused" (one line naming the file); any other
    exception fails the test."""
    try:
        table = read_embeddings(path)
    except EmbeddingsError as exc:
        message = str(exc)
        assert message.startswith(f"{path.name}: ") and "\n" not in message and len(message) < 400, message
        return "refused"
    assert isinstance(table, EmbeddingTable) and table.latents.dtype == np.float32
    assert np.isfinite(table.latents).all() and table.labels.shape == (len(table.latents),)
    return "ok"


@pytest.mark.parametrize("strategy", [crafted_npz, crafted_parquet], ids=["npz", "parquet"])
def test_fuzzed_files_are_read_or_refused_with_one_error_type(strategy, tmp_path: Path) -> None:
    outcomes = {"ok": 0, "refused": 0}

    @settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy())
    def prop(file: tuple[str, bytes]) -> None:
        suffix, raw = file
        path = tmp_path / f"fuzzed{suffix}"
        path.write_bytes(raw)
        outcomes[check_read(path)] += 1

    prop()
    assert outcomes["refused"] > 0 and outcomes["ok"] > 0, outcomes
