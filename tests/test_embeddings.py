"""Embeddings only: precomputed codes (from any encoder) with optional thumbnails, from an .npz or a
.parquet file or from arrays given to vs.explore. The map, hover and click work; the decoding
panels say plainly that there is no decoder; every size is checked before an array is read."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image
from serving import click_until, serving

import vaescope as vs
from vaescope.explorer.core.embeddings import EmbeddingsError, read_embeddings, table_from_arrays
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.ui.app import build_app, main
from vaescope.training.data import SHAPE_NAMES, make_shapes

N = 10_000


@pytest.fixture(scope="module")
def shapes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10,000 generated shapes: codes from a PCA 'encoder' (any encoder will do), thumbnails, labels."""
    from sklearn.decomposition import PCA

    split = make_shapes(N, seed=3)
    images = split.images.numpy()  # uint8 [N, 1, 32, 32]
    codes = PCA(12, random_state=0).fit_transform(images.reshape(N, -1).astype(np.float32) / 255)
    return codes.astype(np.float32), images, split.labels.numpy()


@pytest.fixture(scope="module")
def npz_file(shapes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    codes, images, labels = shapes
    path = tmp_path_factory.mktemp("emb") / "shapes-pca.npz"
    np.savez(path, latents=codes, images=images, labels=labels, class_names=np.array(SHAPE_NAMES))
    return path


def test_an_npz_of_10k_points_reads_whole(npz_file: Path, shapes) -> None:
    table = read_embeddings(npz_file)
    codes, images, labels = shapes
    np.testing.assert_array_equal(table.latents, codes)
    np.testing.assert_array_equal(table.images, images)
    assert table.class_names == SHAPE_NAMES and (table.labels == labels).all()
    assert table.origin == f"the {N:,} points of shapes-pca.npz"


def test_parquet_with_vectors_string_labels_and_png_thumbnails(shapes, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    codes, images, labels = shapes
    n = 200
    pngs = []
    for image in images[:n, 0]:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    names = [SHAPE_NAMES[c] for c in labels[:n]]
    pq.write_table(pa.table({"vector": list(codes[:n]), "label": names, "image": pngs}), tmp_path / "e.parquet")
    table = read_embeddings(tmp_path / "e.parquet")
    np.testing.assert_allclose(table.latents, codes[:n])
    assert table.images.shape == (n, 1, 32, 32) and (table.images == images[:n]).all()
    assert table.class_names == tuple(sorted(set(names)))  # string labels become classes in sorted order
    assert [table.class_names[i] for i in table.labels] == names


def _npz_declaring(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """An .npz whose latents header declares ``shape`` but holds a few bytes: a memory bomb."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("latents.npy", npy)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: _npz_declaring(p / "bomb.npz", (10**9, 512)), "exceed the limits"),
    (lambda p: _npz_declaring(p / "wide.npz", (10, 100_000)), "exceed the limits"),
    (lambda p: _npz_declaring(p / "objects.npz", (10, 4), "|O"), "never unpickled"),
    (lambda p: (np.savez(p / "nan.npz", latents=np.full((5, 3), np.nan)), p / "nan.npz")[1], "NaN"),
    (lambda p: (np.savez(p / "labels.npz", latents=np.zeros((5, 3)), labels=np.zeros(4)), p / "labels.npz")[1],
     "one label per point"),
    (lambda p: (np.savez(p / "big.npz", latents=np.zeros((2, 3)), images=np.zeros((2, 1, 300, 300), np.uint8)),
                p / "big.npz")[1], "sides up to 256"),
    (lambda p: (np.savez(p / "none.npz", other=np.zeros(3)), p / "none.npz")[1], "no latents array"),
    (lambda p: ((p / "junk.npz").write_bytes(b"not a zip"), p / "junk.npz")[1], "not a readable .npz"),
    (lambda p: ((p / "e.csv").write_text("1,2"), p / "e.csv")[1], "are .npz or .parquet"),
])
def test_bad_embeddings_files_are_refused_before_anything_is_read(make, message: str, tmp_path: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(EmbeddingsError, match=message):
        read_embeddings(make(tmp_path))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: no gigabytes allocated


@pytest.fixture(scope="module")
def served(npz_file: Path, tiny_checkpoint_dir: Path):
    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"))
    store.add_embeddings("shapes-pca.npz", read_embeddings(npz_file))
    with serving(build_app(store=store, default_checkpoint="shapes-pca.npz")) as url:
        yield url


def test_the_anomaly_panel_offers_no_out_of_distribution_set_without_a_decoder(npz_file: Path, tiny_checkpoint_dir) -> None:
    """Nothing scores images without a decoder: no dataset is offered, and none is chosen (a value
    outside the choices made every later event that reads the dropdown fail)."""
    from vaescope.explorer.ui.state import Session

    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"))
    store.add_embeddings("shapes-pca.npz", read_embeddings(npz_file))
    anomaly = build_app(store=store).panels["anomaly"]
    update = anomaly.on_model(store.open_name("shapes-pca.npz"), Session())
    assert update[anomaly.other].choices == [] and update[anomaly.other].value is None
    assert "no decoder" in update[anomaly.note]


def test_codes_without_images_show_no_thumbnail_and_promise_no_decoding(shapes, tiny_checkpoint_dir) -> None:
    """An embeddings map with codes alone: the map says codes (not images), offers neighbours (not
    traversal or decoding a spot), and hovering a point asks for no thumbnail (nothing to show)."""
    import gradio as gr

    from vaescope.explorer.ui.state import Session

    codes, _, labels = shapes
    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"))
    store.add_embeddings("codes.npz", table_from_arrays(codes[:300], labels=labels[:300]))
    app = build_app(store=store)
    panel, session = app.panels["map"], Session()
    entry = store.open_name("codes.npz")
    assert entry.latents.images is None
    app.panels["models"].load_checkpoint("codes.npz", session)
    drawn = panel.draw_map("pca", 2, "class", "none", 0, 0, session)
    info = drawn[panel.info]
    assert "300 of 300 codes" in info and "list its nearest neighbours" in info, info
    assert "traverse" not in info and "decode" not in info, info
    assert panel.hover("17", session) == gr.skip()
    traversal = app.panels["traversal"]
    opened = traversal.on_model(entry, session)
    assert opened[traversal.own].visible is False  # no image of one's own to encode without an encoder
    assert all(opened[slider].visible is False for slider in traversal.sliders)


def test_the_map_click_and_hover_work_and_the_decoding_panels_say_there_is_no_decoder(served: str) -> None:
    client = Client(served, verbose=False)
    out = client.predict("shapes-pca.npz", api_name="/load_checkpoint")
    text = " ".join(o for o in out if isinstance(o, str))
    assert "Embeddings (no model)" in text and f"one of the {N:,} points of shapes-pca.npz" in text
    assert "no decoder, so there is nothing to traverse" in text
    assert "no decoder, so there is nothing to sample" in text
    assert "no decoder, so there is nothing to interpolate" in text
    figure, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
    assert f"{N:,} of {N:,} images" in info
    plot = json.loads(figure["plot"])
    assert {t["name"] for t in plot["data"] if t.get("customdata") is not None} == set(SHAPE_NAMES)
    original, recon, note = client.predict(json.dumps({"kind": "point", "index": 17}), api_name="/pick")[:3]
    assert Path(original).is_file() and recon is None and "no decoder" in note and "#17" in note
    thumb = client.predict("17", api_name="/hover_thumbnail")
    assert Image.open(thumb).size == (96, 96)  # 32 px upscaled by a whole factor
    with pytest.raises(AppError, match="no decoder"):
        client.predict(0, 8, 0, 1.0, api_name="/sample_class")
    with pytest.raises(AppError, match="no decoder"):
        client.predict(5, "linear", api_name="/interpolate")
    out = client.predict("tiny-vae.safetensors", api_name="/load_checkpoint")  # the models beside it still work
    assert any(isinstance(o, str) and "### tiny-vae" in o for o in out)


def test_vs_explore_maps_latents_given_as_arrays(shapes) -> None:
    codes, images, labels = shapes
    app = vs.explore(latents=torch.from_numpy(codes[:500]), images=images[:500], labels=labels[:500],
                     class_names=SHAPE_NAMES, name="my codes", prevent_thread_lock=True, inbrowser=False, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        client.predict("my codes", api_name="/load_checkpoint")
        _, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
        assert "500 of 500 images" in info
    finally:
        app.close()
    with pytest.raises(EmbeddingsError, match="one label per point"):
        table_from_arrays(codes[:5], labels=labels[:4])


def test_latent_explore_reads_embeddings_files(npz_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr("vaescope.explorer.ui.app.ExplorerBlocks.launch", lambda self, **kw: seen.update(app=self))
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    main(["--embeddings", str(npz_file), "--device", "cpu", "--no-disk-cache"])
    assert seen["app"].ctx.store.names() == ["shapes-pca.npz"]
    with pytest.raises(SystemExit, match="give --checkpoints FOLDER, --embeddings FILE, or both"):
        main(["--device", "cpu"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["--embeddings", str(npz_file.parent / "missing.npz")])


@pytest.mark.e2e
def test_10k_embeddings_in_chromium_map_and_thumbnails(served: str) -> None:
    from serving import CHROMIUM_ARGS, hover_until_thumbnail, watch

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs /usr/bin/chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        problems = watch(page)  # page errors, console errors and error toasts fail the test
        try:
            page.goto(served)
            map_js = "document.querySelector('#latent-map .js-plotly-plot')"
            page.wait_for_function(f"() => {{ const gd = {map_js}; return gd && gd.__vaescopeBound && gd._fullData &&"
                                   f" gd._fullData.filter(t => t.customdata).reduce((a, t) => a + t._length, 0) === {N}; }}",
                                   timeout=120_000)
            assert "no decoder" in page.locator("#traversal-info").inner_text()
            page.locator("#latent-map .nsewdrag").scroll_into_view_if_needed()
            point = page.evaluate(f"""() => {{ const gd = {map_js}; const fd = gd._fullData.find(d => d.customdata);
                const L = gd._fullLayout; const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
                for (let i = 0; i < fd._length; i++) {{ const x = r.left + L.xaxis.c2p(fd.x[i]), y = r.top + L.yaxis.c2p(fd.y[i]);
                    if (y > r.top + 5 && y < Math.min(r.bottom, 715) - 5 && x > r.left + 5 && x < r.right - 5) return {{x, y}}; }}
                return null; }}""")
            assert point, "no point of the map is on screen"
            hover_until_thumbnail(page, point, timeout=30, attempt_ms=2_000)
            click_until(page, lambda: point,
                        lambda _: "() => document.querySelector('#picked-info').innerText.includes('no decoder')")
            page.screenshot(path=str(Path(__file__).resolve().parents[1] / "test-artifacts" / "embeddings-10k.png"))
            problems.check()
        finally:
            browser.close()
