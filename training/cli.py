"""`latent-train`: train one autoencoder-family model and write a self-describing run folder.

Example: latent-train --dataset digits --model vae --latent-dim 8 --epochs 30 --out runs/digits-vae

Every flag and every value of a --config file is checked (type, range, known key) before the
dataset is loaded; a refusal is one argparse-style line, never a traceback (the limits are in
vaescope.limits).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vaescope.errors import InputError
from vaescope.limits import MAX_CONFIG_BYTES, MAX_OPTION_MAGNITUDE, MAX_RECORD_POINTS
from vaescope.training.checks import ConfigError, Range, as_dict, only_keys, parse_json
from vaescope.training.config import (
    ARCHS,
    BINARIZE,
    IMAGE_SIZES,
    LIKELIHOODS,
    ModelConfig,
    TrainConfig,
    auto_arch,
    check_run_options,
    moved_train_keys,
)
from vaescope.training.corruption import parse_corruption
from vaescope.training.data import DATASETS, load_dataset
from vaescope.training.models import FAMILIES

PROG = "latent-train"
# CLI flag -> (config section, field). Flags left unset fall back to --config, then to defaults.
# A family's own options (models/<family>.py, its Options dataclass) become flags of their own name.
MODEL_FLAGS = {"model": "model_type", "latent_dim": "latent_dim", "arch": "arch", "beta": "beta",
               "likelihood": "likelihood", "hidden_dim": "hidden_dim", "base_channels": "base_channels",
               "gaussian_c": "gaussian_c"}
TRAIN_FLAGS = {"dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "seed": "seed", "device": "device", "warmup_epochs": "warmup_epochs", "eval_k": "eval_k",
               "data_dir": "data_dir", "image_size": "image_size", "compile": "compile",
               "embed_sample": "embed_sample", "record": "record", "corrupt": "corrupt", "binarize": "binarize"}
# What --resume may be given with: the run's own configs decide everything else.
RESUME_FLAGS = ("resume", "epochs", "device", "data_dir", "quiet")
DEBUG_ENV = "VAESCOPE_DEBUG"  # set to 1 to see the traceback of an unexpected error


def number_flag(kind: type, bounds: Range) -> Callable[[str], Any]:
    """An argparse type: ``kind`` (int or float) parsed from the text, finite, within ``bounds``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:  # also an int of over 4300 digits
            article = "an integer" if kind is int else "a float"
            raise argparse.ArgumentTypeError(f"expected {article}, got {text[:40]!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:40]!r}")
        try:
            bounds.check(value, "")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    return parse


def _model_range(name: str) -> Range:
    return ModelConfig.RANGES[name]


def _train_range(name: str) -> Range:
    return TrainConfig.RANGES[name]


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "no"):
        return text.lower() == "yes"
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text[:40]!r}")


