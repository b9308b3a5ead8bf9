"""The LR-transfer study through Ray (`make evaluate CONFIG=configs/lr-transfer.yaml`): the sweep's
driver (`orchestrate.sweep`: checks, lock, store, resume, export) with these trainings in place of the
sweep's. Every (cell, grid LR, seed) is one unit through the sweep's Ray tasks (`drain.drain`),
a one-epoch finder trial (`pipeline.run.lr_transfer.trial_config`); the picks and predictions are then
written to `<run>/lr_transfer.parquet` from everything the store holds (resumed rows included).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd
import ray

from core.atomic import atomic_path
from core.runfiles import LR_TRANSFER_TABLE
from pipeline.run.lr_transfer import grid_protocols, study_cells, study_todo, transfer_table, trial_config
from pipeline.run.rows import no_path_row
from pipeline.run.spec import RunSpec
from pipeline.run.store import ResultsStore
from pipeline.sweep.cluster import Log
from pipeline.sweep.drain import drain


def train_study(spec: RunSpec, selected: list[int], data: Any, store: ResultsStore, log: Log) -> dict[str, int]:
    """`orchestrate.sweep(train=train_study)`: what is left of the study, through Ray; then the table."""
    data_ref = ray.put(dataclasses.replace(data, eval={}))  # the score is a training loss: no eval splits
    grid = grid_protocols(spec)
    todo = study_todo(spec, selected, store.statuses())
    no_path = [no_path_row(spec, p, i, s, None) for p, s, i in todo.no_path]
    store.write([dict(row, data_fingerprint=data.fingerprint) for row in no_path])
    search = spec.base_lr_search
    log(
        f"LR transfer: {len(study_cells(selected))} cells (the skip chain included) x {len(grid)} LRs "
        f"({search.low:g}..{search.high:g}) x {len(search.seeds)} seeds, {search.epochs} epoch(s) at constant LR, "
        f"init {spec.lr_transfer.init if spec.lr_transfer else '?'}, score {search.score}; "
        + todo.summary(len(selected), spec.max_attempts)
    )
    base_lrs: dict[str, float | None] = {p.name: None for p in grid}
    progress = drain(
        spec,
        todo,
        base_lrs,
        data_ref,
        len(data.train_y),
        store,
        log,
        data.fingerprint,
        configure=lambda unit, lr: trial_config(spec, unit, lr),
    )
    table = write_table(spec, store.table())
    log(summary(table))
    return todo.counts(progress.done, progress.failed)


def write_table(spec: RunSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """`<run>/lr_transfer.parquet`, replaced atomically."""
    table = transfer_table(spec, rows[rows["protocol"].str.startswith("lr-")])
    with atomic_path(spec.run_dir / LR_TRANSFER_TABLE) as tmp:
        table.to_parquet(tmp, index=False)
    return table


def summary(table: pd.DataFrame) -> str:
    """One log line per score: the base LR and how many cells' picks sit at an edge of the grid."""
    if table.empty:
        return "LR transfer: no finished trials yet"
    parts = []
    for score, rows in table.groupby("score", sort=False):
        base = float(rows["base_lr"].iloc[0])
        edges = int((rows["at_edge"] != "").sum())
        shown = f"{base:g}" if math.isfinite(base) else "none (the skip chain has no pick)"
        parts.append(f"{score}: base LR {shown}, {len(rows)} cells, {edges} picked at a grid edge or diverged")
    return "LR transfer: " + "; ".join(parts)
