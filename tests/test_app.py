"""The explorer served for real (127.0.0.1, a free port) and driven with gradio_client.

One server per module, on a folder with the four tiny checkpoints, a corrupt file and a checkpoint
whose dataset cannot be loaded. Every test opens its own client, i.e. its own session.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from serving import api_client, serving

from vaescope.explorer.core.dims import SLIDERS
from vaescope.explorer.ui import app as app_module
from vaescope.explorer.ui import common as common_module
from vaescope.explorer.ui.app import build_app, is_loopback, main, parse_args
from vaescope.explorer.ui.common import Downloads, stale_files
from vaescope.training.checkpoint import load_checkpoint, save_checkpoint

GOOD = ["tiny-ae.safetensors", "tiny-cvae.safetensors", "tiny-gmvae.safetensors", "tiny-vae.safetensors"]
NO_DATA = "no-data-vae.safetensors"
BROKEN = "broken.safetensors"



@pytest.fixture(scope="module")
def app_root(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    for name in GOOD:
        shutil.copy(tiny_checkpoint_dir / name, root / name)
    model, meta = load_checkpoint(tiny_checkpoint_dir / "tiny-vae.safetensors")
    meta.dataset = {**meta.dataset, "name": f"folder:{root / 'no-such-folder'}"}  # data that is not there
    save_checkpoint(root / NO_DATA, model, meta)
    good = (root / "tiny-vae.safetensors").read_bytes()
    (root / BROKEN).write_bytes(good[: len(good) // 2])  # truncated mid-tensor
    return root


@pytest.fixture(scope="module")
def server(app_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo = build_app(app_root, device="cpu", cache_dir=tmp_path_factory.mktemp("projections"),
                     default_checkpoint="tiny-vae.safetensors")
    with serving(demo) as url:
        yield url


@pytest.fixture
def client(server: str) -> Client:
    return Client(server, verbose=False, download_files=True)


def load(client: Client, name: str = "tiny-vae.safetensors") -> tuple:
    return client.predict(name, api_name="/load_checkpoint")


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of valid PNG whose header declares width x height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def by_label(client: Client, api_name: str, outputs: tuple) -> dict[str, object]:
    """An endpoint's outputs keyed by their components' labels (as gradio_client lists them)."""
    returns = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["returns"]
    assert len(returns) == len(outputs)
    return {r["label"]: o for r, o in zip(returns, outputs, strict=True)}


def shown_class(outputs: dict[str, object]) -> object:
    """The value the "Decode as class" dropdown is set to by an update among ``outputs``."""
    update = outputs["Decode as class"]
    assert isinstance(update, dict) and "value" in update, update
    return update["value"]


def slide(client: Client, value: float, slot: int = 0) -> np.ndarray:
    """Move slider ``slot`` to ``value``: the decoded image's pixels (the image output must be there)."""
    image, _note, *_ = client.predict(value, api_name=f"/slider_{slot}")
    assert image and Path(image).is_file(), f"slider {slot} returned no image"
    return pixels(image)


def find_text(outputs: tuple, needle: str) -> str:
    hits = [o for o in outputs if isinstance(o, str) and needle in o]
    assert hits, f"no output contains {needle!r}"
    return hits[0]


def test_every_element_id_names_one_element(tiny_checkpoint_dir: Path) -> None:
    """The page script, the stylesheet and the browser tests find elements by id: two components
    with one id make each of them act on whichever comes first."""
    from collections import Counter

    demo = app_module.build_app(tiny_checkpoint_dir, device="cpu")
    ids = Counter(block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None))
    assert [name for name, count in ids.items() if count > 1] == []
    assert len(ids) > 100  # the count is real: the page names its parts


def test_api_names_are_exposed(client: Client) -> None:
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    expected = {"/load_checkpoint", "/upload_checkpoint", "/draw_map", "/pick", "/traverse_from_index",
                "/traverse_random", "/traverse_upload", "/traverse_reset", "/traversal_grid", "/interpolate",
                "/interp_a_index", "/interp_b_index", "/sample_class", "/decode_every_class",
                *(f"/slider_{i}" for i in range(SLIDERS))}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("name", GOOD)
