"""The Side by side tab in headless Chromium, as a lecturer meets it: it opens on two drawn models,
a button pressed too early never raises an error toast, a click shows the image through both
models, hovering rings it on the other map, and choosing another model for one side clears what
that side showed. Screenshots land in test-artifacts/compare/ (git-ignored).

Needs /usr/bin/chromium and Playwright's Python package (never `playwright install`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import click_until, image_src, screenshot, serving, wait_src, watch

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "compare"
DIGITS = ["tiny-ae.safetensors", "tiny-cvae.safetensors", "tiny-gmvae.safetensors", "tiny-vae.safetensors"]

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)

# every toast the page shows, collected as it appears (a toast closes itself after a while)
TOAST_WATCH = """() => { window.__toasts = [];
  new MutationObserver(() => document.querySelectorAll('.toast-body').forEach((t) => {
    if (!t.__seen) { t.__seen = true; window.__toasts.push(t.className + ' | ' + t.innerText); } }))
    .observe(document.body, {childList: true, subtree: true}); }"""


def gd(side: str) -> str:
    return f"document.querySelector('#compare-map-{side} .js-plotly-plot')"


def title_starts(side: str, short: str) -> str:
    """A page function: map ``side`` is drawn for model ``short`` and its click bridge is bound."""
    g = gd(side)
    return (f"() => {{ const g = {g}; return !!(g && g.__vaescopeBound && g.layout && g.layout.title && "
            f"String(g.layout.title.text || '').startsWith('{short} ·')); }}")


@pytest.fixture(scope="module")
def url(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from vaescope.explorer.ui.app import build_app

    root = tmp_path_factory.mktemp("compare-browser")
    for name in DIGITS:
        shutil.copy(tiny_checkpoint_dir / name, root / name)
    demo = build_app(root, device="cpu", default_checkpoint="tiny-vae.safetensors")
    with serving(demo) as served:
        yield served


@pytest.fixture
def page(browser: object, url: str) -> Iterator[object]:
    """A fresh page (its own session) on the Explore page, with its map drawn and its toasts watched."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    problems = watch(page)  # page errors, console errors and error toasts fail the test
    page.goto(url)
    page.evaluate(TOAST_WATCH)
    page.wait_for_function("() => { const g = document.querySelector('#latent-map .js-plotly-plot');"
                           " return g && g.__vaescopeBound && g._fullData && g._fullData.length > 0; }", timeout=90_000)
    try:
        yield page
        problems.check()
    finally:
        page.close()


def open_tab(page: object) -> None:
    page.get_by_role("tab", name="Side by side").click()  # type: ignore[attr-defined]


def wait_drawn(page: object, a: str = "tiny-vae", b: str = "tiny-ae") -> None:
    page.wait_for_function(title_starts("a", a), timeout=90_000)  # type: ignore[attr-defined]
    page.wait_for_function(title_starts("b", b), timeout=90_000)  # type: ignore[attr-defined]


def errors(page: object) -> list[str]:
    return [t for t in page.evaluate("() => window.__toasts") if "error" in t.lower()]  # type: ignore[attr-defined]


def point(page: object, side: str, i: int = 5) -> dict:
    """Page coordinates and image index of point ``i`` of the first data trace of map ``side``."""
    return page.evaluate(  # type: ignore[attr-defined]
        f"""(i) => {{ const g = {gd(side)}; const t = g._fullData.find((d) => d.customdata && d._length > i);
            const L = g._fullLayout, r = g.querySelector('.nsewdrag').getBoundingClientRect();
            return {{x: r.left + L.xaxis.c2p(t.x[i]), y: r.top + L.yaxis.c2p(t.y[i]), index: t.customdata[i]}}; }}""", i)


def test_the_tab_opens_on_two_drawn_models_and_an_early_press_is_no_error(page: object) -> None:
    open_tab(page)
    page.locator("#compare-kl-btn").click()  # type: ignore[attr-defined]  # before the models are there
    page.locator("#compare-samples-btn").click()  # type: ignore[attr-defined]
    wait_drawn(page)
    values = [page.locator(f"#compare-model-{s} input").input_value() for s in "ab"]  # type: ignore[attr-defined]
    assert values == ["tiny-vae.safetensors", "tiny-ae.safetensors"]
    page.locator("#compare-interpolate-btn").click()  # type: ignore[attr-defined]  # no picks yet: a note says so
    page.wait_for_function("() => document.querySelector('#compare-note-a').innerText.includes('click two points')",
                           timeout=30_000)
    screenshot(page, SHOTS / "opened.png")
    assert errors(page) == []


def test_a_click_shows_both_reconstructions_and_hover_rings_the_other_map(page: object) -> None:
    open_tab(page)
    wait_drawn(page)
    spot = click_until(page, lambda: point(page, "a"), lambda q: "() => document.querySelector("
                       f"'#compare-picked-info').innerText.includes('Test image #{q['index']}')")
    wait_src(page, "compare-recon-a")
    wait_src(page, "compare-recon-b")
    linked = (f"() => {{ const g = {gd('b')}; const t = g && g._fullData.find((d) => d.name === 'linked');"
              " return !!t && t._length === 1; }")
    for dx in (0, 1, -1, 2):  # a real pointer over the point: plotly's hover, then the ring on map B
        page.mouse.move(spot["x"] + dx, spot["y"])  # type: ignore[attr-defined]
        try:
            page.wait_for_function(linked, timeout=3_000)  # type: ignore[attr-defined]
            break
        except playwright_api.TimeoutError:
            continue
    else:
        raise AssertionError("hovering a point on map A never ringed it on map B")
    screenshot(page, SHOTS / "picked-and-hovered.png")
    assert errors(page) == []


def test_choosing_another_model_clears_what_that_side_showed(page: object) -> None:
    open_tab(page)
    wait_drawn(page)
    click_until(page, lambda: point(page, "b"), lambda q: "() => document.querySelector("
                "'#compare-picked-info').innerText.includes('Test image #')")
    wait_src(page, "compare-recon-a")
    page.locator("#compare-denoise-btn").click()  # type: ignore[attr-defined]
    wait_src(page, "compare-result-a")
    page.locator("#compare-kl-btn").click()  # type: ignore[attr-defined]  # the chart replaces the denoise strip
    page.wait_for_selector("#compare-chart-a .js-plotly-plot", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_function("() => !document.querySelector('#compare-result-a img')", timeout=30_000)  # type: ignore[attr-defined]
    recon_b = image_src(page, "compare-recon-b")
    page.locator("#compare-model-a input").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name="tiny-gmvae.safetensors", exact=True).click()  # type: ignore[attr-defined]
    page.wait_for_function(title_starts("a", "tiny-gmvae"), timeout=90_000)  # type: ignore[attr-defined]
    assert image_src(page, "compare-recon-a") == "" and image_src(page, "compare-result-a") == ""
    assert not page.locator("#compare-chart-a").is_visible()  # type: ignore[attr-defined]
    assert page.locator("#compare-note-a").inner_text().strip() == ""  # type: ignore[attr-defined]
    assert image_src(page, "compare-recon-b") == recon_b  # side B keeps what it shows
    screenshot(page, SHOTS / "switched-a.png")
    assert errors(page) == []
