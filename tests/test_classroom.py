"""The explorer as a teacher uses it on a projector, in Chromium: whatever the page shows belongs to
the chosen model (switching in every tab), the presenter layout fits 1280x720, the "you are here"
marker follows a slider, mixture components are named by their classes, a hovered point shows
its image; and screenshots of every panel at 1280x720 and 1920x1080, light and dark.

Screenshots land in test-artifacts/classroom/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import click_until, image_src, serving, wait_src, watch

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "classroom"
SHIPPED = ROOT / "assets" / "checkpoints"
FASHION = "fashion-mnist-vae.safetensors"
DIGITS = ["tiny-vae.safetensors", "tiny-cvae.safetensors", "tiny-gmvae.safetensors", "tiny-ae.safetensors"]
TABS = ["Traversal grid", "Interpolation", "Class sampling", "Diagnostics", "Denoising", "Anomalies"]
MAP = "document.querySelector('#latent-map .js-plotly-plot')"
# the map's title (a message figure has none)
MAP_TITLE = (f"(({MAP} && {MAP}.layout && {MAP}.layout.title) ? "
             f"String({MAP}.layout.title.text || {MAP}.layout.title) : '')")

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)


def fashion_available() -> bool:
    from vaescope.training.data import fashion_mnist_system_dir

    return (fashion_mnist_system_dir() / "t10k-images-idx3-ubyte.gz").exists()


@pytest.fixture(scope="module")
def url(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from vaescope.explorer.ui.app import build_app

    root = tmp_path_factory.mktemp("classroom")
    for name in DIGITS:
        shutil.copy(tiny_checkpoint_dir / name, root / name)
    if fashion_available():
        shutil.copy(SHIPPED / "fashion-mnist" / "vae.safetensors", root / FASHION)
    demo = build_app(root, device="cpu", default_checkpoint="tiny-vae.safetensors")
    with serving(demo) as served:
        yield served


def open_page(browser: object, url: str, width: int = 1280, height: int = 720, query: str = "") -> object:
    """A page at width x height on ``url + query`` once its map is drawn and bound; its problems
    (page errors, console errors, error toasts) are watched: ``page.problems.check()``."""
    page = browser.new_page(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    watch(page)
    page.goto(url + query)
    page.wait_for_function(f"() => {{ const gd = {MAP}; return gd && gd.__vaescopeBound && gd._fullData &&"
                           " gd._fullData.some(t => t.customdata); }", timeout=90_000)
    return page


def text(page: object, selector: str) -> str:
    """The element's text, or '' when the page shows no such element (an empty Markdown)."""
    return page.evaluate("(s) => { const e = document.querySelector(s); return e ? e.innerText : ''; }",  # type: ignore[attr-defined]
                         selector)


def choose_model(page: object, name: str) -> None:
    page.locator("#checkpoint-dropdown input").click()  # type: ignore[attr-defined]
    page.get_by_role("option", name=name).click()  # type: ignore[attr-defined]
    short = name.removesuffix(".safetensors")
    page.wait_for_function(  # type: ignore[attr-defined]
        f"() => document.querySelector('#model-card').innerText.includes('{name}') && "
        f"{MAP_TITLE}.startsWith('{short} ·')", timeout=120_000)


def act_in_tab(page: object, tab: str) -> None:
    """Use the tab, so that it shows output to go stale."""
    page.get_by_role("tab", name=tab).click()  # type: ignore[attr-defined]
    if tab == "Traversal grid":
        old = image_src(page, "traversal-grid")
        page.locator("#traversal-grid-btn").click()  # type: ignore[attr-defined]
        wait_src(page, "traversal-grid", old, timeout=30)
    elif tab == "Interpolation":
        old = image_src(page, "interp-strip")
        page.locator("#interp-btn").click()  # type: ignore[attr-defined]
        wait_src(page, "interp-strip", old, timeout=30)
    elif tab == "Class sampling":
        old = image_src(page, "sample-grid")
        page.locator("#sample-btn").click()  # type: ignore[attr-defined]
        wait_src(page, "sample-grid", old, timeout=30)
    elif tab == "Denoising":
        old = image_src(page, "denoise-rebuilt")
        page.locator("#denoise-index-btn").click()  # type: ignore[attr-defined]
        wait_src(page, "denoise-rebuilt", old, timeout=30)
    elif tab == "Anomalies":
        page.locator("#anomaly-score-btn").click()  # type: ignore[attr-defined]
        page.wait_for_selector("#anomaly-histogram .js-plotly-plot", timeout=60_000)  # type: ignore[attr-defined]
    else:
        page.wait_for_selector("#diag-kl .js-plotly-plot", timeout=30_000)  # type: ignore[attr-defined]


