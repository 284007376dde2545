"""Request values at the boundary: every number a request carries is parsed in one place
(``explorer/core/values.py``), and NaN, infinities, overflowing integers and non-numbers get one
sentence from every handler that takes them, never a generic error. Uploads with NaN or infinite
pixels are refused, and a map without a decoder has no pressable decoder buttons."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from vaescope.errors import InputError
from vaescope.explorer.core.embeddings import table_from_arrays
from vaescope.explorer.core.store import ModelStore
from vaescope.explorer.core.uploads import ImageError, prepare_image
from vaescope.explorer.core.values import number, whole
from vaescope.explorer.ui.app import build_app
from vaescope.explorer.ui.state import Session

HOSTILE = [float("nan"), float("inf"), -float("inf"), "nan", "1e400", 10**400, "seven", None, True, [], {"a": 1},
           "9" * 500]


@pytest.mark.parametrize("value", HOSTILE)
def test_number_refuses_anything_but_a_finite_number(value: object) -> None:
    with pytest.raises(InputError, match=r"^Level must be a number between 0 and 1, got .{1,40}\.$"):
        number(value, "Level", 0.0, 1.0)


@pytest.mark.parametrize("value", [*HOSTILE, 2.5, -1, 33, "33"])
def test_whole_refuses_anything_but_a_whole_number_in_range(value: object) -> None:
    with pytest.raises(InputError, match=r"^Steps must be a whole number between 2 and 32, got .{1,40}\.$"):
        whole(value, "Steps", 2, 32)


def test_numbers_in_range_pass_in_every_spelling() -> None:
    assert number("0.25", "x", 0, 1) == 0.25 and number(1, "x", 0, 1) == 1.0 and number(None, "x", default=0.5) == 0.5
    assert whole(7, "x", 0, 9) == 7 and whole(7.0, "x", 0, 9) == 7 and whole("7", "x", 0, 9) == 7
    assert whole("", "x", 0, 9, default=3) == 3 and whole(10**30, "x", 0) == 10**30


@pytest.fixture(scope="module")
def app(tiny_checkpoint_dir: Path):
    return build_app(tiny_checkpoint_dir, device="cpu")


def switched(app, name: str) -> Session:
    session = Session()
    app.panels["models"].load_checkpoint(name, session)
    return session


def refused(call, match: str) -> None:
    """``call()`` shows the page one error sentence matching ``match`` (not a generic failure)."""
    with pytest.raises(gr.Error) as caught:
        call()
    message = str(caught.value.message)
    assert re_search(match, message), message
    assert "failed (" not in message and "Traceback" not in message


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


@pytest.mark.parametrize("bad", [float("nan"), "inf", 10**400, "1e400"])
def test_every_numeric_handler_refuses_hostile_numbers_in_one_sentence(app, bad: object) -> None:
    session = switched(app, "tiny-cvae.safetensors")
    panels = app.panels
    refused(lambda: panels["denoising"].denoise_again("gaussian", bad, session), "Level must be a number")
    refused(lambda: panels["denoising"].denoise_index(bad, "gaussian", 0.3, session), "Test image # must be")
    refused(lambda: panels["sampling"].sample_class(0, 4, 0, bad, session), "temperature must be a number")
    refused(lambda: panels["sampling"].sample_class(0, bad, 0, 1.0, session), "N must be a whole number")
    refused(lambda: panels["sampling"].sample_class(bad, 4, 0, 1.0, session), "class must be a whole number")
    refused(lambda: panels["sampling"].sample_class(0, 4, bad, 1.0, session), "seed must be a whole number")
    refused(lambda: panels["interpolation"].interpolate(bad, "linear", session), "Steps must be a whole number")
    refused(lambda: panels["traversal"].traversal_grid(bad, 0, "prior", session), "Steps must be a whole number")
    refused(lambda: panels["traversal"].traverse_random(bad, 0, "prior", session), "class must be a whole number")
    refused(lambda: panels["traversal"].traverse_from_index(bad, 0, "prior", session), "Test image # must be")
    refused(lambda: panels["map"].draw_map("pca", 2, "label", "none", bad, 0, session), "Max points")
    out = panels["traversal"].slider_handler(0)(bad, 0, session)
    assert out[panels["traversal"].note].startswith("**Cannot decode:** The slider value must be a number")


@pytest.mark.parametrize("field, value", [("x", 10**400), ("x", "nan"), ("y", 1e300), ("index", 10**400),
                                          ("index", "NaN")])
def test_a_map_click_with_a_hostile_coordinate_gets_one_sentence(app, field: str, value: object) -> None:
    session = switched(app, "tiny-vae.safetensors")
    app.panels["map"].draw_map("pca", 2, "label", "none", 0, 0, session)
    payload = {"kind": "point", "index": 3} if field == "index" else {"kind": "spot", "x": 0.1, "y": 0.2}
    payload[field] = value
    text = json.dumps(payload, allow_nan=True)
    match = "A map point must be" if field == "index" else "A map spot's coordinate must be a number"
    refused(lambda: app.panels["map"].pick(text, session), match)


def _tiff(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_an_upload_with_nan_or_infinite_pixels_is_refused(bad: float) -> None:
    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert prepare_image(_tiff(pixels), (1, 8, 8))[0].std() > 0.2  # a finite float TIFF still converts
    pixels[3, 4] = bad
    with pytest.raises(ImageError, match="^1 of its 64 pixel values are NaN or infinite"):
        prepare_image(_tiff(pixels), (1, 8, 8))
    with pytest.raises(ImageError, match="^1 of its 64 pixel values are NaN or infinite"):
        prepare_image(pixels, (1, 8, 8))


def test_an_embeddings_map_offers_no_decoder_buttons(tiny_checkpoint_dir: Path) -> None:
    """Precomputed codes decode nothing: every button that would need a decoder is disabled when the
    map opens (and enabled again for a model that decodes)."""
    store = ModelStore(tiny_checkpoint_dir, torch.device("cpu"))
    rng = np.random.default_rng(0)
    store.add_embeddings("codes", table_from_arrays(rng.normal(size=(50, 4)), labels=rng.integers(0, 3, 50)))
    app = build_app(store=store)
    session = Session()
    out = app.panels["models"].load_checkpoint("codes", session)
    buttons = [*app.panels["sampling"].decoder_buttons(), *app.panels["traversal"].decoder_buttons(),
               *app.panels["interpolation"].decoder_buttons(), app.panels["denoising"].curve_btn,
               app.panels["anomaly"].score_btn]
    assert all(out[b].interactive is False for b in buttons), [out[b] for b in buttons]
    out = app.panels["models"].load_checkpoint("tiny-vae.safetensors", session)
    assert all(out[b].interactive is True for b in buttons)
