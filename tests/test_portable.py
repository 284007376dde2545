"""A shipped checkpoint is portable: copied alone into a folder and served by a fresh latent-explore
whose HOME, caches and working folder are new and empty (so no MNIST anywhere it looks), it draws its
map from the sample it carries and every panel answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gradio_client import Client
from serving import latent_explore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "checkpoints"
MNIST = ["mnist/vae", "mnist/cvae", "mnist/gmvae"]


@pytest.mark.slow
def test_shipped_mnist_models_work_with_no_dataset_anywhere(tmp_path: Path) -> None:
    served, home = tmp_path / "served", tmp_path / "home"
    home.mkdir()
    served.mkdir()
    for name in MNIST:
        shutil.copy(SHIPPED / f"{name}.safetensors", served / f"{name.replace('/', '-')}.safetensors")
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local"),
           "TORCH_HOME": str(home / "torch")}
    with latent_explore(served, tmp_path, env) as (url, log_path, _):
        client = Client(url, verbose=False)
        listed = client.predict(api_name="/list_checkpoints")
        assert all(f"{n.replace('/', '-')}.safetensors" in json.dumps(listed) for n in MNIST)
        for name in MNIST:
            file = f"{name.replace('/', '-')}.safetensors"
            text = " ".join(o for o in client.predict(file, api_name="/load_checkpoint") if isinstance(o, str))
            assert "the 2,000 images embedded in the file" in text, text[:500]
            _, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
            assert "2,000 of 2,000 images" in info or "2000 of 2000 images" in info, info
            original, recon, note = client.predict(json.dumps({"kind": "point", "index": 5}), api_name="/pick")[:3]
            assert Path(original).is_file() and Path(recon).is_file()
            assert client.predict("5", api_name="/hover_thumbnail")
            client.predict(7, api_name="/traverse_from_index")
            image, note, *_ = client.predict(1.5, "z:0", api_name="/slider_0")
            assert Path(image).is_file() and note.startswith(f"**{file.removesuffix('.safetensors')}**"), note
            _, download = client.predict(5, "z:0", "prior", api_name="/traversal_grid")
            assert Path(download).is_file()
            _, note = client.predict(3, 9, 0, 1.0, api_name="/sample_class")
            assert file.removesuffix(".safetensors") in note, note
            assert "10 steps" in client.predict(10, "slerp", api_name="/interpolate")[3]
            clean, noisy, rebuilt, note = client.predict(4, "gaussian", 0.4, api_name="/denoise_index")
            assert all(Path(p).is_file() for p in (clean, noisy, rebuilt))
            note, histogram, typical, unusual = client.predict(api_name="/anomaly_scores")
            assert "2,000" in note or "2000" in note, note
        assert not (home / ".cache" / "vaescope" / "data").exists()  # nothing was downloaded
        assert "Traceback" not in log_path.read_text()