def label(page: object, elem_id: str) -> str:
    """The label Gradio shows for a component (its data-testid block-label), or ''."""
    return page.evaluate(  # type: ignore[attr-defined]
        "(id) => { const l = document.querySelector(`#${id} [data-testid=block-label]`); return l ? l.innerText : ''; }",
        elem_id)


def assert_everything_names(page: object, short: str, other_names: list[str]) -> None:
    """Every output the page shows, in every tab, is empty or belongs to model ``short``."""
    assert text(page, "#model-card").startswith(short)
    assert text(page, "#traversal-info").startswith(short)
    assert page.evaluate(f"() => {MAP_TITLE}").startswith(f"{short} ·")  # type: ignore[attr-defined]
    picked = text(page, "#picked-info")
    assert picked.startswith("Click a point") or picked.startswith(short)
    for tab in TABS:
        page.get_by_role("tab", name=tab).click()  # type: ignore[attr-defined]
        time.sleep(0.3)
        shown = {
            "Traversal grid": [("traversal-grid", label(page, "traversal-grid") if image_src(page, "traversal-grid") else "")],
            "Interpolation": [("interp-strip", label(page, "interp-strip") if image_src(page, "interp-strip") else ""),
                              ("interp-info", text(page, "#interp-info"))],
            "Class sampling": [("sample-grid", label(page, "sample-grid") if image_src(page, "sample-grid") else ""),
                               ("sample-note", text(page, "#sample-note"))],
            "Denoising": [("denoise-note", text(page, "#denoise-note"))],
            "Anomalies": [("anomaly-note", text(page, "#anomaly-note")),
                          ("anomaly-unusual", label(page, "anomaly-unusual") if image_src(page, "anomaly-unusual") else "")],
            "Diagnostics": [("diag-note", text(page, "#diag-note")),
                            ("diag-kl", page.evaluate("() => { const gd = document.querySelector('#diag-kl .js-plotly-plot');"  # type: ignore[attr-defined]
                                                      " const t = gd && gd.layout && gd.layout.title;"
                                                      " return t ? String(t.text || t) : ''; }")),
                            ("diag-prior", label(page, "diag-prior"))],
        }[tab]
        for where, words in shown:
            if words.strip() and not words.startswith("Click"):
                named = set(re.findall(r"[\w./-]+", words)) & set(other_names)
                assert named == {short}, (tab, where, words)  # this model's name, and no other


def plots_fit_their_boxes(page: object) -> None:
    """Every plot on the page is no wider than its box (a plot drawn while its tab was hidden used
    to overflow, cutting off its legend)."""
    overflow = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd =>
        gd.offsetParent !== null && gd.querySelector('.main-svg') &&
        gd.querySelector('.main-svg').getBoundingClientRect().width >
            gd.parentElement.getBoundingClientRect().width + 2).map(gd => gd.closest('[id]').id)""")
    assert not overflow, overflow


def test_every_visible_output_belongs_to_the_chosen_model_in_every_tab_order(browser: object, url: str) -> None:
    """Switch among the four digits models and a Fashion-MNIST one, each time from a different tab
    that has just shown output; then every tab shows only the new model's results (or nothing)."""
    page = open_page(browser, url)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))  # type: ignore[attr-defined]
    try:
        models = DIGITS + ([FASHION] if fashion_available() else [])
        shorts = [m.removesuffix(".safetensors") for m in models]
        order = models[1:] + models[:1] + models[2:3]
        for step, name in enumerate(order):
            act_in_tab(page, TABS[step % len(TABS)])  # output that could go stale, in this tab
            choose_model(page, name)
            assert_everything_names(page, name.removesuffix(".safetensors"), shorts)
            act_in_tab(page, TABS[(step + 1) % len(TABS)])  # and the new model's own output, named
            assert_everything_names(page, name.removesuffix(".safetensors"), shorts)
            page.get_by_role("tab", name="Diagnostics").click()
            time.sleep(0.5)
            plots_fit_their_boxes(page)
        assert not [m for m in console if "Too many active WebGL contexts" in m]
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()


