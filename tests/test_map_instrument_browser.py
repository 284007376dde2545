"""The map as an instrument in headless Chromium: a search rings its matches (and they stay ringed
when the map is redrawn with its density and clusters), a click lists the point's nearest
neighbours, a box drawn in plotly's select mode summarizes the points inside it, the mean of the
selection decodes, a double click clears it, and the decoded manifold tab draws its grid; with no
page errors.

Screenshots (1280 x 720) land in test-artifacts/screenshots/. Needs /usr/bin/chromium and
Playwright's Python package (never `playwright install`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import CHROMIUM_ARGS, click_until, screenshot, serving

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
MAP = "document.querySelector('#latent-map .js-plotly-plot')"

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def url(tiny_checkpoint_dir: Path) -> Iterator[str]:
    from vaescope.explorer.ui.app import build_app

    demo = build_app(tiny_checkpoint_dir, device="cpu", default_checkpoint="tiny-vae.safetensors")
    with serving(demo) as url:
        yield url


def ring_length(page: object, name: str) -> int:
    return page.evaluate(f"(n) => {{ const t = {MAP}._fullData.find(t => t.name === n); return t ? t._length : -1; }}",
                         name)  # type: ignore[attr-defined]


def point_position(page: object, trace: int, point: int) -> dict:
    """Page coordinates and customdata of one plotted point of the 2D map."""
    return page.evaluate(f"""([t, i]) => {{
        const gd = {MAP}, fd = gd._fullData[t], L = gd._fullLayout;
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {{x: r.left + L.xaxis.c2p(fd.x[i]), y: r.top + L.yaxis.c2p(fd.y[i]), index: fd.customdata[i]}};
    }}""", [trace, point])  # type: ignore[attr-defined]


def test_search_neighbours_selection_structure_and_manifold(url: str) -> None:
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function(f"() => {{ const gd = {MAP}; return gd && gd._fullData && gd.__vaescopeBound"
                                   " && gd._fullData.some(t => t.name === 'matches'); }", timeout=90_000)
            run(page)
        finally:
            browser.close()
    assert errors == [], errors


def run(page) -> None:  # noqa: ANN001 - a Playwright page
    # -- a search: the matches are ringed by the page script, without a new map --
    page.locator("#map-search textarea, #map-search input").first.fill("label:3")
    page.locator("#map-search-btn").click()
    page.wait_for_function("() => document.querySelector('#map-search-note').innerText.includes('points match')",
                           timeout=30_000)
    note = page.locator("#map-search-note").inner_text()
    matches = int(note.split(" points match")[0].replace(",", ""))
    page.wait_for_function(f"(n) => {MAP}._fullData.find(t => t.name === 'matches')._length === n", arg=matches,
                           timeout=30_000)
    assert matches > 0
    page.locator("#latent-map").scroll_into_view_if_needed()
    screenshot(page, SHOTS / "31-map-search.png")

    # -- a click: its nearest neighbours, as a strip and as rings --
    click_until(page, lambda: point_position(page, trace=1, point=0),
                # the answer's own words: the hint before any click also says "nearest neighbours"
                lambda q: "() => document.querySelector('#neighbours-note').innerText.includes('nearest neighbours of')"
                          " && document.querySelector('#neighbours-strip img') !== null")
    page.wait_for_function(f"() => {MAP}._fullData.find(t => t.name === 'neighbours')._length === 8", timeout=30_000)
    page.locator("#neighbours-strip").scroll_into_view_if_needed()
    screenshot(page, SHOTS / "32-map-neighbours.png")

    # -- a box in plotly's select mode: the selection's summary --
    page.evaluate(f"() => window.Plotly.relayout({MAP}, {{dragmode: 'select'}})")
    page.locator("#latent-map").scroll_into_view_if_needed()
    box = page.locator("#latent-map .nsewdrag").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + box["width"] * 0.5 * k / 10, y0 + box["height"] * 0.5 * k / 10)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#selection-summary').innerText.includes('selected on the map')",
                           timeout=30_000)
    sent = json.loads(page.evaluate("() => window.__selected"))["indices"]
    summary = page.locator("#selection-summary").inner_text()
    assert sent and summary.startswith(f"{len(sent):,} point"), (summary, len(sent))
    page.locator("#selection-decode-btn").click()
    page.wait_for_selector("#selection-mean img", timeout=30_000)
    page.locator("#selection-summary").scroll_into_view_if_needed()
    screenshot(page, SHOTS / "33-map-selection.png")
    page.locator("#latent-map").scroll_into_view_if_needed()  # a double click in select mode clears it
    box = page.locator("#latent-map .nsewdrag").bounding_box()
    page.mouse.dblclick(box["x"] + 8, box["y"] + box["height"] - 8)
    page.wait_for_function("() => document.querySelector('#selection-summary').innerText.startsWith('Selection.')",
                           timeout=30_000)
    page.evaluate(f"() => window.Plotly.relayout({MAP}, {{dragmode: 'zoom'}})")

    # -- density and clusters: a redraw, and the search's matches are still ringed --
    page.locator("#map-structure input").check()
    page.wait_for_function(f"() => {MAP}._fullData.some(t => t.name === 'density')", timeout=60_000)
    page.wait_for_function(f"(n) => {MAP}._fullData.find(t => t.name === 'matches')._length === n", arg=matches,
                           timeout=30_000)
    assert page.evaluate(f"() => ({MAP}._fullLayout.annotations || []).length") > 0
    page.locator("#latent-map").scroll_into_view_if_needed()
    screenshot(page, SHOTS / "34-map-structure.png")

    # -- the decoded manifold --
    page.get_by_role("tab", name="Manifold").click()
    page.locator("#manifold-btn").click()
    page.wait_for_selector("#manifold-grid img", timeout=30_000)
    page.locator("#manifold-grid").scroll_into_view_if_needed()
    screenshot(page, SHOTS / "35-manifold.png")
