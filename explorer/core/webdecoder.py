"""The decoder as an ONNX graph the page runs itself (decoding under the pointer and the sliders).

``web_decoder_problem(entry)`` says in one sentence why a model's decoder stays on the server (no
decoder, a code with channels or layers, pictures that are not pixels, a model too large or not a
PyTorch module), or None. ``export_decoder(entry)`` writes the decoder as ONNX: the graph takes
``z`` float32 [B, D] and, for a decoder that takes a class, ``condition`` int64 [B] (an input the
decoder ignores is dropped from the graph), and gives ``x`` float32 [B, C, H, W] in [0, 1]. It is
exported from a CPU copy of the model (the served model is never moved or re-moded), checked the
way every ONNX graph is (``vaescope.onnx_guard``: standard operators, nothing outside the file),
refused above ``MAX_WEB_DECODER_BYTES``, and run in onnxruntime against PyTorch on a few codes:
more than ``WEB_TOLERANCE`` apart and it is refused too. ``WebDecoders`` keeps the exported
graphs (at most ``MAX_WEB_DECODERS``), each exported once, when the page first fetches it (by
an unguessable token the server handed out).

Examples:
    >>> graph = export_decoder(entry)  # doctest: +SKIP
    >>> graph.inputs, len(graph.data) < MAX_WEB_DECODER_BYTES  # doctest: +SKIP
    (('z',), True)
"""

from __future__ import annotations

import copy
import io
import secrets
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaescope import onnx_guard
from vaescope.errors import InputError
from vaescope.explorer.core.store import ModelEntry
from vaescope.limits import (
    GRAPH_RUN_SECONDS,
    MAX_WEB_DECODER_BYTES,
    MAX_WEB_DECODERS,
    MAX_WEB_EXPORT_PARAMETERS,
)

WEB_TOLERANCE = 1e-4  # the page's decoder must match PyTorch's within this (vaescope.bundle's EXPORT_TOLERANCE)
OPSET = 18  # onnxruntime-web 1.17 runs opsets up to 20
CHECK_CODES = 5  # codes the export is checked on: zero, the prior's spread, and beyond it
EXPORT_WAIT_SECONDS = 120.0  # the page waits this long for an export before it gives up (and the server decodes)


class WebDecoderRefused(InputError):
    """A decoder that stays on the server; the message is one sentence that says why."""


@dataclass(frozen=True)
class WebDecoder:
    """A model's decoder as ONNX bytes for the page: ``inputs`` ("z", and "condition" when the
    decoder takes a class), the code's size and the image shape, and the largest |ONNX - PyTorch|
    measured on the check codes."""

    key: str
    data: bytes
    inputs: tuple[str, ...]
    latent_dim: int
    image_shape: tuple[int, int, int]
    error: float


def megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _module(model: Any) -> nn.Module | None:
    """The PyTorch module holding a model's weights: the model itself, or an adapter's ``module``."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else None


def web_decoder_problem(entry: ModelEntry) -> str | None:
    """Why ``entry``'s decoder is not sent to the page, in one sentence; None when it can be.

    Cheap: nothing is exported here (the parameter count is read off the module)."""
    description = entry.description
    if entry.generator is None:
        return "these are precomputed embeddings: there is no decoder to run"
    if description.spatial:
        return ("its code keeps channels and positions (C×H×W), which the sliders move a channel at a time: "
                "the server decodes")
    if len(description.latent_groups) > 1:
        return "a slider of one layer refills the other layers through the model, so the server decodes"
    if description.display != "image":
        return f"its items are drawn as {description.display} plots, which the server draws"
    module = _module(entry.model)
    if module is None:
        return "its decoder is not a PyTorch module (an ONNX bundle or a foreign model), so the server decodes"
    count = sum(p.numel() for p in module.parameters())
    if count > MAX_WEB_EXPORT_PARAMETERS:
        return (f"the model has {count:,} parameters, more than the {MAX_WEB_EXPORT_PARAMETERS:,} "
                "(MAX_WEB_EXPORT_PARAMETERS) whose decoder is sent to the page, so the server decodes")
    return None


class _Decoder(nn.Module):
    """decode(z, condition) as a module: condition [B] int64 class labels (read only by a decoder
    that takes a class, through the model's own ``Condition``)."""

    def __init__(self, model: Any, condition: Any) -> None:
        super().__init__()
        self.model, self.condition = model, condition

    def forward(self, z: Tensor, condition: Tensor) -> Tensor:
        return self.model.decode(z, self.condition.from_labels(condition))


def _cpu_copy(entry: ModelEntry) -> Any:
    """A copy of the model on the CPU in eval mode: the served one keeps its device and mode while
    another thread decodes with it."""
    try:
        model = copy.deepcopy(entry.model)
    except Exception as exc:  # noqa: BLE001 - any object may refuse to be copied; say so
        raise WebDecoderRefused(f"the model cannot be copied for export ({type(exc).__name__}), so the server "
                                "decodes") from None
    module = _module(model)
    if module is not None:
        module.cpu().eval()
    return model


def _to_onnx(module: nn.Module, z: Tensor, condition: Tensor) -> bytes:
    """The module as ONNX bytes: TorchScript tracing (a tenth of a second for the shipped models),
    or torch.export where tracing fails (seconds)."""
    buf = io.BytesIO()
    names = {"input_names": ["z", "condition"], "output_names": ["x"], "opset_version": OPSET}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (z, condition), buf, dynamo=False, **names,
                              dynamic_axes={"z": {0: "batch"}, "condition": {0: "batch"}, "x": {0: "batch"}})
            return buf.getvalue()
        except Exception:  # noqa: BLE001 - the tracer refuses many things; torch.export may not
            buf = io.BytesIO()
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(module, (z, condition), dynamo=True, verbose=False, optimize=True,
                                    dynamic_shapes={"z": {0: batch}, "condition": {0: batch}}, **names)
        program.save(buf, external_data=False)
    return buf.getvalue()


