"""explorer.codes: drawings to RGB, start codes, and the errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from vaescope.explorer.codes import class_name, decode, sketch_to_rgb, start_code
from vaescope.explorer.loading import ModelStore


def test_sketch_to_rgb() -> None:
    assert sketch_to_rgb(None) is None and sketch_to_rgb({"composite": None}) is None
    blank = np.zeros((10, 10, 4), np.uint8)  # fully transparent canvas
    assert sketch_to_rgb({"composite": blank}) is None
    stroke = blank.copy()
    stroke[3:7, 4:6] = (0, 0, 0, 255)  # black ink
    rgb = sketch_to_rgb({"composite": stroke})
    assert rgb.shape == (10, 10, 3) and rgb[0, 0].tolist() == [255, 255, 255] and rgb[4, 4].tolist() == [0, 0, 0]


@pytest.mark.parametrize("model_type", ["vae", "cvae"])
def test_start_codes(tiny_checkpoint_dir: Path, model_type: str) -> None:
    entry = ModelStore(tiny_checkpoint_dir, torch.device("cpu")).open_name(f"tiny-{model_type}.safetensors")
    code = start_code(entry, 5, "index", None)
    np.testing.assert_array_equal(code.z, entry.latents.mean[5])
    assert code.z is not code.z0 and "test image #5" in code.source
    label = int(entry.latents.labels[5])
    assert code.y == (label if model_type == "cvae" else None)
    assert class_name(entry, label) == str(label) and class_name(entry, -1) == "?"
    prior = start_code(entry, None, "random", 3)
    assert prior.y == (3 if model_type == "cvae" else None) and "prior sample (seed" in prior.source
    assert decode(entry, np.stack([code.z, prior.z]), code.y).shape == (2, 1, 8, 8)
    with pytest.raises(gr.Error, match="between 0 and 299"):
        start_code(entry, 300, "index", None)
