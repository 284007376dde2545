"""The explorer in headless Chromium: the plotly click bridge, live sliders, every panel, screenshots.

Screenshots land in test-artifacts/screenshots/ (git-ignored) for a person to look at. Needs
/usr/bin/chromium and Playwright's Python package (never `playwright install`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import click_until, image_src, screenshot, serving, wait_src, watch

from vaescope.training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
NO_DATA = "no-data-vae.safetensors"

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)



@pytest.fixture(scope="module")
def url(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from vaescope.explorer.ui.app import build_app

    root = tmp_path_factory.mktemp("browser-checkpoints")
    for path in tiny_checkpoint_dir.glob("*.safetensors"):
        shutil.copy(path, root / path.name)
    model, meta = load_checkpoint(root / "tiny-vae.safetensors")
    meta.dataset = {**meta.dataset, "name": f"folder:{root / 'missing-images'}"}
    save_checkpoint(root / NO_DATA, model, meta)
    (root / "broken.safetensors").write_bytes(b"\x00" * 100)
    demo = build_app(root, device="cpu", default_checkpoint="tiny-vae.safetensors")
    with serving(demo) as url:
        yield url


@pytest.fixture
def page(browser: object, url: str) -> Iterator[object]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    problems = watch(page)  # page errors, console errors and error toasts fail the test
    page.goto(url)
    page.wait_for_selector("#latent-map .js-plotly-plot", timeout=60_000)
    page.wait_for_function("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"
                           " return gd && gd._fullData && gd._fullData.length > 0 && gd.__vaescopeBound; }",
                           timeout=60_000)
    try:
        yield page
        problems.check()
    finally:
        page.close()


def shot(page: object, name: str, selector: str | None = None, full: bool = False) -> Path:
    return screenshot(page, SHOTS / f"{name}.png", selector, full)


def point_position(page: object, trace: int = 0, point: int = 0) -> dict:
    """Page coordinates and customdata of one plotted point of the 2D map."""
    return page.evaluate(  # type: ignore[attr-defined]
        """([t, i]) => {
            const gd = document.querySelector('#latent-map .js-plotly-plot');
            const fd = gd._fullData[t], L = gd._fullLayout;
            const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return {x: r.left + L.xaxis.c2p(fd.x[i]), y: r.top + L.yaxis.c2p(fd.y[i]),
                    index: fd.customdata[i]};
        }""", [trace, point])


def isolated_point(page: object) -> dict:
    """The page coordinates and customdata of the plotted point farthest (in pixels) from any other:
    a click there cannot land on a neighbour, whatever the tiny models' maps look like."""
    return page.evaluate(  # type: ignore[attr-defined]
        """() => {
            const gd = document.querySelector('#latent-map .js-plotly-plot');
            const L = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            const pts = [];
            gd._fullData.forEach((fd) => { if (!fd.customdata) return;
                for (let i = 0; i < fd._length; i++)
                    pts.push({x: r.left + L.xaxis.c2p(fd.x[i]), y: r.top + L.yaxis.c2p(fd.y[i]), index: fd.customdata[i]}); });
            let best = null, far = -1;
            for (const a of pts) {
                if (a.x < r.left + 20 || a.x > r.right - 20 || a.y < r.top + 20 || a.y > r.bottom - 20) continue;
                let near = Infinity;
                for (const b of pts) if (b !== a) near = Math.min(near, Math.hypot(a.x - b.x, a.y - b.y));
                if (near > far) { far = near; best = a; }
            }
            return best;
        }""")


