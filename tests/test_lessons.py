"""The lessons on the shipped models: every claim a lesson's text makes is checked on the models it
loads (in-process), and every lesson is opened from its link in Chromium, where the banner must
show the same measured words and the views the lesson sets up. Screenshots of every lesson at
1280x720 land in test-artifacts/lessons/ (git-ignored) for a person to look at.

The shipped MNIST checkpoints carry 2,000 test images each, so these run on a machine without
MNIST (CI has none): the explorer maps the embedded sample.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vaescope.explorer.core import lessons, measures
from vaescope.explorer.core.compare import posterior_spread
from vaescope.explorer.core.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "checkpoints"
SHOTS = ROOT / "test-artifacts" / "lessons"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def shelf() -> ModelStore:
    return ModelStore(SHIPPED, torch.device("cpu"), max_models=32)


def entries(shelf: ModelStore, name: str) -> list:
    return [shelf.open_name(m) for m in lessons.find(name).models]


@pytest.mark.slow
def test_every_lesson_has_its_shipped_models(shelf: ModelStore) -> None:
    names = shelf.names()
    for lesson in lessons.LESSONS:
        assert lessons.missing_models(lesson, names) == [], lesson.name
    for name in names:  # every shipped checkpoint carries its sample: a map on any machine
        assert shelf.open_name(name).has_points, name


def test_ae_vs_vae(shelf: ModelStore) -> None:
    ae, vae = entries(shelf, "ae-vs-vae")
    probe = measures.pixel_probe(vae)
    a, v = measures.judge_prior_samples(ae, probe), measures.judge_prior_samples(vae, probe)
    assert probe.accuracy > 0.85 and probe.sure_share > v.sure_share  # real digits first
    assert v.sure_share > a.sure_share, (v, a)  # the VAE's samples look more like real digits
    assert v.classes_seen == 10 and v.top_share < 0.3  # ... of every kind
    assert a.classes_seen <= 7 and a.top_share > 0.5  # the AE's scribbles are likened to one loose shape
    # where the draws land: the VAE keeps its codes inside the prior's 95% ball, the AE outside it
    radius, inside_ae, norm_ae = measures.prior_ball(ae)
    _, inside_vae, _ = measures.prior_ball(vae)
    assert inside_ae < 0.05 < 0.9 < inside_vae and norm_ae > radius
    text = lessons.explain_ae_vae([ae, vae], shelf)
    assert f"within {radius:.1f} of the origin" in text and f"{norm_ae:.1f} from the origin" in text
    assert f"{100 * inside_vae:.1f}%" in text
    assert f"{100 * a.top_share:.0f}% of them for the same one" in text


def test_interpolation(shelf: ModelStore) -> None:
    ae, vae = entries(shelf, "interpolation")
    start, end = measures.clearest_walk(ae, vae)
    assert measures.path_gap(ae, start, end) > measures.path_gap(vae, start, end)
    # the chart's curves are the text's walk: their peaks are the numbers the text says, and the
    # strips walk the same steps
    lesson = lessons.find("interpolation")
    text, chart = lesson.explain([ae, vae], shelf), lesson.chart([ae, vae], shelf)
    peaks = [max(trace.y) for trace in chart.data]
    assert f"#{start} → #{end}" in text and f"{peaks[0]:.1f} against {peaks[1]:.1f}" in text
    assert all(len(trace.y) == measures.PATH_STEPS for trace in chart.data)
    from vaescope.explorer.core.compare import interpolation_rows

    assert interpolation_rows(ae, start, end).columns == measures.PATH_STEPS
    typical = measures.typical_path_gap(ae), measures.typical_path_gap(vae)
    assert f"{typical[0]:.1f} in the AE and {typical[1]:.1f} in" in text


def test_beta(shelf: ModelStore) -> None:
    sweep = lessons._sweep(entries(shelf, "beta"), shelf)
    betas = [lessons._beta(e) for e in sweep]
    assert len(sweep) >= 4 and betas == sorted(betas)
    rate = [measures.kl_total(e) for e in sweep]
    distortion = [float(e.latents.recon_error.mean()) for e in sweep]
    assert all(a > b for a, b in zip(rate, rate[1:], strict=False)), rate  # a larger beta: less information
    assert all(a < b for a, b in zip(distortion, distortion[1:], strict=False)), distortion  # worse images
    for e in sweep:  # the MIG the lesson shows is the one stored at training time, to rounding
        stored = e.metrics.get("mig")
        assert stored is not None and abs(measures.factor_mig(e)[0] - stored) < 0.02, e.name


def test_collapse(shelf: ModelStore) -> None:
    cold, warm = entries(shelf, "collapse")
    dims = cold.description.latent_dim
    assert measures.active_units(cold) <= dims // 2 < measures.active_units(warm)  # most codes die without warm-up
    assert measures.active_units(warm) >= measures.active_units(cold) + 4
    assert cold.meta.train_config["warmup_epochs"] == 0 < warm.meta.train_config["warmup_epochs"]
    same = {k: v for k, v in cold.meta.train_config.items() if k not in ("warmup_epochs", "extra")}
    assert same == {k: v for k, v in warm.meta.train_config.items() if k not in ("warmup_epochs", "extra")}
    assert cold.meta.model_config == warm.meta.model_config
    # the text's count of used dimensions is the KL chart's, and it says the β both models use
    from vaescope.explorer.core.compare import answer

    text = lessons.explain_collapse([cold, warm], shelf)
    for entry in (cold, warm):
        title = answer("kl", entry, [0]).figure.layout.title.text
        used = int(re.search(r"\((\d+) of \d+ used\)", title).group(1))
        assert used == measures.used_units(entry) and f"keeps {used}" in text, (title, text)
    assert f"β = {lessons._beta(cold):g}" in text and lessons._beta(cold) == lessons._beta(warm)


def test_mixture(shelf: ModelStore) -> None:
    _, gmvae = entries(shelf, "mixture")
    assert gmvae.metrics["cluster_accuracy"] > 0.5
    text = lessons.explain_mixture(entries(shelf, "mixture"), shelf)
    assert f"{100 * gmvae.metrics['cluster_accuracy']:.0f}%" in text


def test_reparameterisation(shelf: ModelStore) -> None:
    low, high = entries(shelf, "reparameterisation")
    assert lessons._beta(low) < lessons._beta(high) and posterior_spread(low) < posterior_spread(high)
    # one set of σ figures: the text quotes the pictured image's σ, as the posterior panel's note does
    from vaescope.explorer.core.compare import answer

    text = lessons.explain_reparameterisation([low, high], shelf)
    for entry in (low, high):
        note = answer("posterior", entry, [0]).rows.note
        sigma = re.search(r"mean σ over the used dimensions (\d\.\d\d)", note).group(1)
        assert f"mean σ {sigma}" in text, (note, text)
    assert posterior_spread(low, 0) < posterior_spread(high, 0)


def test_forming(shelf: ModelStore) -> None:
    for entry in entries(shelf, "forming"):
        record = lessons._record(entry)
        separation = measures.frame_separation(record.codes, record.labels)
        assert len(separation) == record.codes.shape[0] >= 5
        assert separation[-1] > separation[0] + 0.2  # the classes pull apart during training


def test_linear_pca(shelf: ModelStore) -> None:
    linear, ae = entries(shelf, "linear-pca")
    kept, best = measures.variance_kept(linear), measures.pca_variance_kept(linear)
    assert best - 0.03 < kept < best  # as much as PCA, to a few points, and never more on the same images
    assert measures.variance_kept(ae) > kept  # the nonlinear AE of the same size keeps more


def test_denoising(shelf: ModelStore) -> None:
    dae, ae = entries(shelf, "denoising")
    from vaescope.explorer.core.compare import DENOISE

    a, b = measures.denoise_score(dae, *DENOISE), measures.denoise_score(ae, *DENOISE)
    assert a.images == b.images == len(dae.latents) and len(a.noisy) == measures.DENOISE_DRAWS
    assert np.allclose(a.noisy, b.noisy)  # the same noise for both models
    assert a.rebuilt.max() < b.rebuilt.min() and b.rebuilt.max() < a.noisy.min()  # apart, draw by draw
    text = lessons.explain_denoising([dae, ae], shelf)
    assert f"Over all {a.images} test images and {len(a.noisy)} noise draws" in text
    assert f"{a.rebuilt.mean():.4f} ± {a.rebuilt.std(ddof=1):.4f}" in text
    assert f"{b.rebuilt.mean():.4f} ± {b.rebuilt.std(ddof=1):.4f}" in text


def test_likelihood(shelf: ModelStore) -> None:
    """Nalisnick et al. 2019 on the shipped models: the Fashion-MNIST VAE's −ELBO finds MNIST *more*
    likely than its own test images, its reconstruction error and the input-complexity correction
    tell them apart; on the MNIST VAE the correction fails. The text and the chart say the same
    numbers."""
    fashion, mnist = entries(shelf, "likelihood")
    fa, ma = measures.ood_aurocs(fashion, mnist), measures.ood_aurocs(mnist, fashion)
    assert fa["elbo"] < 0.5 < 0.95 < fa["recon"] and fa["complexity"] > 0.95
    assert ma["elbo"] > 0.99 and ma["complexity"] < 0.5
    lesson = lessons.find("likelihood")
    text = lesson.explain([fashion, mnist], shelf)
    shown = {round(v, 3) for trace in lesson.chart([fashion, mnist], shelf).data for v in trace.y}
    said = {float(x) for x in re.findall(r"\b[01]\.\d{3}\b", text)}
    assert said <= shown and len(said) == 5 and len(shown) == 6, (said, shown)  # every number said is charted
    assert "*more* likely" in text


def test_anomaly(shelf: ModelStore) -> None:
    text = lessons.explain_anomaly(entries(shelf, "anomaly"), shelf)
    auroc = float(re.search(r"AUROC of ([0-9.]+)", text).group(1))
    assert auroc > 0.8


# -- in Chromium -----------------------------------------------------------------------------------
def numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", text)


@pytest.fixture(scope="module")
def site(shelf: ModelStore) -> Iterator[tuple[object, str]]:
    """(Chromium, the URL of the explorer over the shipped models), for the module."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium")
    from serving import CHROMIUM_ARGS, serving

    from vaescope.explorer.ui.app import build_app

    SHOTS.mkdir(parents=True, exist_ok=True)
    demo = build_app(store=shelf)
    with serving(demo) as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser, url
        finally:
            browser.close()


