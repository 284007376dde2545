"""ONNX bundles: any model as a file that runs no code. ``vs.export`` writes one; the explorer and
``vs.load`` open it with onnxruntime.

A bundle is one ``.safetensors`` file (so it is listed beside checkpoints and parsed the same
bounded way). Its tensors are four ONNX graphs stored as bytes, the contract's computations:

- ``onnx.encoder``: x [B, C, H, W] in [0, 1], condition [B] int64 -> mean [B, D], logvar [B, D],
  probs [B, K] (a mixture's responsibilities; zeros [B, 1] without one);
- ``onnx.decoder``: z [B, D], condition [B] -> x [B, C, H, W] in [0, 1];
- ``onnx.prior``: eps [n, D] (standard noise, scaled by the temperature), components [n] -> z [n, D];
- ``onnx.kl``: mean, logvar, probs -> KL from the model's prior per dimension [B, D];

plus an optional embedded evaluation sample (``sample.images`` uint8 [N, C, H, W],
``sample.labels`` int64 [N]). The metadata (key ``vaescope_bundle``) holds the model's
``Description``, its likelihood (``Likelihood.spec()``, or none), the prior check (below) and, for a
vaescope model, its dataset block, history and metrics.

The prior travels as a graph, and it is checked twice. ``vs.export`` draws PRIOR_CHECK_DRAWS codes
with the model's own ``sample`` and as many through the exported prior graph, and refuses to write
a bundle whose two priors disagree (a model that overrides ``sample`` without ``prior_transform``).
It then records the mean and standard deviation per dimension of the prior graph on a fixed, seeded
noise; opening a bundle runs the graph on the same noise and refuses one whose prior no longer
gives them (an altered prior graph).

Nothing in a bundle can run Python: onnxruntime executes standard operators only. Each graph is
parsed and checked whole before onnxruntime sees it (``vaescope.onnx_guard``): one that names
another operator domain (a custom op needs a compiled library), keeps any tensor in an external
file (which would make the server read another path) or loops as long as it likes is refused, and
onnxruntime gets the checked model re-serialised, never the file's bytes. Every size in the
metadata is checked against ``vaescope.limits`` before anything is built from it (the dataset
block, history and metrics by the checkpoint reader's own checkers), and each graph's inputs and
outputs must be the metadata's: per-item dimensions left symbolic are pinned to it. Every run has a
wall-clock budget (GRAPH_RUN_SECONDS), gives at most MAX_GRAPH_RUN_VALUES values (a larger batch
runs in parts) and must give exactly the declared shapes; the graphs run once on a batch of two
when the bundle is opened, so a bundle that lies is refused at once, in one sentence.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaescope import onnx_guard
from vaescope.contract import (
    Condition,
    Description,
    FunctionPrior,
    LatentGroup,
    Likelihood,
    Posterior,
    check_contract,
    likelihood_from_spec,
    likelihood_of,
)
from vaescope.errors import InputError
from vaescope.limits import (
    GRAPH_RUN_SECONDS,
    MAX_BUNDLE_META_BYTES,
    MAX_CLASS_NAME_CHARS,
    MAX_CLASSES,
    MAX_GRAPH_BYTES,
    MAX_GRAPH_RUN_VALUES,
    MAX_IMAGE_SIDE,
    MAX_LATENT_DIM,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLE_IMAGES,
)

BUNDLE_KEY = "vaescope_bundle"
BUNDLE_FORMAT = "vaescope-onnx-bundle"
BUNDLE_VERSION = 1
GRAPHS = ("encoder", "decoder", "prior", "kl")
SAMPLE_IMAGES, SAMPLE_LABELS = "sample.images", "sample.labels"
MAX_LATENT_GROUPS = 16  # named slices of the code; a hierarchical model has two or three
MAX_LATENT_RANK = 4  # axes of a code's own shape (C, H, W; a video VAE's C, T, H, W)
EXPORT_TOLERANCE = 1e-4  # ONNX outputs must match PyTorch's within this on the test inputs
PRIOR_CHECK_DRAWS = 4096  # codes drawn to compare the model's sample() with its exported prior
PRIOR_CHECK_SEED = 0  # the recorded moments are the prior graph's on numpy's RandomState(0) noise
PRIOR_SIGMAS = 6.0  # two priors disagree when a moment differs by more than this many standard errors
PRIOR_RECORD_TOLERANCE = 1e-3  # relative: the recorded moments, recomputed at open, must match this well
OPSET = 18


class BundleError(InputError):
    """A bundle cannot be written or read; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class BundleMeta:
    """What a bundle carries besides its graphs (the fields a checkpoint's metadata has too)."""

    description: Description
    deterministic: bool  # the encoder gives points (zero spread), like an autoencoder
    dataset: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    export_error: float = 0.0  # the largest |ONNX - PyTorch| measured when it was written
    likelihood: Likelihood | None = None  # what the decoder's output means (None: not declared)
    prior_moments: tuple[list[float], list[float]] | None = None  # (mean, std) [D] of the prior graph


