"""The training loop: seeded, resumable, atomic per-epoch checkpoints, DDP-ready.

``train(model_config, train_config, out_dir)`` writes into ``out_dir``:
model.safetensors (the checkpoint), train_state.safetensors (optimizer + RNG state for --resume),
history.json, samples.png, reconstructions.png and loss.png.
Under ``torchrun`` it runs DistributedDataParallel, each rank on its shard of every epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from vaescope.devices import pick_device
from vaescope.training import metrics as metrics_mod
from vaescope.training.checkpoint import (
    CHECKPOINT_NAME,
    TRAIN_STATE_KEY,
    TRAIN_STATE_NAME,
    CheckpointMeta,
    load_checkpoint,
    save_checkpoint,
)
from vaescope.training.config import ModelConfig, TrainConfig
from vaescope.training.data import Dataset, load_dataset
from vaescope.training.models import LatentModel, build_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


@dataclass
class TrainResult:
    model: LatentModel
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


def temperature_at(progress: float, start: float, end: float) -> float:
    """Exponential Gumbel-softmax annealing (Jang et al. 2017), progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return start * (end / start) ** progress


# -- setup --------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA, then Apple's MPS, then the CPU (``vaescope.devices.pick_device``)."""
    return pick_device(name)


def model_config_for(dataset: Dataset, **overrides: Any) -> ModelConfig:
    """A model config sized for ``dataset``: image shape and class count come from the data."""
    info = dataset.info
    overrides.setdefault("num_classes", len(info.class_names))
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
               epoch: int, ctx: _Dist, device: torch.device, show_progress: bool) -> dict[str, float]:
    order = _epoch_order(len(images), cfg.seed, epoch, ctx).to(images.device)
    n_batches = math.ceil(len(order) / cfg.batch_size)
    use_amp = amp_enabled(cfg, device)
    condition = _unwrap(net).condition
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (show_progress and ctx.main), dynamic_ncols=True)
    net.train()
    for b in bar:
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = images[idx].to(device, non_blocking=True).float().div_(255)
        y = condition.from_labels(labels[idx].to(device, non_blocking=True))  # None unless class-conditional
        progress = epoch + b / n_batches
        w = kl_weight_at(progress, _beta(net), cfg.warmup_epochs)
        tau = temperature_at(progress / cfg.epochs, cfg.temperature_start, cfg.temperature_end)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = net(x, y, kl_weight=w, temperature=tau)
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
    schedule = {"kl_weight": w}
    if condition.is_mixture:  # only a mixture's Gumbel-softmax uses the temperature
        schedule["temperature"] = tau
    return {k: v / n_batches for k, v in sums.items()} | schedule


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA when ``cfg.amp``; the CPU trains in fp32. (The tests switch autocast on
    for the CPU to check the mixed-precision path where no GPU is available.)"""
    return cfg.amp and device.type == "cuda"


def _beta(net: torch.nn.Module) -> float:
    return _unwrap(net).config.beta


def _unwrap(net: torch.nn.Module) -> LatentModel:
    """The model inside a torch.compile and / or DistributedDataParallel wrapper."""
    net = getattr(net, "_orig_mod", net)
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net  # type: ignore[return-value]


# -- resume state -------------------------------------------------------------------------------
def save_train_state(path: Path, opt: torch.optim.Optimizer, epoch: int, history: list[dict]) -> None:
    """Optimizer tensors + RNG state + history, as safetensors (no pickle), written atomically."""
    state = opt.state_dict()
    tensors: dict[str, Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict[str, float]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"epoch": epoch, "history": history, "param_groups": state["param_groups"], "scalars": scalars}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={TRAIN_STATE_KEY: json.dumps(meta)})
    os.replace(tmp, path)


def load_train_state(path: Path, opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore what ``save_train_state`` wrote; returns (epochs done, history)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()[TRAIN_STATE_KEY])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), list(meta["history"])


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
    _check_shapes(model_config, data)
    _check_component_init(model_config, cfg)
    seed_everything(cfg.seed)
    model = build_model(model_config, data.info.class_names).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = _resume(model, opt, out_dir, device)
    net: torch.nn.Module = model
    if ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # the step only: checkpoints, metrics and the component init use the plain model
        net = torch.compile(net)
    # Data lives on the training device (uint8: 4x smaller than float) so batches never cross PCIe.
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    interrupted = False
    try:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            stats = _run_epoch(net, opt, images, labels, cfg, epoch, ctx, device, show_progress)
            init = _maybe_init_components(model, opt, cfg, epoch, images, ctx, show_progress)
            if ctx.main:
                history.append(_epoch_record(model, data, cfg, epoch, stats, time.perf_counter() - started) | init)
                _save_epoch(model, opt, model_config, cfg, data, history, out_dir, epoch + 1)
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
            train_labels=data.train.labels, eval_k=cfg.eval_k, nll_images=cfg.extra.get("nll_images", 1000),
            temperature=cfg.temperature_end)
        _save_epoch(model, opt, model_config, cfg, data, history, out_dir, len(history), result.metrics)
        result.files = write_artifacts(model, data, history, out_dir)
    if ctx.world > 1:
        dist.barrier()
    return result


def _check_shapes(model_config: ModelConfig, data: Dataset) -> None:
    if tuple(model_config.image_shape) != tuple(data.info.image_shape):
        raise ValueError(f"model image_shape {list(model_config.image_shape)} does not match dataset "
                         f"{data.info.name!r} {list(data.info.image_shape)}")
    if model_config.num_classes and model_config.num_classes != len(data.info.class_names):
        raise ValueError(f"the model config has num_classes={model_config.num_classes} but the dataset has "
                         f"{len(data.info.class_names)} classes")


def _check_component_init(model_config: ModelConfig, cfg: TrainConfig) -> None:
    if cfg.component_init == "random":
        return
    if model_config.model_type != "gmvae" or model_config.options.get("z_given_y", True):
        raise ValueError(f"component_init={cfg.component_init!r} is for the mean-field GMVAE: use --model gmvae "
                         "--z-given-y no, or leave --component-init at random")
    if cfg.component_init_epoch >= cfg.epochs:
        raise ValueError(f"component_init_epoch={cfg.component_init_epoch} must be below epochs={cfg.epochs}: "
                         "the mixture is initialised after that many epochs and then trained")


def _maybe_init_components(model: LatentModel, opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int,
                           images: Tensor, ctx: _Dist, show_progress: bool) -> dict[str, Any]:
    """After epoch ``component_init_epoch``, and after the last one with ``component_refit_at_end``,
    set a GMVAE's mixture from a clustering of its codes (training/component_init.py). The epoch's
    history record gets ``component_init`` or, for the final refit, ``component_refit``.
    Rank 0 clusters and fits; under DDP the other ranks receive its values by broadcast."""
    first = epoch + 1 == cfg.component_init_epoch
    refit = cfg.component_refit_at_end and epoch + 1 == cfg.epochs  # never the init's epoch: _check_component_init
    if cfg.component_init == "random" or not (first or refit):
        return {}
    from vaescope.training.component_init import initialise_components

    started = time.perf_counter()
    done = initialise_components(model, images, cfg.seed) if ctx.main else None  # type: ignore[arg-type]
    params = [model.prior_mean, model.prior_logvar, *model.y_head.parameters()]  # type: ignore[union-attr]
    for p in params:
        opt.state.pop(p, None)  # Adam's moments belonged to the old values
        if ctx.world > 1:
            dist.broadcast(p.data, 0)
    if done is None:
        return {}
    seconds = time.perf_counter() - started
    if show_progress:
        tqdm.write(f"components {'refitted' if refit else 'initialised'} from a UMAP + GMM clustering in "
                   f"{seconds:.0f}s: sizes {done.sizes}, q(y|x) agrees with it on {done.head_agreement:.1%}")
    return {"component_refit" if refit else "component_init": {
        "sizes": done.sizes, "head_agreement": round(done.head_agreement, 4), "seconds": round(seconds, 1)}}


def _resume(model: LatentModel, opt: torch.optim.Optimizer, out_dir: Path, device: torch.device) -> tuple[int, list]:
    ckpt, state = out_dir / CHECKPOINT_NAME, out_dir / TRAIN_STATE_NAME
    if not ckpt.exists() or not state.exists():
        raise FileNotFoundError(f"cannot resume: {out_dir} has no {CHECKPOINT_NAME} and {TRAIN_STATE_NAME} "
                                "from an earlier run")
    saved, _ = load_checkpoint(ckpt, device)
    model.load_state_dict(saved.state_dict())
    return load_train_state(state, opt)


def _epoch_record(model: LatentModel, data: Dataset, cfg: TrainConfig, epoch: int, stats: dict,
                  seconds: float) -> dict[str, Any]:
    """Train stats plus a validation pass (-ELBO at weight 1) on the test split."""
    model.eval()
    val_images, val_labels = data.test.images, model.condition.from_labels(data.test.labels)
    rng = torch.get_rng_state()  # validation sampling must not shift the training RNG stream
    val = metrics_mod.negative_elbo(model, val_images, val_labels, temperature=cfg.temperature_end)
    torch.set_rng_state(rng)
    record = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_recon": stats["recon"],
              "train_kl": stats["kl"], "val_loss": val["loss"], "val_recon": val["recon"], "val_kl": val["kl"],
              **{k: stats[k] for k in ("kl_weight", "temperature") if k in stats}, "seconds": round(seconds, 3)}
    if model.condition.is_mixture:  # how well its components match the classes (watched, never trained on)
        assignments = metrics_mod.component_assignments(model, val_images)
        record["val_cluster_accuracy"] = round(metrics_mod.cluster_accuracy(
            assignments, data.test.labels.numpy(), model.condition.size), 4)
    return record


def _epoch_line(rec: dict) -> str:
    clusters = f" | cluster acc {rec['val_cluster_accuracy']:.3f}" if "val_cluster_accuracy" in rec else ""
    return (f"epoch {rec['epoch']}: train loss {rec['train_loss']:.3f} | val -ELBO {rec['val_loss']:.3f} "
            f"(recon {rec['val_recon']:.3f}, KL {rec['val_kl']:.3f}){clusters} | {rec['seconds']:.1f}s")


def _save_epoch(model: LatentModel, opt: torch.optim.Optimizer, model_config: ModelConfig, cfg: TrainConfig,
                data: Dataset, history: list, out_dir: Path, epochs_done: int, metrics: dict | None = None) -> None:
    meta = CheckpointMeta(model_config=model_config, train_config=cfg.to_dict(), dataset=data.info.to_dict(),
                          history=history, metrics=metrics or {})
    save_checkpoint(out_dir / CHECKPOINT_NAME, model, meta)
    save_train_state(out_dir / TRAIN_STATE_NAME, opt, epochs_done, history)


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
