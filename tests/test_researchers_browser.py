"""Researchers' own models in headless Chromium (issue #32): an AntixK-style conditional VAE explored
with ``vs.explore(..., condition="class", classes=10)`` offers its classes in the traversal and
samples a chosen class on the page; a diffusers-style VAE with a 4 x 8 x 8 code shows channel
sliders that move the image, values named by channel and position, and the code as channel maps; a
tabular VAE shows its rows as bars of named features. No page errors anywhere.

Screenshots (1280 x 720) land in test-artifacts/screenshots/ for a person to look at. Needs
/usr/bin/chromium and Playwright's Python package (never `playwright install`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from foreign_models import digits, digits16, trained_more, trained_spatial, trained_tabular, wine
from serving import image_src, screenshot, wait_src

import vaescope as vs

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SERVE = {"device": "cpu", "prevent_thread_lock": True, "inbrowser": False, "quiet": True}
MAP_READY = ("() => { const gd = document.querySelector('#latent-map .js-plotly-plot');"
             " return gd && gd.__vaescopeBound && gd._fullData && gd._fullData.filter(t => t.customdata).length > 0; }")

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


@pytest.fixture
def open_page(browser: object) -> Iterator[object]:
    """``open_page(app)``: a 1280 x 720 page on a served app, its map drawn; after the test, no page
    errors and the page and app closed."""
    opened: list[tuple[object, object, list[str]]] = []

    def opener(app: object) -> object:
        page = browser.new_page(viewport={"width": 1280, "height": 720})  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        opened.append((page, app, errors))
        page.goto(app.local_url)  # type: ignore[attr-defined]
        page.wait_for_function(MAP_READY, timeout=90_000)
        return page

    try:
        yield opener
    finally:
        for page, app, errors in opened:
            page.close()  # type: ignore[attr-defined]
            app.close()  # type: ignore[attr-defined]
            assert not errors, errors


def shot(page: object, name: str, selector: str | None = None) -> Path:
    return screenshot(page, SHOTS / f"{name}.png", selector)


def choose(page: object, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name=option, exact=True).click()  # type: ignore[attr-defined]


def info(page: object, elem_id: str = "traversal-info") -> str:
    return page.locator(f"#{elem_id}").inner_text()  # type: ignore[attr-defined]


def test_a_conditional_model_offers_its_classes_and_samples_the_one_chosen(open_page) -> None:  # noqa: ANN001
    _, _, x, y = digits()
    app = vs.explore(trained_more("antixk-cvae"), images=x.numpy(), labels=y.numpy(), class_names=CLASSES,
                     condition="class", classes=10, name="antixk-cvae", **SERVE)
    page = open_page(app)
    assert "conditional VAE" in info(page, "model-card")
    page.locator("#traversal-class").scroll_into_view_if_needed()
    assert page.locator("#traversal-class").is_visible()
    first = re.search(r"decoded as class (\S+)", info(page))
    assert first and page.locator("#traversal-class input").input_value() == first.group(1)
    before = image_src(page, "traversal-image")
    target = "seven" if first.group(1) != "seven" else "one"
    choose(page, "traversal-class", target)
    wait_src(page, "traversal-image", before, timeout=30.0)
    page.wait_for_function(f"() => document.querySelector('#traversal-info').innerText.includes('class {target}')",
                           timeout=20_000)
    shot(page, "32-cvae-traversal-class")

    page.get_by_role("tab", name="Class sampling").click()
    page.locator("#sample-class").scroll_into_view_if_needed()
    choose(page, "sample-class", "three")
    page.locator("#sample-btn").click()
    page.wait_for_selector("#sample-grid img", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#sample-note').innerText.includes('three')", timeout=30_000)
    assert "decoded with the class label" in info(page, "sample-note")
    page.locator("#sample-every-class-btn").click()
    page.wait_for_selector("#sample-every-class img", timeout=30_000)
    page.locator("#sample-grid").scroll_into_view_if_needed()
    shot(page, "33-cvae-class-sampling")


def test_a_spatial_code_moves_whole_channels_and_names_single_values(open_page) -> None:  # noqa: ANN001
    x, y = digits16()[2:]
    app = vs.explore(trained_spatial(), images=x.numpy(), labels=y.numpy(), name="tiny-autoencoder-kl", **SERVE)
    page = open_page(app)
    assert "flattened to 256 values" in info(page, "map-info")
    assert page.locator("#dim-page input").input_value().startswith("channels (all 4)")
    labels = [page.locator(f"#dim-slider-{i} label").first.inner_text() for i in range(4)]
    assert [lab.split(" · ")[0] for lab in labels] == ["c0", "c1", "c2", "c3"], labels
    assert not page.locator("#dim-slider-4").is_visible()
    page.locator("#traversal-code img").wait_for(timeout=20_000)
    code_before = image_src(page, "traversal-code")
    before = image_src(page, "traversal-image")
    slider = page.locator("#dim-slider-1 input[type=range]")
    slider.scroll_into_view_if_needed()
    slider.focus()
    for _ in range(40):  # c1 up by 40 steps of its slider: the whole 8x8 channel map moves
        page.keyboard.press("ArrowRight")
    wait_src(page, "traversal-image", before, timeout=20.0)
    wait_src(page, "traversal-code", code_before, timeout=20.0)
    page.locator("#traversal-code").scroll_into_view_if_needed()
    shot(page, "34-spatial-channel-moved")

    choose(page, "dim-page", "dims 1–16 of 256 (one value each)")
    page.wait_for_function("() => /^c[0-3] \\([0-7],[0-7]\\)/.test("
                           "document.querySelector('#dim-slider-0 label').innerText)", timeout=20_000)
    names = [page.locator(f"#dim-slider-{i} label").first.inner_text() for i in range(16)]
    assert all(re.match(r"^c[0-3] \([0-7],[0-7]\) · KL", n) for n in names), names
    page.locator("#dim-slider-0").scroll_into_view_if_needed()
    shot(page, "35-spatial-named-values")


def test_a_table_s_rows_are_drawn_as_bars_of_named_features(open_page) -> None:  # noqa: ANN001
    features, labels, names, classes = wine()
    app = vs.explore(trained_tabular(), features=features.numpy(), feature_names=names, labels=labels.numpy(),
                     class_names=classes, name="wine-vae", **SERVE)
    page = open_page(app)
    assert "rows of 13 features" in info(page, "model-card")
    assert not page.locator("#traversal-own").is_visible()  # no image upload or drawing for a row
    box = page.locator("#traversal-image img").bounding_box()
    assert box["width"] > 1.2 * box["height"]  # a chart of 13 named bars, not a 1 x 13 strip of pixels
    before = image_src(page, "traversal-image")
    slider = page.locator("#dim-slider-0 input[type=range]")
    slider.scroll_into_view_if_needed()
    slider.focus()
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    wait_src(page, "traversal-image", before, timeout=20.0)
    page.locator("#traversal-image").scroll_into_view_if_needed()
    shot(page, "36-table-row-as-bars")
    page.get_by_role("tab", name="Class sampling").click()
    choose(page, "sample-class", "class_1")
    page.locator("#sample-btn").click()
    page.wait_for_selector("#sample-grid img", timeout=30_000)
    page.locator("#sample-grid").scroll_into_view_if_needed()
    shot(page, "37-table-class-sampling")