# -- the graphs' modules ---------------------------------------------------------------------------
class _Encoder(nn.Module):
    def __init__(self, model: Any, description: Description) -> None:
        super().__init__()
        self.model, self.description = model, description

    def forward(self, x: Tensor, condition: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        post = self.model.encode(x, self.description.condition.from_labels(condition))
        probs = post.component_probs if post.component_probs is not None else torch.zeros_like(post.mean[:, :1])
        logvar = torch.full_like(post.mean, -30.0) if post.deterministic else post.logvar
        return post.mean, logvar, probs


class _Decoder(nn.Module):
    def __init__(self, model: Any, description: Description) -> None:
        super().__init__()
        self.model, self.description = model, description

    def forward(self, z: Tensor, condition: Tensor) -> Tensor:
        return self.model.decode(z, self.description.condition.from_labels(condition))


class _Prior(nn.Module):
    def __init__(self, model: Any, description: Description) -> None:
        super().__init__()
        self.model, self.mixture = model, description.condition.is_mixture

    def forward(self, eps: Tensor, components: Tensor) -> Tensor:
        transform = getattr(self.model, "prior_transform", None)
        if transform is None:  # a foreign model's prior is N(0, I): the noise itself
            return eps + 0 * components[:, None].to(eps.dtype)
        return transform(eps, components if self.mixture else None) + 0 * components[:, None].to(eps.dtype)


class _KL(nn.Module):
    def __init__(self, model: Any, description: Description, deterministic: bool) -> None:
        super().__init__()
        self.model, self.mixture, self.deterministic = model, description.condition.is_mixture, deterministic

    def forward(self, mean: Tensor, logvar: Tensor, probs: Tensor) -> Tensor:
        if self.deterministic:
            return torch.zeros_like(mean) + 0 * (logvar + probs.sum(-1, keepdim=True))
        post = Posterior(mean, logvar, probs if self.mixture else None)
        return self.model.kl_per_dim(post) + 0 * probs.sum(-1, keepdim=True)


# -- writing ---------------------------------------------------------------------------------------
def export_bundle(model: Any, path: str | os.PathLike, images: np.ndarray | None = None,
                  labels: np.ndarray | None = None, meta: Any = None) -> Path:
    """Write ``model`` (answering the contract) as an ONNX bundle at ``path``, atomically.

    ``images`` (uint8 [N, C, H, W], at most MAX_SAMPLE_IMAGES) and ``labels`` [N] are embedded as
    its evaluation sample and are the test inputs on which the graphs must match PyTorch within
    EXPORT_TOLERANCE (else BundleError). ``meta`` (a checkpoint's metadata) adds the dataset block,
    history and metrics.
    """
    path = Path(path)
    description = check_contract(model)
    if not description.decodes:
        raise BundleError(path, "precomputed embeddings have no model to export")
    sample = _sample_tensors(path, images, labels, description)
    was = _eval_cpu(model)
    try:
        x = _test_inputs(description, sample)
        graphs, error, deterministic = _export_graphs(path, model, description, x)
        moments = _check_prior(path, model, description, graphs["prior"])
    finally:
        _restore(model, was)
    block = BundleMeta(description, deterministic, **_meta_fields(meta), export_error=error,
                       likelihood=likelihood_of(model), prior_moments=moments)
    tensors = {f"onnx.{name}": torch.frombuffer(bytearray(data), dtype=torch.uint8) for name, data in graphs.items()}
    tensors |= sample
    _write(path, tensors, json.dumps(_meta_json(block)))
    return path


def _prior_noise(description: Description) -> tuple[np.ndarray, np.ndarray]:
    """The fixed noise the prior graph's recorded moments are measured on: eps [N, D] and mixture
    components [N], from numpy's RandomState (whose stream numpy keeps fixed across versions)."""
    rng = np.random.RandomState(PRIOR_CHECK_SEED)
    eps = rng.standard_normal((PRIOR_CHECK_DRAWS, description.latent_dim)).astype(np.float32)
    k = description.condition.size if description.condition.is_mixture else 1
    return eps, rng.randint(0, k, PRIOR_CHECK_DRAWS).astype(np.int64)


def _moments(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = z.astype(np.float64)
    return z.mean(0), z.std(0)


def _check_prior(path: Path, model: Any, description: Description, graph: bytes) -> tuple[list[float], list[float]]:
    """Compare PRIOR_CHECK_DRAWS codes of the model's own ``sample`` with as many from the exported
    prior graph (mean and standard deviation per dimension, within PRIOR_SIGMAS standard errors);
    BundleError when they disagree. Returns the graph's moments on the fixed noise, for the file."""
    eps, components = _prior_noise(description)
    try:
        session = onnx_guard.session(onnx_guard.parse(graph))
        exported = onnx_guard.run(session, {"eps": eps, "components": components}, GRAPH_RUN_SECONDS)[0]
    except (onnx_guard.GraphRefused, onnx_guard.GraphFailed) as exc:
        raise BundleError(path, f"the exported prior graph {exc}") from None
    with torch.no_grad():
        own = model.sample(PRIOR_CHECK_DRAWS, None, 1.0, torch.Generator().manual_seed(PRIOR_CHECK_SEED + 1))
    own = own.detach().float().cpu().numpy()
    (m1, s1), (m2, s2) = _moments(own), _moments(exported)
    n = PRIOR_CHECK_DRAWS
    mean_gap = np.abs(m1 - m2) - PRIOR_SIGMAS * np.sqrt((s1**2 + s2**2) / n) - 1e-4
    std_gap = np.abs(s1 - s2) - PRIOR_SIGMAS * np.sqrt((s1**2 + s2**2) / (2 * n)) - 1e-4
    worst = int(np.argmax(np.maximum(mean_gap, std_gap)))
    if max(mean_gap[worst], std_gap[worst]) > 0 or not (np.isfinite(own).all() and np.isfinite(exported).all()):
        raise BundleError(path, f"the model's sample() and the prior it exports disagree: over {n:,} draws, dimension "
                                f"{worst} has mean {m1[worst]:.3f} and sd {s1[worst]:.3f} from sample() but mean "
                                f"{m2[worst]:.3f} and sd {s2[worst]:.3f} from prior_transform(eps, components), which "
                                "is what a bundle exports; a model whose prior is not N(0, I) defines prior_transform "
                                "(see docs/adding-a-model.md), and sample() then follows it. Not written")
    return [round(float(v), 6) for v in m2], [round(float(v), 6) for v in s2]


def _eval_cpu(model: Any) -> tuple[Any, Any]:
    """Put a module on the CPU in eval mode for export; what to restore afterwards."""
    if isinstance(model, nn.Module):
        device, training = next(model.parameters(), torch.zeros(0)).device, model.training
        model.cpu().eval()
        return device, training
    module = getattr(model, "module", None)
    if isinstance(module, nn.Module):
        device = next(module.parameters(), torch.zeros(0)).device
        module.cpu().eval()
        return device, False
    return None, None


def _restore(model: Any, was: tuple[Any, Any]) -> None:
    device, training = was
    target = model if isinstance(model, nn.Module) else getattr(model, "module", None)
    if isinstance(target, nn.Module) and device is not None:
        target.to(device)
        if training:
            target.train()


def _sample_tensors(path: Path, images: np.ndarray | None, labels: np.ndarray | None,
                    description: Description) -> dict[str, Tensor]:
    if images is None:
        return {}
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != description.image_shape:
        raise BundleError(path, f"the sample must be uint8 images [N, {', '.join(map(str, description.image_shape))}], "
                                f"got {images.dtype} {list(images.shape)}")
    if len(images) > MAX_SAMPLE_IMAGES or images.nbytes > MAX_SAMPLE_BYTES:
        raise BundleError(path, f"a sample holds at most {MAX_SAMPLE_IMAGES:,} images and {MAX_SAMPLE_BYTES >> 20} MB")
    labels = np.full(len(images), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    if labels.shape != (len(images),):
        raise BundleError(path, f"labels must be [N] = [{len(images)}], got {list(labels.shape)}")
    return {SAMPLE_IMAGES: torch.from_numpy(np.ascontiguousarray(images)),
            SAMPLE_LABELS: torch.from_numpy(np.ascontiguousarray(labels))}


def _test_inputs(description: Description, sample: dict[str, Tensor]) -> Tensor:
    """Images the export is checked on: the sample's first 16, or seeded noise in [0, 1]."""
    if SAMPLE_IMAGES in sample:
        return sample[SAMPLE_IMAGES][:16].float() / 255
    return torch.rand(8, *description.image_shape, generator=torch.Generator().manual_seed(0))


def _export_graphs(path: Path, model: Any, description: Description, x: Tensor
                   ) -> tuple[dict[str, bytes], float, bool]:
    """The four graphs as ONNX bytes, each checked against PyTorch on the test inputs."""
    n, d = len(x), description.latent_dim
    condition = torch.arange(n) % max(1, description.condition.size)
    with torch.no_grad():
        post = model.encode(x, description.condition.from_labels(condition))
    deterministic = bool(post.deterministic)
    encoder = _Encoder(model, description)
    with torch.no_grad():
        mean, logvar, probs = encoder(x, condition)
    eps = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    components = torch.arange(n) % max(1, description.condition.size)
    modules = {"encoder": (encoder, (x, condition), ["x", "condition"], ["mean", "logvar", "probs"]),
               "decoder": (_Decoder(model, description), (mean, condition), ["z", "condition"], ["x"]),
               "prior": (_Prior(model, description), (eps, components), ["eps", "components"], ["z"]),
               "kl": (_KL(model, description, deterministic), (mean, logvar, probs), ["mean", "logvar", "probs"],
                      ["kl"])}
    graphs, worst = {}, 0.0
    for name, (module, args, inputs, outputs) in modules.items():
        data = _to_onnx(path, name, module, args, inputs, outputs)
        worst = max(worst, _check_against_torch(path, name, data, module, args, inputs))
        graphs[name] = data
    return graphs, worst, deterministic


def _to_onnx(path: Path, name: str, module: nn.Module, args: tuple[Tensor, ...], inputs: list[str],
             outputs: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, input_names=inputs, output_names=outputs, dynamo=True,
                                        dynamic_shapes={k: {0: batch} for k in inputs}, opset_version=OPSET,
                                        verbose=False, optimize=True)
        program.save(buf, external_data=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; say which graph failed
        raise BundleError(path, f"the {name} could not be exported to ONNX ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]})") from None
    return buf.getvalue()


def _check_against_torch(path: Path, name: str, data: bytes, module: nn.Module, args: tuple[Tensor, ...],
                         inputs: list[str]) -> float:
    """The largest |ONNX - PyTorch| over the graph's outputs on ``args``; BundleError beyond tolerance.
    The graph passes the checks a reader applies (``onnx_guard``), so what is written can be opened."""
    try:
        model = onnx_guard.parse(data)
        onnx_guard.check_model(model)
        session = onnx_guard.session(model)
    except onnx_guard.GraphRefused as exc:
        raise BundleError(path, f"the exported {name} graph {exc}") from None
    error = 0.0
    for batch in (args, tuple(a[:3] for a in args)):  # a second batch size: the graph must not have fixed it
        feeds = {i.name: batch[inputs.index(i.name)].numpy() for i in session.get_inputs()}
        try:
            got = onnx_guard.run(session, feeds, GRAPH_RUN_SECONDS)
        except onnx_guard.GraphFailed as exc:
            raise BundleError(path, f"the exported {name}, on a batch of {len(batch[0])}, {exc}") from None
        with torch.no_grad():
            want = module(*batch)
        want = want if isinstance(want, tuple) else (want,)
        error = max(error, *(float(np.abs(g - w.numpy()).max()) if g.size else 0.0
                             for g, w in zip(got, want, strict=True)))
    if not error <= EXPORT_TOLERANCE:
        raise BundleError(path, f"the exported {name} differs from PyTorch by {error:.2e} (more than "
                                f"{EXPORT_TOLERANCE:.0e}); not written")
    return error


def _meta_fields(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    return {"dataset": dict(getattr(meta, "dataset", {}) or {}), "train_config": dict(getattr(meta, "train_config", {}) or {}),
            "history": list(getattr(meta, "history", []) or []), "metrics": dict(getattr(meta, "metrics", {}) or {})}


def _meta_json(meta: BundleMeta) -> dict[str, Any]:
    description = dataclasses.asdict(meta.description)
    out = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "description": description,
           "deterministic": meta.deterministic, "dataset": meta.dataset, "train_config": meta.train_config,
           "history": meta.history, "metrics": meta.metrics, "export_error": meta.export_error,
           "likelihood": None if meta.likelihood is None else meta.likelihood.spec()}
    if meta.prior_moments is not None:
        out["prior_check"] = {"draws": PRIOR_CHECK_DRAWS, "seed": PRIOR_CHECK_SEED,
                              "mean": meta.prior_moments[0], "std": meta.prior_moments[1]}
    return out


def _write(path: Path, tensors: dict[str, Tensor], metadata: str) -> None:
    """The bundle, written the way checkpoints are (``tensorfile.write_atomically``: a temporary file
    in the same folder with the usual file mode, fsync, rename, fsync of the folder); an earlier
    file at ``path`` is kept whole on any failure."""
    from safetensors.torch import save

    from vaescope.training.tensorfile import WriteError, write_atomically

    try:
        write_atomically(path, save(tensors, metadata={BUNDLE_KEY: metadata}))
    except WriteError as exc:
        raise BundleError(path, f"cannot write the bundle ({exc}); any earlier file is kept") from None


# -- reading ---------------------------------------------------------------------------------------
def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file whose metadata is a bundle's (reads the checked header
    only; anything unreadable is not a bundle, and the checkpoint reader says why)."""
    from vaescope.training.tensorfile import read_header

    try:
        return BUNDLE_KEY in read_header(Path(path)).metadata
    except (InputError, OSError):
        return False


def load_bundle(path: str | os.PathLike) -> tuple[BundleModel, BundleMeta, tuple[np.ndarray, np.ndarray] | None]:
    """(the model, its metadata, the embedded sample (images uint8 [N, C, H, W], labels [N]) or None).

    The file is read the way a checkpoint is (``training/tensorfile.py``: the header with a size
    cap, every tensor's shape, dtype and byte range checked against what the metadata allows before
    any is read; the sample by the checkpoint's own checks, ``training/embedded.py``), every graph is
    checked before it is run; BundleError otherwise.
    """
    from vaescope.training.checks import ConfigError
    from vaescope.training.embedded import check_sample_values, extra_specs
    from vaescope.training.tensorfile import (
        TensorFileError,
        TensorSpec,
        check_tensors,
        read_header,
        read_tensors,
    )

    path = Path(path)
    try:
        header = read_header(path)
        raw = header.metadata.get(BUNDLE_KEY)
        if raw is None:
            raise BundleError(path, "not a vaescope ONNX bundle")
        if len(raw) > MAX_BUNDLE_META_BYTES:
            raise BundleError(path, f"its metadata is over {MAX_BUNDLE_META_BYTES >> 20} MB")
        meta = _parse_meta(path, raw)
        description = meta.description
        specs = {}
        for graph in GRAPHS:
            entry = header.tensors.get(f"onnx.{graph}")
            if entry is None:
                raise BundleError(path, f"it lacks the graph onnx.{graph}")
            if entry.dtype != "U8" or len(entry.shape) != 1 or not 0 < entry.shape[0] <= MAX_GRAPH_BYTES:
                raise BundleError(path, f"onnx.{graph} must be 1 to {MAX_GRAPH_BYTES >> 20} MB of bytes (U8 [n]), got "
                                        f"{entry.dtype} {list(entry.shape)}")
            specs[f"onnx.{graph}"] = TensorSpec(entry.shape, ("U8",))
        specs |= extra_specs(header.tensors, description.image_shape, description.latent_dim, 0)
        check_tensors(header, specs, "a bundle")
        tensors = read_tensors(path, header, list(specs))
        sample = None
        if SAMPLE_IMAGES in tensors:
            check_sample_values(tensors, len(description.class_names))
            sample = (tensors[SAMPLE_IMAGES].numpy(), tensors[SAMPLE_LABELS].numpy())
    except (TensorFileError, ConfigError) as exc:
        raise BundleError(path, f"not a readable bundle: {exc}") from None
    except OSError as exc:
        raise BundleError(path, f"cannot read the file: {exc.strerror or exc}") from None
    graphs = {g: tensors[f"onnx.{g}"].numpy().tobytes() for g in GRAPHS}
    sessions = {name: _checked_session(path, name, data, meta.description) for name, data in graphs.items()}
    model = BundleModel(sessions, meta, path.name)
    try:
        model.try_once()
        model.check_prior()
    except BundleError as exc:
        raise BundleError(path, exc.problem) from None
    return model, meta, sample


def _whole(value: Any, where: str) -> int:
    """A JSON integer (not a bool, not a float), or TypeError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an integer, got {str(value)[:40]!r}")
    return value


def _check_sizes(path: Path, d: dict[str, Any]) -> None:
    """The description's sizes against ``vaescope.limits``, before anything is built from them."""
    shape = d["image_shape"]
    if not isinstance(shape, list) or len(shape) != 3:
        raise BundleError(path, f"its image shape must be [C, H, W], got {str(shape)[:60]}")
    c, h, w = (_whole(v, "image_shape") for v in shape)
    if c not in (1, 3) or not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise BundleError(path, f"its image shape {[c, h, w]} is beyond the limits (1 or 3 channels, sides of 1 "
                                f"to {MAX_IMAGE_SIDE} px)")
    latent_dim = _whole(d["latent_dim"], "latent_dim")
    if not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise BundleError(path, f"its latent dim {latent_dim} is beyond the limits (1 to {MAX_LATENT_DIM})")
    size = _whole(d["condition"]["size"], "condition.size")
    if not 0 <= size <= MAX_CLASSES:
        raise BundleError(path, f"its condition size {size} (classes or mixture components) is beyond the limits "
                                f"(0 to {MAX_CLASSES})")
    names = d.get("class_names", [])
    if not isinstance(names, list) or len(names) > MAX_CLASSES or any(
            not isinstance(n, str) or len(n) > MAX_CLASS_NAME_CHARS for n in names):
        raise BundleError(path, f"its class names must be a list of at most {MAX_CLASSES} strings of at most "
                                f"{MAX_CLASS_NAME_CHARS} characters")
    groups = d.get("latent_groups", [])
    if not isinstance(groups, list) or len(groups) > MAX_LATENT_GROUPS:
        raise BundleError(path, f"its latent groups must be a list of at most {MAX_LATENT_GROUPS}")
    for g in groups:
        start, width = _whole(g["start"], "latent_groups.start"), _whole(g["size"], "latent_groups.size")
        if start < 0 or width < 1 or start + width > latent_dim:
            raise BundleError(path, f"its latent group {str(g['name'])[:40]!r} (start {start}, size {width}) lies "
                                    f"outside the code's {latent_dim} dimensions")
    # written since codes kept their shape and tables their feature names; older bundles lack them
    latent_shape = d.get("latent_shape", [])
    if not isinstance(latent_shape, list) or len(latent_shape) > MAX_LATENT_RANK or (
            latent_shape and math.prod(_whole(v, "latent_shape") for v in latent_shape) != latent_dim):
        raise BundleError(path, f"its latent shape must be a list of at most {MAX_LATENT_RANK} sizes whose product is "
                                f"the latent dim {latent_dim}, got {str(latent_shape)[:60]}")
    values = c * h * w
    names, ranges = d.get("feature_names", []), d.get("feature_range", [])
    if not isinstance(names, list) or len(names) not in (0, values) or any(
            not isinstance(n, str) or len(n) > MAX_CLASS_NAME_CHARS for n in names):
        raise BundleError(path, f"its feature names must be a list of {values} strings of at most "
                                f"{MAX_CLASS_NAME_CHARS} characters")
    if not isinstance(ranges, list) or len(ranges) not in (0, values) or any(
            not isinstance(r, list) or len(r) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                             for v in r) for r in ranges):
        raise BundleError(path, f"its feature range must be a list of {values} [lo, hi] pairs of numbers")


def _parse_meta(path: Path, raw: str) -> BundleMeta:
    """The metadata JSON, every field's type and size checked (a file from outside) before anything
    is built from it; the dataset block, history, metrics and train config by the checkpoint
    reader's own checkers."""
    from vaescope.training.checkpoint import (
        parse_dataset_block,
        parse_history,
        parse_metrics,
        parse_train_config,
    )
    from vaescope.training.checks import ConfigError, parse_json

    try:
        data = parse_json(raw, "its metadata")
    except ConfigError as exc:
        raise BundleError(path, str(exc)) from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(path, "its metadata does not describe a vaescope ONNX bundle")
    if data.get("format_version") != BUNDLE_VERSION:
        raise BundleError(path, f"bundle format_version {data.get('format_version')!r} is not supported (this "
                                f"vaescope reads {BUNDLE_VERSION})")
    try:
        d = data["description"]
        _check_sizes(path, d)
        condition = Condition(str(d["condition"]["kind"]), d["condition"]["size"])
        groups = tuple(LatentGroup(str(g["name"])[:40], g["start"], g["size"]) for g in d.get("latent_groups", []))
        description = Description(
            family=str(d["family"])[:40], title=str(d["title"])[:200], summary=str(d["summary"])[:1000],
            image_shape=tuple(d["image_shape"]), latent_dim=d["latent_dim"],
            class_names=tuple(d.get("class_names", [])), condition=condition,
            has_prior=bool(d["has_prior"]), decodes=True, prior_note=str(d.get("prior_note", ""))[:1000],
            details=tuple(str(t)[:200] for t in d.get("details", [])[:16]), latent_groups=groups,
            activation_target=None if d.get("activation_target") is None else float(d["activation_target"]),
            display=str(d.get("display", "image")), latent_shape=tuple(d.get("latent_shape", [])),
            feature_names=tuple(d.get("feature_names", [])),
            feature_range=tuple((lo, hi) for lo, hi in d.get("feature_range", [])))
        dataset = data.get("dataset") or {}
        if dataset:  # a foreign model's bundle names no dataset
            # the checkpoint reader's checker, given the facts of the model it compares the block with
            model = SimpleNamespace(image_shape=description.image_shape, num_classes=len(description.class_names),
                                    display=description.display)
            dataset = parse_dataset_block(dataset, model)
        train_config = data.get("train_config") or {}
        likelihood = None if data.get("likelihood") is None else likelihood_from_spec(data["likelihood"])
        moments = _parse_prior_check(data.get("prior_check"), description.latent_dim)
        deterministic, error = data.get("deterministic", False), data.get("export_error", 0.0)
        if not isinstance(deterministic, bool) or isinstance(error, bool) or not isinstance(error, int | float):
            raise TypeError("deterministic must be true or false and export_error a number")
        meta = BundleMeta(description, deterministic, dataset=dataset,
                          train_config=parse_train_config(train_config) if train_config else {},
                          history=parse_history(data.get("history") or []),
                          metrics=parse_metrics(data.get("metrics") or {}), export_error=float(error),
                          likelihood=likelihood, prior_moments=moments)
    except BundleError:
        raise
    except ConfigError as exc:
        raise BundleError(path, f"its metadata is refused: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, InputError) as exc:
        raise BundleError(path, f"its metadata is malformed ({type(exc).__name__}: {exc})") from None
    return meta


def _parse_prior_check(block: Any, latent_dim: int) -> tuple[list[float], list[float]] | None:
    """The recorded prior moments: (mean, std) [D] of finite numbers, measured on this vaescope's
    fixed noise; None for a bundle written before they were recorded."""
    if block is None:
        return None
    if (not isinstance(block, dict) or set(block) != {"draws", "seed", "mean", "std"}
            or block["draws"] != PRIOR_CHECK_DRAWS or block["seed"] != PRIOR_CHECK_SEED):
        raise ValueError(f"prior_check must be {{draws: {PRIOR_CHECK_DRAWS}, seed: {PRIOR_CHECK_SEED}, mean, std}}")
    values = [block["mean"], block["std"]]
    for column in values:
        if (not isinstance(column, list) or len(column) != latent_dim
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in column)):
            raise ValueError(f"prior_check's mean and std must be {latent_dim} finite numbers each")
    return [float(v) for v in values[0]], [float(v) for v in values[1]]


_FLOAT, _INT64 = 1, 7  # onnx.TensorProto.FLOAT and INT64 (onnx itself is imported when a graph is read)
_TYPE_NAMES = {_FLOAT: "float32", _INT64: "int64"}


def _io(description: Description) -> dict[str, tuple[dict[str, tuple[int, list[int]]], dict[str, tuple[int, list[int]]]]]:
    """Each graph's inputs and outputs: name -> (ONNX element type, shape of one item)."""
    d, image = description.latent_dim, list(description.image_shape)
    k = description.condition.size if description.condition.is_mixture else 1
    code, labels = (_FLOAT, [d]), (_INT64, [])
    return {"encoder": ({"x": (_FLOAT, image), "condition": labels},
                        {"mean": code, "logvar": code, "probs": (_FLOAT, [k])}),
            "decoder": ({"z": code, "condition": labels}, {"x": (_FLOAT, image)}),
            "prior": ({"eps": code, "components": labels}, {"z": code}),
            "kl": ({"mean": code, "logvar": code, "probs": (_FLOAT, [k])}, {"kl": code})}


def _checked_session(path: Path, name: str, data: bytes, description: Description) -> Any:
    """An onnxruntime session for a graph that passed ``onnx_guard.check_model`` (standard operators
    only, every tensor inside the file, no unbounded loop) and has the inputs and outputs the
    metadata says, built from the checked model with its free per-item dimensions pinned."""
    try:
        model = onnx_guard.parse(data)
        onnx_guard.check_model(model)
        _check_io(path, name, model, description)
        return onnx_guard.session(model)
    except onnx_guard.GraphRefused as exc:
        raise BundleError(path, f"its {name} graph {exc}") from None


def _check_io(path: Path, name: str, model: Any, description: Description) -> None:
    """The graph's inputs and outputs are the bundle's: their names, element types and per-item
    dimensions (a symbolic one is pinned to the metadata's value in ``model``)."""
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs, outputs = [v for v in graph.input if v.name not in weights], list(graph.output)
    want_in, want_out = _io(description)[name]
    got = ([v.name[:40] for v in inputs], [v.name[:40] for v in outputs])
    if not set(got[0]) <= set(want_in) or len(set(got[0])) != len(got[0]) or got[1] != list(want_out):
        raise BundleError(path, f"its {name} graph has inputs {got[0][:8]} and outputs {got[1][:8]}, but a bundle's "
                                f"{name} takes {list(want_in)} and gives {list(want_out)}")
    for value in [*inputs, *outputs]:
        elem, shape = {**want_in, **want_out}[value.name]
        if value.type.WhichOneof("value") != "tensor_type" or value.type.tensor_type.elem_type != elem:
            raise BundleError(path, f"its {name} graph's {value.name} is not a {_TYPE_NAMES[elem]} tensor")
        declared = onnx_guard.pin_dims(value, shape)
        if declared is not None:
            raise BundleError(path, f"its {name} graph's {value.name} is {declared}, but the metadata says {shape}")


class BundleModel:
    """An ONNX bundle behind the model contract: every call runs one onnxruntime session, under the
    time budget, and checks what it gives against the shapes the metadata declares."""

    def __init__(self, sessions: dict[str, Any], meta: BundleMeta, name: str) -> None:
        self.sessions, self.meta, self.name = sessions, meta, name
        self.class_names = meta.description.class_names
        self._io = _io(meta.description)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def describe(self) -> Description:
        return self.meta.description

    def try_once(self) -> None:
        """Run every graph once on a batch of two (zero images and codes, uniform responsibilities):
        a graph that fails, overruns its budget or gives other shapes than it declares is refused
        when the bundle is opened, not in the middle of a panel."""
        description = self.meta.description
        k = description.condition.size if description.condition.is_mixture else 1
        labels, z = np.zeros(2, np.int64), np.zeros((2, description.latent_dim), np.float32)
        self._run("encoder", x=np.zeros((2, *description.image_shape), np.float32), condition=labels)
        self._run("decoder", z=z, condition=labels)
        self._run("prior", eps=z, components=labels)
        self._run("kl", mean=z, logvar=z, probs=np.full((2, k), 1 / k, np.float32))

    @property
    def prior(self) -> FunctionPrior | None:
        """The exported prior: sampled through its graph; its density is not in the bundle."""
        if not self.meta.description.has_prior:
            return None
        return FunctionPrior(self.meta.description.latent_dim, lambda n, k, t, g: self.sample(n, k, t, g), None)

    @property
    def likelihood(self) -> Likelihood | None:
        """The likelihood the bundle was exported with (None: its model declared none)."""
        return self.meta.likelihood

    def check_prior(self) -> None:
        """The prior graph on the fixed noise gives the moments recorded when it was exported;
        BundleError (the prior was altered) otherwise. A bundle without a record passes."""
        if self.meta.prior_moments is None:
            return
        eps, components = _prior_noise(self.meta.description)
        (z,) = self._run("prior", eps=eps, components=components)
        got = _moments(z)
        for what, have, want in zip(("mean", "sd"), got, self.meta.prior_moments, strict=True):
            want = np.asarray(want)
            gap = np.abs(have - want) - PRIOR_RECORD_TOLERANCE * (1 + np.abs(want))
            if (gap > 0).any():
                d = int(np.argmax(gap))
                raise BundleError(self.name, f"its prior graph does not give the prior it was exported with "
                                             f"(dimension {d}: {what} {have[d]:.4f}, recorded {want[d]:.4f}): the "
                                             "prior graph was altered")

    def _run(self, graph: str, **feeds: np.ndarray) -> list[np.ndarray]:
        """``graph`` on a batch (every feed [B, ...]): in parts giving at most MAX_GRAPH_RUN_VALUES
        values each, each part under GRAPH_RUN_SECONDS, each output checked to be float32
        [part, *declared per-item shape] before anything else reads it. BundleError in one sentence."""
        session = self.sessions[graph]
        outputs = self._io[graph][1]
        n = len(next(iter(feeds.values())))
        if n == 0:
            return [np.zeros((0, *shape), np.float32) for _, shape in outputs.values()]
        step = max(1, MAX_GRAPH_RUN_VALUES // max(1, sum(math.prod(shape) for _, shape in outputs.values())))
        names = [i.name for i in session.get_inputs()]
        parts = []
        for start in range(0, n, step):
            m = min(step, n - start)
            try:
                got = onnx_guard.run(session, {k: feeds[k][start:start + m] for k in names}, GRAPH_RUN_SECONDS)
            except onnx_guard.GraphFailed as exc:
                raise BundleError(self.name, f"its {graph} graph, on a batch of {m}, {exc}") from None
            for (output, (_, shape)), value in zip(outputs.items(), got, strict=True):
                if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.shape != (m, *shape):
                    what = f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
                    raise BundleError(self.name, f"its {graph} graph gave {output} as {what} for a batch of {m}, but "
                                                 f"it declares float32 {[m, *shape]}")
            parts.append(got)
        return parts[0] if len(parts) == 1 else [np.concatenate(p) for p in zip(*parts, strict=True)]

    def _condition(self, condition: Tensor | None, n: int) -> np.ndarray:
        return np.zeros(n, np.int64) if condition is None else condition.detach().cpu().numpy().astype(np.int64)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        mean, logvar, probs = self._run("encoder", x=x.detach().cpu().float().numpy(),
                                        condition=self._condition(condition, len(x)))
        mean_t = torch.from_numpy(mean)
        mixture = self.meta.description.condition.is_mixture
        if self.meta.deterministic:
            return Posterior.point(mean_t, torch.from_numpy(probs) if mixture else None)
        return Posterior(mean_t, torch.from_numpy(logvar), torch.from_numpy(probs) if mixture else None)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        (x,) = self._run("decoder", z=z.detach().cpu().float().numpy(), condition=self._condition(condition, len(z)))
        return torch.from_numpy(x)

    def sample(self, n: int, condition: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """z from the exported prior: noise scaled by ``temperature``, a mixture's component
        ``condition`` (or uniformly drawn ones)."""
        description = self.meta.description
        size = description.condition.size
        if description.condition.is_mixture:
            if condition is None:
                components = torch.randint(size, (n,), generator=generator)
            elif not 0 <= int(condition) < size:
                raise ValueError(f"component {condition} out of range 0..{size - 1}")
            else:
                components = torch.full((n,), int(condition), dtype=torch.long)
        else:
            components = torch.zeros(n, dtype=torch.long)
        eps = temperature * torch.randn(n, description.latent_dim, generator=generator)
        (z,) = self._run("prior", eps=eps.numpy(), components=components.numpy())
        return torch.from_numpy(z)

    def kl_per_dim(self, posterior: Posterior) -> Tensor:
        if posterior.deterministic:
            return torch.zeros_like(posterior.mean)
        probs = (posterior.component_probs if posterior.component_probs is not None
                 else torch.zeros(len(posterior.mean), 1))
        (kl,) = self._run("kl", mean=posterior.mean.detach().cpu().float().numpy(),
                          logvar=posterior.logvar.detach().cpu().float().numpy(),
                          probs=probs.detach().cpu().float().numpy())
        return torch.from_numpy(kl)