def test_load_checkpoint_shows_the_model_card(client: Client, name: str) -> None:
    out = load(client, name)
    card = find_text(out, "latent dim")
    kind = name.removeprefix("tiny-").removesuffix(".safetensors").upper()
    title = {"AE": "**AE**", "VAE": "**VAE**", "CVAE": "**CVAE**", "GMVAE": "**GMVAE with 10 components**"}[kind]
    assert title in card and "digits" in card and "1×8×8" in card and "cpu" in card
    assert ">active units</abbr>" in card and 'title="' in card  # each explained
    assert (">ELBO</abbr>" in card) == (kind != "AE")  # an AE has no ELBO: its run measured none
    if kind == "GMVAE":
        assert "clustering accuracy" in card


def test_slider_moves_the_decoded_image(client: Client) -> None:
    load(client)
    a, b = slide(client, -2.5), slide(client, 2.5)
    assert a.shape == b.shape and a.shape[0] >= 100  # upscaled for display
    assert np.abs(a - b).mean() > 1.0, "moving the top slider should change the decoded image"
    np.testing.assert_array_equal(slide(client, -2.5), a)  # decoding is deterministic


def test_traversal_start_points_and_grid(client: Client) -> None:
    load(client)
    out = client.predict(7, api_name="/traverse_from_index")
    assert "test image #7" in find_text(out, "#7")
    out = client.predict(None, api_name="/traverse_random")
    assert find_text(out, "prior sample")
    out = client.predict(api_name="/traverse_reset")
    assert find_text(out, "prior sample")
    grid, png = client.predict(5, api_name="/traversal_grid")
    assert "tiny-vae · traversal grid · rows, top to bottom: z" in grid["label"]  # the label names model and rows
    g = pixels(grid["value"])
    assert Path(png).suffix == ".png" and pixels(png).shape == g.shape
    assert Path(png).name.startswith("tiny-vae-traversal-grid-")  # a download named for what it is
    assert g.shape[1] > g.shape[0]  # 4 dims (rows) x 5 steps (columns) of square cells: wider than tall
    with pytest.raises(AppError, match="maximum value 299"):  # the field knows this model's range
        client.predict(10_000, api_name="/traverse_from_index")


def test_map_draws_and_clicks(client: Client) -> None:
    load(client)
    fig, info, *_ = client.predict("pca", 2, "class", "prior", 0, api_name="/draw_map")
    assert "300 of 300" in info and "tiny-vae" in info
    plot = json.loads(fig["plot"]) if isinstance(fig, dict) and "plot" in fig else fig
    assert plot["data"], "the map has traces"
    fig, info, *_ = client.predict("pca", 2, "recon", "none", 50, api_name="/draw_map")
    assert "50 of 300" in info
    original, recon, text = client.predict(json.dumps({"kind": "point", "index": 3}), api_name="/pick")[:3]
    assert original and recon and "Test image #3" in text
    out = client.predict(json.dumps({"kind": "xy", "x": 0.1, "y": -0.2}), api_name="/pick")
    assert "PCA inverse" in find_text(out, "PCA inverse")


def test_loading_another_model_clears_the_picked_point(client: Client) -> None:
    load(client)
    client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
    original, recon, text = client.predict(json.dumps({"kind": "point", "index": 3}), api_name="/pick")[:3]
    assert original and recon and "Test image #3" in text
    out = by_label(client, "/load_checkpoint", load(client, "tiny-cvae.safetensors"))
    assert out["Picked: original"] is None and out["Reconstruction"] is None
    assert "Click a point on the map" in find_text(tuple(out.values()), "Click a point on the map")
    assert "Test image #3" not in " ".join(o for o in out.values() if isinstance(o, str))