VIEWS = ["map", "traversal", "interpolation", "class", "diagnostics", "denoising", "anomalies", "manifold"]
# Measured on the page as it shows: whether it scrolls or is cut off at the side, the smallest text
# the page shows in the current view (every visible text node's element), and the images that are
# clipped by their boxes.
SCREEN_FACTS = """() => {
  const doc = document.scrollingElement;
  const sizes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const e = node.parentElement;
    if (!node.textContent.trim() || !e || e.offsetParent === null || e.closest('.js-plotly-plot, svg, script, style'))
      continue;
    const r = e.getBoundingClientRect();
    if (r.width < 1 || r.height < 1 || r.bottom < 0 || r.top > innerHeight) continue;
    sizes.push([parseFloat(getComputedStyle(e).fontSize), node.textContent.trim().slice(0, 40)]);
  }
  sizes.sort((a, b) => a[0] - b[0]);
  const clipped = Array.from(document.querySelectorAll('.pixelated')).filter((b) => b.offsetParent !== null)
    .filter((b) => b.scrollHeight > b.clientHeight + 1 || b.scrollWidth > b.clientWidth + 1).map((b) => b.id);
  return {scroll: doc.scrollHeight, window: innerHeight, wide: doc.scrollWidth > innerWidth + 1,
          smallest: sizes.slice(0, 3), clipped: clipped};
}"""


def assert_fits(page: object, where: str) -> None:
    """The screen fits 1280x720 without scrolling, its text is 20 px or more, no image box clips."""
    with contextlib.suppress(Exception):  # the page fits its plots once they are drawn (static/page.js)
        page.wait_for_function("() => document.scrollingElement.scrollHeight <= innerHeight + 1",  # type: ignore[attr-defined]
                               timeout=15_000)
    facts = page.evaluate(SCREEN_FACTS)  # type: ignore[attr-defined]
    assert facts["scroll"] <= facts["window"] + 1 and not facts["wide"], (where, facts)
    assert not facts["smallest"] or facts["smallest"][0][0] >= 20, (where, facts["smallest"])
    assert not facts["clipped"], (where, facts["clipped"])


def test_the_presenter_layout_fits_a_projector(browser: object, url: str) -> None:
    """At 1280x720 with ?present=1 the Explore page opens on the map and traversal: the map, the
    decoded image (256 px or more), the first slider, the picked images and both captions on one
    screen, text 20 px or more, nothing scrolls; every other view and tab fits the same way."""
    page = open_page(browser, url, query="?present=1")
    try:
        page.wait_for_function("() => document.body.classList.contains('present')", timeout=10_000)
        page.wait_for_function("() => document.querySelector('#tab-map-button').getAttribute('aria-selected') === 'true'",
                               timeout=10_000)
        time.sleep(1)
        assert_fits(page, "map")
        for selector in ("#traversal-image img", "#dim-slider-0", "#latent-map .nsewdrag", "#checkpoint-dropdown",
                         "#picked-original", "#map-caption", "#traversal-caption", "#traversal-reset"):
            box = page.locator(selector).first.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 720 and box["x"] + box["width"] <= 1280, \
                (selector, box)
        image = page.locator("#traversal-image img").bounding_box()
        assert image["width"] >= 256 and image["height"] >= 256  # large, for the back of the room
        page.screenshot(path=str(SHOTS / "presenter-1280x720.png"))
        for view in VIEWS[1:]:
            page.locator(f"#tab-{view}-button").click()
            time.sleep(1.0)
            assert_fits(page, view)
            page.screenshot(path=str(SHOTS / f"presenter-{view}-1280x720.png"))
        for tab in ("compare", "lessons"):
            page.locator(f"#tab-{tab}-button").click()
            time.sleep(3.0 if tab == "compare" else 1.0)
            assert_fits(page, tab)
            page.screenshot(path=str(SHOTS / f"presenter-{tab}-1280x720.png"))
        # the toggle takes it back, to the page's other layout and its first panel
        page.locator("#tab-explore-button").click()
        page.locator("#present-toggle input").click()
        page.wait_for_function("() => !document.body.classList.contains('present')", timeout=10_000)
        page.wait_for_function("() => !new URLSearchParams(location.search).get('present')", timeout=10_000)
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()


PICKED = "((document.querySelector('#picked-info') || {}).textContent || '')"  # what the pick shows, in words
# the page coordinates and image index of the map's point farthest (in pixels) from any other, so a
# click there lands on it whatever the tiny models' maps look like
ISOLATED_POINT = f"""() => {{
  const gd = {MAP}, L = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect(), pts = [];
  gd._fullData.forEach((fd) => {{ if (!fd.customdata) return;
    for (let i = 0; i < fd._length; i++)
      pts.push({{x: r.left + L.xaxis.c2p(fd.x[i]), y: r.top + L.yaxis.c2p(fd.y[i]), index: fd.customdata[i]}}); }});
  let best = null, far = -1;
  for (const a of pts) {{
    if (a.x < r.left + 20 || a.x > r.right - 20 || a.y < r.top + 20 || a.y > r.bottom - 20) continue;
    let near = Infinity;
    for (const b of pts) if (b !== a) near = Math.min(near, Math.hypot(a.x - b.x, a.y - b.y));
    if (near > far) {{ far = near; best = a; }}
  }}
  return best;
}}"""


