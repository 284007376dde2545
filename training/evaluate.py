"""Re-evaluate a checkpoint on its dataset's test split, e.g. a tighter NLL bound:

    python -m vaescope.training.evaluate runs/fm-vae/model.safetensors --eval-k 1000 --nll-images 10000

A model trained on binarised data (``latent-train --binarize``) is scored on the test split
binarised the same way as in training (once, with ``data.BINARIZE_TEST_SEED``); the printed
``nll_protocol`` says how the number was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vaescope.training.checkpoint import CheckpointError, load_checkpoint
from vaescope.training.cli import number_flag
from vaescope.training.config import TrainConfig
from vaescope.training.data import DatasetError, binarized, load_dataset
from vaescope.training.metrics import iwae_nll
from vaescope.training.train import nll_protocol, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaescope.training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval-k", type=number_flag(int, TrainConfig.RANGES["eval_k"]), default=1000,
                        help="importance samples per image")
    parser.add_argument("--nll-images", type=number_flag(int, TrainConfig.NLL_IMAGES), default=10000,
                        help="test images to average over")
    parser.add_argument("--data-dir", default=None,
                        help="where the dataset's files are, if not where training found them (MNIST's IDX files)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=number_flag(int, TrainConfig.RANGES["seed"]), default=0)
    args = parser.parse_args(argv)
    try:
        model, meta = load_checkpoint(args.checkpoint, resolve_device(args.device))
        train_cfg = TrainConfig.from_dict(meta.train_config)
        data = binarized(load_dataset(meta.dataset["name"], args.data_dir or train_cfg.data_dir, train_cfg.image_size,
                                      train_cfg.seed),
                         train_cfg.binarize, train_cfg.seed)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n = min(args.nll_images, len(data.test))
    labels = model.condition.from_labels(data.test.labels[:n])
    started = time.perf_counter()
    nll = iwae_nll(model, data.test.images[:n], labels, args.eval_k, generator_seed=args.seed)
    print(json.dumps({"checkpoint": str(args.checkpoint), "nll_iwae": nll, "nll_k": args.eval_k,
                      "nll_images": n, "nll_protocol": nll_protocol(train_cfg, args.eval_k, n),
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
