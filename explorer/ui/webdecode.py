"""Decoding in the page: the decoder under the pointer on the map, and behind the traversal sliders.

The server exports the chosen model's decoder to ONNX (``core/webdecoder.py``) and the page runs it
with onnxruntime-web (WebAssembly), vendored in ``static/ort/`` and served by the explorer itself,
so a pointer or slider move shows its image without a round trip (``static/decode.js``). This
panel holds what the page needs for that:

- ``#web-decoder``: which decoder the page may fetch ({key, url, latent_dim, image_shape, inputs}),
  or why the server decodes instead (one sentence; the page shows it under the map);
- ``#web-map``: the current map's way back to codes (PCA: code = mean + (x, y) @ components, the
  directions the map does not show held at the evaluation codes' mean), sent whenever the map is
  redrawn;
- the server's path for the pointer (``#pointer-data`` and ``#pointer-btn``, answered in
  ``#pointer-image``), used where the page cannot decode: no WebAssembly, a decoder past
  MAX_WEB_DECODER_BYTES, a model whose decoder stays on the server, or ``?decode=server``.

Two routes serve the bytes (``routes``): ``/vaescope/ort/NAME`` the vendored runtime (a fixed list
of files, nothing else under any folder) and ``/vaescope/decoder/TOKEN`` an exported decoder, by an
unguessable token the server handed out for one model (``WebDecoders``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from vaescope.errors import InputError
from vaescope.explorer.core.codes import decode
from vaescope.explorer.core.maps import read_click
from vaescope.explorer.core.store import ModelEntry
from vaescope.explorer.core.values import number
from vaescope.explorer.core.webdecoder import WebDecoderRefused, WebDecoders, web_decoder_problem
from vaescope.explorer.ui.common import Context, big, log
from vaescope.explorer.ui.map import HOVER_PX, place_on_map
from vaescope.explorer.ui.state import Session
from vaescope.limits import MAX_MAP_COORDINATE

ORT = Path(__file__).resolve().parent / "static" / "ort"
# the vendored runtime's files the page may fetch, and their types (nothing else is served)
ORT_FILES = {"ort.wasm-core.min.js": "text/javascript", "ort-wasm-simd.wasm": "application/wasm"}
ROUTE = "/vaescope"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}  # the files change only with the package


class WebDecodePanel:
    def __init__(self, ctx: Context, session: gr.State, decoders: WebDecoders) -> None:
        self.ctx = ctx
        self.session = session
        self.decoders = decoders

    def build(self) -> None:
        self.manifest = gr.Textbox(visible="hidden", elem_id="web-decoder")
        self.inverse = gr.Textbox(visible="hidden", elem_id="web-map")
        self.pointer_data = gr.Textbox(visible="hidden", elem_id="pointer-data")
        self.pointer_btn = gr.Button("pointer", visible="hidden", elem_id="pointer-btn")
        # the server's image under the pointer (where the page cannot decode), placed by static/decode.js
        self.pointer_image = gr.Image(format="png", interactive=False, show_label=False, container=False, buttons=[],
                                      elem_id="pointer-image", elem_classes="pixelated")
        self.note = gr.HTML("", elem_id="web-decode-box")  # static/decode.js writes where decoding runs

    # -- the model changed --
    def model_outputs(self) -> list[Any]:
        return [self.manifest, self.inverse, self.pointer_image]

    def on_model(self, entry: ModelEntry, session: Session) -> dict[Any, Any]:
        return {self.manifest: self.manifest_json(entry), self.inverse: inverse_json(entry, None),
                self.pointer_image: None}

    def manifest_json(self, entry: ModelEntry) -> str:
        """What the page needs to decode ``entry``'s codes itself, or why the server decodes (the
        decoder is exported when the page first fetches it)."""
        problem = web_decoder_problem(entry)
        if problem:
            return json.dumps({"key": entry.key, "url": None, "why": f"{_short(entry)}: {problem}."})
        token = self.decoders.prepare(entry)
        description = entry.description
        return json.dumps({"key": entry.key, "url": f"{ROUTE}/decoder/{token}", "latent_dim": description.latent_dim,
                           "image_shape": list(description.image_shape), "name": _short(entry)})

    # -- events --
    def wire(self, plot: Any) -> None:
        """``plot``: the Explore map; each drawing of it sends the page its way back to codes."""
        plot.change(self.map_inverse, [self.session], [self.inverse], api_name="web_map", queue=False,
                    show_progress="hidden")
        self.pointer_btn.click(self.pointer, [self.pointer_data, self.session], [self.pointer_image],
                               js="(payload, session) => [window.__pointerDecode, session]", api_name="pointer_decode",
                               queue=False, trigger_mode="always_last", show_progress="hidden")

    def map_inverse(self, session: Session) -> str:
        entry = self.ctx.store.peek(session.key)
        return inverse_json(entry, session) if entry is not None else json.dumps({"key": None})

    def pointer(self, payload: str | None, session: Session) -> Any:
        """The server's image under the pointer at a spot of a 2D PCA map (an unqueued event, like
        the sliders); nothing when the spot or the map cannot be decoded."""
        entry, view = self.ctx.store.peek(session.key), session.view
        data = read_click(payload)
        if entry is None or entry.generator is None or view is None or view.key != entry.key or data is None \
                or not (view.projection.invertible and view.projection.dims == 2):
            return gr.skip()
        try:
            xy = np.array([_coordinate(data.get("x")), _coordinate(data.get("y"))], np.float32)
            current = session.code if session.code is not None and session.code.key == entry.key else None
            z = place_on_map(entry, view, xy, current)
            image = decode(entry, z, current.y if current is not None else None)[0]
        except InputError:
            return gr.skip()
        except Exception:  # a bug: the log keeps the traceback; a hover has nowhere to say it
            log.exception("decoding under the pointer failed")
            return gr.skip()
        return big(entry, image, HOVER_PX)


def inverse_json(entry: ModelEntry | None, session: Session | None) -> str:
    """The current map's way back to codes, for the page's decoder: {key, mean [D], components
    [2, D]} on a 2D PCA map of the whole code (code = mean + x * components[0] + y * components[1]),
    else {key, mean: null, server: whether the server can decode a spot (a hierarchical model's
    layer map), why}."""
    view = session.view if session is not None else None
    out: dict[str, Any] = {"key": entry.key if entry is not None else None, "nonce": uuid.uuid4().hex,
                           "mean": None, "server": False}
    if entry is None or view is None or view.key != entry.key or entry.generator is None:
        return json.dumps(out | {"why": "no map is drawn"})
    projection = view.projection
    if not (projection.invertible and projection.dims == 2):
        what = "3D map" if projection.dims != 2 else f"{view.method.upper().replace('TSNE', 't-SNE')} map"
        return json.dumps(out | {"why": f"a {what} has no way back to codes: only a 2D PCA map decodes under "
                                         "the pointer"})
    out["server"] = True
    if view.group is not None:
        return json.dumps(out | {"why": "a layer's map decodes on the server (the other layers follow it)"})
    return json.dumps(out | {"mean": [float(v) for v in projection.pca_mean],
                             "components": [[float(v) for v in row] for row in projection.pca_components]})


def _coordinate(value: Any) -> float:
    return number(value, "A map spot's coordinate", -MAX_MAP_COORDINATE, MAX_MAP_COORDINATE)


def _short(entry: ModelEntry) -> str:
    return entry.name.removesuffix(".safetensors")


def routes(decoders: WebDecoders) -> list[Any]:
    """The FastAPI routes that serve the vendored runtime and the exported decoders (given to the
    app when it is created, ahead of Gradio's own). Only the names in ORT_FILES and tokens the
    server handed out answer; everything else is 404. A decoder that stays on the server (past
    the size limit, or not exportable) answers {"refused": the sentence that says why} as JSON,
    which the page shows."""
    from fastapi import Response
    from fastapi.responses import FileResponse
    from fastapi.routing import APIRoute

    def ort_file(name: str) -> Response:
        if name not in ORT_FILES:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(ORT / name, media_type=ORT_FILES[name], headers=IMMUTABLE)

    def decoder(token: str) -> Response:
        try:
            found = decoders.get(token)
        except KeyError:
            return Response("this decoder is no longer kept: choose the model again", status_code=404,
                            media_type="text/plain")
        except WebDecoderRefused as exc:  # an answer, not an error: the browser logs no failed request
            return Response(json.dumps({"refused": str(exc)}), media_type="application/json")
        return Response(found.data, media_type="application/octet-stream",
                        headers={"Cache-Control": "private, max-age=3600"})

    return [APIRoute(f"{ROUTE}/ort/{{name}}", ort_file, methods=["GET"], include_in_schema=False),
            APIRoute(f"{ROUTE}/decoder/{{token}}", decoder, methods=["GET"], include_in_schema=False)]
