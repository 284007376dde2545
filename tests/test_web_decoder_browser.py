"""Decoding in the page, in headless Chromium (static/decode.js with the vendored onnxruntime-web):
the pointer over the 2-D MNIST VAE's PCA map and a traversal slider decode in the page, and what
the page decodes matches PyTorch within 1e-4; a decoder past the size limit, and ?decode=server,
fall back to the server's path and say why. Page errors, console errors and error toasts fail
every test (``serving.watch``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from serving import image_src, serving, wait_src, watch

from vaescope.explorer.core import webdecoder
from vaescope.explorer.core.webdecoder import WEB_TOLERANCE
from vaescope.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
MNIST = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "mnist"
MODELS = ("vae-2d", "cvae", "vae")

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from vaescope.explorer.ui.app import build_app

    root = tmp_path_factory.mktemp("web-decoder")
    for name in MODELS:
        shutil.copy(MNIST / f"{name}.safetensors", root / f"{name}.safetensors")
    demo = build_app(root, device="cpu", default_checkpoint="vae-2d.safetensors")
    with serving(demo) as url:
        yield url


@pytest.fixture(scope="module")
def torch_models() -> dict[str, torch.nn.Module]:
    return {name: load_checkpoint(MNIST / f"{name}.safetensors", torch.device("cpu"))[0].eval() for name in MODELS}


def torch_decode(model: torch.nn.Module, z: list[float], y: int | None = None) -> np.ndarray:
    condition = model.describe().condition.for_class(y, 1)
    with torch.no_grad():
        return model.decode(torch.tensor([z], dtype=torch.float32), condition)[0].numpy().ravel()


def open_page(browser: object, url: str, query: str = "") -> object:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    watch(page)  # page errors, console errors and error toasts fail the test
    page.goto(url + query)
    page.wait_for_function("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"
                           " return gd && gd._fullData && gd._fullData.length > 2 && gd.__vaescopeDecodeBound; }",
                           timeout=120_000)
    page.wait_for_function("() => window.vaescopeWebDecode.ready || window.vaescopeWebDecode.why", timeout=120_000)
    return page


def plot_area(page: object) -> dict[str, float]:
    return page.locator("#latent-map .nsewdrag").bounding_box()  # type: ignore[attr-defined]


def wait_map_inverse(page: object) -> None:
    page.wait_for_function("() => { const el = document.querySelector('#web-map textarea, #web-map input');"  # type: ignore[attr-defined]
                           " const m = el && JSON.parse(el.value || 'null'); return m && m.server; }", timeout=60_000)


def test_the_pointer_and_a_slider_decode_in_the_page(browser: object, url: str,
                                                     torch_models: dict[str, torch.nn.Module]) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = open_page(browser, url)
    try:
        assert page.evaluate("window.vaescopeWebDecode.ready"), page.evaluate("window.vaescopeWebDecode.why")
        assert "runs in this page" in page.inner_text("#web-decode-box")
        wait_map_inverse(page)
        box = plot_area(page)
        for k in range(6):  # a few spots across the plot area, empty space and points alike
            x, y = box["x"] + box["width"] * (0.2 + 0.12 * k), box["y"] + box["height"] * (0.25 + 0.1 * k)
            for attempt in range(6):  # as a hand does: again, a pixel off, if a loaded machine dropped the move
                page.mouse.move(x + attempt, y)
                try:
                    page.wait_for_function("(n) => window.vaescopeWebDecode.times.filter(t => t.kind === 'map')"
                                           ".length > n", arg=k, timeout=5_000)
                    break
                except PlaywrightTimeout:
                    assert attempt < 5, f"moving the pointer over the map decoded nothing (spot {k})"
        assert page.evaluate("document.querySelector('#pointer-decoded').classList.contains('shown')")
        last = page.evaluate("window.vaescopeWebDecode.last")
        assert last["kind"] == "map" and len(last["z"]) == 2 and len(last["pixels"]) == 28 * 28
        want = torch_decode(torch_models["vae-2d"], last["z"])
        assert np.abs(np.asarray(last["pixels"]) - want).max() <= WEB_TOLERANCE
        page.mouse.move(5, 5)  # off the map: the image hides
        page.wait_for_function("() => !document.querySelector('#pointer-decoded').classList.contains('shown')")
        # codes of one's choosing, read back as floats
        for z in ([0.0, 0.0], [2.5, -1.0], [-3.0, 3.0]):
            got = page.evaluate("(z) => window.vaescopeWebDecode.decode(z, 0)", z)
            assert np.abs(np.asarray(got) - torch_decode(torch_models["vae-2d"], z)).max() <= WEB_TOLERANCE
        # a slider: the page draws at once; the server's image still follows (the final value)
        before = image_src(page, "traversal-image")
        page.focus("#dim-slider-0 input[type=range]")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("window.vaescopeWebDecode.times.some(t => t.kind === 'slider')", timeout=30_000)
        last = page.evaluate("window.vaescopeWebDecode.last")
        assert last["kind"] == "slider"
        code = page.evaluate("JSON.parse(document.querySelector('#traversal-code-json textarea, #traversal-code-json input').value)")
        value = float(page.evaluate("document.querySelector('#dim-slider-0 input[type=range]').value"))
        assert last["z"][code["dims"][0]] == pytest.approx(value, abs=1e-6)
        want = torch_decode(torch_models["vae-2d"], last["z"])
        assert np.abs(np.asarray(last["pixels"]) - want).max() <= WEB_TOLERANCE
        assert page.evaluate("getComputedStyle(document.querySelector('#traversal-canvas')).display") == "block"
        wait_src(page, "traversal-image", before, timeout=20.0)
        page.problems.check()
    finally:
        page.close()


def test_a_class_conditional_decoder_in_the_page(browser: object, url: str,
                                                torch_models: dict[str, torch.nn.Module]) -> None:
    page = open_page(browser, url, "?model=cvae.safetensors")
    try:
        page.wait_for_function("() => window.vaescopeWebDecode.ready", timeout=120_000)
        z = [0.5] * 16
        three = page.evaluate("(z) => window.vaescopeWebDecode.decode(z, 3)", z)
        seven = page.evaluate("(z) => window.vaescopeWebDecode.decode(z, 7)", z)
        assert np.abs(np.asarray(three) - torch_decode(torch_models["cvae"], z, 3)).max() <= WEB_TOLERANCE
        assert np.abs(np.asarray(seven) - torch_decode(torch_models["cvae"], z, 7)).max() <= WEB_TOLERANCE
        assert np.abs(np.asarray(three) - np.asarray(seven)).max() > 0.1
        page.problems.check()
    finally:
        page.close()


def test_past_the_limit_the_server_decodes_and_the_page_says_why(browser: object, url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webdecoder, "MAX_WEB_DECODER_BYTES", 1 << 20)  # the 16-d VAE's decoder is 3.2 MB
    page = open_page(browser, url, "?model=vae.safetensors")
    try:
        assert not page.evaluate("window.vaescopeWebDecode.ready")
        note = page.inner_text("#web-decode-box")
        assert "In-page decoding is off" in note and "MAX_WEB_DECODER_BYTES" in note and "1.0 MB" in note, note
        before = image_src(page, "traversal-image")
        page.focus("#dim-slider-0 input[type=range]")
        page.keyboard.press("ArrowRight")
        wait_src(page, "traversal-image", before, timeout=20.0)  # the server's path, as before
        assert not page.evaluate("window.vaescopeWebDecode.times.length")
        page.problems.check()
    finally:
        page.close()


def test_decode_server_sends_the_pointer_to_the_server(browser: object, url: str) -> None:
    page = open_page(browser, url, "?decode=server")
    try:
        assert "?decode=server" in page.inner_text("#web-decode-box")
        wait_map_inverse(page)
        box = plot_area(page)
        for k in range(3):
            page.mouse.move(box["x"] + box["width"] * (0.3 + 0.2 * k), box["y"] + box["height"] * 0.5)
            page.wait_for_timeout(300)
        page.wait_for_function("() => !!document.querySelector('#pointer-image img')", timeout=20_000)
        assert not page.evaluate("window.vaescopeWebDecode.times.length")
        page.problems.check()
    finally:
        page.close()
