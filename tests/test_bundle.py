"""ONNX bundles (vs.export): any model as a file that runs no code. Every family and every foreign
interface style exports, reloads with onnxruntime and matches PyTorch within 1e-4; the explorer
opens a bundle with its embedded sample in a fresh process that never saw the model's code; and a
bundle that could run code, read another file, or lie about its shapes is refused."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from foreign_models import STYLES, digits, trained
from gradio_client import Client
from safetensors import safe_open
from safetensors.torch import save_file
from serving import latent_explore

import vaescope as vs
from vaescope.bundle import BUNDLE_KEY, BundleError, BundleModel, load_bundle
from vaescope.explorer.core.store import ModelStore
from vaescope.training.config import ModelConfig
from vaescope.training.models import FAMILIES, build_model

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def test_digits() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits()
    return x, y


def _same(model, bundle: BundleModel, x: torch.Tensor, labels: torch.Tensor) -> None:
    """encode, decode, the prior (same noise) and the KL agree within TOLERANCE."""
    description = model.describe()
    condition = description.condition.from_labels(labels)
    with torch.no_grad():
        want = model.encode(x, condition)
    got = bundle.encode(x, condition)
    torch.testing.assert_close(got.mean, want.mean.float(), atol=TOLERANCE, rtol=0)
    if not want.deterministic:
        torch.testing.assert_close(got.logvar, want.logvar.float(), atol=TOLERANCE, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(bundle.decode(want.mean, condition), model.decode(want.mean, condition).float(),
                                   atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(bundle.kl_per_dim(got), model.kl_per_dim(want).float(), atol=TOLERANCE, rtol=0)
        k = 2 if description.condition.is_mixture else None
        torch.testing.assert_close(bundle.sample(6, k, 0.7, torch.Generator().manual_seed(3)),
                                   model.sample(6, k, 0.7, torch.Generator().manual_seed(3)).float(),
                                   atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("style", [s if s == "examples" else pytest.param(s, marks=pytest.mark.slow) for s in sorted(STYLES)])
def test_every_foreign_style_exports_and_matches_pytorch(style: str, test_digits, tmp_path: Path) -> None:
    from vaescope.adapter import adapt

    x, y = test_digits
    path = vs.export(trained(style), tmp_path / f"{style}.safetensors", images=x, labels=y)
    bundle, meta, sample = load_bundle(path)
    assert meta.export_error <= TOLERANCE and sample[0].shape == (300, 1, 8, 8) and (sample[1] == y.numpy()).all()
    assert bundle.describe().family == "foreign" and bundle.describe().class_names == ()
    _same(adapt(trained(style), x), bundle, x[:20], y[:20])


FAST_FAMILIES = ("vae", "gmvae", "cvae")  # the fast tier exports these; the slow tier every family
FAMILY_OPTIONS = {"gmvae": {"components": 5}, "aae": {"prior": "mixture", "prior_components": 4}}


@pytest.mark.parametrize("family", [f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in sorted(FAMILIES)])
def test_every_family_exports_and_matches_pytorch(family: str, test_digits, tmp_path: Path) -> None:
    """A freshly built model of every registered family (the weights do not matter for equality)."""
    x, y = test_digits
    torch.manual_seed(0)
    config = ModelConfig(model_type=family, image_shape=(1, 8, 8), latent_dim=4, arch="mlp", hidden_dim=32,
                         num_classes=10, options=FAMILY_OPTIONS.get(family, {}))
    model = build_model(config, [str(i) for i in range(10)]).eval()
    path = vs.export(model, tmp_path / f"{family}.safetensors", images=x[:64], labels=y[:64])
    bundle, meta, _ = load_bundle(path)
    assert bundle.describe() == model.describe()  # the description travels whole
    _same(model, bundle, x[:20], y[:20])


def test_a_shipped_checkpoint_exports_with_its_history_and_metrics(tmp_path: Path) -> None:
    shipped = ROOT / "assets" / "checkpoints" / "digits" / "gmvae.safetensors"
    path = vs.export(shipped, tmp_path / "gmvae-bundle.safetensors")
    model = vs.load(path)
    assert isinstance(model, BundleModel) and model.describe().title == "GMVAE with 10 components"
    original = vs.load(shipped, device="cpu")
    assert model.meta.history == original.meta.history and model.meta.metrics == original.meta.metrics
    assert model.meta.dataset["name"] == "digits"


def test_the_explorer_opens_a_bundle_on_its_dataset_or_its_embedded_sample(test_digits, tmp_path: Path) -> None:
    x, y = test_digits
    vs.export(trained("antixk"), tmp_path / "foreign.safetensors", images=x[:120], labels=y[:120])
    vs.export(ROOT / "assets" / "checkpoints" / "digits" / "vae.safetensors", tmp_path / "native.safetensors",
              images=x[:50], labels=y[:50])
    store = ModelStore(tmp_path, torch.device("cpu"))
    foreign = store.open_name("foreign.safetensors")
    assert len(foreign.latents) == 120 and foreign.data_origin.startswith("the 120 images embedded in the file")
    native = store.open_name("native.safetensors")  # its dataset is on every machine: the whole test split
    assert len(native.latents) == 300 and native.data_origin == "the 300 test images of digits"


# -- refused ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_bundle(test_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = test_digits
    return vs.export(trained("examples"), tmp_path_factory.mktemp("good") / "good.safetensors", images=x[:32],
                     labels=y[:32])


def _rewrite(good: Path, dest: Path, tensors_edit=None, meta_edit=None) -> Path:
    with safe_open(str(good), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(fh.metadata()[BUNDLE_KEY])
    if tensors_edit:
        tensors_edit(tensors)
    if meta_edit:
        meta_edit(meta)
    save_file(tensors, str(dest), metadata={BUNDLE_KEY: json.dumps(meta)})
    return dest


def _graph(tensors: dict, name: str) -> onnx.ModelProto:
    return onnx.load_from_string(tensors[f"onnx.{name}"].numpy().tobytes())


def _put(tensors: dict, name: str, graph: onnx.ModelProto) -> None:
    tensors[f"onnx.{name}"] = torch.frombuffer(bytearray(graph.SerializeToString()), dtype=torch.uint8)


def _custom_op(tensors: dict) -> None:
    graph = _graph(tensors, "decoder")
    graph.graph.node[0].domain = "com.example.evil"
    graph.opset_import.append(onnx.helper.make_opsetid("com.example.evil", 1))
    _put(tensors, "decoder", graph)


def _external_weights(tensors: dict) -> None:
    graph = _graph(tensors, "encoder")
    weight = graph.graph.initializer[0]
    weight.data_location = onnx.TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    weight.ClearField("raw_data")
    _put(tensors, "encoder", graph)


def _renamed_output(tensors: dict) -> None:
    graph = _graph(tensors, "decoder")
    old = graph.graph.output[0].name
    graph.graph.output[0].name = "secret"
    for node in graph.graph.node:
        node.output[:] = ["secret" if o == old else o for o in node.output]
    _put(tensors, "decoder", graph)


@pytest.mark.parametrize("edit, meta_edit, message", [
    (_custom_op, None, "operator domains.*custom operators would run code"),
    (_external_weights, None, "external file, which is never read"),
    (_renamed_output, None, r"outputs \['secret'\]"),
    (lambda t: t.pop("onnx.prior"), None, r"it lacks the graph onnx.prior"),
    (lambda t: t.update({"onnx.kl": torch.zeros(10, dtype=torch.uint8)}), None, "kl graph is not ONNX"),
    (None, lambda m: (m["description"].update(latent_dim=7), m.pop("prior_check")),
     r"is \[4\] per item, but the metadata says \[7\]"),
    (None, lambda m: m["description"].update(image_shape=[5, 8, 8]), "beyond the limits"),
    (None, lambda m: m.update(format_version=9), "format_version 9 is not supported"),
    (None, lambda m: m["description"].update(condition="class"), "metadata is malformed"),
    (lambda t: t.update({"sample.images": torch.zeros(32, 3, 8, 8, dtype=torch.uint8)}), None, r"sample.images are \[3, 8, 8\] but the model.s images are \[1, 8, 8\]"),
])
def test_bundles_that_could_run_code_or_lie_are_refused(good_bundle: Path, tmp_path: Path, edit, meta_edit,
                                                        message: str) -> None:
    bad = _rewrite(good_bundle, tmp_path / "bad.safetensors", edit, meta_edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


def test_a_bundle_that_fails_its_own_check_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs beyond 1e-4 of PyTorch's: refused, and an earlier good file at the path is kept."""
    from vaescope import bundle as bundle_module

    target = tmp_path / "m.safetensors"
    target.write_bytes(b"an earlier good file")
    monkeypatch.setattr(bundle_module, "EXPORT_TOLERANCE", -1.0)
    with pytest.raises(BundleError, match="differs from PyTorch"):
        vs.export(trained("examples"), target, image_shape=(1, 8, 8))
    assert target.read_bytes() == b"an earlier good file" and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# -- a fresh process that never imports the model's code ---------------------------------------------