def test_first_view_map_and_traversal_side_by_side(page: object) -> None:
    card = page.locator("#model-card").inner_text()  # type: ignore[attr-defined]
    assert "tiny-vae" in card and "latent dim" in card and "cpu" in card
    lengths = page.evaluate("() => document.querySelector('#latent-map .js-plotly-plot')"  # type: ignore[attr-defined]
                            "._fullData.map(t => t._length)")
    lengths = page.evaluate("() => document.querySelector('#latent-map .js-plotly-plot')"  # type: ignore[attr-defined]
                            "._fullData.filter(t => t.customdata).map(t => t._length)")
    assert sum(lengths) == 300  # every test point, one trace per class
    m = page.locator("#latent-map").bounding_box()  # type: ignore[attr-defined]
    t = page.locator("#traversal-image").bounding_box()  # type: ignore[attr-defined]
    assert t["x"] > m["x"] + m["width"] * 0.8 and t["y"] < 1000, "traversal sits beside the map, above the fold"
    shot(page, "01-first-view")


def test_click_a_point_then_empty_space(page: object) -> None:
    before = image_src(page, "traversal-image")
    p = click_until(page, lambda: isolated_point(page), lambda q:
                    f"() => document.querySelector('#picked-info').innerText.includes('Test image #{q['index']}')")
    assert image_src(page, "picked-original") and image_src(page, "picked-recon")
    wait_src(page, "traversal-image", before, timeout=20.0)
    assert f"#{p['index']}" in page.locator("#traversal-info").inner_text()  # type: ignore[attr-defined]
    shot(page, "02-picked-point")
    # A spot with no point: the top-left corner of the plot area decodes through inverse PCA.
    def corner() -> dict:
        box = page.locator("#latent-map .nsewdrag").bounding_box()  # type: ignore[attr-defined]
        return {"x": box["x"] + 6, "y": box["y"] + 6}
    click_until(page, corner, lambda _: "() => document.querySelector('#picked-info').innerText.includes('PCA inverse')")


def test_slider_drag_updates_the_image_live(page: object) -> None:
    slider = page.locator("#dim-slider-0 input[type=range]")  # type: ignore[attr-defined]
    slider.scroll_into_view_if_needed()
    before = image_src(page, "traversal-image")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 4, y)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    seen = {before}
    for k in range(1, 11):  # drag across in steps: images arrive while the button is still down
        page.mouse.move(box["x"] + box["width"] * k / 10 - 4, y, steps=2)  # type: ignore[attr-defined]
        time.sleep(0.15)
        seen.add(image_src(page, "traversal-image"))
    page.mouse.up()  # type: ignore[attr-defined]
    wait_src(page, "traversal-image", before, timeout=20.0)
    assert len(seen) >= 3, "the decoded image should change during the drag, not only at the end"
    # Gradio's run history is off: a drag writes no runs to the browser's storage
    saved = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('gradio:run-history'))")  # type: ignore[attr-defined]
    assert saved == [], saved
    # latency of one keyboard step, as the browser sees it
    old = image_src(page, "traversal-image")
    slider.focus()
    start = time.monotonic()
    page.keyboard.press("ArrowLeft")  # type: ignore[attr-defined]
    wait_src(page, "traversal-image", old, timeout=20.0)
    assert time.monotonic() - start < 5.0
    shot(page, "03-after-drag")


def test_map_methods_and_3d(page: object) -> None:
    page.locator("#map-color").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="reconstruction error").click()  # type: ignore[attr-defined]
    page.wait_for_function("() => document.querySelector('#latent-map .js-plotly-plot')"  # type: ignore[attr-defined]
                           "._fullData.filter(t => t.customdata).length === 1", timeout=30_000)  # one coloured trace
    shot(page, "04-map-recon-error", "#latent-map")
    page.locator("#map-dims input").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="3D").click()  # type: ignore[attr-defined]
    page.wait_for_function("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"  # type: ignore[attr-defined]
                           " return gd && gd._fullLayout && gd._fullLayout.scene; }", timeout=30_000)
    time.sleep(1)
    shot(page, "05-map-3d", "#latent-map")


