"""The doors an ONNX bundle could open on the server, each shut (issue #28).

Every bundle here is built from a handful of ONNX nodes written in the test (``tiny_graphs``: an
encoder, decoder, prior and KL for [1, 2, 2] images and a 2-d code, which pass every check), then
changed in one way: a tensor whose bytes live in another file (a canary that must never be read), a
loop the graph decides the length of, a graph that runs too long, metadata that asks for gigabytes,
a graph that gives other shapes than it declares. Each is refused with one sentence, before
onnxruntime sees the graph where that is possible.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from vaescope import bundle as bundle_module
from vaescope import onnx_guard
from vaescope.bundle import BUNDLE_FORMAT, BUNDLE_KEY, BUNDLE_VERSION, BundleError, load_bundle

SHAPE, D = [1, 2, 2], 2
CANARY = b"CANARY-0123456789abcdef-never-served"  # 36 bytes: 9 float32s of someone's secret


# -- a tiny bundle, written node by node -----------------------------------------------------------
def vi(name: str, dims: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def model(nodes: list, inputs: list, outputs: list, initializers: tuple = (), functions: tuple = (),
          domains: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 18), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions), ir_version=10)


def const(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def encoder(extra_nodes: tuple = (), extra_inits: tuple = (), add: str | None = None, **kw) -> onnx.ModelProto:
    """x [B, 1, 2, 2] -> mean = flat(x) @ W [B, 2] (+ ``add`` [2], a tensor other nodes make), logvar 0, probs 0."""
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["m0"]),
             *extra_nodes,
             helper.make_node("Add", ["m0", add], ["mean"]) if add else helper.make_node("Identity", ["m0"], ["mean"]),
             helper.make_node("Mul", ["mean", "zero"], ["logvar"]),
             helper.make_node("ReduceSum", ["logvar", "axis1"], ["probs"], keepdims=1)]
    inits = [const("W", np.full((4, D), 0.25, np.float32)), const("zero", np.zeros(1, np.float32)),
             const("axis1", np.array([1], np.int64)), *extra_inits]
    return model(nodes, [vi("x", ["batch", *SHAPE])], [vi("mean", ["batch", D]), vi("logvar", ["batch", D]),
                                                       vi("probs", ["batch", 1])], tuple(inits), **kw)


def decoder(side: int = 2, declared: list | None = None) -> onnx.ModelProto:
    """z [B, 2] -> sigmoid(z @ W) as [B, 1, side, side]; it declares ``declared`` (else the truth)."""
    nodes = [helper.make_node("MatMul", ["z", "W"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["x"])]
    inits = [const("W", np.full((D, side * side), 0.5, np.float32)),
             const("shape", np.array([-1, 1, side, side], np.int64))]
    return model(nodes, [vi("z", ["batch", D])], [vi("x", declared or ["batch", 1, side, side])], tuple(inits))


def prior() -> onnx.ModelProto:
    return model([helper.make_node("Identity", ["eps"], ["z"])], [vi("eps", ["batch", D])], [vi("z", ["batch", D])])


def kl() -> onnx.ModelProto:
    return model([helper.make_node("Mul", ["mean", "mean"], ["kl"])],
                 [vi("mean", ["batch", D]), vi("logvar", ["batch", D]), vi("probs", ["batch", 1])],
                 [vi("kl", ["batch", D])])


def tiny_graphs() -> dict[str, onnx.ModelProto]:
    return {"encoder": encoder(), "decoder": decoder(), "prior": prior(), "kl": kl()}


def tiny_meta(**description) -> dict:
    d = {"family": "foreign", "title": "tiny", "summary": "four graphs written by hand", "image_shape": SHAPE,
         "latent_dim": D, "class_names": [], "condition": {"kind": "none", "size": 0}, "has_prior": True}
    return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "description": d | description,
            "deterministic": False, "dataset": {}, "train_config": {}, "history": [], "metrics": {}, "export_error": 0.0}


def write_bundle(path: Path, graphs: dict[str, onnx.ModelProto] | None = None, meta: dict | str | None = None,
                 raw: dict[str, bytes] | None = None) -> Path:
    """A bundle file from ONNX models (the tiny ones where not given) and metadata (a dict or JSON text);
    ``raw`` gives a graph's bytes as they are."""
    graphs = tiny_graphs() | (graphs or {})
    data = {name: g.SerializeToString() for name, g in graphs.items()} | (raw or {})
    tensors = {f"onnx.{name}": torch.frombuffer(bytearray(b), dtype=torch.uint8) for name, b in data.items()}
    text = meta if isinstance(meta, str) else json.dumps(meta or tiny_meta())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={BUNDLE_KEY: text})
    return path