def _corruption(text: str) -> str:
    try:
        parse_corruption(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _dataset_name(text: str) -> str:
    if text in DATASETS or text.startswith("folder:"):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text[:60]!r}; choose from {sorted(DATASETS)} or folder:PATH")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=_dataset_name, help=f"{', '.join(sorted(DATASETS))} or folder:PATH")
    p.add_argument("--model", choices=sorted(FAMILIES), help="model family (default vae)")
    p.add_argument("--latent-dim", type=number_flag(int, _model_range("latent_dim")), help="latent dimensions (default 16)")
    p.add_argument("--epochs", type=number_flag(int, _train_range("epochs")), help="epochs (default 30)")
    p.add_argument("--out", type=Path, help="run folder to write (default runs/DATASET-MODEL)")
    p.add_argument("--beta", type=number_flag(float, _model_range("beta")), help="KL weight; != 1 gives a beta-VAE")
    p.add_argument("--warmup-epochs", type=number_flag(int, _train_range("warmup_epochs")), help="linear KL warm-up epochs")
    p.add_argument("--likelihood", choices=LIKELIHOODS)
    p.add_argument("--gaussian-c", type=number_flag(float, _model_range("gaussian_c")), help="Gaussian likelihood variance c")
    p.add_argument("--arch", choices=(*ARCHS, "auto"),
                   help="backbone; auto (default) = conv for square images of >= 16 px a side, else mlp "
                        "(8x8 digits, waveforms)")
    p.add_argument("--hidden-dim", type=number_flag(int, _model_range("hidden_dim")))
    p.add_argument("--base-channels", type=number_flag(int, _model_range("base_channels")))
    p.add_argument("--batch-size", type=number_flag(int, _train_range("batch_size")))
    p.add_argument("--lr", type=number_flag(float, _train_range("lr")))
    p.add_argument("--seed", type=number_flag(int, _train_range("seed")))
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--eval-k", type=number_flag(int, _train_range("eval_k")), help="importance samples for the IWAE NLL")
    p.add_argument("--nll-images", type=number_flag(int, TrainConfig.NLL_IMAGES), help="test images for the NLL (default 1000)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training step (meant for GPUs: on the 2-core CPU it ran at 0.8x the eager speed)")
    p.add_argument("--embed-sample", type=number_flag(int, Range(0, TrainConfig.RANGES["embed_sample"].hi)),
                   metavar="N",
                   help="test images embedded in the checkpoint (a seeded subset of the test split, with labels "
                        "and factors), so the explorer can draw a map without the dataset; 0 = none. Default: "
                        "the whole test split up to 10,000 images when an image has at most 32x32 pixels "
                        "(MNIST's 10,000 take 7.5 MiB beside a 1-4 MB model), up to 2,000 up to 64x64 "
                        "(23 MiB in RGB), none above; the limits are 20,000 images and 64 MiB")
    p.add_argument("--embed-maps", action="store_true",
                   help="after training, fit the t-SNE and UMAP maps of the test images the explorer will map "
                        "and keep them beside the checkpoint (model.maps.npz), so its map opens at once")
    p.add_argument("--record", type=number_flag(int, Range(0, MAX_RECORD_POINTS)), metavar="N",
                   help="record the posterior means of N fixed test images (a seeded subset) at initialisation, "
                        "at 1/4, 1/2 and 3/4 of the first epoch and after every epoch, to watch the latent space "
                        "form; 0 = off (default 2000). float16: 20 epochs x 2,000 points x 16 dims are 24 "
                        "frames, 1.5 MB")
    p.add_argument("--corrupt", type=_corruption, metavar="KIND:LEVEL",
                   help="train on corrupted inputs and reconstruct the clean images (a denoising model of any "
                        "family): gaussian:SD, mask:FRACTION or salt-pepper:FRACTION, LEVEL in [0, 1], e.g. "
                        "gaussian:0.5; not with --model dae, which corrupts by itself (--corruption)")
    p.add_argument("--binarize", choices=BINARIZE,
                   help="binarised pixels for the Bernoulli likelihood (MNIST-like data, as in the NLL "
                        "literature): dynamic = a fresh Bernoulli(pixel) draw every time an image is seen, "
                        "static = one seeded draw of the training set; the test set is binarised once with a "
                        "fixed seed and the NLL is then measured on all of it (metrics: nll_protocol). "
                        "Default none")
    p.add_argument("--data-dir", help="where datasets are read / downloaded")
    p.add_argument("--image-size", type=number_flag(int, _train_range("image_size")), choices=IMAGE_SIZES,
                   metavar="{" + ",".join(map(str, IMAGE_SIZES)) + "}", help="folder: datasets are resized to this")
    p.add_argument("--config", type=Path, help="JSON file with 'model' and 'train' sections; flags override it")
    p.add_argument("--resume", type=Path, metavar="OUT",
                   help="continue the stopped run in OUT with its own settings (only --epochs, --device, --data-dir "
                        "and --quiet may be given with it)")
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
    """One flag per family option, typed from its annotation (a number within the family's
    ``RANGES``; a bool as yes / no, or alone for yes), its help and ``choices`` from its metadata."""
    group = p.add_argument_group("family options", "each applies to the families named in its help")
    for name, (f, owners) in family_options().items():
        options = FAMILIES[owners[0]].Options
        bounds = options.RANGES.get(name, Range(-MAX_OPTION_MAGNITUDE, MAX_OPTION_MAGNITUDE))  # check() says more
        kind = str(f.type)
        flag = {"type": {"int": number_flag(int, bounds), "float": number_flag(float, bounds),
                         "bool": _yes_no}.get(kind, str),
                "help": f"{f.metadata.get('help', name)} [{', '.join(owners)}; default {f.default!r}]"}
        if kind == "bool":
            flag |= {"nargs": "?", "const": True, "metavar": "{yes,no}"}
        if "choices" in f.metadata:
            flag["choices"] = f.metadata["choices"]
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", **flag)


