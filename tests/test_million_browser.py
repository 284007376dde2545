"""A million points in Chromium (issue #31, item 1): ``latent-explore --embeddings`` of a 1,000,000 x
16 file (with 8x8 thumbnails) draws its map thinned to MAX_DRAWN_POINTS, says so in the title, and a
hovered point shows its thumbnail and a clicked point is picked, without a page error."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from serving import click_until, hover_until_thumbnail, latent_explore, watched_page

from vaescope.limits import MAX_DRAWN_POINTS

N, DIM = 1_000_000, 16
MAP = "document.querySelector('#latent-map .js-plotly-plot')"


@pytest.mark.slow
@pytest.mark.e2e
def test_a_million_row_embeddings_map_hovers_and_clicks_in_chromium(browser, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N)
    codes = rng.normal(scale=4, size=(10, DIM)).astype(np.float32)[labels] + rng.normal(size=(N, DIM)).astype(np.float32)
    images = (rng.random((10, 8, 8)) * 255).astype(np.uint8)[labels]  # a thumbnail per class: 64 MB of pixels
    np.savez(tmp_path / "million.npz", latents=codes, labels=labels, images=images)
    folder = tmp_path / "models"
    folder.mkdir()
    with latent_explore(folder, tmp_path, args=("--embeddings", str(tmp_path / "million.npz"))) as (url, _, _), \
            watched_page(browser, 1280, 900) as page:
        start = time.monotonic()
        page.goto(url)
        page.wait_for_function(f"""() => {{ const gd = {MAP};
            return !!(gd && gd.__vaescopeBound && gd._fullData && gd._fullData.some((t) => t.customdata)); }}""",
                               timeout=240_000, polling=100)
        state = page.evaluate(f"""() => {{ const gd = {MAP};
            return {{title: String(gd._fullLayout.title.text),
                     drawn: gd._fullData.filter((t) => t.customdata).reduce((a, t) => a + t._length, 0),
                     webgl: gd._fullData.filter((t) => t.customdata).every((t) => t.type === 'scattergl')}}; }}""")
        assert "1,000,000 images" in state["title"] and "drawing 200,000 of the 1,000,000 points" in state["title"]
        assert state["drawn"] == MAX_DRAWN_POINTS and state["webgl"], state
        assert time.monotonic() - start < 120  # loading, projecting and drawing a million codes
        page.locator("#latent-map .nsewdrag").scroll_into_view_if_needed()
        point = page.evaluate(f"""() => {{ const gd = {MAP}, L = gd._fullLayout;
            const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
            for (const t of gd._fullData.filter((d) => d.customdata)) {{
              for (let i = 0; i < t._length; i += 97) {{
                const x = r.left + L.xaxis.c2p(t.x[i]), y = r.top + L.yaxis.c2p(t.y[i]);
                if (x > r.left + 5 && x < r.right - 5 && y > r.top + 5 && y < Math.min(r.bottom, 895) - 5)
                  return {{x, y}};
              }}
            }}
            return null; }}""")
        assert point, "no point of the map is on screen"
        hover_until_thumbnail(page, point, timeout=60, attempt_ms=3_000)
        click_until(page, lambda: point,
                    lambda _: "() => /#\\d+/.test(document.querySelector('#picked-info').innerText) && "
                              "document.querySelector('#picked-info').innerText.includes('no decoder')",
                    timeout=90)
        picked = page.locator("#picked-info").inner_text()
        assert "no decoder" in picked
        # the clicked point's nearest neighbours (the panel's default 8), found among all million codes, are ringed
        page.wait_for_function("() => (document.querySelector('#neighbours-note') || {innerText: ''}).innerText"
                               ".includes('8 nearest neighbours')", timeout=60_000)
        page.wait_for_function(f"() => {{ const t = {MAP}.data.find((d) => d.name === 'neighbours');"
                               " return !!(t && t.x && t.x.length === 8); }", timeout=30_000)
