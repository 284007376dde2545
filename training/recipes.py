"""Rebuild every shipped checkpoint in ``assets/checkpoints/`` from seeds.

    python -m vaescope.training.recipes                 # all of them
    python -m vaescope.training.recipes --only digits   # names containing "digits"
    python -m vaescope.training.recipes --table         # the README's metrics table, from the files

Each recipe trains with ``vaescope.training.train.train`` and keeps a half-precision copy of the
checkpoint (a few MB in all). How long it took, and on what, is stored in the checkpoint itself
(``train_config.extra``), so the table below is always read from the files.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaescope.training.checkpoint import (
    embed_sample,
    load_checkpoint,
    read_extras,
    read_metadata,
    save_checkpoint,
)
from vaescope.training.config import TrainConfig
from vaescope.training.data import load_dataset
from vaescope.training.metrics import encode_split, mig
from vaescope.training.train import embedded_sample, model_config_for, train

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"
FMNIST_CONV = {"arch": "conv", "latent_dim": 16, "base_channels": 32, "hidden_dim": 256}


@dataclass(frozen=True)
class Recipe:
    name: str  # the shipped file is ASSETS / f"{name}.safetensors"
    dataset: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)


RECIPES: tuple[Recipe, ...] = (
    Recipe("digits/ae", "digits", {"model_type": "ae", "arch": "mlp", "latent_dim": 8}, {"epochs": 150}),
    Recipe("digits/vae", "digits", {"model_type": "vae", "arch": "mlp", "latent_dim": 8},
           {"epochs": 150, "warmup_epochs": 20}),
    Recipe("digits/cvae", "digits", {"model_type": "cvae", "arch": "mlp", "latent_dim": 8},
           {"epochs": 150, "warmup_epochs": 20}),
    Recipe("digits/gmvae", "digits", {"model_type": "gmvae", "arch": "mlp", "latent_dim": 8,
                                      "options": {"categorical_weight": 0.5, "temperature_end": 0.3}},
           {"epochs": 150, "warmup_epochs": 20}),
    # the seeds' other autoencoders (issue 24): one small model each, on digits
    # 600 epochs at lr 3e-3: gradient descent reaches the PCA subspace slowly along its weakest
    # directions (150 epochs at 1e-3 left the last principal angle at 88 degrees; these, under 3)
    Recipe("digits/linear-ae", "digits", {"model_type": "linear-ae", "arch": "mlp", "latent_dim": 8},
           {"epochs": 600, "lr": 3e-3}),
    Recipe("digits/dae", "digits", {"model_type": "dae", "arch": "mlp", "latent_dim": 8,
                                    "options": {"corruption": "gaussian", "corruption_level": 0.5}}, {"epochs": 150}),
    Recipe("digits/sparse-ae", "digits", {"model_type": "sparse-ae", "arch": "mlp", "latent_dim": 64},
           {"epochs": 150}),
    Recipe("digits/contractive-ae", "digits", {"model_type": "contractive-ae", "arch": "mlp", "latent_dim": 8},
           {"epochs": 150}),
    Recipe("digits/aae", "digits", {"model_type": "aae", "arch": "mlp", "latent_dim": 8}, {"epochs": 150}),
    Recipe("digits/hvae", "digits", {"model_type": "hvae", "arch": "mlp", "latent_dim": 8, "options": {"top_dim": 2}},
           {"epochs": 150, "warmup_epochs": 20}),
    # a sequence model on sequences with known factors, drawn as lines
    Recipe("waveforms/vrae", "waveforms", {"model_type": "vrae", "arch": "mlp", "latent_dim": 8, "hidden_dim": 64,
                                           "likelihood": "gaussian", "gaussian_c": 0.005},
           {"epochs": 30, "warmup_epochs": 3}),
    Recipe("shapes/beta-vae", "shapes", {"model_type": "vae", "arch": "conv", "latent_dim": 8, "beta": 4.0,
                                         "base_channels": 16, "hidden_dim": 256},
           {"epochs": 20, "warmup_epochs": 5, "batch_size": 128}),
    # The beta trade-off (lessons 3 and 6): one recipe, four betas. Batch 32 for 100 epochs (37,500
    # updates) is what lets the decoder draw squares and triangles at all (20 epochs of batch 128 drew
    # every shape as an ellipse even at beta 1); as beta grows the shape factor fades, first the
    # triangles, while the position codes separate.
    *(Recipe(f"shapes/beta-{beta:g}", "shapes", {"model_type": "vae", "arch": "conv", "latent_dim": 10,
                                                 "beta": beta, "base_channels": 16, "hidden_dim": 256},
             {"epochs": 100, "warmup_epochs": 10, "batch_size": 32})
      for beta in (0.5, 1.0, 4.0, 10.0)),
    # Posterior collapse (lesson 4): two identical runs but for KL warm-up. Of 26 pairs tried on digits
    # (MLP and conv, Bernoulli and Gaussian, beta 1 to 8, 16 and 32 latents) this pair, a wide conv
    # decoder at beta 4 with 120 warm-up epochs, showed the largest gap in active units (4 vs 11).
    *(Recipe(f"digits/collapse-{name}", "digits", {"model_type": "vae", "arch": "conv", "latent_dim": 16,
                                                    "beta": 4.0, "likelihood": "gaussian", "base_channels": 64},
             {"epochs": 150, "warmup_epochs": warmup})
      for name, warmup in (("no-warmup", 0), ("warmup", 120))),
    # MNIST (CC BY-SA 3.0, Yann LeCun and Corinna Cortes): --data-dir with its four IDX files.
    # The VAE trains on dynamically binarised images and is scored as the literature scores it
    # (nll_protocol in its metrics); the AE beside it has the same networks (lessons 1 and 2).
    Recipe("mnist/vae", "mnist", {"model_type": "vae", **FMNIST_CONV},
           {"epochs": 30, "binarize": "dynamic", "eval_k": 100}),
    Recipe("mnist/ae", "mnist", {"model_type": "ae", **FMNIST_CONV}, {"epochs": 20}),
    Recipe("mnist/cvae", "mnist", {"model_type": "cvae", **FMNIST_CONV}, {"epochs": 15}),
    # the documented Fashion-MNIST GMVAE command (docs/gmvae-clustering.md), on MNIST
    Recipe("mnist/gmvae", "mnist", {"model_type": "gmvae", **FMNIST_CONV,
                                    "options": {"categorical_weight": 0.2, "z_given_y": False, "temperature_end": 0.3,
                                                "component_init": "umap", "component_init_epoch": 5,
                                                "component_refit_at_end": True}},
           {"epochs": 20}),
    # a 2-d code: the map is the code itself; its record shows the space forming (lesson 7)
    Recipe("mnist/vae-2d", "mnist", {"model_type": "vae", "arch": "mlp", "latent_dim": 2, "hidden_dim": 512},
           {"epochs": 30}),
    Recipe("fashion-mnist/vae", "fashion-mnist", {"model_type": "vae", **FMNIST_CONV}, {"epochs": 8}),
    Recipe("fashion-mnist/cvae", "fashion-mnist", {"model_type": "cvae", **FMNIST_CONV}, {"epochs": 8}),
    # categorical_weight 0.2 and 20 epochs, seed 0: clustering accuracy 0.639, the best single run
    # (the three-seed mean of this setting is 0.556; docs/gmvae-clustering.md)
    Recipe("fashion-mnist/gmvae", "fashion-mnist", {"model_type": "gmvae", **FMNIST_CONV,
                                                        "options": {"categorical_weight": 0.2, "temperature_end": 0.3}},
           {"epochs": 20}),
)


def hardware() -> str:
    """A short description of what trained the model, e.g. 'AMD EPYC 9B14, 2 threads'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else name
    return f"{name}, {torch.get_num_threads()} threads"