@pytest.fixture
def page(site: tuple[object, str]) -> Iterator[object]:
    """A fresh 1280x720 page; the test fails if it reported a page error, a console error or an
    error toast (serving.PageProblems)."""
    from serving import watched_page

    browser, url = site
    with watched_page(browser) as tab:
        tab.url_base = url  # type: ignore[attr-defined]
        yield tab


def wait_words(page: object, lesson: lessons.Lesson) -> str:
    """The lesson's banner once it has its measured words (not "Loading"); its text."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "(title) => { const b = document.querySelector('#lesson-banner');"
        " return b && b.innerText.includes(title) && !b.innerText.includes('Loading'); }",
        arg=lesson.title, timeout=180_000)
    return page.locator("#lesson-banner").inner_text()  # type: ignore[attr-defined]


STAGE_SHOWN = """(want) => {
  const drawn = (id) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
                          return !!(gd && gd._fullData && gd._fullData.length); };
  return want.plots.every(drawn) && document.querySelectorAll('.stage-picture img').length === want.pictures
    && Array.from(document.querySelectorAll('.stage-picture img')).every((img) => img.complete && img.naturalWidth > 0);
}"""


def stage_panes(lesson: lessons.Lesson) -> dict:
    """What the lesson's own screen shows (``lesson.stage``): its plots' ids and its pictures' count."""
    sides = "ab"[:len(lesson.models)]
    plots = [f"stage-map-{s}" for s in sides if lesson.stage.maps]
    plots += [f"stage-figure-{s}" for s in sides if lesson.stage.figures]
    plots += ["lesson-chart"] if lesson.chart is not None else []
    pictures = 2 if lesson.stage.pictures is not None else (len(lesson.models) if lesson.stage.rows else 0)
    return {"plots": plots, "pictures": pictures}


