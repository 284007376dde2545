"""The Explore page's views in the presenter layout (``?present=1``), in Chromium at 1280x720 on the
shipped MNIST VAE: each view, once its button is pressed, shows its result with no vertical scroll,
its image grids at least 128 px a cell and shown at their own size (never rescaled by a fraction),
and no page error, console error or error toast.

The manifold shows 4 of its 10 steps a side (the same plane, sampled more coarsely, and its label
says so); the diagnostics view is listed with no button (its grids come with the model).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "checkpoints"
MODEL = "mnist/vae.safetensors"
pytestmark = pytest.mark.e2e

# view -> (the button that fills it, {image box: columns of its grid})
VIEWS = {
    "traversal": ("#traversal-grid-btn", {"traversal-grid": 7}),  # the 3 most used rows, 7 steps (and row labels)
    "diagnostics": (None, {"diag-recon": 4, "diag-prior": 4}),  # drawn with the model: 3 x 4 each
    "class": ("#sample-btn", {"sample-grid": 4}),  # 16 samples, 4 a row
    "interpolation": ("#interp-btn", {"interp-strip": 8, "interp-a-original": 1, "interp-b-image": 1}),
    "anomalies": ("#anomaly-score-btn", {"anomaly-typical": 4, "anomaly-unusual": 4}),
    "denoising": ("#denoise-index-btn", {"denoise-clean": 1, "denoise-corrupted": 1, "denoise-rebuilt": 1}),
    "manifold": ("#manifold-btn", {"manifold-grid": 4}),  # 4 x 4 steps (and row labels)
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    from serving import serving

    from vaescope.explorer.core.store import ModelStore
    from vaescope.explorer.ui.app import build_app

    store = ModelStore(SHIPPED, torch.device("cpu"), max_models=4)
    with serving(build_app(store=store, default_checkpoint=MODEL)) as address:
        yield address


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_view_fits_the_projector_with_big_cells(browser, url: str, view: str) -> None:  # noqa: ANN001
    from serving import watched_page

    button, grids = VIEWS[view]
    with watched_page(browser) as page:  # fails on any page error, console error or error toast
        page.goto(f"{url}?present=1&tab=explore&view={view}&model={MODEL}")
        page.wait_for_function("() => document.querySelector('#traversal-image img')", timeout=120_000)  # loaded
        if button is not None:
            page.locator(button).click()
        page.wait_for_function("(boxes) => boxes.every(id => { const i = document.querySelector('#' + id + ' img');"
                               " return i && i.complete && i.naturalWidth > 0; })", arg=list(grids), timeout=60_000)
        page.wait_for_timeout(500)
        sizes = page.evaluate("""(boxes) => Object.fromEntries(boxes.map(id => {
            const img = document.querySelector('#' + id + ' img'); const r = img.getBoundingClientRect();
            return [id, {w: r.width, h: r.height, nw: img.naturalWidth, bottom: r.bottom}]; }))""", list(grids))
        scroll = page.evaluate("[document.documentElement.scrollHeight, window.innerHeight]")
        assert scroll[0] <= scroll[1], f"{view} scrolls: {scroll}"
        for box, columns in grids.items():
            size = sizes[box]
            assert abs(size["w"] - size["nw"]) < 1, f"{box} is rescaled: {size}"  # whole upscaling factors only
            assert size["w"] / columns >= 128, f"{box}: cells of {size['w'] / columns:.0f} px"
            assert size["bottom"] <= 720, f"{box} runs off the screen: {size}"
