"""The training loop: seeded, resumable, atomic per-epoch checkpoints, DDP-ready.

``train(model_config, train_config, out_dir)`` writes into ``out_dir``:
model.safetensors (the checkpoint), train_state.safetensors (weights, optimizer and RNG state for
--resume; see train_state.py), history.json, samples.png, reconstructions.png and loss.png.
Both safetensors files are rewritten atomically after every epoch, the model first.
Under ``torchrun`` it runs DistributedDataParallel, each rank on its shard of every epoch.

The checkpoint also carries an embedded sample of test images (``embed_sample``) and the training
record (``record``; record.py), both described in embedded.py. The data options: ``binarize``
(data.binarized; dynamic draws per batch here), ``corrupt`` (the input of every step is corrupted,
the loss scores the clean image). Validation and the final metrics always see clean test images
(binarised once, with a fixed seed, when the run is binarised).

The trainer names no family: what differs between families goes through the hooks of
``LatentModel`` (models/base.py): ``check_run`` before training, ``training_schedule`` for each
step's loss options (a GMVAE's temperature), ``evaluation_options`` for validation and the final
metrics, ``validation_metrics`` for each epoch's record, and ``after_epoch`` (a GMVAE's component
initialisation).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from vaescope.devices import pick_device
from vaescope.training import metrics as metrics_mod
from vaescope.training.checkpoint import (
    CHECKPOINT_NAME,
    TRAIN_STATE_NAME,
    CheckpointMeta,
    checkpoint_bytes,
    parse_dataset_block,
    plan_model,
)
from vaescope.training.config import ConfigError, ModelConfig, TrainConfig, check_run_options
from vaescope.training.corruption import corrupt
from vaescope.training.data import BINARIZE_TEST_SEED, Dataset, binarized, load_dataset
from vaescope.training.embedded import default_sample_size, sample_tensors, subset_indices
from vaescope.training.models import EpochEnd, LatentModel, build_model
from vaescope.training.record import Recorder
from vaescope.training.tensorfile import stale_temporaries, write_atomically
from vaescope.training.train_state import (
    RunLink,
    TrainStateError,
    check_model_file,
    load_train_state,
    model_file_run_entry,
    restore,
    save_train_state,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


@dataclass
class TrainResult:
    model: LatentModel  # with its checkpoint's metadata as ``model.meta`` (as vs.load gives it)
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    out_dir: Path
    interrupted: bool = False
    files: dict[str, Path] = field(default_factory=dict)


# -- schedules ----------------------------------------------------------------------------------
def kl_weight_at(epoch_progress: float, beta: float, warmup_epochs: int) -> float:
    """Linear KL warm-up from 0 to beta over ``warmup_epochs`` (Bowman et al. 2016; Sønderby et al. 2016)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epoch_progress / warmup_epochs)


# -- setup --------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA, then Apple's MPS, then the CPU (``vaescope.devices.pick_device``)."""
    return pick_device(name)


