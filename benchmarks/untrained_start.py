"""Test metrics of a config's model *before* any training step: where fine-tuning starts.

Builds the datasets and the model exactly as ``smartmine train`` does (same seeding order, ``model.head_init``
applied), then evaluates on the test split as the trainer does after an epoch. With a pretrained backbone it shows
what the head alone costs or keeps; e.g. the session 11 rows of docs/BENCHMARKS.md ("Fine-tuning that keeps the
ImageNet features"):

    python benchmarks/untrained_start.py configs/cub100.yaml --set data.root=../shared/data/cub100 \\
        --set data.image_size=128 --set model.head_init=pca          # and model.head_init=random

Prints one JSON line (metrics ×1, as in metrics.csv, plus the resolved head_init and freeze_bn).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import evaluate  # noqa: E402
from smartmine.training import builders  # noqa: E402
from smartmine.training.config import load_config  # noqa: E402
from smartmine.training.head_setup import init_head  # noqa: E402
from smartmine.training.runtime import seed_everything, train_device  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="YAML config path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = train_device(cfg.train.device)
    seed_everything(cfg.seed)  # the trainer's order: seed, data, model, head
    data = builders.build_datasets(cfg)
    model = builders.build_model(cfg, data.in_channels).to(device)
    init_head(cfg, model, data, device, log=lambda m: print(m, file=sys.stderr))
    out = {"head_init": cfg.model.head_init, "freeze_bn": cfg.model.freeze_bn, **evaluate(model, data, cfg, device)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