def check_codes(latent_dim: int, n: int = CHECK_CODES) -> np.ndarray:
    """The codes [n, D] an export is checked on: zero, then seeded normal codes scaled 1, 2, 3..."""
    rng = np.random.default_rng(0)
    scale = np.arange(n, dtype=np.float32)[:, None]
    return (rng.standard_normal((n, latent_dim)).astype(np.float32) * scale).astype(np.float32)


def export_decoder(entry: ModelEntry) -> WebDecoder:
    """``entry``'s decoder as ONNX for the page (see the module's docstring); WebDecoderRefused with
    one sentence when it stays on the server."""
    problem = web_decoder_problem(entry)
    if problem:
        raise WebDecoderRefused(problem)
    description = entry.description
    model = _cpu_copy(entry)
    module = _Decoder(model, description.condition)
    codes = torch.from_numpy(check_codes(description.latent_dim))
    labels = torch.arange(len(codes)) % max(1, description.condition.size)
    try:
        with torch.no_grad():
            data = _to_onnx(module, codes, labels)
    except Exception as exc:  # noqa: BLE001 - export raises many kinds; the sentence names it
        raise WebDecoderRefused(f"its decoder could not be exported to ONNX ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}), so the server decodes") from None
    if len(data) > MAX_WEB_DECODER_BYTES:
        raise WebDecoderRefused(f"its decoder is {megabytes(len(data))} as ONNX, more than the "
                                f"{megabytes(MAX_WEB_DECODER_BYTES)} (MAX_WEB_DECODER_BYTES) sent to the page, so the "
                                "server decodes")
    try:
        graph = onnx_guard.parse(data)
        onnx_guard.check_model(graph)
        session = onnx_guard.session(graph)
        inputs = tuple(i.name for i in session.get_inputs())
        feeds = {"z": codes.numpy(), "condition": labels.numpy()}
        got = onnx_guard.run(session, {k: feeds[k] for k in inputs}, GRAPH_RUN_SECONDS)[0]
    except (onnx_guard.GraphRefused, onnx_guard.GraphFailed) as exc:
        raise WebDecoderRefused(f"its exported decoder {exc}, so the server decodes") from None
    with torch.no_grad():
        want = module(codes, labels).float().numpy()
    error = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not error <= WEB_TOLERANCE:
        raise WebDecoderRefused(f"its exported decoder differs from PyTorch by {error:.1e} (more than "
                                f"{WEB_TOLERANCE:.0e}), so the server decodes")
    shape = tuple(int(s) for s in description.image_shape)
    return WebDecoder(entry.key, data, inputs, description.latent_dim, shape, error)  # type: ignore[arg-type]


class WebDecoders:
    """The exported decoders, by model key: each exported once, when the page first asks for it (a
    client of the API that never does costs nothing; a second caller waits for the first), at most
    ``MAX_WEB_DECODERS`` kept (least recently used dropped), and each reachable by an unguessable
    token, never by a name the page chooses."""

    def __init__(self, max_kept: int = MAX_WEB_DECODERS) -> None:
        self.max_kept = max_kept
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, ModelEntry] = OrderedDict()  # model key -> its entry
        self._jobs: dict[str, Future[WebDecoder]] = {}  # model key -> its export, once asked for
        self._tokens: dict[str, str] = {}  # token -> model key
        self._token_of: dict[str, str] = {}  # model key -> token

    def prepare(self, entry: ModelEntry) -> str:
        """The token the page fetches ``entry``'s decoder by (the same one each time)."""
        with self._lock:
            key = entry.key
            self._entries[key] = entry
            self._entries.move_to_end(key)
            token = self._token_of.get(key)
            if token is None:
                token = secrets.token_urlsafe(18)
                self._tokens[token], self._token_of[key] = key, token
            while len(self._entries) > self.max_kept:
                old, _ = self._entries.popitem(last=False)
                self._jobs.pop(old, None)
                self._tokens.pop(self._token_of.pop(old, ""), None)
            return token

    def get(self, token: str, timeout: float = EXPORT_WAIT_SECONDS) -> WebDecoder:
        """The decoder behind ``token``, exported now if it was not yet (in this thread; another
        caller waits for it): KeyError for a token this server did not hand out (or has dropped),
        WebDecoderRefused with the reason it stays on the server."""
        with self._lock:
            key = self._tokens.get(str(token))
            if key is None:
                raise KeyError(token)
            job, mine = self._jobs.get(key), False
            if job is None:
                job, mine = Future(), True
                self._jobs[key] = job
            entry = self._entries[key]
        if mine:
            try:
                job.set_result(export_decoder(entry))
            except InputError as exc:
                job.set_exception(exc)
            except Exception as exc:  # noqa: BLE001 - a bug must reach the page as a sentence
                job.set_exception(WebDecoderRefused(f"exporting its decoder failed ({type(exc).__name__}: {exc}), "
                                                    "so the server decodes"))
        try:
            return job.result(timeout=timeout)
        except TimeoutError:
            raise WebDecoderRefused(f"exporting its decoder took over {timeout:.0f} s, so the server "
                                    "decodes") from None