def model_config_for(dataset: Dataset, **overrides: Any) -> ModelConfig:
    """A model config sized for ``dataset``: image shape, class count and display come from the data."""
    info = dataset.info
    overrides.setdefault("num_classes", len(info.class_names))
    overrides.setdefault("display", info.display)
    return ModelConfig.from_dict({"image_shape": tuple(info.image_shape), **overrides})


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# -- the loop -----------------------------------------------------------------------------------
def _epoch_order(n: int, seed: int, epoch: int, ctx: _Dist) -> Tensor:
    """This rank's shuffled indices for ``epoch``; the same permutation on every rank, sharded."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    perm = perm[: n - n % ctx.world]  # equal batch counts on every rank keep DDP in step
    return perm[ctx.rank :: ctx.world]


def _run_epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, images: Tensor, labels: Tensor, cfg: TrainConfig,
               epoch: int, ctx: _Dist, device: torch.device, show_progress: bool,
               recorder: Recorder | None = None) -> dict[str, float]:
    order = _epoch_order(len(images), cfg.seed, epoch, ctx).to(images.device)
    n_batches = math.ceil(len(order) / cfg.batch_size)
    use_amp = amp_enabled(cfg, device)
    model = _unwrap(net)
    condition = model.condition
    corruption = cfg.corruption()
    # the record's frames inside the first epoch (rank 0 keeps the record)
    frames = recorder.mid_epoch_batches(n_batches) if recorder is not None and epoch == 0 else {}
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (show_progress and ctx.main), dynamic_ncols=True)
    net.train()
    for b in bar:
        if b in frames:
            recorder.capture(model, epoch + frames[b])  # type: ignore[union-attr]
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = images[idx].to(device, non_blocking=True).float().div_(255)
        if cfg.binarize == "dynamic":  # a fresh Bernoulli draw of every image each time it is seen
            x = torch.bernoulli(x)
        # --corrupt: encode a corrupted copy, score the reconstruction against the clean x
        x_in, target = (x, None) if corruption is None else (corrupt(x, *corruption), x)
        y = condition.from_labels(labels[idx].to(device, non_blocking=True))  # None unless class-conditional
        progress = epoch + b / n_batches
        w = kl_weight_at(progress, model.config.beta, cfg.warmup_epochs)
        schedule = model.training_schedule(progress, cfg.epochs)  # the family's own (a temperature)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = net(x_in, y, kl_weight=w, target=target, **schedule)
        if not torch.isfinite(out.total):
            raise TrainingDiverged(f"loss became {out.total.item()} at epoch {epoch + 1}, batch {b + 1}; the last "
                                   "good checkpoint is kept. Try a lower --lr or a KL warm-up.")
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        step = {"loss": out.total.item(), "recon": out.recon.item(), "kl": out.kl.item()}
        for key, value in step.items():
            sums[key] += value
        if b % 10 == 0:
            bar.set_postfix({k: f"{v:.2f}" for k, v in step.items()})
    return {k: v / n_batches for k, v in sums.items()} | {"kl_weight": w} | schedule


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA when ``cfg.amp``; the CPU trains in fp32. (The tests switch autocast on
    for the CPU to check the mixed-precision path where no GPU is available.)"""
    return cfg.amp and device.type == "cuda"


def _unwrap(net: torch.nn.Module) -> LatentModel:
    """The model inside a torch.compile and / or DistributedDataParallel wrapper."""
    net = getattr(net, "_orig_mod", net)
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net  # type: ignore[return-value]


# -- public entry point -------------------------------------------------------------------------
def train(model_config: ModelConfig, train_config: TrainConfig, out_dir: str | Path, *,
          dataset: Dataset | None = None, resume: bool = False, show_progress: bool = True,
          evaluate_at_end: bool = True) -> TrainResult:
    """Train one model and write its run folder. See the module docstring for the files."""
    cfg, out_dir = train_config, Path(out_dir)
    ctx = _init_distributed()
    device = resolve_device(cfg.device)
    if ctx.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    data = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.seed)
    model_config = model_config.with_moved_options(cfg)  # an older train config's family options
    check_run_options(model_config.to_dict(), cfg)
    _check_data(model_config, data)
    plan_model(model_config, data.info.class_names)  # refuses a model beyond the limits before allocating it
    # the sample and the record keep the grey images: the explorer shows what the dataset holds, and a
    # model trained on binarised images is explored on the same images with or without the dataset
    grey = data
    sample = embedded_sample(grey, cfg)  # checked now, so a bad --embed-sample fails before training
    data = binarized(data, cfg.binarize, cfg.seed)
    if ctx.main:
        _remove_stale_temporaries(out_dir)
    seed_everything(cfg.seed)
    model = build_model(model_config, data.info.class_names).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, history, link = 0, [], RunLink()  # a new run's id; a resume keeps its run's
    recorder = Recorder.create(grey.test, cfg.record, cfg.seed, model_config.latent_dim, cfg.epochs) if ctx.main else None
    if resume:
        start_epoch, history, saved_record, link = _resume(model, opt, out_dir, model_config, cfg, ctx.main)
        if recorder is not None and saved_record:  # continue the run's record (an older state has none)
            recorder = Recorder.resumed(grey.test, saved_record, model_config.latent_dim, cfg.epochs)
    elif recorder is not None:
        recorder.capture(model, 0.0)
    net: torch.nn.Module = model
    if ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # the step only: checkpoints, metrics and the epoch hooks use the plain model
        net = torch.compile(net)
    # Data lives on the training device (uint8: 4x smaller than float) so batches never cross PCIe.
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    interrupted = False
    meta: CheckpointMeta | None = None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            stats = _run_epoch(net, opt, images, labels, cfg, epoch, ctx, device, show_progress, recorder)
            extra = _after_epoch(model, opt, cfg, epoch, images, ctx, show_progress, recorder)
            if ctx.main:
                history.append(_epoch_record(model, data, cfg, epoch, stats, time.perf_counter() - started) | extra)
                meta = _save_epoch(model, opt, model_config, cfg, data, history, out_dir, epoch + 1,
                                   sample=sample, recorder=recorder, link=link)
                if show_progress:
                    tqdm.write(_epoch_line(history[-1]))
    except KeyboardInterrupt:
        interrupted = True
        if ctx.main:
            tqdm.write(f"interrupted: the checkpoint in {out_dir} holds the last finished epoch "
                       f"({len(history)}); continue with --resume {out_dir}")
    result = TrainResult(model=model, history=history, metrics={}, out_dir=out_dir, interrupted=interrupted)
    if ctx.main and evaluate_at_end and not interrupted and history:
        result.metrics = metrics_mod.evaluate(
            model, data.test.images, data.test.labels, train_images=data.train.images,
            train_labels=data.train.labels, eval_k=cfg.eval_k, nll_images=nll_images(cfg, len(data.test)),
            factors=data.test.factors, factor_names=data.info.factor_names, **model.evaluation_options())
        if "nll_iwae" in result.metrics:
            result.metrics["nll_protocol"] = nll_protocol(cfg, result.metrics["nll_k"], result.metrics["nll_images"])
        meta = _save_epoch(model, opt, model_config, cfg, data, history, out_dir, len(history), result.metrics,
                           sample=sample, recorder=recorder, link=link)
        result.files = write_artifacts(model, data, history, out_dir)
    if meta is not None:
        model.meta = meta  # what vs.load would give: vs.save and vs.explore read it (set once: compiled code never sees it)
    if ctx.world > 1:
        dist.barrier()
    return result