def test_the_class_dropdown_names_the_class_the_code_is_decoded_with(client: Client, tmp_path: Path) -> None:
    """A CVAE: on load, after an index, a map click, a random sample and an upload, the "Decode as class"
    dropdown shows the class the traversal decodes with (the one its info line names)."""
    def decoded_class(out: dict[str, object]) -> int:
        info = find_text(tuple(out.values()), "decoded as class")
        return int(re.search(r"decoded as class (\d+)", info).group(1))

    out = by_label(client, "/load_checkpoint", load(client, "tiny-cvae.safetensors"))
    first = decoded_class(out)
    assert shown_class(out) == first
    labels = [int(re.search(r"\(class (\d+)\)", find_text(client.predict(i, api_name="/traverse_from_index"),
                                                            "test image #")).group(1)) for i in range(12)]
    other = next(i for i, c in enumerate(labels) if c != first)
    client.predict(0, api_name="/traverse_from_index")
    out = by_label(client, "/traverse_from_index", client.predict(other, api_name="/traverse_from_index"))
    assert shown_class(out) == decoded_class(out) == labels[other]
    client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
    out = by_label(client, "/pick", client.predict(json.dumps({"kind": "point", "index": 0}), api_name="/pick"))
    assert shown_class(out) == decoded_class(out) == first
    out = by_label(client, "/traverse_random", client.predict(7, api_name="/traverse_random"))
    assert shown_class(out) == decoded_class(out) == 7
    png = tmp_path / "x.png"
    Image.new("L", (8, 8), 0).save(png)
    out = by_label(client, "/traverse_upload", client.predict(handle_file(str(png)), 5, api_name="/traverse_upload"))
    assert shown_class(out) == decoded_class(out) == 5


def test_map_in_3d_and_tsne(client: Client) -> None:
    load(client, "tiny-gmvae.safetensors")
    fig, info, *_ = client.predict("pca", 3, "component", "prior:1", 0, api_name="/draw_map")
    assert "300 of 300" in info
    fig, info, *_ = client.predict("tsne", 2, "kl", "none", 120, api_name="/draw_map")
    assert "120 of 300" in info


def test_interpolation_strip_and_gif(client: Client) -> None:
    load(client)
    client.predict(3, api_name="/interp_a_index")
    client.predict(10, api_name="/interp_b_index")
    strip, gif_view, gif, info = client.predict(8, "slerp", api_name="/interpolate")[:4]
    assert "8 steps" in info and "#3" in info and "#10" in info and "tiny-vae" in info
    strip = strip["value"] if isinstance(strip, dict) else strip
    assert Path(gif).name.startswith("tiny-vae-interpolation-")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 8
        frame_w = im.size[0]
    s = pixels(strip)
    assert s.shape[1] >= 8 * s.shape[0] * 0.8  # one row of 8 frames
    assert frame_w > 8  # upscaled


@pytest.mark.parametrize("name", GOOD)
def test_class_sampling(client: Client, name: str) -> None:
    load(client, name)
    grid, note = client.predict(3, 9, 0, 1.0, api_name="/sample_class")
    model = name.removesuffix(".safetensors")
    assert note.startswith(f"**3** · {model}: ") and model in grid["label"]  # the class and the model by name
    assert pixels(grid["value"]).shape[0] > 8
    if name == "tiny-cvae.safetensors":
        row = client.predict(api_name="/decode_every_class")
        assert "left to right: 0, 1, 2" in row["label"]  # the strip names its classes
        row = pixels(row["value"])
        assert row.shape[1] > 8 * row.shape[0]  # ten classes side by side (over a caption band)
    else:
        with pytest.raises(AppError, match="decoder takes the class"):
            client.predict(api_name="/decode_every_class")


def test_uploaded_images(client: Client, tmp_path: Path) -> None:
    load(client)
    big = Image.new("RGBA", (40, 30), (255, 255, 255, 255))  # dark pen on white, wrong size and mode
    big.paste((0, 0, 0, 255), (15, 5, 25, 25))
    png = tmp_path / "drawing.png"
    big.save(png)
    out = client.predict(handle_file(str(png)), None, api_name="/traverse_upload")
    info = find_text(out, "uploaded drawing.png")
    assert "resized 40x30 -> 8x8" in info and "inverted" in info  # the conversion is spelled out
    sketch = {"background": None, "layers": [], "composite": handle_file(str(png))}
    assert "your drawing" in find_text(client.predict(sketch, None, api_name="/traverse_sketch"), "drawing")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image at all")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(text)), None, api_name="/traverse_upload")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        client.predict(handle_file(str(empty)), None, api_name="/traverse_upload")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    with pytest.raises(AppError, match="pixels"):
        client.predict(handle_file(str(bomb)), None, api_name="/traverse_upload")
    # The session still works afterwards.
    client.predict(handle_file(str(png)), None, api_name="/interp_a_upload")
    assert "8 steps" in client.predict(8, "linear", api_name="/interpolate")[3]