@pytest.mark.slow
def test_a_model_defined_here_opens_in_a_fresh_latent_explore(test_digits, tmp_path: Path) -> None:
    """The model class exists only inside this test. Its bundle is served by a new latent-explore
    process, which imports nothing of this file, and every panel answers."""
    class OnlyHere(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 6))
            self.d = torch.nn.Sequential(torch.nn.Linear(3, 48), torch.nn.Tanh(), torch.nn.Linear(48, 64),
                                         torch.nn.Unflatten(1, (1, 8, 8)))

        def encode(self, x):  # noqa: ANN001, ANN202
            return dict(zip(("mu", "logvar"), self.e(x).chunk(2, -1), strict=True))

        def decode(self, z):  # noqa: ANN001, ANN202
            return {"logits": self.d(z)}

    x, y = test_digits
    torch.manual_seed(0)
    model = OnlyHere()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        out = model.encode(x)
        z = out["mu"] + torch.randn_like(out["mu"]) * (0.5 * out["logvar"]).exp()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.decode(z)["logits"], x, reduction="sum")
        kl = -0.5 * torch.sum(1 + out["logvar"] - out["mu"] ** 2 - out["logvar"].exp())
        opt.zero_grad()
        ((loss + kl) / len(x)).backward()
        opt.step()
    folder = tmp_path / "served"
    vs.export(model, folder / "only-here.safetensors", images=x, labels=y,
              class_names=[f"digit {i}" for i in range(10)])
    with latent_explore(folder, tmp_path) as (url, log_path, _):
        client = Client(url, verbose=False)
        out = client.predict("only-here.safetensors", api_name="/load_checkpoint")
        text = " ".join(o for o in out if isinstance(o, str))
        assert "OnlyHere (VAE, your model)" in text and "the 300 images embedded in the file" in text
        _, info, *_ = client.predict("pca", 2, "class", "none", 0, api_name="/draw_map")
        assert "300 of 300 images" in info
        image, note, *_ = client.predict(1.5, "z:0", api_name="/slider_0")
        assert Path(image).is_file() and note.startswith("**only-here**")
        grid, note = client.predict(4, 9, 0, 1.0, api_name="/sample_class")
        assert note.startswith("**digit 4** · only-here:")
        assert "10 steps" in client.predict(10, "slerp", api_name="/interpolate")[3]
        picture, download = client.predict(5, "z:0", "prior", api_name="/traversal_grid")
        assert Path(download).is_file()
        log_text = log_path.read_text()
        assert "Traceback" not in log_text