def nll_images(cfg: TrainConfig, test_images: int) -> int:
    """Test images the final IWAE NLL averages over: ``--nll-images`` when given, else 1,000, or
    the whole test split for a binarised run (the literature's protocol; see ``nll_protocol``)."""
    default = test_images if cfg.binarize != "none" else 1000
    return min(int(cfg.extra.get("nll_images", default)), test_images)


def nll_protocol(cfg: TrainConfig, k: int, images: int) -> str:
    """How the NLL was measured, in words, stored beside it in the metrics (``nll_protocol``).

    A binarised run (``--binarize``) is measured as the NLL literature on binarised MNIST does
    (Burda et al. 2016; pythae's benchmarks): the IWAE bound on the test split, here binarised once
    with the fixed seed ``BINARIZE_TEST_SEED`` (every run is scored on the same binary images), all
    of it unless ``--nll-images`` says otherwise; k = ``--eval-k`` (5,000 in Burda et al.).
    """
    data = (f"test images binarised once (Bernoulli of the grey levels, seed {BINARIZE_TEST_SEED}); "
            f"trained on {cfg.binarize} binarisation" if cfg.binarize != "none" else "grey-level test images")
    corrupted = f"; trained on inputs corrupted by {cfg.corrupt}, scored on clean images" if cfg.corrupt else ""
    return f"IWAE bound, k={k}, on the first {images} {data}{corrupted}"


def embedded_sample(data: Dataset, cfg: TrainConfig) -> dict[str, Tensor]:
    """The ``sample.*`` tensors the run's checkpoints carry: ``embed_sample`` test images (-1: the
    default for the image size, ``embedded.default_sample_size``), a subset seeded by the run's
    seed, with their labels and, when the dataset has them, factors. ConfigError when the sample
    would pass the limits."""
    test, info = data.test, data.info
    n = default_sample_size(info.image_shape, len(test)) if cfg.embed_sample < 0 else min(cfg.embed_sample, len(test))
    if n <= 0:
        return {}
    picked = torch.from_numpy(subset_indices(len(test), n, cfg.seed))
    factors = None
    if test.factors is not None and info.factor_names and test.factors.shape[1] == len(info.factor_names):
        factors = test.factors[picked]
    try:
        return sample_tensors(test.images[picked], test.labels[picked], factors, image_shape=info.image_shape,
                              factor_count=len(info.factor_names), num_classes=len(info.class_names))
    except ConfigError as exc:
        raise ConfigError(f"embed_sample={cfg.embed_sample}: {exc}") from None


