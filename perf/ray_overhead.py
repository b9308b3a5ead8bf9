"""Ray's per-trial cost against the training it schedules.

Side by side in one run: the same units trained (a) directly in this process, one after the
other, and (b) as Ray tasks through `pipeline.sweep.drain` on a local Ray with 1-CPU workers.
Per-trial overhead = Ray wall time x slots / units - mean in-task training time; the script
prints it, its share of the measured trials, and its share of a 1-minute trial (target < 5 %).

    .venv/bin/python perf/ray_overhead.py --units 8 --cpus 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from pipeline.run.spec_load import spec_from_dict
from pipeline.run.units import plan_units
from pipeline.sweep.cluster import connect, shutdown
from pipeline.sweep.drain import _unit_task
from pipeline.sweep.worker import run_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("NB201_SHARED", "../shared") + "/data/cifar10")
    parser.add_argument("--max-train", type=int, default=1024)
    args = parser.parse_args()

    from pipeline.train.data import load_splits

    spec = spec_from_dict(
        {
            "name": "overhead",
            "data_dir": args.data_dir,
            "width": 8,
            "cells_per_stage": 1,
            "epochs": 1,
            "max_train": args.max_train,
            "max_eval": 256,
            "cells": {"select": "sample", "count": args.units * 2, "seed": 1},
            "protocols": [{"name": "nb201", "init": "kaiming", "lr": 0.1}],
        }
    )
    units, _ = plan_units(spec, spec.cells.resolve())
    units = units[: args.units]
    data = load_splits(spec.dataset, spec.data_dir, max_train=spec.max_train, max_eval=spec.max_eval)

    start = time.perf_counter()
    cfgs = [spec.train_config(u.protocol, u.seed, u.lr({"nb201": None}), device="cpu") for u in units]
    direct = [run_unit(u, cfg, data)["wall_s"] for u, cfg in zip(units, cfgs, strict=True)]
    direct_total = time.perf_counter() - start

    home = tempfile.mkdtemp()
    Path(home, "ray_bootstrap_config.yaml").write_text("{}\n")  # no cloud-metadata probes
    os.environ["HOME"] = home
    start = time.perf_counter()
    connect(None, num_cpus=args.cpus)
    init_s = time.perf_counter() - start
    try:
        data_ref = ray.put(data)
        start = time.perf_counter()
        groups = ray.get(
            [_unit_task.options(num_cpus=1).remote([u], [cfg], data_ref) for u, cfg in zip(units, cfgs, strict=True)]
        )
        outcomes = [group[0] for group in groups]
        ray_total = time.perf_counter() - start
    finally:
        shutdown()

    in_task = [o["wall_s"] for o in outcomes]
    per_trial = ray_total * args.cpus / len(units) - statistics.mean(in_task)
    print(f"{len(units)} units, C=8 N=1, {args.max_train} images x 1 epoch")
    print(f"direct, 1 process (torch threads default): {direct_total:6.1f} s, {statistics.mean(direct):.2f} s/trial")
    print(f"ray.init: {init_s:.1f} s (once per run)")
    print(f"ray, {args.cpus} x 1-CPU workers: {ray_total:6.1f} s, {statistics.mean(in_task):.2f} s/trial in-task")
    print(f"speed-up ray vs direct: x{direct_total / ray_total:.2f}")
    print(
        f"overhead per trial: {per_trial:.2f} s = {per_trial / statistics.mean(in_task):.1%} of these trials, "
        f"{per_trial / 60:.1%} of a 1-minute trial (target < 5 %)"
    )


if __name__ == "__main__":
    main()