# Measured on the page as it shows: whether it scrolls, the words' size, every picture of the
# lesson's screen (its size against its image's, its cells, whether anything around it clips it),
# and whether every plot and picture lies inside the window.
SCREEN_FACTS = """() => {
  const doc = document.scrollingElement, words = document.querySelector('#lesson-banner p');
  const inside = (e) => { const r = e.getBoundingClientRect();
                          return r.top >= -1 && r.left >= -1 && r.bottom <= innerHeight + 1 && r.right <= innerWidth + 1; };
  const clippers = (e) => { const found = []; for (let a = e.parentElement; a && a.id !== 'lesson-panes'; a = a.parentElement)
      if (a.scrollWidth > a.clientWidth + 1 || a.scrollHeight > a.clientHeight + 1) found.push(a.id || a.className);
    return found; };
  const pictures = Array.from(document.querySelectorAll('.stage-picture img')).map((img) => {
    const r = img.getBoundingClientRect();
    return {width: r.width, height: r.height, natural: [img.naturalWidth, img.naturalHeight],
            cell: Math.min(r.width / Number(img.dataset.columns), r.height / Number(img.dataset.rows)),
            inside: inside(img), clipped: clippers(img)}; });
  const plots = Array.from(document.querySelectorAll('#lesson-panes .js-plotly-plot'))
    .filter((gd) => gd.offsetParent !== null).map((gd) => ({id: gd.closest('[id]').id, inside: inside(gd)}));
  return {scroll: doc.scrollHeight, window: innerHeight, wide: doc.scrollWidth > innerWidth + 1,
          words: words ? parseFloat(getComputedStyle(words).fontSize) : 0, wordsInside: words ? inside(words) : false,
          pictures: pictures, plots: plots, present: document.body.classList.contains('present')};
}"""