# -- configs ------------------------------------------------------------------------------------
def _load_config_file(path: Path | None) -> dict[str, dict[str, Any]]:
    """The 'model' and 'train' sections of a --config JSON file (each a JSON object)."""
    if path is None:
        return {"model": {}, "train": {}}
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the file is {path.stat().st_size:,} bytes; the limit is {MAX_CONFIG_BYTES:,}")
        data = as_dict(parse_json(path.read_bytes(), "the file"), "the file", 2)
        only_keys(data, "the file", ("model", "train"))
        sections = {key: dict(as_dict(data.get(key, {}), f"section {key!r}")) for key in ("model", "train")}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc} (expected a JSON object with 'model' and/or 'train' "
                          "sections)") from None
    return sections


def configs_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[dict, TrainConfig]:
    """Merge defaults < --config file < explicit flags. Returns (model kwargs, TrainConfig); the
    model kwargs are checked as far as they can be before the dataset fixes the image shape."""
    try:
        return _merged_configs(args)
    except ConfigError as exc:
        parser.error(_line(exc))


def _merged_configs(args: argparse.Namespace) -> tuple[dict, TrainConfig]:
    sections = _load_config_file(args.config)
    for flags, section in ((MODEL_FLAGS, "model"), (TRAIN_FLAGS, "train")):
        for flag, key in flags.items():
            if getattr(args, flag) is not None:
                sections[section][key] = getattr(args, flag)
    model_type = sections["model"].get("model_type", "vae")
    _move_family_keys(sections, model_type)
    for name, (_, owners) in family_options().items():
        value = getattr(args, f"opt_{name}")
        if value is None:
            continue
        if model_type not in owners:
            raise ConfigError(f"--{name.replace('_', '-')} is an option of {', '.join(owners)}; "
                              f"--model {model_type} has no such option")
        sections["model"]["options"] = {**as_dict(sections["model"].get("options", {}), "options"), name: value}
    if args.nll_images is not None:
        sections["train"]["extra"] = {**as_dict(sections["train"].get("extra", {}), "extra"),
                                      "nll_images": args.nll_images}
    ModelConfig.check_partial(sections["model"])
    train = TrainConfig.from_dict(sections["train"])
    check_run_options(sections["model"], train)
    return sections["model"], train


def _move_family_keys(sections: dict[str, dict[str, Any]], model_type: Any) -> None:
    """An older --config file's 'train' keys that are family options now (the GMVAE's temperatures
    and component init) move into the model's options when ``model_type`` has them; for another
    family they stay, to be checked and ignored as before (TrainConfig.moved_options)."""
    known = isinstance(model_type, str) and model_type in FAMILIES  # else check_partial refuses it
    names = {f.name for f in dataclasses.fields(FAMILIES[model_type].Options)} if known else set()
    moving = [key for key in sections["train"] if key in moved_train_keys() and key in names]
    if not moving:
        return
    options = dict(as_dict(sections["model"].get("options", {}), "options"))
    for key in moving:
        value = sections["train"].pop(key)
        if key in options and options[key] != value:
            raise ConfigError(f"{key} is given twice, as train.{key} (where older configs kept it) and as "
                              f"model.options.{key}, with different values")
        options[key] = value
    sections["model"]["options"] = options


