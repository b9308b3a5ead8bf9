"""A results table in the pipeline's format, made from published values plus noise.

For tests, the notebook's smoke run and demos of the report: the analysis must work before
(and without) a real run. Nothing here is a result; `run_id` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import RESULT_COLUMN
from benchmarks import Reference
from core import nb201
from core.rows import COLUMNS, arrow_schema, to_record
from core.runfiles import RESULTS_TABLE

PROTOCOLS = {
    "nb201": {"init_rule": "torch-default", "lr_rule": None, "shift": 0.0},
    "scaled": {"init_rule": "arch-source", "lr_rule": "official", "shift": 0.8},
    "arch-init": {"init_rule": "arch-source", "lr_rule": None, "shift": 0.2},
    "scaled-lr": {"init_rule": "torch-default", "lr_rule": "official", "shift": 0.5},
}
"""Protocols as the pipeline writes them (`core.rows.TrialRow`'s init_rule / lr_rule values)."""


def synthetic_results(
    reference: Reference,
    dataset: str,
    indices: Sequence[int],
    protocols: Sequence[str] = ("nb201", "scaled"),
    seeds: Sequence[int] = (0,),
    epochs: int = nb201.EPOCHS,
    noise: float = 0.5,
    no_path: Sequence[int] = (),
    diverged: Sequence[tuple[str, int, int]] = (),
    rng_seed: int = 0,
) -> pd.DataFrame:
    """One row per (protocol, cell, seed): published value (of each split the dataset has) plus a
    protocol shift and Gaussian noise; `no_path` cells and `diverged` (protocol, index, seed)
    trials get those statuses and NaN accuracies."""
    rng = np.random.default_rng(rng_seed)
    published = {
        metric: reference.table(dataset, metric)["value"] for metric in RESULT_COLUMN if reference.has(dataset, metric)
    }
    arch = reference.frame["arch_str"]
    rows = []
    for protocol in protocols:
        spec = PROTOCOLS.get(protocol, PROTOCOLS["nb201"])
        for index in indices:
            for seed in seeds:
                status = "no-path" if index in no_path else "ok"
                if (protocol, index, seed) in diverged:
                    status = "diverged"
                row = {
                    "run_id": "synthetic",
                    "dataset": dataset,
                    "protocol": protocol,
                    "nb201_index": int(index),
                    "arch_str": arch.loc[index],
                    "class_id": int(index),
                    "shared": False,
                    "seed": int(seed),
                    "status": status,
                    "lr": 0.1,
                    "base_lr": None if spec["lr_rule"] is None else 0.46,
                    "init_rule": spec["init_rule"],
                    "lr_rule": spec["lr_rule"],
                    "width": nb201.WIDTH,
                    "cells_per_stage": 5,
                    "epochs": epochs,
                    "train_loss": list(np.linspace(2.3, 0.5, num=max(1, min(epochs, 5)))),
                    "wall_s": 1.0,
                }
                for metric, column in RESULT_COLUMN.items():
                    value = np.nan
                    if status == "ok" and metric in published and index in published[metric].index:
                        value = published[metric].loc[index] + float(spec["shift"]) + rng.normal(0.0, noise)
                    row[column] = float(np.clip(value, 0.0, 100.0)) if np.isfinite(value) else np.nan
                rows.append(to_record(row))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_run(run_dir: Path, results: pd.DataFrame) -> Path:
    """Write a run folder as the pipeline does: results.parquet and a spec.yaml."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results.to_parquet(run_dir / RESULTS_TABLE, index=False, schema=arrow_schema())
    (run_dir / "spec.yaml").write_text("# synthetic run for tests and demos\nrun_id: synthetic\n", encoding="utf-8")
    return run_dir