def assert_fits_the_projector(page: object, lesson: lessons.Lesson) -> dict:
    # the page fits its plots to the window once they are drawn (static/page.js); the assertions
    # below say what does not fit if it never does
    with contextlib.suppress(Exception):
        page.wait_for_function("() => document.scrollingElement.scrollHeight <= innerHeight + 1",  # type: ignore[attr-defined]
                               timeout=15_000)
    facts = page.evaluate(SCREEN_FACTS)  # type: ignore[attr-defined]
    assert facts["present"], facts
    assert facts["scroll"] <= facts["window"] + 1 and not facts["wide"], facts  # nothing scrolls
    assert facts["words"] >= 20 and facts["wordsInside"], facts  # readable from the back of the room
    for picture in facts["pictures"]:
        assert picture["natural"] == [round(picture["width"]), round(picture["height"])], picture  # never rescaled
        assert picture["cell"] >= 128 and picture["inside"] and not picture["clipped"], picture
    assert all(plot["inside"] for plot in facts["plots"]), facts["plots"]
    return facts


@pytest.mark.e2e
@pytest.mark.parametrize("name", [lesson.name for lesson in lessons.LESSONS])
def test_each_lesson_fits_the_projector_and_a_reload_keeps_it(page: object, shelf: ModelStore, name: str) -> None:
    """?lesson=NAME&present=1 at 1280x720: the lesson's own screen (its words beside its maps,
    charts and images) without scrolling, words of 20 px or more, every image at least 128 px and
    none clipped, no page error; a reload of the address the page keeps opens the same lesson,
    model and layout."""
    lesson = lessons.find(name)
    started = time.monotonic()
    page.goto(f"{page.url_base}?lesson={name}&present=1")  # type: ignore[attr-defined]
    wait_words(page, lesson)
    page.wait_for_function(STAGE_SHOWN, arg=stage_panes(lesson), timeout=120_000)  # type: ignore[attr-defined]
    opened = time.monotonic() - started
    time.sleep(1.0)  # plots settle into their boxes
    assert_fits_the_projector(page, lesson)
    page.screenshot(path=str(SHOTS / f"{name}-present.png"))  # type: ignore[attr-defined]
    with (SHOTS / "open-times.txt").open("a") as log:
        log.write(f"{name}\t{opened:.1f} s\n")
    # the address now names the view; a reload restores it
    page.wait_for_function("(name) => { const q = new URLSearchParams(location.search);"  # type: ignore[attr-defined]
                           " return q.get('lesson') === name && q.get('present') === '1' && q.get('model'); }",
                           arg=name, timeout=30_000)
    page.wait_for_function("(name) => document.body.dataset.lessonDone === name", arg=name,  # type: ignore[attr-defined]
                           timeout=120_000)  # every step of the lesson ran: nothing is cut off by the reload
    model = page.locator("#checkpoint-dropdown input").input_value()  # type: ignore[attr-defined]
    if len(lesson.models) == 1:
        assert model == lesson.models[0]
    page.problems.reload()  # type: ignore[attr-defined]
    wait_words(page, lesson)
    page.wait_for_function(STAGE_SHOWN, arg=stage_panes(lesson), timeout=120_000)  # type: ignore[attr-defined]
    page.wait_for_function("(m) => document.querySelector('#checkpoint-dropdown input').value === m",  # type: ignore[attr-defined]
                           arg=model, timeout=60_000)
    time.sleep(1.0)
    assert_fits_the_projector(page, lesson)


