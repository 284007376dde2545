"""ONNX graphs from outside: what one must be before onnxruntime sees it, and how it is run.

A graph is parsed once and checked whole (``check_model``): every tensor anywhere in it (graph
initializers, sparse initializers, tensor attributes of every node, every subgraph of If bodies
and every model-local function) must keep its bytes inside the file, because onnxruntime resolves
an external-data ``location`` against the model's folder, or the process's working folder for a
model loaded from bytes, and a home folder holds ``~/.ssh``. Only standard operators run, and
control flow whose trip count the graph decides (Loop, Scan, SequenceMap) is refused: no family
vaescope exports produces one, and a loop without a small constant bound is a server that never
answers. onnxruntime then gets the bytes of the model as parsed and checked (``session``), never
the original bytes or a path, with its external-data folder pointed at an empty private folder
(belt and braces) and constant folding off, so that building a session computes nothing the file
asks for. Every run has a wall-clock budget (``run``): a timer sets RunOptions' ``terminate`` flag,
which onnxruntime reads between nodes (one huge node still runs to its end).

Every refusal is a ``GraphRefused`` or ``GraphFailed`` holding one sentence; the caller adds the
file and the graph's name.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from vaescope.errors import InputError

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})  # the standard operators; anything else needs code to run
# torch.onnx's exporter once wrote its helpers as model-local functions in these domains
FUNCTION_DOMAINS = STANDARD_DOMAINS | {"pkg.onnxscript.torch_lib", "pkg.onnxscript.torch_lib.common"}
# Operators whose repetitions the graph decides at run time (SequenceMap is defined by a Loop).
UNBOUNDED_OPS = frozenset({"Loop", "Scan", "SequenceMap"})


class GraphRefused(InputError):
    """A graph is refused before it runs; the message is one sentence without the file's name."""


class GraphFailed(InputError):
    """A graph failed or ran out of time while running; one sentence without the file's name."""


def parse(data: bytes) -> Any:
    """An ``onnx.ModelProto`` from bytes; GraphRefused when they are not one."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_from_string(data)
    except (DecodeError, ValueError, RecursionError, RuntimeError) as exc:
        raise GraphRefused(f"is not ONNX ({type(exc).__name__})") from None


def _graphs_and_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """("node", NodeProto) and ("tensor", TensorProto) for everything in ``model``: its graph, every
    subgraph at any depth, every function and its default attributes, and the training graphs.
    Iterative, so a deeply nested file costs no Python recursion."""
    graphs = [model.graph]
    graphs += [g for info in model.training_info for g in (info.initialization, info.algorithm)]
    attributes: list[Any] = []
    for function in model.functions:
        yield from (("node", node) for node in function.node)
        attributes.extend(function.attribute_proto)
        attributes.extend(a for node in function.node for a in node.attribute)
    while graphs or attributes:
        while graphs:
            graph = graphs.pop()
            yield from (("tensor", t) for t in graph.initializer)
            for sparse in graph.sparse_initializer:
                yield from (("tensor", sparse.values), ("tensor", sparse.indices))
            for node in graph.node:
                yield "node", node
                attributes.extend(node.attribute)
        while attributes:
            attribute = attributes.pop()
            if attribute.HasField("t"):
                yield "tensor", attribute.t
            yield from (("tensor", t) for t in attribute.tensors)
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                yield from (("tensor", sparse.values), ("tensor", sparse.indices))
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            graphs.extend(attribute.graphs)


def check_model(model: Any) -> None:
    """Refuse (GraphRefused) a model that would make onnxruntime read another file, run code or
    loop without a bound: any tensor anywhere with external data, an operator that is neither
    standard nor one of the model's own functions, a Loop / Scan / SequenceMap, or functions
    calling each other in a circle."""
    from onnx import TensorProto

    domains = {op.domain for op in model.opset_import}
    if not domains <= FUNCTION_DOMAINS:
        raise GraphRefused(f"uses operator domains {sorted(domains - FUNCTION_DOMAINS)}: only standard ONNX "
                           "operators are run (custom operators would run code)")
    functions = {(f.domain, f.name): f for f in model.functions}
    strange = sorted({d for d, _ in functions} - FUNCTION_DOMAINS)
    if strange:
        raise GraphRefused(f"defines functions in domain {strange[0][:60]!r}: only standard ONNX operators are run")
    for kind, item in _graphs_and_tensors(model):
        if kind == "tensor":
            if item.data_location == TensorProto.EXTERNAL or len(item.external_data):
                raise GraphRefused("keeps a tensor in an external file, which is never read: a bundle must "
                                   "hold all its weights")
        elif item.op_type in UNBOUNDED_OPS and item.domain in STANDARD_DOMAINS:
            raise GraphRefused(f"holds a {item.op_type} node: loops whose length the graph decides are refused "
                               "(vaescope's own graphs have none)")
        elif item.domain not in STANDARD_DOMAINS and (item.domain, item.op_type) not in functions:
            raise GraphRefused(f"uses operator domains {[item.domain[:60]]}: only standard ONNX operators are "
                               "run (custom operators would run code)")
    _no_call_cycles(functions)


def _nodes(nodes: Any) -> Iterator[Any]:
    """``nodes`` and every node in their subgraphs, at any depth."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        for attribute in node.attribute:
            stack.extend(n for g in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]
                         for n in g.node)