@pytest.fixture
def sessions_made(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The model bytes of every onnxruntime session built from now on (the real session is built)."""
    made: list[bytes] = []
    real = onnxruntime.InferenceSession

    def spy(data, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        made.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return made


def refused(path: Path, match: str) -> str:
    """load_bundle's refusal of ``path``: one line matching ``match``."""
    with pytest.raises(BundleError, match=match) as caught:
        load_bundle(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600 + len(str(path)), message
    return message


def test_the_tiny_bundle_passes_every_check_and_runs(tmp_path: Path, sessions_made: list[bytes]) -> None:
    bundle, meta, sample = load_bundle(write_bundle(tmp_path / "tiny.safetensors"))
    assert sample is None and len(sessions_made) == 4
    x = torch.rand(3, *SHAPE)
    post = bundle.encode(x)
    torch.testing.assert_close(post.mean, x.flatten(1) @ torch.full((4, D), 0.25))
    assert bundle.decode(post.mean).shape == (3, *SHAPE) and bundle.sample(5).shape == (5, D)
    assert bundle.kl_per_dim(post).shape == (3, D) and bundle.encode(x[:0]).mean.shape == (0, D)


def test_a_large_batch_runs_in_parts_that_agree_with_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, _, _ = load_bundle(write_bundle(tmp_path / "tiny.safetensors"))
    z = torch.randn(5, D)
    whole = bundle.decode(z)
    monkeypatch.setattr(bundle_module, "MAX_GRAPH_RUN_VALUES", 8)  # 4 values an image: parts of 2
    calls = []
    real = onnx_guard.run
    monkeypatch.setattr(onnx_guard, "run", lambda s, feeds, t: calls.append(len(feeds["z"])) or real(s, feeds, t))
    torch.testing.assert_close(bundle.decode(z), whole)
    assert calls == [2, 2, 1]


# -- 1. self-contained or refused -----------------------------------------------------------------
def external(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    """``tensor`` with its bytes moved to ``location`` (the first 36 bytes: the canary's length)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(CANARY)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def secret_tensor(name: str, location: str) -> onnx.TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[9])
    return external(tensor, location)


def _initializer(location: str) -> onnx.ModelProto:
    """The encoder's weights (9 floats read as [9]... reshaped by nothing: the read is what leaks)."""
    return encoder(extra_inits=(secret_tensor("leak", location),), extra_nodes=(
        helper.make_node("ReduceSum", ["leak"], ["leak_sum"], keepdims=0),), add="leak_sum")


def _constant_attribute(location: str) -> onnx.ModelProto:
    return encoder(extra_nodes=(helper.make_node("Constant", [], ["leak"], value=secret_tensor("c", location)),
                                helper.make_node("ReduceSum", ["leak"], ["leak_sum"], keepdims=0)), add="leak_sum")


def _branch(location: str | None) -> onnx.GraphProto:
    value = secret_tensor("b", location) if location else const("b", np.zeros(9, np.float32))
    return helper.make_graph([helper.make_node("Constant", [], ["out"], value=value)], "branch", [],
                             [vi("out", [9])])


def _if_subgraph(location: str) -> onnx.ModelProto:
    return encoder(extra_inits=(const("yes", np.array(True)),), extra_nodes=(
        helper.make_node("If", ["yes"], ["leak"], then_branch=_branch(location), else_branch=_branch(None)),
        helper.make_node("ReduceSum", ["leak"], ["leak_sum"], keepdims=0)), add="leak_sum")


def _sparse_initializer(location: str) -> onnx.ModelProto:
    m = encoder()
    sparse = helper.make_sparse_tensor(secret_tensor("s", location), const("s_i", np.arange(9, dtype=np.int64)), [9])
    m.graph.sparse_initializer.append(sparse)
    return m


def _function_body(location: str) -> onnx.ModelProto:
    domain = "pkg.onnxscript.torch_lib"
    function = helper.make_function(domain, "leak_fn", [], ["out"],
                                    [helper.make_node("Constant", [], ["out"], value=secret_tensor("f", location))],
                                    [helper.make_opsetid("", 18)])
    return encoder(extra_nodes=(helper.make_node("leak_fn", [], ["leak"], domain=domain),
                                helper.make_node("ReduceSum", ["leak"], ["leak_sum"], keepdims=0)),
                   add="leak_sum", functions=(function,), domains=(domain,))


LEAKS = {  # how the tensor is held, where the canary lies, the location the tensor names, the working folder
    "initializer, ../../secret": (_initializer, "secret", "../../secret", "a/b"),
    "Constant attribute, a key in the home folder": (_constant_attribute, "home/.ssh/id_ed25519",
                                                     ".ssh/id_ed25519", "home"),
    "If branch, a file beside the bundle": (_if_subgraph, "models/other.safetensors", "other.safetensors", "models"),
    "sparse initializer values": (_sparse_initializer, "secret", "secret", "."),
    "a local function's Constant": (_function_body, "secret", "../secret", "a"),
}


@pytest.mark.parametrize("shape", sorted(LEAKS))
def test_a_tensor_kept_in_another_file_is_refused_before_onnxruntime_sees_it(
        shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sessions_made: list[bytes]) -> None:
    build, canary, location, cwd = LEAKS[shape]
    (tmp_path / canary).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / canary).write_bytes(CANARY)
    (tmp_path / cwd).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / cwd)  # where onnxruntime resolves the location of a model loaded from bytes
    path = write_bundle(tmp_path / "models" / "evil.safetensors", {"encoder": build(location)})
    message = refused(path, "its encoder graph keeps a tensor in an external file, which is never read")
    assert sessions_made == [] and "CANARY" not in message


def test_onnxruntime_alone_would_read_the_file_and_the_guards_session_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The threat is real (plain onnxruntime serves the canary's bytes as numbers), and the guard's
    session options are a second wall: even an unchecked model finds no external data."""
    (tmp_path / "secret").write_bytes(CANARY)
    monkeypatch.chdir(tmp_path)
    leaky = _initializer("secret")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    plain = onnxruntime.InferenceSession(leaky.SerializeToString(), options, providers=["CPUExecutionProvider"])
    mean = plain.run(["mean"], {"x": np.zeros((1, *SHAPE), np.float32)})[0]
    assert mean[0, 0] == pytest.approx(float(np.frombuffer(CANARY, np.float32).sum()))  # it read the file
    with pytest.raises(onnx_guard.GraphRefused, match="cannot be run by onnxruntime") as caught:
        onnx_guard.session(leaky)  # check_model skipped on purpose
    assert "\n" not in str(caught.value)


def test_onnxruntime_gets_the_checked_model_re_serialised(tmp_path: Path, sessions_made: list[bytes]) -> None:
    """Not the file's bytes: the parsed model, its free dimensions pinned to the metadata's."""
    sloppy = decoder(declared=["batch", "c", "h", "w"])
    load_bundle(write_bundle(tmp_path / "b.safetensors", {"decoder": sloppy}))
    got = onnx.load_from_string(sessions_made[1])
    assert sessions_made[1] != sloppy.SerializeToString()
    assert [d.dim_value for d in got.graph.output[0].type.tensor_type.shape.dim[1:]] == SHAPE


def test_custom_operators_anywhere_are_refused(tmp_path: Path, sessions_made: list[bytes]) -> None:
    then = helper.make_graph([helper.make_node("Evil", [], ["out"], domain="com.example")], "t", [], [vi("out", [9])])
    m = encoder(extra_inits=(const("yes", np.array(True)),), extra_nodes=(
        helper.make_node("If", ["yes"], ["leak"], then_branch=then, else_branch=_branch(None)),
        helper.make_node("ReduceSum", ["leak"], ["leak_sum"], keepdims=0)), add="leak_sum")
    refused(write_bundle(tmp_path / "b.safetensors", {"encoder": m}), r"operator domains \['com.example'\]")
    assert sessions_made == []


# -- 2. graphs run under a budget -----------------------------------------------------------------
def loop_body() -> onnx.GraphProto:
    """Adds one to a carried value and keeps going as long as its condition says."""
    return helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
                             [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("v_in", [1])],
                             [vi("cond_out", [], TensorProto.BOOL), vi("v_out", [1])],
                             [const("one", np.ones(1, np.float32))])


def _loop(trip_count: int | None) -> tuple[list, tuple]:
    nodes = [helper.make_node("Loop", ["n" if trip_count else "", "go", "start"], ["looped"], body=loop_body()),
             helper.make_node("ReduceSum", ["looped"], ["leak_sum"], keepdims=0)]
    inits = [const("go", np.array(True)), const("start", np.zeros(1, np.float32))]
    return nodes, (*inits, *([const("n", np.array(trip_count, np.int64))] if trip_count else []))


def _looping(trip_count: int | None) -> onnx.ModelProto:
    nodes, inits = _loop(trip_count)
    return encoder(extra_nodes=tuple(nodes), extra_inits=inits, add="leak_sum")


def _loop_in_if() -> onnx.ModelProto:
    nodes, inits = _loop(None)
    branch = helper.make_graph(nodes, "then", [], [vi("leak_sum", [])], list(inits))
    other = helper.make_graph([helper.make_node("Constant", [], ["leak_sum"], value=const("z", np.float32(0)))],
                              "else", [], [vi("leak_sum", [])])
    return encoder(extra_inits=(const("yes", np.array(True)),), add="s", extra_nodes=(
        helper.make_node("If", ["yes"], ["s"], then_branch=branch, else_branch=other),))


def _scan_in_function() -> onnx.ModelProto:
    domain = "pkg.onnxscript.torch_lib"
    body = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "scan_body", [vi("a", [])], [vi("b", [])])
    function = helper.make_function(domain, "scan_fn", ["v"], ["out"],
                                    [helper.make_node("Scan", ["v"], ["out"], body=body, num_scan_inputs=1)],
                                    [helper.make_opsetid("", 18)])
    return encoder(extra_nodes=(helper.make_node("scan_fn", ["m0"], ["leak"], domain=domain),), add="leak",
                   functions=(function,), domains=(domain,))


@pytest.mark.parametrize("build, node", [
    (lambda: _looping(None), "Loop"),  # no trip count, a condition that stays true: never returns
    (lambda: _looping(2), "Loop"),  # a small constant bound is refused too: no family needs a Loop
    (_loop_in_if, "Loop"),
    (_scan_in_function, "Scan"),
], ids=["unbounded", "two-steps", "inside-an-If", "Scan-in-a-function"])
def test_loops_are_refused_before_onnxruntime_sees_them(build, node: str, tmp_path: Path,
                                                        sessions_made: list[bytes]) -> None:
    started = time.monotonic()
    refused(write_bundle(tmp_path / "loop.safetensors", {"encoder": build()}),
            f"its encoder graph holds a {node} node: loops whose length the graph decides are refused")
    assert sessions_made == [] and time.monotonic() - started < 5


def _calling(domain: str, name: str, callee: str, through_if: bool) -> onnx.FunctionProto:
    call = helper.make_node(callee, ["v"], ["out"], domain=domain)
    if through_if:  # the call hides in a branch of an If inside the function
        branch = helper.make_graph([call], "b", [], [vi("out", ["batch", D])])
        call = helper.make_node("If", ["flag"], ["out"], then_branch=branch, else_branch=branch)
    nodes = ([helper.make_node("Constant", [], ["flag"], value=const("t", np.array(True)))] if through_if else []) + [call]
    return helper.make_function(domain, name, ["v"], ["out"], nodes,
                                [helper.make_opsetid("", 18), helper.make_opsetid(domain, 1)])


@pytest.mark.parametrize("calls, through_if", [
    ({"again": "again"}, False),  # itself
    ({"ping": "pong", "pong": "ping"}, False),  # round a circle of two
    ({"again": "again"}, True),  # from inside an If branch
], ids=["itself", "a-circle-of-two", "through-an-If"])
def test_functions_that_call_themselves_are_refused(calls: dict, through_if: bool, tmp_path: Path) -> None:
    domain = "pkg.onnxscript.torch_lib"
    functions = tuple(_calling(domain, name, callee, through_if) for name, callee in calls.items())
    first = next(iter(calls))
    m = encoder(extra_nodes=(helper.make_node(first, ["m0"], ["leak"], domain=domain),), add="leak",
                functions=functions, domains=(domain,))
    refused(write_bundle(tmp_path / "b.safetensors", {"encoder": m}), r"has a function '\w+' that calls itself")


def test_a_run_past_its_budget_is_stopped() -> None:
    """The budget itself, on a graph no bundle may hold (an unbounded Loop, never checked here)."""
    nodes, inits = _loop(None)
    m = model(nodes, [], [vi("leak_sum", [])], inits)
    session = onnx_guard.session(m)
    started = time.monotonic()
    with pytest.raises(onnx_guard.GraphFailed, match=r"^ran longer than 0.3 s and was stopped$"):
        onnx_guard.run(session, {}, 0.3)
    assert time.monotonic() - started < 0.3 + 2.0


def slow_encoder(steps: int = 100, size: int = 512) -> onnx.ModelProto:
    """No loop, but ``steps`` chained [size, size] matrix products (about 0.1-0.3 s on one core):
    constant folding is off, so they run in the budgeted run, not while the session is built."""
    nodes = [helper.make_node("MatMul", ["c" if i == 0 else f"h{i - 1}", "c"], [f"h{i}"]) for i in range(steps)]
    nodes += [helper.make_node("ReduceSum", [f"h{steps - 1}"], ["slow"], keepdims=0),
              helper.make_node("Mul", ["slow", "zero"], ["slow0"])]
    return encoder(extra_nodes=tuple(nodes), extra_inits=(const("c", np.eye(size, dtype=np.float32)),), add="slow0")


def test_a_slow_graph_is_stopped_at_load_and_at_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_bundle(tmp_path / "slow.safetensors", {"encoder": slow_encoder()})
    monkeypatch.setattr(bundle_module, "GRAPH_RUN_SECONDS", 0.01)
    started = time.monotonic()
    refused(path, r"its encoder graph, on a batch of 2, ran longer than 0.01 s and was stopped")
    assert time.monotonic() - started < 3
    monkeypatch.setattr(bundle_module, "GRAPH_RUN_SECONDS", 60.0)
    bundle, _, _ = load_bundle(path)  # within a generous budget it opens...
    monkeypatch.setattr(bundle_module, "GRAPH_RUN_SECONDS", 0.01)
    with pytest.raises(BundleError, match=r"slow.safetensors: its encoder graph, on a batch of 3, ran longer than "
                                          r"0.01 s and was stopped"):
        bundle.encode(torch.rand(3, *SHAPE))  # ... and a later run past the budget is stopped


# -- 3. declared sizes checked before anything is allocated ------------------------------------------
def _edit(change) -> dict:  # noqa: ANN001
    meta = tiny_meta()
    change(meta)
    return meta


SIZES = {
    "latent 65,536 and 10,000 components": (
        lambda m: m["description"].update(latent_dim=65_536, condition={"kind": "component", "size": 10_000}),
        r"its latent dim 65536 is beyond the limits \(1 to 1024\)"),
    "components 10,000": (lambda m: m["description"].update(condition={"kind": "component", "size": 10_000}),
                          r"its condition size 10000 \(classes or mixture components\) is beyond the limits"),
    "image 3x4096x4096": (lambda m: m["description"].update(image_shape=[3, 4096, 4096]),
                          r"its image shape \[3, 4096, 4096\] is beyond the limits"),
    "dataset block folder:pets at 4096 px": (
        lambda m: m.update(dataset={"name": "folder:pets", "image_shape": [3, 4096, 4096]}),
        r"its metadata is refused: dataset.image_shape \[3, 4096, 4096\] differs"),
    "dataset block with an unknown key": (lambda m: m.update(dataset={"name": "digits", "path": "/etc"}),
                                          r"dataset: unknown key\(s\) \['path'\]"),
    "1,001 class names": (lambda m: m["description"].update(class_names=["c"] * 1001), "at most 1000 strings"),
    "a 300-character class name": (lambda m: m["description"].update(class_names=["c" * 300]),
                                   "of at most 256 characters"),
    "a latent group past the code": (
        lambda m: m["description"].update(latent_groups=[{"name": "top", "start": 1, "size": 5}]),
        r"latent group 'top' \(start 1, size 5\) lies outside the code's 2 dimensions"),
    "a float for a size": (lambda m: m["description"].update(latent_dim=2.5), "must be an integer"),
    "a history record that is not one": (lambda m: m.update(history=[{"epoch": "one"}]), r"history\[0\].epoch"),
}


@pytest.mark.parametrize("case", sorted(SIZES))
def test_metadata_sizes_are_checked_before_anything_is_built(case: str, tmp_path: Path,
                                                            sessions_made: list[bytes]) -> None:
    change, message = SIZES[case]
    path = write_bundle(tmp_path / "big.safetensors", meta=_edit(change))
    tracemalloc.start()
    try:
        refused(path, message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20 and sessions_made == []  # refused from the metadata alone


def test_deeply_nested_metadata_is_refused(tmp_path: Path) -> None:
    text = json.dumps(tiny_meta())[:-1] + ', "notes": ' + "[" * 5000 + "]" * 5000 + "}"
    refused(write_bundle(tmp_path / "deep.safetensors", meta=text), "nested 5001 levels deep")


# -- 3 and 4. shapes that lie, failures in one sentence ----------------------------------------------
def test_a_decoder_that_gives_other_shapes_than_it_declares_is_refused_at_load(tmp_path: Path) -> None:
    lying = decoder(side=8, declared=["batch", *SHAPE])  # says [1, 2, 2], gives [1, 8, 8]
    message = refused(write_bundle(tmp_path / "b.safetensors", {"decoder": lying}),
                      r"its decoder graph gave x as float32 \[2, 1, 8, 8\] for a batch of 2, but it declares "
                      r"float32 \[2, 1, 2, 2\]$")
    assert "onnxruntime" not in message.lower()


def test_a_symbolic_dimension_cannot_grow_an_image(tmp_path: Path) -> None:
    """Declared [batch, 1, h, w] with h and w free: pinned to the metadata's 2 x 2, so a decoder that
    makes 50 x 50 images is refused when opened (the suite's made 5000 px)."""
    sprawling = decoder(side=50, declared=["batch", 1, "h", "w"])
    refused(write_bundle(tmp_path / "b.safetensors", {"decoder": sprawling}),
            r"gave x as float32 \[2, 1, 50, 50\] for a batch of 2, but it declares float32 \[2, 1, 2, 2\]")


def test_declared_shapes_that_disagree_with_the_metadata_are_refused(tmp_path: Path) -> None:
    m = encoder()
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 8
    refused(write_bundle(tmp_path / "b.safetensors", {"encoder": m}),
            r"its encoder graph's mean is \[8\] per item, but the metadata says \[2\]")


def test_a_shape_left_out_is_declared_and_a_scalar_is_refused(tmp_path: Path) -> None:
    quiet = kl()
    quiet.graph.output[0].type.tensor_type.ClearField("shape")  # onnxruntime would take any shape
    bundle, _, _ = load_bundle(write_bundle(tmp_path / "quiet.safetensors", {"kl": quiet}))
    assert bundle.kl_per_dim(bundle.encode(torch.rand(3, *SHAPE))).shape == (3, D)
    scalar = kl()
    del scalar.graph.output[0].type.tensor_type.shape.dim[:]
    refused(write_bundle(tmp_path / "scalar.safetensors", {"kl": scalar}),
            r"its kl graph's kl is a scalar, without a batch dimension, but the metadata says \[2\]")


def test_an_output_of_another_type_is_refused(tmp_path: Path) -> None:
    m = prior()
    m.graph.node.append(helper.make_node("Cast", ["z0"], ["z"], to=TensorProto.STRING))
    m.graph.node[0].output[0] = "z0"
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.STRING
    refused(write_bundle(tmp_path / "b.safetensors", {"prior": m}), "its prior graph's z is not a float32 tensor")


def _huge_decoder(elements: int) -> onnx.ModelProto:
    """A decoder of the right shapes that first asks for ``elements`` floats."""
    m = decoder()
    m.graph.node.extend([
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=const("one", np.ones(1, np.float32))),
        helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0),
        helper.make_node("Mul", ["big_sum", "zero"], ["nothing"]), helper.make_node("Add", ["x0", "nothing"], ["x"])])
    m.graph.node[2].output[0] = "x0"
    m.graph.initializer.extend([const("big_shape", np.array([elements], np.int64)), const("zero", np.zeros(1, np.float32))])
    return m


def _kernel_refuses_4_tb() -> bool:
    """Linux's heuristic (0) and strict (2) overcommit refuse one 4 TB allocation; "always" (1) would
    promise it, and filling it would exhaust the machine."""
    setting = Path("/proc/sys/vm/overcommit_memory")
    return setting.exists() and setting.read_text().strip() in ("0", "2")


@pytest.mark.parametrize("elements", [
    2**62,  # past what a size can hold
    pytest.param(10**12, marks=pytest.mark.skipif(not _kernel_refuses_4_tb(), reason="overcommit would say yes")),
])
def test_a_graph_that_asks_for_too_much_fails_in_one_sentence(elements: int, tmp_path: Path) -> None:
    refused(write_bundle(tmp_path / "b.safetensors", {"decoder": _huge_decoder(elements)}),
            r"its decoder graph, on a batch of 2, failed \(")


def test_bytes_that_are_not_onnx_are_refused(tmp_path: Path) -> None:
    refused(write_bundle(tmp_path / "b.safetensors", raw={"kl": b"\x08\x07\x12\xff\xff"}), "its kl graph is not ONNX")