FRAME_POINTS = """(id) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);
  return gd._fullData.map((t) => ({n: t._length, x: Array.from(t.x || []).slice(0, 50), y: Array.from(t.y || []).slice(0, 50)})); }"""


@pytest.mark.e2e
@pytest.mark.parametrize("present", [False, True])
def test_the_forming_lesson_plays_its_maps(page: object, shelf: ModelStore, present: bool) -> None:
    """▶ Play and the frame slider move the points from frame to frame (their coordinates change),
    every point stays on the map at every moment, and the page reports no error; on the side-by-side
    view and on the lesson's own screen."""
    lesson = lessons.find("forming")
    points = lessons._record(shelf.open_name(lesson.models[0])).codes.shape[1]
    where = "stage-figure-a" if present else "compare-chart-a"
    page.goto(f"{page.url_base}?lesson=forming" + ("&present=1" if present else ""))  # type: ignore[attr-defined]
    wait_words(page, lesson)
    page.wait_for_function(  # type: ignore[attr-defined]  # the frames are added after the first draw
        "(id) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);"
        " return gd && gd._transitionData && gd._transitionData._frames.length > 5; }", arg=where, timeout=60_000)
    page.locator(f"#{where}").scroll_into_view_if_needed()  # type: ignore[attr-defined]
    first = page.evaluate(FRAME_POINTS, where)  # type: ignore[attr-defined]
    assert sum(t["n"] for t in first) == points
    page.locator(f"#{where} .updatemenu-button").first.click()  # type: ignore[attr-defined]  # ▶ Play
    moved, deadline = False, time.monotonic() + 30
    while not moved or page.evaluate(  # type: ignore[attr-defined]  # ... until it has played a few frames
            f"() => document.querySelector('#{where} .js-plotly-plot').layout.sliders[0].active") <= 1:
        assert time.monotonic() < deadline, "▶ Play did not move the points on to later frames"
        time.sleep(0.3)
        frame = page.evaluate(FRAME_POINTS, where)  # type: ignore[attr-defined]
        assert sum(t["n"] for t in frame) == points  # the map is never empty
        moved = moved or frame[0]["x"] != first[0]["x"] or frame[0]["y"] != first[0]["y"]  # the points moved
    page.locator(f"#{where} .updatemenu-button").nth(1).click()  # type: ignore[attr-defined]  # ❚❚ Pause
    time.sleep(0.6)
    paused = page.evaluate(FRAME_POINTS, where)  # type: ignore[attr-defined]
    # the slider: a click on its first step goes back to the start
    rail = page.locator(f"#{where} .slider-rail-rect").first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "(id) => document.querySelector(`#${id} .js-plotly-plot`).layout.sliders[0].active === 0", arg=where,
        timeout=30_000)
    time.sleep(1.0)
    back = page.evaluate(FRAME_POINTS, where)  # type: ignore[attr-defined]
    assert sum(t["n"] for t in back) == points and back[0]["x"] != paused[0]["x"]
    page.screenshot(path=str(SHOTS / f"forming-played{'-present' if present else ''}.png"))  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_a_start_button_puts_the_lesson_in_the_address(page: object) -> None:
    """Start on the Lessons tab names the lesson in the address (a reload or a copied link opens it);
    closing the lesson takes it out again."""
    page.goto(page.url_base)  # type: ignore[attr-defined]
    page.wait_for_function("() => new URLSearchParams(location.search).get('model')", timeout=120_000)  # type: ignore[attr-defined]
    page.get_by_role("tab", name="Lessons").click()  # type: ignore[attr-defined]
    page.locator("#lesson-collapse").click()  # type: ignore[attr-defined]
    wait_words(page, lessons.find("collapse"))
    page.wait_for_function("() => new URLSearchParams(location.search).get('lesson') === 'collapse'",  # type: ignore[attr-defined]
                           timeout=30_000)
    assert "tab=compare" in page.url  # type: ignore[attr-defined]
    page.locator("#lesson-close-btn").click()  # type: ignore[attr-defined]
    page.wait_for_function("() => !new URLSearchParams(location.search).get('lesson')", timeout=30_000)  # type: ignore[attr-defined]
    assert not page.locator("#lesson-banner-group").is_visible()  # type: ignore[attr-defined]