def test_bad_checkpoint_is_a_clear_error_and_the_rest_keep_working(client: Client) -> None:
    load(client)
    out = load(client, BROKEN)
    note = find_text(out, f"Cannot load {BROKEN}")
    assert "truncated or corrupt" in note
    dropdown = out[0]  # the dropdown goes back to the model still in use
    assert isinstance(dropdown, dict) and dropdown.get("value") == "tiny-vae.safetensors"
    slide(client, 1.0)  # ... which still answers
    assert "GMVAE" in find_text(load(client, "tiny-gmvae.safetensors"), "latent dim")


def test_uploaded_checkpoints(client: Client, app_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "mine.safetensors"
    model, meta = load_checkpoint(app_root / "tiny-cvae.safetensors")
    meta.metrics = {**meta.metrics, "elbo": -1.0}  # other bytes than the listed file
    save_checkpoint(copy, model, meta)
    out = client.predict(handle_file(str(copy)), api_name="/upload_checkpoint")
    assert "uploaded: mine.safetensors" in find_text(out, "latent dim")
    zero = tmp_path / "zero.safetensors"
    zero.write_bytes(b"")
    out = client.predict(handle_file(str(zero)), api_name="/upload_checkpoint")
    assert "empty" in find_text(out, "Cannot load the uploaded checkpoint")
    slide(client, 0.5, slot=1)  # the uploaded model is still in use


def test_checkpoint_without_its_dataset_still_traverses_and_samples(client: Client, tmp_path: Path) -> None:
    out = load(client, NO_DATA)
    assert "reads image folders only inside" in find_text(out, "reads image folders only inside")
    fig, info, *_ = client.predict("pca", 2, "recon", "none", 0, api_name="/draw_map")
    assert "No map for no-data-vae" in json.dumps(fig)
    slide(client, 1.5)
    assert find_text(client.predict(None, api_name="/traverse_random"), "prior sample")
    with pytest.raises(AppError, match="No evaluation images"):
        client.predict(0, api_name="/traverse_from_index")
    img = tmp_path / "x.png"
    Image.new("L", (8, 8), 0).save(img)
    client.predict(handle_file(str(img)), None, api_name="/interp_a_upload")
    client.predict(handle_file(str(img)), None, api_name="/interp_b_upload")
    assert "5 steps" in client.predict(5, "linear", api_name="/interpolate")[3]
    with pytest.raises(AppError, match="needs labelled evaluation images"):
        client.predict(2, 4, 0, 1.0, api_name="/sample_class")  # a VAE's class sampler needs the data


@pytest.mark.slow
def test_many_users_drag_sliders_at_once(server: str) -> None:
    """12 sessions, each loading a model and moving sliders concurrently, all get their images."""
    def user(k: int) -> int:
        c = api_client(server)  # 12 setups at once: retried as a reloading user would
        load(c, GOOD[k % len(GOOD)])
        return sum(slide(c, v, slot=k % 3).size > 0 for v in (-2.0, -1.0, 0.5, 1.5, 2.5))

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(user, range(12))) == [5] * 12


def test_sessions_are_independent(server: str) -> None:
    one, two = Client(server, verbose=False), Client(server, verbose=False)
    load(one, "tiny-vae.safetensors")
    load(two, "tiny-ae.safetensors")
    assert "### tiny-vae" in find_text(load(one, "tiny-vae.safetensors"), "latent dim")
    with pytest.raises(AppError, match="No model is loaded yet"):
        Client(server, verbose=False).predict("z:0", "prior", api_name="/traverse_reset")


# -- files on disk -------------------------------------------------------------------------------
def test_gradio_cleans_its_output_cache(tmp_path: Path) -> None:
    demo = build_app(tmp_path, device="cpu")
    assert demo.delete_cache == app_module.DELETE_CACHE
    every, age = demo.delete_cache
    assert 0 < every <= age <= 24 * 3600