def _check_data(model_config: ModelConfig, data: Dataset) -> None:
    """The dataset fits the model, has images to train on and to validate on, and can be
    described in the checkpoint (latent-train never writes one its own loader would refuse)."""
    if len(data.train) == 0 or len(data.test) == 0:
        raise ConfigError(f"dataset {data.info.name!r} has {len(data.train)} training and {len(data.test)} test "
                          "images; training needs at least one of each (validation runs every epoch)")
    if tuple(model_config.image_shape) != tuple(data.info.image_shape):
        raise ConfigError(f"model image_shape {list(model_config.image_shape)} does not match dataset "
                          f"{data.info.name!r} {list(data.info.image_shape)}")
    if model_config.num_classes and model_config.num_classes != len(data.info.class_names):
        raise ConfigError(f"the model config has num_classes={model_config.num_classes} but the dataset has "
                          f"{len(data.info.class_names)} classes")
    try:
        parse_dataset_block(data.info.to_dict(), model_config)
    except ConfigError as exc:
        raise ConfigError(f"dataset {data.info.name[:200]!r} cannot be described in a checkpoint: {exc}") from None


def _after_epoch(model: LatentModel, opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, images: Tensor,
                 ctx: _Dist, show_progress: bool, recorder: Recorder | None) -> dict[str, Any]:
    """The family's ``after_epoch`` hook after epoch ``epoch`` (0-based), then the record's frame
    when due or when the hook changed the model (which also gets the frame from before the change).
    Returns the hook's entries for the epoch's history record."""
    changed = False

    def before_change() -> None:
        nonlocal changed
        changed = True
        if recorder is not None:
            recorder.capture(model, epoch + 1)

    def replaced(params: Iterable[torch.nn.Parameter]) -> None:
        for p in params:
            opt.state.pop(p, None)  # Adam's moments belonged to the old values
            if ctx.world > 1:
                dist.broadcast(p.data, 0)

    log = tqdm.write if show_progress and ctx.main else (lambda line: None)
    extra = model.after_epoch(EpochEnd(epoch=epoch + 1, epochs=cfg.epochs, images=images, seed=cfg.seed,
                                       main=ctx.main, before_change=before_change, replaced=replaced, log=log))
    if recorder is not None and (changed or recorder.due(epoch + 1, cfg.epochs)):
        recorder.capture(model, epoch + 1)
    return extra


# -- resume -------------------------------------------------------------------------------------
# What a resumed run may change: how long it runs, where, and how it is evaluated. Everything else
# would make it a different run from the one whose state it continues.
RESUME_MAY_CHANGE = ("epochs", "device", "compile", "data_dir", "eval_k", "extra")


def _resume(model: LatentModel, opt: torch.optim.Optimizer, out_dir: Path, model_config: ModelConfig,
            cfg: TrainConfig, report: bool) -> tuple[int, list, dict[str, Tensor], RunLink]:
    """Load and check the resume state in ``out_dir`` and that it belongs with the model file there,
    then put it into ``model`` and ``opt``; returns (epochs done, history, the record's tensors so
    far, the run's link for the next writes). Raises TrainStateError saying why a resume is
    impossible, before anything is changed or written."""
    state_path = out_dir / TRAIN_STATE_NAME
    if not state_path.exists():
        raise TrainStateError(state_path, f"cannot resume: {out_dir} holds no resume state from an earlier run "
                                          "(a run writes it when its first epoch ends); start without --resume")
    state = load_train_state(state_path)
    _check_same_run(state_path, state.model_config, state.train_config, model_config, cfg)
    if state.epoch > cfg.epochs:
        raise TrainStateError(state_path, f"cannot resume: the run has already finished {state.epoch} epochs, "
                                          f"more than the {cfg.epochs} asked for")
    note = check_model_file(state_path, state, out_dir / CHECKPOINT_NAME, RESUME_MAY_CHANGE)
    restore(state, model, opt, model.device)
    if note and report:
        tqdm.write(note, file=sys.stderr)
    return state.epoch, state.history, state.record, RunLink(state.run_id, state.metadata_sha256)


