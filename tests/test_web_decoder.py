"""The decoder the page runs itself (explorer/core/webdecoder.py, ui/webdecode.py), without a browser:
the exported graph's inputs and outputs, its values against PyTorch (onnxruntime in Python), the
size limit's refusal in one sentence, the models whose decoder stays on the server, the registry
and the routes that serve the bytes (and nothing else), and what the page is told. The same graph
in Chromium: tests/test_web_decoder_browser.py."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vaescope.contract import LatentGroup
from vaescope.explorer.core import webdecoder
from vaescope.explorer.core.codes import Code, decode
from vaescope.explorer.core.maps import MapView
from vaescope.explorer.core.projection import Projection
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.webdecoder import (
    WEB_TOLERANCE,
    WebDecoderRefused,
    WebDecoders,
    check_codes,
    export_decoder,
    web_decoder_problem,
)
from vaescope.explorer.ui import webdecode
from vaescope.explorer.ui.traversal import page_code
from vaescope.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "assets" / "checkpoints" / "mnist"


def entry_of(name: str) -> ModelEntry:
    model, meta = load_checkpoint(MNIST / f"{name}.safetensors", torch.device("cpu"))
    return ModelEntry(f"key-{name}", f"mnist/{name}.safetensors", model, model.describe(), None, "", meta=meta)


@pytest.fixture(scope="module")
def vae2d() -> ModelEntry:
    return entry_of("vae-2d")


@pytest.fixture(scope="module")
def cvae() -> ModelEntry:
    return entry_of("cvae")


def run_graph(data: bytes, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {"z": z.astype(np.float32), "condition": y.astype(np.int64)}
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]


def test_the_2d_decoder_matches_torch(vae2d: ModelEntry) -> None:
    graph = export_decoder(vae2d)
    assert graph.inputs == ("z",) and graph.latent_dim == 2 and graph.image_shape == (1, 28, 28)
    assert graph.error <= WEB_TOLERANCE
    z = np.array([[0, 0], [1.5, -2], [-3, 3], [0.25, 0.5]], np.float32)
    got = run_graph(graph.data, z, np.zeros(len(z)))
    want = decode(vae2d, z, None)
    assert got.shape == want.shape == (4, 1, 28, 28)
    assert np.abs(got - want).max() <= WEB_TOLERANCE
    assert got.std(0).max() > 0.05  # different codes, different images: the graph is not a constant


def test_a_class_conditional_decoder_takes_the_class(cvae: ModelEntry) -> None:
    graph = export_decoder(cvae)
    assert graph.inputs == ("z", "condition")
    z = np.repeat(check_codes(cvae.description.latent_dim, 3)[1:2], 3, axis=0)
    classes = np.array([0, 3, 7])
    got = run_graph(graph.data, z, classes)
    want = np.concatenate([decode(cvae, z[i], int(c)) for i, c in enumerate(classes)])
    assert np.abs(got - want).max() <= WEB_TOLERANCE
    assert np.abs(got[0] - got[1]).max() > 0.1  # the class changes the image


def test_the_export_leaves_the_served_model_alone(vae2d: ModelEntry) -> None:
    before = {k: v.clone() for k, v in vae2d.model.state_dict().items()}
    export_decoder(vae2d)
    assert not vae2d.model.training
    assert all(torch.equal(before[k], v) for k, v in vae2d.model.state_dict().items())


def test_a_decoder_past_the_limit_is_refused_in_one_sentence(vae2d: ModelEntry,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webdecoder, "MAX_WEB_DECODER_BYTES", 1 << 20)
    with pytest.raises(WebDecoderRefused) as refused:
        export_decoder(vae2d)
    message = str(refused.value)
    assert re.fullmatch(r"its decoder is \d+\.\d MB as ONNX, more than the 1\.0 MB \(MAX_WEB_DECODER_BYTES\) sent "
                        r"to the page, so the server decodes", message), message
    assert "\n" not in message and message.count(". ") == 0


def test_models_whose_decoder_stays_on_the_server(vae2d: ModelEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    description = vae2d.description

    def fake(**changes: object) -> SimpleNamespace:
        base = {"key": "k", "model": vae2d.model, "generator": vae2d.model, "description": description}
        return SimpleNamespace(**(base | changes))

    assert web_decoder_problem(vae2d) is None
    cases = {
        "no decoder to run": fake(generator=None),
        "channels and positions": fake(description=dataclasses.replace(description, latent_shape=(2, 1))),
        "refills the other layers": fake(description=dataclasses.replace(
            description, latent_groups=(LatentGroup("z1", 0, 1), LatentGroup("z2", 1, 1)))),
        "drawn as line plots": fake(description=dataclasses.replace(description, display="line")),
        "not a PyTorch module": fake(model=SimpleNamespace(decode=vae2d.model.decode)),
    }
    for words, entry in cases.items():
        problem = web_decoder_problem(entry)  # type: ignore[arg-type]
        assert problem is not None and words in problem and "\n" not in problem
        with pytest.raises(WebDecoderRefused, match=words):
            export_decoder(entry)  # type: ignore[arg-type]
    monkeypatch.setattr(webdecoder, "MAX_WEB_EXPORT_PARAMETERS", 1000)
    assert "MAX_WEB_EXPORT_PARAMETERS" in web_decoder_problem(vae2d)


def test_the_registry_exports_once_and_hands_out_tokens(vae2d: ModelEntry, cvae: ModelEntry) -> None:
    decoders = WebDecoders(max_kept=1)
    token = decoders.prepare(vae2d)
    assert decoders.prepare(vae2d) == token and len(token) >= 24
    assert decoders.get(token).data == decoders.get(token).data
    with pytest.raises(KeyError):
        decoders.get("not-a-token")
    other = decoders.prepare(cvae)  # one kept: the first is dropped, its token with it
    with pytest.raises(KeyError):
        decoders.get(token)
    assert decoders.get(other).inputs == ("z", "condition")


def test_the_routes_serve_the_runtime_and_the_decoders_and_nothing_else(vae2d: ModelEntry,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    decoders = WebDecoders()
    client = TestClient(FastAPI(routes=webdecode.routes(decoders)))
    script = client.get("/vaescope/ort/ort.wasm-core.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.content.startswith(b"/*!\n * ONNX Runtime Web v1.17.3")
    wasm = client.get("/vaescope/ort/ort-wasm-simd.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    for name in ("README.md", "LICENSE", "..%2F..%2Fapp.py", "..%2Fbridge.js", "%2Fetc%2Fpasswd"):
        assert client.get(f"/vaescope/ort/{name}").status_code == 404
    url = json.loads(webdecode.WebDecodePanel(None, None, decoders).manifest_json(vae2d))["url"]  # type: ignore[arg-type]
    served = client.get(url)
    assert served.status_code == 200 and served.content == decoders.get(url.rsplit("/", 1)[1]).data
    assert client.get("/vaescope/decoder/made-up").status_code == 404
    monkeypatch.setattr(webdecoder, "MAX_WEB_DECODER_BYTES", 1 << 20)
    big = WebDecoders()
    refused = TestClient(FastAPI(routes=webdecode.routes(big))).get(f"/vaescope/decoder/{big.prepare(vae2d)}")
    assert refused.status_code == 200 and "MAX_WEB_DECODER_BYTES" in refused.json()["refused"]


def test_what_the_page_is_told(vae2d: ModelEntry) -> None:
    panel = webdecode.WebDecodePanel(None, None, WebDecoders())  # type: ignore[arg-type]
    manifest = json.loads(panel.manifest_json(vae2d))
    assert manifest["key"] == vae2d.key and manifest["url"].startswith("/vaescope/decoder/")
    assert manifest["latent_dim"] == 2 and manifest["image_shape"] == [1, 28, 28]
    embeddings = SimpleNamespace(key="codes", name="codes.npz", generator=None, description=vae2d.description,
                                 model=None)
    told = json.loads(panel.manifest_json(embeddings))  # type: ignore[arg-type]
    assert told["url"] is None and "no decoder" in told["why"]
    # the map's way back to codes: PCA's inverse, checked against Projection.inverse_transform
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((50, 2)).astype(np.float32)
    components = np.array([[0.6, 0.8], [-0.8, 0.6]], np.float32)
    projection = Projection("pca", 2, codes @ components.T, codes, pca_mean=codes.mean(0), pca_components=components)
    session = SimpleNamespace(view=MapView(vae2d.key, projection, np.arange(50), "pca", "class"))
    inverse = json.loads(webdecode.inverse_json(vae2d, session))  # type: ignore[arg-type]
    xy = np.array([0.7, -1.2], np.float32)
    page_z = np.asarray(inverse["mean"]) + xy[0] * np.asarray(inverse["components"][0]) + \
        xy[1] * np.asarray(inverse["components"][1])
    assert np.allclose(page_z, projection.inverse_transform(xy[None])[0], atol=1e-6)
    tsne = Projection("tsne", 2, codes, codes)
    session = SimpleNamespace(view=MapView(vae2d.key, tsne, np.arange(50), "tsne", "class"))
    inverse = json.loads(webdecode.inverse_json(vae2d, session))  # type: ignore[arg-type]
    assert inverse["mean"] is None and not inverse["server"] and "t-SNE" in inverse["why"]
    # the traversal's code, with the class the decoder takes and the dimension each slider moves
    code = Code(vae2d.key, np.array([0.5, -1.0], np.float32), np.zeros(2, np.float32), None, "test")
    sent = json.loads(page_code(vae2d, code, [1, 0]))
    assert sent["z"] == [0.5, -1.0] and sent["y"] == 0 and sent["dims"] == [1, 0]
    assert json.loads(page_code(vae2d, code, [1, 0]))["nonce"] != sent["nonce"]  # a Reset still reaches the page


def test_the_wheel_ships_the_vendored_runtime() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "vaescope.explorer.ui.static"]
    static = REPO / "explorer" / "ui" / "static"
    shipped = {path.relative_to(static).as_posix() for pattern in patterns for path in static.glob(pattern)}
    assert {"decode.js", "ort/ort.wasm-core.min.js", "ort/ort-wasm-simd.wasm", "ort/LICENSE", "ort/README.md"} <= shipped
    assert sum(p.stat().st_size for p in (static / "ort").iterdir()) < 11 << 20  # the smallest build