def test_stale_files_keeps_the_newest_and_drops_the_old() -> None:
    now = 10_000.0
    files = [(Path(f"f{i}"), now - 10 * i) for i in range(6)]  # f0 newest, f5 oldest (50 s)
    assert stale_files([], now, keep=3, max_age_s=100) == []
    assert stale_files(files, now, keep=10, max_age_s=100) == []
    assert set(stale_files(files, now, keep=3, max_age_s=100)) == {Path("f3"), Path("f4"), Path("f5")}
    assert set(stale_files(files, now, keep=10, max_age_s=25)) == {Path("f3"), Path("f4"), Path("f5")}
    assert set(stale_files(files[::-1], now, keep=2, max_age_s=35)) == {Path(f"f{i}") for i in range(2, 6)}
    assert set(stale_files(files, now, keep=0, max_age_s=1e9)) == {p for p, _ in files}


def test_downloads_stay_bounded_and_go_with_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common_module, "DOWNLOADS_KEPT", 3)
    downloads = Downloads()
    folder = downloads.folder
    assert folder.is_dir() and tmp_path not in folder.parents  # its own folder
    paths = [Path(downloads.write("digits/vae grid.png", bytes([i]))) for i in range(6)]
    assert all(p.parent == folder and p.name.startswith("digits-vae-grid-") for p in paths)
    assert len({p.name for p in paths}) == 6  # unique names: Gradio rewrites files of equal names
    left = sorted(folder.iterdir())
    assert len(left) == 3 and paths[-1] in left  # the newest file, just handed out, is kept
    old = folder / "old.gif"
    old.write_bytes(b"x")
    hour_ago = paths[-1].stat().st_mtime - common_module.DOWNLOADS_MAX_AGE_S - 1
    os.utime(old, (hour_ago, hour_ago))
    downloads.write("x.gif", b"y")
    assert not old.exists()
    del downloads
    gc.collect()
    assert not folder.exists()  # removed with the app (and at exit)


def test_benchmarks_measure_the_server_as_main_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slider and concurrency benchmarks build (the no-op app included) and serve with main()'s
    torch threads, restoring them afterwards."""
    from benchmarks import concurrency, slider

    assert slider.noop_app(slider.ServerTimes()) is not None  # builds, scale_for included
    seen = []

    def stop(*args: object) -> None:
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop here")

    monkeypatch.setattr(concurrency, "_serve_and_drive", stop)
    monkeypatch.setattr(slider, "browser_round_trips", stop)
    threads = torch.get_num_threads()
    torch.set_num_threads(app_module.DEFAULT_TORCH_THREADS + 1)  # as a many-core default would be
    try:
        for bench in (concurrency, slider):
            with pytest.raises(RuntimeError, match="stop here"):
                bench.run(quick=True)
            assert torch.get_num_threads() == app_module.DEFAULT_TORCH_THREADS + 1  # restored
        assert seen == [app_module.DEFAULT_TORCH_THREADS] * 2
    finally:
        torch.set_num_threads(threads)


def test_slider_benchmark_files_server_time_by_app() -> None:
    """The slider benchmark's stage timer files each call under the app being moved, none between."""
    from benchmarks.slider import ServerTimes, _stage_ms, _stage_rows

    times = ServerTimes()
    double = times.timed("handler", lambda x: 2 * x)
    assert double(3) == 6  # recorded nowhere: no app is being moved
    for app, seconds in (("real", 0.004), ("noop", 0.001)):
        times.app = app
        times.record("process_api", seconds)
        double(1)
    times.app = ""
    assert sorted(times.times) == ["noop", "real"]
    assert len(times.times["real"]["handler"]) == len(times.times["noop"]["handler"]) == 1
    trips = {"real": {"src_ms": [60.0, 70.0]}, "noop": {"src_ms": [50.0]}}
    rows = {r.figure: r for r in _stage_rows(trips, _stage_ms(times.times))}
    rest = rows["slider round trip minus server processing (queue, transport, browser)"]
    assert rest.value == pytest.approx(65.0 - 4.0) and rest.baseline == pytest.approx(50.0 - 1.0)
    assert rows["slider server: Gradio event processing (pre + handler + post), median"].ratio == pytest.approx(4.0)