# -- running ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings (skipped image files, ...) as one 'latent-train: warning:' line each."""
    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr)

    original = warnings.showwarning
    warnings.showwarning = show  # type: ignore[assignment]
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: list[str] | None = None) -> int:
    """Run latent-train; returns the exit status (1: refused or failed, 2: a bad flag, 130: interrupted).
    Whatever goes wrong is reported in one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from vaescope.training.train import TrainingDiverged

    with _one_line_warnings():
        try:
            return _resume(args, parser) if args.resume is not None else _train(args, parser)
        except ConfigError as exc:
            parser.error(_line(exc))
        except (InputError, TrainingDiverged, OSError) as exc:  # OSError: a full disk, no permission
            print(f"{PROG}: error: {_line(exc)}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - the command line shows one line, never a traceback
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            print(f"{PROG}: error: unexpected {type(exc).__name__}: {_line(exc)[:300]} "
                  f"(set {DEBUG_ENV}=1 to see where)", file=sys.stderr)
    return 1


def _line(exc: BaseException) -> str:
    """The exception's message on one line."""
    return " ".join(str(exc).split())


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vaescope.training.checkpoint import CHECKPOINT_NAME
    from vaescope.training.train import model_config_for, train

    model_kwargs, train_cfg = configs_from_args(args, parser)
    out = args.out or Path("runs") / f"{train_cfg.dataset.replace(':', '-').replace('/', '_')}-{model_kwargs.get('model_type', 'vae')}"
    _check_out(out)
    data = load_dataset(train_cfg.dataset, train_cfg.data_dir, train_cfg.image_size, train_cfg.seed)
    if model_kwargs.get("arch", "auto") == "auto":
        model_kwargs["arch"] = auto_arch(data.info.image_shape)
    model_cfg = model_config_for(data, **model_kwargs)
    result = train(model_cfg, train_cfg, out, dataset=data, show_progress=not args.quiet)
    if getattr(args, "embed_maps", False) and not result.interrupted:
        from vaescope.explorer.core.mapfiles import write_sidecar

        write_sidecar(out / CHECKPOINT_NAME, train_cfg.data_dir, say=lambda words: None)
    return _report(result, out / CHECKPOINT_NAME)


def _check_out(out: Path) -> None:
    """The run folder exists or can be made, before any time is spent on data or training."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder: {exc.strerror or exc}") from None


def _resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Continue a stopped run with the configs stored in its own resume state."""
    from vaescope.training.checkpoint import CHECKPOINT_NAME, TRAIN_STATE_NAME
    from vaescope.training.train import train
    from vaescope.training.train_state import TrainStateError, peek_train_state

    given = sorted(k for k, v in vars(args).items() if k not in RESUME_FLAGS and v not in (None, False))
    if given:
        flags = ", ".join(f"--{k.removeprefix('opt_').replace('_', '-')}" for k in given)
        parser.error(f"--resume continues a run with its own settings; only --epochs, --device, --data-dir and "
                     f"--quiet may be given with it, not {flags}")
    out: Path = args.resume
    state = out / TRAIN_STATE_NAME
    if not state.is_file():
        raise TrainStateError(state, f"cannot resume: {out} holds no resume state from an earlier run (a run "
                                     "writes it when its first epoch ends); start without --resume")
    model_cfg, train_cfg, _ = peek_train_state(state)
    model_cfg = model_cfg.with_moved_options(train_cfg)  # a state written when the train config held them
    overrides = {k: getattr(args, k) for k in ("epochs", "device", "data_dir") if getattr(args, k) is not None}
    train_cfg = TrainConfig.from_dict(train_cfg.to_dict() | overrides)
    data = load_dataset(train_cfg.dataset, train_cfg.data_dir, train_cfg.image_size, train_cfg.seed)
    result = train(model_cfg, train_cfg, out, dataset=data, resume=True, show_progress=not args.quiet)
    return _report(result, out / CHECKPOINT_NAME)


def _report(result: Any, checkpoint: Path) -> int:
    if result.interrupted:
        return 130
    summary = {k: v for k, v in result.metrics.items() if k != "kl_per_dim"}
    print(json.dumps({"checkpoint": str(checkpoint), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
