"""`latent-train`: train one autoencoder-family model and write a self-describing run folder.

Example: latent-train --dataset digits --model vae --latent-dim 8 --epochs 30 --out runs/digits-vae
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from vaescope.training.checkpoint import CheckpointError
from vaescope.training.config import (
    ARCHS,
    COMPONENT_INITS,
    LIKELIHOODS,
    ConfigError,
    TrainConfig,
)
from vaescope.training.data import DATASETS, DatasetError, load_dataset
from vaescope.training.models import FAMILIES

# CLI flag -> (config section, field). Flags left unset fall back to --config, then to defaults.
# A family's own options (models/<family>.py, its Options dataclass) become flags of their own name.
MODEL_FLAGS = {"model": "model_type", "latent_dim": "latent_dim", "arch": "arch", "beta": "beta",
               "likelihood": "likelihood", "hidden_dim": "hidden_dim", "base_channels": "base_channels",
               "gaussian_c": "gaussian_c"}
TRAIN_FLAGS = {"dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "seed": "seed", "device": "device", "warmup_epochs": "warmup_epochs", "eval_k": "eval_k",
               "data_dir": "data_dir", "image_size": "image_size", "temperature_start": "temperature_start",
               "temperature_end": "temperature_end", "component_init": "component_init",
               "component_init_epoch": "component_init_epoch",
               "component_refit_at_end": "component_refit_at_end", "compile": "compile"}


def _typed(kind: type, minimum: float, strict: bool):  # noqa: ANN202 - argparse type factory
    def parse(text: str):  # noqa: ANN202
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {value}")
        return value
    return parse


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "no"):
        return text.lower() == "yes"
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def _dataset_name(text: str) -> str:
    if text in DATASETS or text.startswith("folder:"):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose from {sorted(DATASETS)} or folder:PATH")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latent-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=_dataset_name, help=f"{', '.join(sorted(DATASETS))} or folder:PATH")
    p.add_argument("--model", choices=sorted(FAMILIES), help="model family (default vae)")
    p.add_argument("--latent-dim", type=_typed(int, 1, False), help="latent dimensions (default 16)")
    p.add_argument("--epochs", type=_typed(int, 1, False), help="epochs (default 30)")
    p.add_argument("--out", type=Path, help="run folder to write (default runs/DATASET-MODEL)")
    p.add_argument("--beta", type=_typed(float, 0, False), help="KL weight; != 1 gives a beta-VAE")
    p.add_argument("--warmup-epochs", type=_typed(int, 0, False), help="linear KL warm-up epochs")
    p.add_argument("--component-init", choices=COMPONENT_INITS,
                   help="GMVAE: 'umap' re-initialises the mixture from a UMAP + GMM clustering of the codes "
                        "(needs --z-given-y no); default random")
    p.add_argument("--component-init-epoch", type=_typed(int, 1, False),
                   help="GMVAE: epochs trained before --component-init umap runs (default 3)")
    p.add_argument("--component-refit-at-end", action="store_true", default=None,
                   help="GMVAE with --component-init umap: after the last epoch, set the mixture once more "
                        "from a clustering of the trained codes")
    p.add_argument("--likelihood", choices=LIKELIHOODS)
    p.add_argument("--gaussian-c", type=_typed(float, 0, True), help="Gaussian likelihood variance c")
    p.add_argument("--arch", choices=(*ARCHS, "auto"), help="backbone; auto = conv for >= 16 px, else mlp")
    p.add_argument("--hidden-dim", type=_typed(int, 1, False))
    p.add_argument("--base-channels", type=_typed(int, 1, False))
    p.add_argument("--batch-size", type=_typed(int, 1, False))
    p.add_argument("--lr", type=_typed(float, 0, True))
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--eval-k", type=_typed(int, 1, False), help="importance samples for the IWAE NLL")
    p.add_argument("--nll-images", type=_typed(int, 1, False), help="test images for the NLL (default 1000)")
    p.add_argument("--temperature-start", type=_typed(float, 0, True))
    p.add_argument("--temperature-end", type=_typed(float, 0, True))
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training step (meant for GPUs: on the 2-core CPU it ran at 0.8x the eager speed)")
    p.add_argument("--data-dir", help="where datasets are read / downloaded")
    p.add_argument("--image-size", type=int, help="folder: datasets are resized to this (64 or 128)")
    p.add_argument("--config", type=Path, help="JSON file with 'model' and 'train' sections; flags override it")
    p.add_argument("--resume", type=Path, metavar="OUT", help="continue the stopped run in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_family_options(p)
    return p


def family_options() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Every family option by name: (its field, the families that have it)."""
    found: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for name, cls in sorted(FAMILIES.items()):
        for f in dataclasses.fields(cls.Options):
            found.setdefault(f.name, (f, []))[1].append(name)
    return found


