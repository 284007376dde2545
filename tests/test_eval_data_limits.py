"""A model's dataset block is a hint from outside: it may name an image folder inside --data-dir and
an image size, and the explorer decodes that folder at that size. What that costs is counted from
the file list before any image is decoded, and refused past MAX_EVAL_DATA_BYTES."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaescope.explorer.core import evaldata
from vaescope.training import data as datasets


@pytest.fixture()
def pets(tmp_path: Path) -> Path:
    for name in ("cat", "dog"):
        folder = tmp_path / "pets" / name
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    return tmp_path


def test_a_folder_too_large_at_the_declared_size_is_refused_before_decoding(pets: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaldata, "MAX_EVAL_DATA_BYTES", 100_000)  # 20 files x 3 x 64 x 64 = 245,760 bytes
    monkeypatch.setattr(datasets, "_load_image", lambda *a: pytest.fail("an image was decoded"))
    with pytest.raises(evaldata.NoEvalData, match="holds 20 image files: at 64 px they take 0.2 MiB, more than "
                                                  "the 0.1 MiB read here"):
        evaldata.resolve_eval_data({"name": "folder:pets", "image_shape": [3, 64, 64]}, {}, pets, folders_allowed=True)


def test_a_folder_within_the_limit_is_read(pets: Path) -> None:
    found = evaldata.resolve_eval_data({"name": "folder:pets", "image_shape": [3, 16, 16]}, {}, pets,
                                       folders_allowed=True)
    assert isinstance(found, evaldata.EvalData) and found.images.shape[1:] == (3, 16, 16) and len(found.images) >= 2