def query(page: object) -> dict:
    return page.evaluate("() => Object.fromEntries(new URLSearchParams(location.search))")  # type: ignore[attr-defined]


def test_the_address_keeps_the_view_and_a_copied_link_opens_it_again(browser: object, url: str) -> None:
    """The address follows the model, the view, the presenter layout, the colouring and the picked
    point; a reload restores them, and the "Copy link" button's link opens the same view in another
    page."""
    page = open_page(browser, url, query="?present=1")
    try:
        choose_model(page, "tiny-gmvae.safetensors")
        page.locator("#map-color").click()
        page.get_by_role("option", name="mixture component").click()
        page.wait_for_function(f"() => {MAP}._fullData.some(t => t.customdata && t.name.includes('≈'))", timeout=30_000)
        spot = click_until(page, lambda: page.evaluate(ISOLATED_POINT),
                           lambda q: f"() => {PICKED}.includes('#{q['index']}')")
        page.wait_for_function("(i) => new URLSearchParams(location.search).get('point') === String(i)",
                               arg=spot["index"], timeout=10_000)
        kept = query(page)
        assert kept["model"] == "tiny-gmvae.safetensors" and kept["present"] == "1" and kept["tab"] == "explore"
        assert kept["view"] == "map" and kept["colour"] == "mixture component" and kept["projection"] == "pca"
        page.locator("#copy-link-btn").click()
        link = page.evaluate("() => window.__vaescopeLink")
        assert link == page.url

        def same_view(other: object) -> None:
            other.wait_for_function(  # type: ignore[attr-defined]
                f"(i) => {PICKED}.includes('#' + i)", arg=spot["index"],
                timeout=60_000)
            assert other.locator("#checkpoint-dropdown input").input_value() == "tiny-gmvae.safetensors"  # type: ignore[attr-defined]
            assert other.evaluate("() => document.body.classList.contains('present')")  # type: ignore[attr-defined]
            other.wait_for_function(f"() => {MAP}._fullData.some(t => t.customdata && t.name.includes('≈'))",  # type: ignore[attr-defined]
                                    timeout=30_000)
            assert other.locator("#tab-map-button").get_attribute("aria-selected") == "true"  # type: ignore[attr-defined]

        page.problems.reload()
        same_view(page)
        page.problems.check()
        elsewhere = browser.new_page(viewport={"width": 1280, "height": 720})  # type: ignore[attr-defined]
        watch(elsewhere)
        try:
            elsewhere.goto(link)
            same_view(elsewhere)
            elsewhere.problems.check()
        finally:
            elsewhere.close()
        # a link to another tab and view opens there
        page.goto(url + "?tab=explore&view=interpolation&model=tiny-ae.safetensors&projection=t-sne")
        page.wait_for_function("() => !!document.querySelector('#tab-interpolation-button[aria-selected=true]')",
                               timeout=30_000)
        page.wait_for_function(f"() => {MAP_TITLE}.startsWith('tiny-ae · t-SNE')", timeout=120_000)
        page.problems.check()
    finally:
        page.close()


def marker_xy(page: object) -> list[float]:
    return page.evaluate(f"() => {{ const t = {MAP}.data.find(d => d.name === 'you are here');"  # type: ignore[attr-defined]
                         " return t && t.x && t.x.length ? [t.x[t.x.length - 1], t.y[t.y.length - 1]] : []; }")


def test_the_marker_follows_a_slider_and_hover_shows_the_image(browser: object, url: str) -> None:
    page = open_page(browser, url)
    try:
        choose_model(page, "tiny-vae.safetensors")
        page.wait_for_function(f"() => {MAP}.data.some(d => d.name === 'you are here' && d.x.length === 1)",
                               timeout=20_000)
        start = marker_xy(page)
        slider = page.locator("#dim-slider-0 input[type=range]")
        slider.scroll_into_view_if_needed()
        slider.focus()
        for _ in range(25):
            page.keyboard.press("ArrowRight")
            time.sleep(0.03)
        page.wait_for_function(f"() => {{ const t = {MAP}.data.find(d => d.name === 'trail'); return t && t.x.length > 3; }}",
                               timeout=20_000)
        moved = marker_xy(page)
        assert moved and moved != start, (start, moved)
        # a hovered point shows its image beside the pointer
        page.locator("#latent-map").scroll_into_view_if_needed()
        point = page.evaluate(f"""() => {{ const gd = {MAP}; const t = gd._fullData.findIndex(d => d.customdata);
            const fd = gd._fullData[t], L = gd._fullLayout; const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return {{x: r.left + L.xaxis.c2p(fd.x[0]), y: r.top + L.yaxis.c2p(fd.y[0])}}; }}""")
        page.mouse.move(point["x"], point["y"])
        page.wait_for_function("() => { const t = document.querySelector('#hover-thumb');"
                               " return t && t.classList.contains('shown') && t.querySelector('img'); }", timeout=20_000)
        page.screenshot(path=str(SHOTS / "hover-thumbnail.png"))
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()


