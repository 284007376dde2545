"""One command to a working demo: the shipped checkpoints, served and driven in headless Chromium.

The server runs ``vaescope.explorer.app.build_app("assets/checkpoints")`` exactly as ``latent-explore`` would
(one server and one browser page for the module); every step saves a screenshot to
``test-artifacts/e2e/`` (git-ignored) for a person to look at. The map, slider, click,
interpolation and upload steps use ``shapes/beta-vae`` (2,000 test points, 32x32); class sampling
uses ``digits/cvae``. Needs /usr/bin/chromium and Playwright's Python package (never
``playwright install``); run with ``pytest -m e2e tests/test_e2e.py``.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from serving import CHROMIUM_ARGS, image_src, screenshot, serving, wait_src, watch

from vaescope.explorer.core.figures import LABEL_PX
from vaescope.explorer.ui.common import STRIP_PX

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "assets" / "checkpoints"
SHOTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = Path("/usr/bin/chromium")
SHAPES = "shapes/beta-vae.safetensors"  # 2,000 test points of 32x32 shapes
CVAE = "digits/cvae.safetensors"  # 8x8 digits, conditioned on the class
STRIP_CELL = (STRIP_PX // 32) * 32 + 2  # interpolation strip cell: 32 px shapes upscaled (STRIP_PX // 32) + 2 px pad

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright's Python package (pip install playwright; never "
    "`playwright install`: the tests drive Debian's /usr/bin/chromium)")
Page, sync_playwright = sync_api.Page, sync_api.sync_playwright
if not CHROMIUM.exists():
    pytest.skip("needs Debian's /usr/bin/chromium (apt install chromium)", allow_module_level=True)
if not (CHECKPOINTS / SHAPES).is_file() or not (CHECKPOINTS / CVAE).is_file():
    pytest.skip(f"needs the shipped checkpoints {SHAPES} and {CVAE} in {CHECKPOINTS}", allow_module_level=True)

MAP = "document.querySelector('#latent-map .js-plotly-plot')"


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The explorer over the repo's shipped checkpoints, on a free loopback port, opening the shapes model."""
    from vaescope.explorer.ui.app import build_app

    demo = build_app(CHECKPOINTS, device="cpu", cache_dir=tmp_path_factory.mktemp("projections"),
                     default_checkpoint=SHAPES)
    with serving(demo) as url:
        yield url


@pytest.fixture(scope="module")
def page(url: str) -> Iterator[Page]:
    """One headless Chromium page for the whole module, opened on the first view (map drawn, bridge bound)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            watch(page)  # page errors, console errors and error toasts: checked after every test
            page.set_default_timeout(60_000)
            page.goto(url)
            wait_map(page, "UMAP 2D")  # a shipped model opens on the UMAP its maps sidecar holds
            yield page
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def no_page_problems(page: Page) -> Iterator[None]:
    """Each test fails if the page reported a page error, a console error or an error toast
    (serving.PageProblems) while it ran."""
    page.problems.check()  # type: ignore[attr-defined]  # (what came before belongs to earlier tests)
    yield
    page.problems.check()  # type: ignore[attr-defined]


# -- helpers --------------------------------------------------------------------------------------
def shot(page: Page, name: str, selector: str | None = None, full: bool = False) -> Path:
    """A screenshot of the page (or one element) in test-artifacts/e2e/<name>.png."""
    return screenshot(page, SHOTS / f"{name}.png", selector, full)


def wait_map(page: Page, title: str, timeout_ms: int = 120_000) -> None:
    """Wait until the map shows data under a title containing ``title`` and the click bridge is bound."""
    page.wait_for_function(
        f"""(t) => {{ const gd = {MAP};
            return gd && gd.__vaescopeBound && gd._fullData && gd._fullData.length > 0 && gd._fullLayout
                   && gd._fullLayout.title && String(gd._fullLayout.title.text).includes(t); }}""",
        arg=title, timeout=timeout_ms)


def map_state(page: Page) -> dict:
    """Title, per-trace point counts and the first coordinates of the first trace of the 2D map."""
    return page.evaluate(f"""() => {{ const gd = {MAP};
        const t = gd._fullData[0];
        return {{title: String(gd._fullLayout.title.text), lengths: gd._fullData.filter(d => d.customdata).map(d => d._length),
                 x: Array.from(t.x.slice(0, 20)), y: Array.from(t.y.slice(0, 20))}}; }}""")


def fetch_bytes(page: Page, src: str) -> bytes:
    """The bytes behind a URL, fetched by the page itself (same origin, same cookies)."""
    b64 = page.evaluate("""async (src) => {
        const buf = new Uint8Array(await (await fetch(src)).arrayBuffer());
        let s = '';
        for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
        return btoa(s); }""", src)
    return base64.b64decode(b64)


def pixels(page: Page, src: str) -> np.ndarray:
    """The image at ``src`` as RGB uint8 [H, W, 3]."""
    return np.asarray(Image.open(io.BytesIO(fetch_bytes(page, src))).convert("RGB"))


def choose(page: Page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown #elem_id."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def ensure_checkpoint(page: Page, name: str) -> None:
    """Make ``name`` the loaded checkpoint (no-op when it already is) and wait for its 2D map: the
    UMAP its maps sidecar holds (every shipped model has one)."""
    title = Path(name).name
    if page.locator("#checkpoint-dropdown input").input_value() == name and \
            title in page.locator("#model-card").inner_text():
        return
    choose(page, "checkpoint-dropdown", name)
    page.wait_for_function("(n) => document.querySelector('#model-card').innerText.includes(n)",
                           arg=name, timeout=120_000)
    wait_map(page, "UMAP 2D")


def set_number(page: Page, elem_id: str, value: int) -> None:
    """Type a value into a Gradio Number / Slider's number box and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def close_toasts(page: Page) -> None:
    """Dismiss Gradio's toasts: they sit over the top right of the page, where the sliders are."""
    for button in page.locator(".toast-close").all():
        if button.is_visible():
            button.click()
    page.wait_for_function("() => ![...document.querySelectorAll('.toast-body')]"
                           ".some(t => t.offsetParent !== null)", timeout=10_000)