def build(recipe: Recipe, assets: Path = ASSETS, seed: int = 0, data_dir: str | None = None) -> Path:
    """Train ``recipe`` and write its compact checkpoint (half precision, with the run's embedded
    sample and training record); returns the shipped file's path. ``data_dir``: where a dataset
    that is not bundled or generated (MNIST) is found; it is not stored in the shipped file."""
    data = load_dataset(recipe.dataset, data_dir=data_dir, seed=seed)
    model_cfg = model_config_for(data, **recipe.model)
    train_cfg = TrainConfig(dataset=recipe.dataset, seed=seed,
                            **{"embed_sample": SAMPLE_SIZES.get(recipe.dataset, -1), **recipe.train})
    train_cfg.extra.update(recipe=recipe.name, nll_images=recipe.train.get("nll_images", 1000))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(model_cfg, train_cfg, tmp, dataset=data)
        train_cfg.extra.update(train_seconds=round(time.perf_counter() - started, 1), hardware=hardware())
        model, meta = load_checkpoint(Path(tmp) / "model.safetensors")
        meta.train_config = train_cfg.to_dict()
        meta.metrics = result.metrics
        out = assets / f"{recipe.name}.safetensors"
        save_checkpoint(out, model, meta, dtype=torch.float16, extra=read_extras(Path(tmp) / "model.safetensors"))
        for png in ("samples.png", "reconstructions.png"):
            shutil.copy(Path(tmp) / png, out.with_name(f"{out.stem}.{png}"))
    return out


