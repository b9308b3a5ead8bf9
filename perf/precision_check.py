"""bf16 autocast against fp32, side by side in one process: how much faster, and how far it moves the numbers.

Each cell is trained three times with the same seed and data: fp32, fp32 again, and bf16. The second
fp32 run is the yardstick: on a GPU, fp32 itself is not bit-reproducible (cuDNN picks algorithms), so
a bf16 change is only meaningful beside the fp32-vs-fp32 change. Prints per cell the test accuracy of
each run and img/s, then the mean |bf16 − fp32| against the mean |fp32 − fp32| and the speed ratio.

  python perf/precision_check.py --device cuda --data-dir ../shared/data/cifar10
  python perf/precision_check.py --device cpu --width 4 --cells-per-stage 1 --image-size 16 --epochs 1 --max-train 512
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cells import cell_at
from core.config import TrainConfig
from pipeline.train.data import load_splits
from pipeline.train.engine import train

CELLS = (913, 6111, 14706, 2827)
"""Spread over NB201's ranking: weak, the best, strong, middling."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--cells-per-stage", type=int, default=5)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-train", type=int)
    parser.add_argument("--cells", type=int, nargs="+", default=list(CELLS))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    data = load_splits("cifar10", args.data_dir, max_train=args.max_train, image_size=args.image_size)
    print(data.describe())
    base = TrainConfig(
        width=args.width,
        cells_per_stage=args.cells_per_stage,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    rows = []
    for index in args.cells:
        runs = {}
        for label, precision in (("fp32", "fp32"), ("fp32 again", "fp32"), ("bf16", "bf16")):
            record = train(cell_at(index), data, base.with_(precision=precision))
            runs[label] = {"test_acc": record.eval_acc.get("test"), "images_per_s": record.images_per_s}
        rows.append({"cell": index, **runs})
        shown = "  ".join(f"{k}: {v['test_acc']:.2f}% {v['images_per_s']:,.0f} img/s" for k, v in runs.items())
        print(f"cell {index:>5}  {shown}", flush=True)

    def mean_gap(a: str, b: str) -> float:
        return statistics.fmean(abs(r[a]["test_acc"] - r[b]["test_acc"]) for r in rows)

    speed = statistics.fmean(r["bf16"]["images_per_s"] / r["fp32"]["images_per_s"] for r in rows)
    print(
        f"mean |bf16 - fp32| test accuracy {mean_gap('bf16', 'fp32'):.2f} points against fp32 run-to-run "
        f"{mean_gap('fp32 again', 'fp32'):.2f}; bf16 trains {speed:.2f}x the images/s of fp32"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps({"args": vars(args) | {"json_out": None}, "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