def _check_same_run(state_path: Path, saved_model: ModelConfig, saved_train: TrainConfig, model_config: ModelConfig,
                    cfg: TrainConfig) -> None:
    if saved_model.with_moved_options(saved_train).to_dict() != model_config.to_dict():
        raise TrainStateError(state_path, "cannot resume: the resume state was made for another model config")
    changed = sorted(k for k, v in saved_train.to_dict().items()
                     if k not in RESUME_MAY_CHANGE and getattr(cfg, k) != v)
    if changed:
        raise TrainStateError(state_path, f"cannot resume: the train config differs from the resume state's in {changed}")


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of writes that a kill interrupted; never read, so safe to delete."""
    for name in (CHECKPOINT_NAME, TRAIN_STATE_NAME):
        for path in stale_temporaries(out_dir, name):
            path.unlink(missing_ok=True)


def _epoch_record(model: LatentModel, data: Dataset, cfg: TrainConfig, epoch: int, stats: dict,
                  seconds: float) -> dict[str, Any]:
    """Train stats plus a validation pass (-ELBO at weight 1) on the test split."""
    model.eval()
    val_images, val_labels = data.test.images, model.condition.from_labels(data.test.labels)
    rng = torch.get_rng_state()  # validation sampling must not shift the training RNG stream
    val = metrics_mod.negative_elbo(model, val_images, val_labels, **model.evaluation_options())
    torch.set_rng_state(rng)
    schedules = {k: v for k, v in stats.items() if k not in ("loss", "recon", "kl")}  # kl_weight, the family's own
    record = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_recon": stats["recon"],
              "train_kl": stats["kl"], "val_loss": val["loss"], "val_recon": val["recon"], "val_kl": val["kl"],
              **schedules, "seconds": round(seconds, 3)}
    return record | model.validation_metrics(val_images, data.test.labels)


def _epoch_line(rec: dict) -> str:
    clusters = f" | cluster acc {rec['val_cluster_accuracy']:.3f}" if "val_cluster_accuracy" in rec else ""
    return (f"epoch {rec['epoch']}: train loss {rec['train_loss']:.3f} | val -ELBO {rec['val_loss']:.3f} "
            f"(recon {rec['val_recon']:.3f}, KL {rec['val_kl']:.3f}){clusters} | {rec['seconds']:.1f}s")


def _save_epoch(model: LatentModel, opt: torch.optim.Optimizer, model_config: ModelConfig, cfg: TrainConfig,
                data: Dataset, history: list, out_dir: Path, epochs_done: int, metrics: dict | None = None, *,
                sample: dict[str, Tensor] | None = None, recorder: Recorder | None = None,
                link: RunLink) -> CheckpointMeta:
    """Write the checkpoint (with the embedded sample, the record so far and ``link``'s run block),
    then the resume state that records its digest (with the record); ``link`` then names the new
    state. Each write is atomic; a stop between them leaves the resume state one epoch behind,
    which resumes exactly (the module docstring of train_state.py says why)."""
    meta = CheckpointMeta(model_config=model_config, train_config=cfg.to_dict(), dataset=data.info.to_dict(),
                          history=history, metrics=metrics or {})
    record = recorder.tensors() if recorder is not None else {}
    run = model_file_run_entry(link, meta.to_json(), model.state_dict())
    digest = write_atomically(out_dir / CHECKPOINT_NAME,
                              checkpoint_bytes(model, meta, extra=(sample or {}) | record, metadata=run))
    link.state_sha256 = save_train_state(out_dir / TRAIN_STATE_NAME, model, opt, epochs_done, history, model_config,
                                         cfg, digest, model.device, record=record, run_id=link.run_id)
    return meta


def write_artifacts(model: LatentModel, data: Dataset, history: list, out_dir: Path) -> dict[str, Path]:
    """history.json, samples.png, reconstructions.png and loss.png in ``out_dir``."""
    from vaescope.training.plots import save_loss_curves, save_reconstructions, save_samples

    files = {"history": out_dir / "history.json", "samples": out_dir / "samples.png",
             "reconstructions": out_dir / "reconstructions.png", "loss": out_dir / "loss.png"}
    files["history"].write_text(json.dumps(history, indent=1))
    save_samples(model, files["samples"])
    save_reconstructions(model, data, files["reconstructions"])
    save_loss_curves(history, files["loss"])
    return files