def test_tabs(page: object) -> None:
    page.get_by_role("tab", name="Traversal grid").click()  # type: ignore[attr-defined]
    page.locator("#traversal-grid-btn").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#traversal-grid img", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector("#traversal-grid-file a", timeout=30_000)  # type: ignore[attr-defined]
    shot(page, "06-tab-traversal-grid", full=True)

    page.get_by_role("tab", name="Interpolation").click()  # type: ignore[attr-defined]
    page.locator("#interp-a-index-btn").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#interp-a-image img", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector("#interp-a-original img", timeout=30_000)  # type: ignore[attr-defined]  # as chosen
    page.locator("#interp-btn").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#interp-strip img", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_function("() => document.querySelector('#latent-map .js-plotly-plot')"  # type: ignore[attr-defined]
                           "._fullData.some(t => t.name === 'path')", timeout=30_000)
    shot(page, "07-tab-interpolation", full=True)

    page.get_by_role("tab", name="Class sampling").click()  # type: ignore[attr-defined]
    page.locator("#sample-btn").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#sample-grid img", timeout=30_000)  # type: ignore[attr-defined]
    assert page.locator("#sample-note").inner_text()  # type: ignore[attr-defined]
    shot(page, "08-tab-sampling", full=True)

    page.get_by_role("tab", name="Diagnostics").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#diag-kl .js-plotly-plot", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector("#diag-recon img", timeout=30_000)  # type: ignore[attr-defined]
    shot(page, "09-tab-diagnostics", full=True)


def choose_checkpoint(page: object, name: str) -> None:
    page.locator("#checkpoint-dropdown input").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name=name).click()  # type: ignore[attr-defined]


def test_other_models_and_errors(page: object) -> None:
    click_until(page, lambda: point_position(page, trace=1, point=0),
                lambda _: "() => document.querySelector('#picked-info').innerText.includes('Test image #')")
    page.wait_for_timeout(1000)  # let a second plotly_click from the same click settle before switching
    choose_checkpoint(page, "tiny-cvae.safetensors")
    page.wait_for_function("() => document.querySelector('#model-card').innerText.includes('tiny-cvae')",
                           timeout=60_000)  # type: ignore[attr-defined]
    # the previous model's picked point is gone (the outputs of one event can render a tick apart) ...
    page.wait_for_function("() => document.querySelector('#picked-info').innerText.includes('Click a point on the map')",
                           timeout=20_000)  # type: ignore[attr-defined]
    assert not image_src(page, "picked-original") and not image_src(page, "picked-recon")
    # ... and the class dropdown names the class the traversal decodes test image #0 with
    assert page.locator("#traversal-class").is_visible()  # type: ignore[attr-defined]
    decoded = re.search(r"decoded as class (\S+)", page.locator("#traversal-info").inner_text())  # type: ignore[attr-defined]
    assert decoded, "a CVAE's traversal names its class"
    assert page.locator("#traversal-class input").input_value() == decoded.group(1)  # type: ignore[attr-defined]
    page.get_by_role("tab", name="Class sampling").click()  # type: ignore[attr-defined]
    page.locator("#sample-every-class-btn").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#sample-every-class img", timeout=30_000)  # type: ignore[attr-defined]
    shot(page, "10-cvae-every-class", full=True)

    choose_checkpoint(page, "tiny-gmvae.safetensors")
    page.wait_for_function("() => document.querySelector('#model-card').innerText.includes('tiny-gmvae')",
                           timeout=60_000)  # type: ignore[attr-defined]
    time.sleep(2)
    shot(page, "11-gmvae")

    choose_checkpoint(page, "broken.safetensors")
    page.wait_for_function("() => document.querySelector('#data-note').innerText.includes('broken.safetensors')",
                           timeout=30_000)  # type: ignore[attr-defined]
    toast = page.get_by_text("Cannot load broken.safetensors").first  # type: ignore[attr-defined]
    toast.wait_for(timeout=10_000)
    shot(page, "12-bad-checkpoint-error")
    assert "tiny-gmvae" in page.locator("#model-card").inner_text()  # type: ignore[attr-defined]
    assert page.locator("#checkpoint-dropdown input").input_value() == "tiny-gmvae.safetensors"  # type: ignore[attr-defined]
    page.locator("#dim-slider-0 input[type=range]").focus()  # type: ignore[attr-defined]
    old = image_src(page, "traversal-image")
    page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    wait_src(page, "traversal-image", old, timeout=20.0)  # the previous model still answers

    choose_checkpoint(page, NO_DATA)
    page.wait_for_function("() => document.querySelector('#data-note').innerText.includes('reads image folders only inside')",
                           timeout=60_000)  # type: ignore[attr-defined]
    time.sleep(2)
    shot(page, "13-no-dataset")