# Images each shipped checkpoint carries for its map on a machine without its dataset: all of a small
# test split, a seeded 2,000 of a large one (about 1.5 MB as uint8 at 28x28), fewer 32x32 shapes
# (which any machine regenerates anyway). The whole shipped set stays small (README, Shipped models).
SAMPLE_SIZES = {"digits": 360,  # digits has 300 test images: all of them
                "shapes": 1000, "waveforms": 1000, "mnist": 2000, "fashion-mnist": 2000}


def embed_shipped(recipe: Recipe, assets: Path = ASSETS, data_dir: str | None = None) -> Path:
    """Give an already trained shipped checkpoint its embedded sample (the same seeded test images
    its recipe would embed), without retraining; the file is rewritten atomically."""
    path = assets / f"{recipe.name}.safetensors"
    meta = read_metadata(path)
    data = load_dataset(recipe.dataset, data_dir=data_dir, seed=int(meta.train_config.get("seed", 0)))
    cfg = TrainConfig(dataset=recipe.dataset, seed=int(meta.train_config.get("seed", 0)),
                      embed_sample=SAMPLE_SIZES.get(recipe.dataset, -1))
    tensors = embedded_sample(data, cfg)
    return embed_sample(path, tensors["sample.images"], tensors["sample.labels"], tensors.get("sample.factors"))


def store_mig(recipe: Recipe, assets: Path = ASSETS) -> Path:
    """Add the MIG (training/metrics.py ``mig``) to a shipped checkpoint of a dataset with
    ground-truth factors, measured on its test split as training does now, without retraining; the
    file is rewritten atomically with its weights' precision, sample and record kept."""
    path = assets / f"{recipe.name}.safetensors"
    model, meta = load_checkpoint(path)
    data = load_dataset(recipe.dataset, seed=int(meta.train_config.get("seed", 0)))
    if data.test.factors is None:
        raise ValueError(f"{recipe.dataset} has no ground-truth factors: no MIG to measure")
    means = encode_split(model, data.test.images, model.condition.from_labels(data.test.labels)).mean
    score, per_factor = mig(means, data.test.factors.numpy())
    meta.metrics = {**meta.metrics, "mig": score,
                    "mig_per_factor": {n: float(v) for n, v in zip(data.info.factor_names, per_factor, strict=True)}}
    stored = next(iter(model.state_dict().values())).dtype
    return save_checkpoint(path, model, meta, dtype=torch.float16 if _is_half(path) else stored,
                           extra=read_extras(path))


def _is_half(path: Path) -> bool:
    from vaescope.training.tensorfile import read_header

    return any(t.dtype == "F16" for t in read_header(path).tensors.values())


def metrics_table(assets: Path = ASSETS) -> str:
    """Markdown table of every shipped checkpoint's metrics, read from the files."""
    rows = ["| checkpoint | ELBO | NLL (IWAE) | active units | probe acc. | cluster acc. | MIG | train time |",
            "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p=2: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    for path in sorted(assets.rglob("*.safetensors")):
        meta = read_metadata(path)
        m, extra = meta.metrics, meta.train_config.get("extra", {})
        rows.append(f"| {path.relative_to(assets).with_suffix('')} | {fmt(m.get('elbo'))} | "
                    f"{fmt(m.get('nll_iwae'))} (k={m.get('nll_k', '–')}) | {m.get('active_units', '–')}/"
                    f"{m.get('latent_dim', '–')} | {fmt(m.get('probe_accuracy'), 3)} | "
                    f"{fmt(m.get('cluster_accuracy'), 3)} | {fmt(m.get('mig'), 3)} | {extra.get('train_seconds', '–')} s on "
                    f"{extra.get('hardware', '?')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaescope.training.recipes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="build only recipes whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--table", action="store_true", help="print the metrics table and exit")
    parser.add_argument("--data-dir", default=None, help="where MNIST's IDX files are (the mnist recipes)")
    parser.add_argument("--store-mig", action="store_true",
                        help="measure and store the MIG of the chosen shipped checkpoints, without retraining")
    parser.add_argument("--embed-only", action="store_true",
                        help="give the chosen shipped checkpoints their embedded sample, without retraining")
    args = parser.parse_args(argv)
    if args.table:
        print(metrics_table())
        return 0
    chosen = [r for r in RECIPES if args.only is None or args.only in r.name]
    for recipe in chosen:
        if args.list:
            print(f"{recipe.name}: dataset={recipe.dataset} model={recipe.model} train={recipe.train}")
            continue
        print(f"== {recipe.name}")
        if args.store_mig:
            print(f"stored the MIG in {store_mig(recipe)}")
            continue
        if args.embed_only:
            print(f"embedded a sample in {embed_shipped(recipe, data_dir=args.data_dir)}")
            continue
        print(f"wrote {build(recipe, data_dir=args.data_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