def test_mixture_components_are_named_by_their_classes(browser: object, url: str) -> None:
    page = open_page(browser, url)
    try:
        choose_model(page, "tiny-gmvae.safetensors")
        page.locator("#map-color").click()
        page.get_by_role("option", name="mixture component").click()
        page.wait_for_function(f"() => {MAP}._fullData.some(t => t.customdata && t.name.includes('≈'))",
                               timeout=30_000)
        names = page.evaluate(f"() => {MAP}._fullData.filter(t => t.customdata).map(t => t.name)")
        assert all(n.startswith("component ") for n in names) and any(" ≈ " in n for n in names), names
        colours = page.evaluate(f"() => {MAP}._fullData.filter(t => t.customdata).map(t => t.marker.color)")
        page.locator("#map-color").click()
        page.get_by_role("option", name="class", exact=True).click()
        page.wait_for_function(f"() => {MAP}._fullData.some(t => t.customdata && t.name === '3')", timeout=30_000)
        class_colours = page.evaluate(f"() => {MAP}._fullData.filter(t => t.customdata).map(t => t.marker.color)")
        assert not set(colours) & set(class_colours)  # components never borrow a class's colour
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()


PANELS = {"map-and-traversal": None, "traversal-grid": "Traversal grid", "interpolation": "Interpolation",
          "class-sampling": "Class sampling", "diagnostics": "Diagnostics", "denoising": "Denoising",
          "anomalies": "Anomalies"}


@pytest.mark.parametrize("width, height", [(1280, 720), (1920, 1080)])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_every_panel(browser: object, url: str, width: int, height: int, theme: str) -> None:
    """Evidence for a person to look at (test-artifacts/classroom/): each panel after use."""
    page = open_page(browser, url, width, height, query="?__theme=dark" if theme == "dark" else "")
    try:
        choose_model(page, "tiny-gmvae.safetensors")
        for name, tab in PANELS.items():
            if tab is not None:
                act_in_tab(page, tab)
                page.locator("#main-tabs").scroll_into_view_if_needed()
                time.sleep(0.6)
            path = SHOTS / f"{name}-{width}x{height}-{theme}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
        if theme == "dark":  # the plots follow the page into dark mode
            background = page.evaluate("() => { const gd = document.querySelector('#diag-kl .js-plotly-plot');"
                                       " return gd && gd._fullLayout ? gd._fullLayout.plot_bgcolor : ''; }")
            assert background == "#1f2430"
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()


def test_the_denoising_and_anomaly_views_in_the_browser(browser: object, url: str) -> None:
    page = open_page(browser, url)
    try:
        choose_model(page, "tiny-vae.safetensors")
        act_in_tab(page, "Denoising")
        assert text(page, "#denoise-note").startswith("tiny-vae · test image #0")
        before = image_src(page, "denoise-corrupted")
        level = page.locator("#denoise-level input[type=range]")
        level.focus()
        for _ in range(6):
            page.keyboard.press("ArrowRight")  # more noise: a new corrupted image and a new verdict
        wait_src(page, "denoise-corrupted", before, timeout=30)
        page.wait_for_function("() => document.querySelector('#denoise-note').innerText.includes('level 0.6')",
                               timeout=30_000)
        page.locator("#denoise-curve-btn").click()
        page.wait_for_selector("#denoise-curve .js-plotly-plot", timeout=60_000)
        page.screenshot(path=str(SHOTS / "denoising-view.png"), full_page=True)
        act_in_tab(page, "Anomalies")
        wait_src(page, "anomaly-unusual", "", timeout=30)
        page.locator("#anomaly-compare-btn").click()
        page.wait_for_function("() => document.querySelector('#anomaly-compare-note').innerText.includes('AUROC')",
                               timeout=60_000)
        page.screenshot(path=str(SHOTS / "anomaly-view.png"), full_page=True)
        page.problems.check()  # no page error, console error or error toast
    finally:
        page.close()