def _add_family_options(p: argparse.ArgumentParser) -> None:
    """One flag per family option, typed from its annotation, its help from its metadata."""
    group = p.add_argument_group("family options", "each applies to the families named in its help")
    parse = {"int": int, "float": float, "str": str, "bool": _yes_no}
    for name, (f, owners) in family_options().items():
        kind = str(f.type)
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", type=parse.get(kind, str),
                           metavar="{yes,no}" if kind == "bool" else None,
                           help=f"{f.metadata.get('help', name)} [{', '.join(owners)}; default {f.default!r}]")


def _load_config_file(path: Path | None, parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    if path is None:
        return {"model": {}, "train": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"--config {path}: {exc}")
    if not isinstance(data, dict) or not set(data) <= {"model", "train"}:
        parser.error(f"--config {path}: expected a JSON object with 'model' and/or 'train' sections")
    return {"model": dict(data.get("model", {})), "train": dict(data.get("train", {}))}


def configs_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict, TrainConfig]:
    """Merge defaults < --config file < explicit flags. Returns (model kwargs, TrainConfig)."""
    sections = _load_config_file(args.config, parser)
    for flags, section in ((MODEL_FLAGS, "model"), (TRAIN_FLAGS, "train")):
        for flag, key in flags.items():
            if getattr(args, flag) is not None:
                sections[section][key] = getattr(args, flag)
    model_type = sections["model"].get("model_type", "vae")
    for name, (_, owners) in family_options().items():
        value = getattr(args, f"opt_{name}")
        if value is None:
            continue
        if model_type not in owners:
            parser.error(f"--{name.replace('_', '-')} is an option of {', '.join(owners)}; "
                         f"--model {model_type} has no such option")
        sections["model"].setdefault("options", {})[name] = value
    if args.nll_images is not None:
        sections["train"].setdefault("extra", {})["nll_images"] = args.nll_images
    try:
        train_cfg = TrainConfig.from_dict(sections["train"])
    except (ConfigError, TypeError) as exc:
        parser.error(str(exc))
    return sections["model"], train_cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vaescope.training.checkpoint import CHECKPOINT_NAME
    from vaescope.training.train import TrainingDiverged, model_config_for, train

    try:
        if args.resume is not None:
            return _resume(args.resume, args, parser)
        model_kwargs, train_cfg = configs_from_args(args, parser)
        data = load_dataset(train_cfg.dataset, train_cfg.data_dir, train_cfg.image_size, train_cfg.seed)
        if model_kwargs.get("arch", "auto") == "auto":
            model_kwargs["arch"] = "conv" if data.info.image_shape[1] >= 16 else "mlp"
        model_cfg = model_config_for(data, **model_kwargs)
        out = args.out or Path("runs") / f"{train_cfg.dataset.replace(':', '-').replace('/', '_')}-{model_cfg.model_type}"
        result = train(model_cfg, train_cfg, out, dataset=data, show_progress=not args.quiet)
    except (DatasetError, CheckpointError, TrainingDiverged, FileNotFoundError) as exc:
        print(f"latent-train: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    return _report(result, out / CHECKPOINT_NAME)


def _resume(out: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Continue a stopped run with the configs stored in its own checkpoint."""
    from vaescope.training.checkpoint import CHECKPOINT_NAME, read_metadata
    from vaescope.training.train import train

    meta = read_metadata(out / CHECKPOINT_NAME)
    train_cfg = TrainConfig.from_dict(meta.train_config)
    if args.epochs is not None:
        train_cfg.epochs = args.epochs
    data = load_dataset(train_cfg.dataset, train_cfg.data_dir, train_cfg.image_size, train_cfg.seed)
    result = train(meta.model_config, train_cfg, out, dataset=data, resume=True, show_progress=not args.quiet)
    return _report(result, out / CHECKPOINT_NAME)


def _report(result: Any, checkpoint: Path) -> int:
    if result.interrupted:
        return 130
    summary = {k: v for k, v in result.metrics.items() if k != "kl_per_dim"}
    print(json.dumps({"checkpoint": str(checkpoint), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