def nudge_slider(page: Page, slot: int = 0, fraction: float = 0.9) -> tuple[str, str]:
    """Click the track of traversal slider ``slot`` at ``fraction`` of its width; (src before, src after)."""
    before = wait_src(page, "traversal-image")
    close_toasts(page)
    track = page.locator(f"#dim-slider-{slot} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
    return before, wait_src(page, "traversal-image", before)


def toast_text(page: Page, text: str, timeout_ms: int = 20_000) -> str:
    """The text of the first element (in practice a toast) containing ``text``, once it shows."""
    loc = page.get_by_text(text).first
    loc.wait_for(timeout=timeout_ms)
    return loc.inner_text()


# -- the steps ------------------------------------------------------------------------------------
def test_1_page_loads_with_a_map_of_at_least_1000_points(page: Page) -> None:
    card = page.locator("#model-card").inner_text()
    assert "beta-vae" in card and "shapes" in card and "cpu" in card
    state = map_state(page)
    assert "UMAP 2D" in state["title"]  # the map that shows a shipped model's structure, with nothing to fit
    assert sum(state["lengths"]) >= 1000, state["lengths"]
    assert state["lengths"] and len(state["lengths"]) == 3  # one trace per class: square, ellipse, triangle
    assert sum(state["lengths"]) == 2000  # every test shape, none dropped
    assert wait_src(page, "traversal-image")  # the traversal starts decoded, beside the map
    shot(page, "01-page-loaded")


def test_2_moving_a_slider_changes_the_decoded_pixels(page: Page) -> None:
    ensure_checkpoint(page, SHAPES)
    before, after = nudge_slider(page, 0, 0.92)
    a, b = pixels(page, before), pixels(page, after)
    assert a.shape == b.shape and a.shape[0] >= 200  # the 32x32 preview is upscaled x7
    changed = np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 32
    assert changed.mean() > 0.01, f"only {changed.mean():.2%} of the pixels changed"
    shot(page, "02-slider-moved")


def test_3_switching_to_pca_and_back_to_umap_redraws_the_map(page: Page) -> None:
    ensure_checkpoint(page, SHAPES)
    umap = map_state(page)
    choose(page, "map-method", "PCA")
    wait_map(page, "PCA 2D")
    pca = map_state(page)
    assert sum(umap["lengths"]) == sum(pca["lengths"])
    assert not np.allclose(umap["x"], pca["x"]), "the coordinates did not change with the method"
    page.wait_for_timeout(500)
    shot(page, "03a-map-pca", "#latent-map")
    choose(page, "map-method", "UMAP")
    wait_map(page, "UMAP 2D", timeout_ms=180_000)
    back = map_state(page)
    assert np.allclose(back["x"], umap["x"], atol=1e-5) and np.allclose(back["y"], umap["y"], atol=1e-5)
    page.wait_for_timeout(500)
    shot(page, "03b-map-umap-again", "#latent-map")


def isolated_point(page: Page) -> dict:
    """The page position and dataset index of the plotted point farthest (on screen) from any other."""
    return page.evaluate(f"""() => {{
        const gd = {MAP}, L = gd._fullLayout;
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const pts = [];
        gd._fullData.forEach(t => {{ if (t.customdata) for (let i = 0; i < t._length; i++)
            pts.push({{x: r.left + L.xaxis.c2p(t.x[i]), y: r.top + L.yaxis.c2p(t.y[i]), index: t.customdata[i]}}); }});
        let best = null, bestD = -1;
        for (const p of pts) {{
            if (p.x < r.left + 8 || p.x > r.right - 8 || p.y < r.top + 8 || p.y > r.bottom - 8
                || p.y > window.innerHeight - 8) continue;
            let d = Infinity;
            for (const q of pts) if (q !== p) d = Math.min(d, Math.hypot(p.x - q.x, p.y - q.y));
            if (d > bestD) {{ bestD = d; best = p; }}
        }}
        return {{...best, gap: bestD}}; }}""")


def native(image: np.ndarray, side: int) -> np.ndarray:
    """An image upscaled by a whole factor (nearest), brought back to ``side`` pixels."""
    k = image.shape[0] // side
    assert image.shape[0] == k * side, image.shape
    return image[::k, ::k]


def test_4_clicking_a_map_point_sets_the_traversal_start(page: Page) -> None:
    ensure_checkpoint(page, SHAPES)
    before = wait_src(page, "traversal-image")
    close_toasts(page)
    page.evaluate("() => window.scrollTo(0, 0)")  # the whole 2D plot area inside the viewport
    page.mouse.move(5, 5)  # no hover label over the plot
    p = isolated_point(page)
    assert p["gap"] > 3, "no point stands clear enough of the others to click"
    page.mouse.click(p["x"], p["y"])  # a real mouse click on the marker
    page.wait_for_function(
        "(i) => document.querySelector('#picked-info').innerText.includes(`Test image #${i}`)",
        arg=p["index"], timeout=30_000)
    after = wait_src(page, "traversal-image", before)
    assert f"test image #{p['index']}" in page.locator("#traversal-info").inner_text()
    recon = wait_src(page, "picked-recon")
    # the traversal now starts from the clicked point's code: it decodes to the picked reconstruction
    # (both upscaled by whole factors, to different sizes: compare them at the model's 32 px)
    assert np.array_equal(native(pixels(page, after), 32), native(pixels(page, recon), 32))
    assert not np.array_equal(pixels(page, after), pixels(page, before))
    shot(page, "04-map-point-clicked", full=True)


def test_5_interpolation_gives_a_strip_and_a_gif_of_n_steps(page: Page) -> None:
    ensure_checkpoint(page, SHAPES)
    steps = 7
    page.get_by_role("tab", name="Interpolation").click()
    old_strip = image_src(page, "interp-strip")
    for end, index in (("a", 5), ("b", 273)):
        old = image_src(page, f"interp-{end}-image")
        set_number(page, f"interp-{end}-index", index)
        page.locator(f"#interp-{end}-index-btn").click()
        wait_src(page, f"interp-{end}-image", old)
    set_number(page, "interp-steps", steps)
    page.locator("#interp-btn").click()
    strip = pixels(page, wait_src(page, "interp-strip", old_strip))
    assert strip.shape[:2] == (STRIP_CELL + 2 + LABEL_PX + 2, steps * STRIP_CELL + 2), strip.shape  # + "A ... B"
    info = page.locator("#interp-info").inner_text()
    assert f"{steps} steps" in info and "test image #5" in info and "test image #273" in info
    link = page.locator("#interp-gif a").first
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    assert href and href.endswith(".gif")
    gif = fetch_bytes(page, href)
    assert gif[:4] == b"GIF8"
    assert Image.open(io.BytesIO(gif)).n_frames == steps
    page.wait_for_function(f"() => {MAP}._fullData.some(t => t.name === 'path' && t._length === {steps})")
    page.locator("#interp-gif-view img").wait_for()
    shot(page, "05-interpolation", full=True)  # endpoints, strip, GIF and the path drawn on the map


@pytest.fixture(scope="module")
def digit_probe() -> Any:
    """A logistic-regression digit classifier on sklearn's 8x8 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(max_iter=2000).fit(digits.data / 16.0, digits.target)


def grid_cells(grid: np.ndarray, n: int, cell: int = (STRIP_PX // 8) * 8, pad: int = 2) -> np.ndarray:
    """Cells of an ``image_grid`` of n 8x8 images (ceil(sqrt(n)) per row), each averaged back to [n, 64]."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    assert grid.shape[:2] == (rows * (cell + pad) + pad, cols * (cell + pad) + pad), grid.shape
    grey = grid[..., 0].astype(np.float32) / 255.0
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (cell + pad), pad + c * (cell + pad)
        block = grey[y0:y0 + cell, x0:x0 + cell]
        out.append(block.reshape(8, cell // 8, 8, cell // 8).mean(axis=(1, 3)).ravel())
    return np.stack(out)


def test_6_cvae_class_samples_are_recognised_as_that_class(page: Page, digit_probe: Any) -> None:
    ensure_checkpoint(page, CVAE)
    page.get_by_role("tab", name="Class sampling").click()
    n = 20  # a 5-wide grid with a short last row
    set_number(page, "sample-n", n)
    for digit in ("3", "7", "8"):
        choose(page, "sample-class", digit)
        old = image_src(page, "sample-grid")
        page.locator("#sample-btn").click()
        cells = grid_cells(pixels(page, wait_src(page, "sample-grid", old)), n)
        hits = float((digit_probe.predict(cells) == int(digit)).mean())
        assert hits >= 0.8, f"class {digit}: the probe recognised only {hits:.0%} of {n} samples"
        note = page.locator("#sample-note").inner_text()
        assert note.startswith(f"{digit} · digits/cvae:") and f"class label “{digit}”" in note
        page.locator("#sample-grid").scroll_into_view_if_needed()
        shot(page, f"06-cvae-samples-{digit}")
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "06-cvae-top-of-page")


def test_7_uploads_wrong_size_png_converted_text_file_refused(page: Page, tmp_path: Path) -> None:
    ensure_checkpoint(page, SHAPES)
    if not page.locator("#traversal-upload").is_visible():
        page.get_by_text("Start from your own image or a drawing").click()
    upload = page.locator("#traversal-upload input[type=file]")

    drop_zone = page.locator("#traversal-upload").get_by_text("Drop File Here")

    def clear() -> None:
        """Empty the File component: one that shows its last file has no drop zone until cleared."""
        deadline = time.monotonic() + 30
        while not drop_zone.is_visible():
            assert time.monotonic() < deadline, "the upload box did not come back empty"
            if page.locator("#traversal-upload .file-preview").is_visible():
                # dispatched, not clicked: while the box changes state its drop zone may cover the button
                page.locator("#traversal-upload button[aria-label='Clear']").dispatch_event("click")
            time.sleep(0.2)

    png = tmp_path / "big-square.png"  # 90x60 RGB, not the model's 32x32 greyscale
    img = Image.new("RGB", (90, 60), "black")
    img.paste((255, 255, 255), (30, 15, 60, 45))
    img.save(png)
    before = wait_src(page, "traversal-image")
    clear()
    upload.set_input_files(str(png))
    converted = wait_src(page, "traversal-image", before)
    page.evaluate("() => window.scrollTo(0, 0)")
    note = toast_text(page, "Image converted")
    page.wait_for_timeout(800)  # the toast fades in
    shot(page, "07a-upload-wrong-size-png")  # the decoded upload, its note under it and the toast
    assert "resized 90x60 -> 32x32" in note, note
    info = page.locator("#traversal-info").inner_text()
    assert "uploaded big-square.png" in info and "resized 90x60 -> 32x32" in info, info

    # A text file: Gradio's own type check refuses a .txt; a text file named .png reaches the app's
    # image reader, which refuses it with its own message. Neither may replace the current image.
    close_toasts(page)
    for name, message in (("notes.txt", "Invalid file type: notes.txt"),
                          ("notes-in-disguise.png", "Cannot use notes-in-disguise.png: not an image")):
        clear()
        (tmp_path / name).write_text("not an image\n")
        with page.problems.expecting(re.escape(message)):  # type: ignore[attr-defined]  # refused on purpose
            upload.set_input_files(str(tmp_path / name))
            toast_text(page, message)
    page.locator("#traversal-upload").scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    shot(page, "07b-upload-text-file-errors")
    assert image_src(page, "traversal-image") == converted
    assert "big-square.png" in page.locator("#traversal-info").inner_text()

    before, after = nudge_slider(page, 0, 0.1)  # the app still answers
    assert not np.array_equal(pixels(page, before), pixels(page, after))
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "07c-slider-after-errors")