def _no_call_cycles(functions: dict[tuple[str, str], Any]) -> None:
    """onnxruntime inlines functions; one that calls itself, directly or not, would never end."""
    calls = {key: {(n.domain, n.op_type) for n in _nodes(f.node)} & set(functions) for key, f in functions.items()}
    done: set[tuple[str, str]] = set()
    for start in calls:
        if start in done:
            continue
        path, stack = {start}, [(start, iter(calls[start]))]
        while stack:
            key, callees = stack[-1]
            callee = next(callees, None)
            if callee is None:
                stack.pop()
                path.discard(key)
                done.add(key)
            elif callee in path:
                raise GraphRefused(f"has a function {callee[1][:60]!r} that calls itself")
            elif callee not in done:
                path.add(callee)
                stack.append((callee, iter(calls[callee])))


def pin_dims(value_info: Any, want: list[int]) -> str | None:
    """Fix the non-batch dimensions of a graph input or output (a ValueInfoProto) at ``want``:
    symbolic or missing ones are set. Returns None, or what is declared in words ("[8] per item")
    when a fixed dimension differs, the rank does, or there is no batch dimension. The batch
    dimension is left as declared."""
    if not value_info.type.tensor_type.HasField("shape"):  # no shape declared: declare the metadata's
        shape = value_info.type.tensor_type.shape
        shape.dim.add().dim_param = "batch"
        for size in want:
            shape.dim.add().dim_value = size
        return None
    dims = list(value_info.type.tensor_type.shape.dim)
    if not dims:
        return "a scalar, without a batch dimension"
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if len(declared) != len(want) or any(d is not None and d != w for d, w in zip(declared, want, strict=True)):
        shown = [d if d is not None else (dims[i + 1].dim_param[:20] or "?") for i, d in enumerate(declared)]
        return f"{shown[:8]} per item"
    for dim, size in zip(dims[1:], want, strict=True):
        dim.dim_value = size  # clears dim_param (a oneof)
    return None


# -- running ---------------------------------------------------------------------------------------
_EMPTY_FOLDER: str | None = None
_EMPTY_LOCK = threading.Lock()


def _empty_folder() -> str:
    """A private empty folder, where onnxruntime looks for any external data (there is none to find)."""
    global _EMPTY_FOLDER
    with _EMPTY_LOCK:
        if _EMPTY_FOLDER is None or not os.path.isdir(_EMPTY_FOLDER):
            _EMPTY_FOLDER = tempfile.mkdtemp(prefix="vaescope-no-external-data-")
            atexit.register(_remove_empty_folder, _EMPTY_FOLDER)
        return _EMPTY_FOLDER


def _remove_empty_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # already gone, or not empty: then it is left for the operator to see
        os.rmdir(folder)


def session(model: Any) -> Any:
    """An onnxruntime CPU session for ``model`` (a ModelProto that passed ``check_model``), built from
    its re-serialised bytes; GraphRefused in one sentence when onnxruntime cannot build it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # many small calls in parallel requests, like torch in the server
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures become one sentence here, not lines on stderr
    # No arena and no memory pattern: between runs a served bundle holds its weights, not the
    # largest batch it ever ran (about 120 MB less per 64x64 conv bundle, no slower).
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    # Where a model loaded from bytes finds external data: nowhere (check_model refused it already).
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", _empty_folder())
    try:
        # Constant folding runs the graph's constant part while the session is built, where no time
        # budget reaches it (a chain of constant MatMuls took seconds); it runs in ``run`` instead.
        return ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                    providers=["CPUExecutionProvider"], disabled_optimizers=["ConstantFolding"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types (Fail, InvalidGraph, ...)
        raise GraphRefused(f"cannot be run by onnxruntime ({type(exc).__name__}: {first_line(exc)})") from None


_ORT_CODE = re.compile(r"\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")
_ORT_NODE = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'.*?' Status Message: ")
# a source file reference, and the C++ signature that often follows it
_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ (?:[^()]*::[^()]*\([^()]*\)(?: const)? )?")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An error's message as one short line: onnxruntime's own texts run over several lines and
    carry error codes, source paths and C++ signatures that say nothing to the person reading."""
    text = " ".join(str(exc).split())
    text = _ORT_SOURCE.sub("", _ORT_NODE.sub(r"\1 node: ", _ORT_CODE.sub("", text))).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> list[np.ndarray]:
    """``session.run`` stopped after ``seconds`` of wall-clock time; GraphFailed in one sentence when
    it fails or is stopped."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        options.terminate = True

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        return session.run(None, feeds, options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; MemoryError for a huge output
        if stopped.is_set():
            raise GraphFailed(f"ran longer than {seconds:g} s and was stopped") from None
        raise GraphFailed(f"failed ({first_line(exc)})") from None
    finally:
        timer.cancel()