@pytest.mark.e2e
@pytest.mark.parametrize("name", [lesson.name for lesson in lessons.LESSONS])
def test_each_lesson_opens_from_its_link(page: object, shelf: ModelStore, name: str) -> None:
    lesson = lessons.find(name)
    page.goto(f"{page.url_base}?lesson={name}")  # type: ignore[attr-defined]
    page.wait_for_function(  # the banner has the lesson's measured words, not "Loading"
        "(title) => { const b = document.querySelector('#lesson-banner');"
        " return b && b.innerText.includes(title) && !b.innerText.includes('Loading'); }",
        arg=lesson.title, timeout=180_000)
    banner = page.locator("#lesson-banner").inner_text()  # type: ignore[attr-defined]
    assert "⚠" not in banner, banner
    expected = lesson.explain([shelf.open_name(m) for m in lesson.models], shelf)
    assert numbers(expected) == numbers(banner.split("\n", 1)[1]), (expected, banner)
    if len(lesson.models) == 2:  # the side-by-side view shows both models, drawn, with the lesson's answers
        for side, model in zip("ab", lesson.models, strict=True):
            page.wait_for_function(  # type: ignore[attr-defined]
                f"() => {{ const gd = document.querySelector('#compare-map-{side} .js-plotly-plot');"
                " return gd && gd.layout && gd.layout.title && String(gd.layout.title.text || '')"
                f".startsWith({model.removesuffix('.safetensors')!r}); }}", timeout=60_000)
            if set(lesson.actions) - {"kl", "timeline"}:
                page.wait_for_selector(f"#compare-result-{side} img", timeout=60_000)  # type: ignore[attr-defined]
            if set(lesson.actions) & {"kl", "timeline"}:
                page.wait_for_selector(f"#compare-chart-{side} .js-plotly-plot", timeout=60_000)  # type: ignore[attr-defined]
        if "timeline" in lesson.actions:  # the animation has a frame per recorded moment
            expected_frames = shelf.open_name(lesson.models[0]).derived.record.codes.shape[0]
            page.wait_for_function(  # type: ignore[attr-defined]  # plotly adds the frames after the first draw
                "(n) => { const gd = document.querySelector('#compare-chart-a .js-plotly-plot');"
                " return gd && gd._transitionData && gd._transitionData._frames.length === n; }",
                arg=expected_frames, timeout=60_000)
            page.locator("#compare-chart-a").scroll_into_view_if_needed()  # type: ignore[attr-defined]
            page.locator("#compare-chart-a .updatemenu-button").first.click()  # type: ignore[attr-defined]  # ▶ Play
            page.wait_for_function(  # type: ignore[attr-defined]  # it plays: the slider moves on to later frames
                "() => document.querySelector('#compare-chart-a .js-plotly-plot').layout.sliders[0].active > 1",
                timeout=30_000)
    else:
        page.wait_for_function(  # type: ignore[attr-defined]
            "(m) => { const d = document.querySelector('#checkpoint-dropdown input');"
            " return d && d.value === m; }", arg=lesson.models[0], timeout=60_000)
    time.sleep(1.5)
    page.screenshot(path=str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def test_a_lesson_asked_for_at_once_is_measured_once() -> None:
    """A lesson's events (its words, its screen) ask for its measurements at the same moment: one
    measures, the others wait for that answer."""
    import dataclasses
    import threading
    from types import SimpleNamespace

    calls = []

    def explain(entries, shelf) -> str:  # noqa: ANN001
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return f"measured on {len(entries)}"

    def chart(entries, shelf):  # noqa: ANN001, ANN202
        import plotly.graph_objects as go

        return go.Figure(go.Histogram(x=np.arange(500.0), histnorm="probability"))

    lesson = dataclasses.replace(lessons.LESSONS[0], name="single-flight-test", explain=explain, chart=chart)
    entries = [SimpleNamespace(key="a"), SimpleNamespace(key="b")]
    shelf = SimpleNamespace(names=lambda: ["a", "b"])
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(lessons.measured(lesson, entries, shelf)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and [words for words, _ in answers] == ["measured on 2"] * 4
    # every caller gets its own copy of the chart, also when many copy it at once (plotly takes a
    # trace's type out of the source it builds from for a moment: copies made from one source in
    # several threads came out as scatters and raised)
    copies, failures = [], []

    def copy_many() -> None:
        try:
            copies.extend(lessons.measured(lesson, entries, shelf)[1] for _ in range(25))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            failures.append(repr(exc)[:120])

    threads = [threading.Thread(target=copy_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(copies) == 150
    assert {type(figure.data[0]).__name__ for figure in copies} == {"Histogram"}
    assert len({id(figure) for figure in copies}) == 150