def test_draw_a_digit_and_encode_it(page: object) -> None:
    page.get_by_text("Start from your own image or a drawing").click()  # type: ignore[attr-defined]
    canvas = page.locator("#traversal-sketch canvas").last  # type: ignore[attr-defined]
    canvas.wait_for(timeout=10_000)
    page.locator("#traversal-sketch button[aria-label='Brush']").click()  # type: ignore[attr-defined]
    page.mouse.click(10, 10)  # type: ignore[attr-defined]  # close the brush-size popover, if any
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy - box["height"] * 0.3)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(cx, cy + box["height"] * 0.3, steps=12)  # type: ignore[attr-defined]  # a "1"
    page.mouse.up()  # type: ignore[attr-defined]
    time.sleep(0.5)
    before = image_src(page, "traversal-image")
    page.locator("#traversal-sketch-btn").click()  # type: ignore[attr-defined]
    wait_src(page, "traversal-image", before, timeout=20.0)
    assert "your drawing" in page.locator("#traversal-info").inner_text()  # type: ignore[attr-defined]
    page.locator("#traversal-sketch").scroll_into_view_if_needed()  # type: ignore[attr-defined]
    shot(page, "14-drawing-encoded")


def test_a_foreign_model_from_vs_explore_in_the_browser(browser: object) -> None:
    """``vs.explore`` on a PyTorch-examples VAE written in the tests: click a map point, move a slider,
    and the decoded image follows."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from foreign_models import digits, trained

    import vaescope as vs

    _, _, x, y = digits()
    app = vs.explore(trained("examples"), images=x.numpy(), labels=y.numpy(), name="examples-vae", device="cpu",
                     prevent_thread_lock=True, inbrowser=False, quiet=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})  # type: ignore[attr-defined]
    problems = watch(page)
    try:
        page.goto(app.local_url)
        page.wait_for_function("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"
                               " return gd && gd.__vaescopeBound && gd._fullData &&"
                               " gd._fullData.filter(t => t.customdata).length > 0; }", timeout=60_000)
        assert "examples-vae" in page.locator("#model-card").inner_text()
        before = image_src(page, "traversal-image")
        page.locator("#latent-map .nsewdrag").scroll_into_view_if_needed()
        def on_screen() -> dict:
            box = page.locator("#latent-map .nsewdrag").bounding_box()
            return next(q for q in (point_position(page, trace=0, point=i) for i in range(20))
                        if box["y"] + 5 < q["y"] < min(box["y"] + box["height"], 715) - 5)  # a point on screen
        click_until(page, on_screen, lambda q:
                    f"() => document.querySelector('#picked-info').innerText.includes('Test image #{q['index']}')")
        clicked = wait_src(page, "traversal-image", before, timeout=20.0)
        slider = page.locator("#dim-slider-0 input[type=range]")
        slider.scroll_into_view_if_needed()
        slider.focus()
        for _ in range(8):
            page.keyboard.press("ArrowRight")
        moved = wait_src(page, "traversal-image", clicked, timeout=20.0)
        assert moved != clicked
        shot(page, "15-foreign-model")
        problems.check()
    finally:
        page.close()
        app.close()