# -- the command line ----------------------------------------------------------------------------
def test_cli_defaults_and_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--checkpoints", str(tmp_path)])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.device == "auto" and not args.share
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    launched = {}

    def fake_launch(self, **kwargs):  # noqa: ANN001, ANN202 - stands in for Blocks.launch
        launched.update(kwargs)

    monkeypatch.setattr("vaescope.explorer.ui.app.ExplorerBlocks.launch", fake_launch)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # main() sets it for the whole process
    backends = []
    monkeypatch.setattr("matplotlib.use", backends.append)
    main(["--checkpoints", str(tmp_path), "--host", "0.0.0.0", "--device", "cpu", "--no-disk-cache"])
    assert "WARNING" in capsys.readouterr().err
    assert launched["server_name"] == "0.0.0.0"
    assert backends == ["agg"]  # resolved before serving, not on the first event
    main(["--checkpoints", str(tmp_path), "--device", "cpu", "--no-disk-cache"])
    assert "WARNING" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoints", str(tmp_path / "missing")])


@pytest.mark.slow
def test_no_slider_answer_for_the_previous_model_lands_after_a_switch(server: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One session drags a slider from four threads while it switches models back and forth. Every
    slider answer that shows an image names the model the page had at that moment; answers computed
    for a model the session left are dropped (no image), and the session never decodes one
    model's code with another. The decoder is slowed to 0.25 s here, so that many moves are still
    decoding when a switch lands: without the version check they would arrive after it."""
    import threading
    import time as clock

    from vaescope.explorer.ui import traversal as traversal_module

    real_decode = traversal_module.decode
    monkeypatch.setattr(traversal_module, "decode", lambda *a: clock.sleep(0.25) or real_decode(*a))

    client = Client(server, verbose=False)
    models = ["tiny-vae.safetensors", "tiny-gmvae.safetensors", "tiny-ae.safetensors", "tiny-cvae.safetensors"]
    load(client, models[0])
    # (switch asked for, its answer received, the model switched to)
    switched: list[tuple[float, float, str]] = [(0.0, clock.monotonic(), "tiny-vae")]
    answers: list[tuple[float, str | None, str | None]] = []  # (answer received, image or None, note or None)
    stop = threading.Event()
    errors: list[str] = []

    def drag(k: int) -> None:
        rng = np.random.default_rng(k)
        while not stop.is_set():
            try:
                image, note, *_ = client.predict(float(rng.uniform(-3, 3)), api_name=f"/slider_{k % 2}")
            except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                errors.append(repr(exc))
                return
            answers.append((clock.monotonic(), image, note))

    threads = [threading.Thread(target=drag, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for i in range(8):
        name = models[(i + 1) % len(models)]
        asked = clock.monotonic()
        load(client, name)
        switched.append((asked, clock.monotonic(), name.removesuffix(".safetensors")))
        clock.sleep(0.8)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    shown = [(t, note) for t, image, note in answers if isinstance(image, str)]  # a dropped answer updates nothing
    assert len(shown) >= 12, f"too few slider answers to judge ({len(shown)}): {answers[:3]}"

    def allowed(at: float) -> set[str]:
        """The model the page shows at ``at`` (the last switch answered), and the one a switch in
        flight is installing (the server may answer a slider for it a moment before the switch's
        own answer arrives). Never one the session has left."""
        shown_now = [name for _, done, name in switched if done <= at][-1]
        in_flight = {name for asked, done, name in switched if asked <= at < done}
        return {shown_now} | in_flight

    wrong = [(note, allowed(t)) for t, note in shown if note.split("**")[1] not in allowed(t)]
    assert not wrong, f"{len(wrong)} of {len(shown)} answers showed a model the page had left, e.g. {wrong[:2]}"
    assert len(shown) < len(answers), "no answer was dropped: the switches never raced a move"
    image, note, *_ = client.predict(1.0, api_name="/slider_0")  # and the session still works
    assert image and note.startswith(f"**{switched[-1][2]}**")
