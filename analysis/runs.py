"""A run folder's results table, averaged over our seeds per cell and joined with the published values.

This module holds THE mapping from a dataset setting to the published numbers our results are
compared with (`COMPARED_METRICS`, `RESULT_COLUMN`): `cifar10` test_acc vs
`cifar10_test_acc_200ep`, `cifar10-valid` valid_acc vs `cifar10_valid_valid_acc_200ep`,
cifar100 / imagenet16_120 test_acc vs `*_test_acc_200ep` (and valid vs valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import Reference, ReferenceSourceError, column_name
from core.datasets import DATASETS
from core.errors import UserError
from core.rows import KEY, STATUSES

RESULTS_FILE = "results.parquet"
DEFAULT_KEEP: tuple[str, ...] = ("ok",)
"""Statuses whose trials enter the statistics; no-path cells and diverged/failed trials are counted instead."""

COMPARED_METRICS: dict[str, tuple[str, ...]] = {name: info.compared_metrics for name, info in DATASETS.items()}
"""Dataset -> reference metrics our results are compared on (`core.datasets`); the first is the primary."""

RESULT_COLUMN: dict[str, str] = {"valid": "valid_acc", "test": "test_acc"}
"""Reference metric -> results-table column measured on the same split."""

REFERENCE_EPOCHS = 200

REQUIRED_COLUMNS: tuple[str, ...] = (*KEY, "arch_str", "status", "valid_acc", "test_acc")
"""The `core.rows.TrialRow` columns the statistics read."""


class RunTableError(UserError):
    """A run folder without a usable results table; the message names what is wrong and the fix."""


@dataclass
class RunData:
    """One run folder, ready for statistics.

    `trials`: the results table as written. `seeds`: kept trials, long per metric (our per-seed
    values). `cells`: tidy, one row per (dataset, protocol, nb201_index, metric) with `ours`
    (mean over kept seeds), `published`, `delta`. `excluded`: trial and cell counts per status.
    `notes`: comparisons that could not be made (e.g. the reference lacks a column).
    """

    run_dir: Path
    trials: pd.DataFrame
    seeds: pd.DataFrame
    cells: pd.DataFrame
    excluded: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def read_results(run_dir: Path) -> pd.DataFrame:
    """The run's results table, with the columns the analysis relies on checked."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise RunTableError(f"no {RESULTS_FILE} in {run_dir}. Fix: pass a run folder written by `make evaluate`")
    try:
        trials = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise RunTableError(f"{path} is not a readable Parquet table ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise RunTableError(f"{path} lacks columns {', '.join(missing)}. Fix: regenerate it with the pipeline")
    unknown = sorted(set(trials["dataset"]) - set(COMPARED_METRICS))
    if unknown:
        raise RunTableError(f"{path}: unknown dataset(s) {unknown}; expected {', '.join(COMPARED_METRICS)}")
    trials = trials.copy()
    trials["nb201_index"] = trials["nb201_index"].astype(np.int64)
    for column in ("valid_acc", "test_acc"):
        trials[column] = pd.to_numeric(trials[column], errors="coerce").astype(np.float64)
    return trials


def excluded_counts(trials: pd.DataFrame, keep: Sequence[str] = DEFAULT_KEEP) -> pd.DataFrame:
    """Per (dataset, protocol): trials by status, and cells with no kept trial that has an accuracy
    (left out of every statistic)."""
    rows = []
    for (dataset, protocol), group in trials.groupby(["dataset", "protocol"], sort=True):
        row: dict[str, object] = {"dataset": dataset, "protocol": protocol, "trials": len(group)}
        for status in sorted(set(STATUSES) | set(group["status"])):
            row[status] = int((group["status"] == status).sum())
        usable = group["valid_acc"].notna() | group["test_acc"].notna()
        kept = group[group["status"].isin(keep) & usable]
        row["cells"] = group["nb201_index"].nunique()
        row["cells_kept"] = kept["nb201_index"].nunique()
        row["cells_excluded"] = row["cells"] - row["cells_kept"]
        row["shared_trials"] = int(group["shared"].sum()) if "shared" in group else 0
        rows.append(row)
    return pd.DataFrame(rows).fillna(0)


def seed_values(trials: pd.DataFrame, keep: Sequence[str] = DEFAULT_KEEP) -> pd.DataFrame:
    """Our kept per-seed values, long: dataset, protocol, nb201_index, seed, metric, value."""
    kept = trials[trials["status"].isin(keep)]
    parts = []
    for metric, column in RESULT_COLUMN.items():
        part = kept[["dataset", "protocol", "nb201_index", "arch_str", "seed", column]].rename(
            columns={column: "value"}
        )
        parts.append(part.assign(metric=metric).dropna(subset=["value"]))
    return pd.concat(parts, ignore_index=True)


def join_reference(
    seeds: pd.DataFrame, reference: Reference, epochs: int = REFERENCE_EPOCHS
) -> tuple[pd.DataFrame, list[str]]:
    """Mean over our seeds per (dataset, protocol, cell, metric), next to the published value.

    Returns the tidy table and notes on comparisons the reference cannot make.
    """
    notes: list[str] = []
    keys = ["dataset", "protocol", "nb201_index", "metric"]
    ours = (
        seeds.groupby(keys, sort=True)
        .agg(arch_str=("arch_str", "first"), ours=("value", "mean"), n_seeds=("value", "size"))
        .reset_index()
    )
    parts = []
    for dataset, metrics in COMPARED_METRICS.items():
        for rank, metric in enumerate(metrics):
            frame = ours[(ours["dataset"] == dataset) & (ours["metric"] == metric)].copy()
            if frame.empty:
                continue
            if not reference.has(dataset, metric, epochs):
                if rank == 0:
                    notes.append(
                        f"{dataset}: the reference ({reference.name}) has no {metric} accuracy at {epochs} epochs "
                        f"({column_name(dataset, metric, epochs)}), so our {RESULT_COLUMN[metric]} is not compared. "
                        "Fix: pass the published CSV (--reference csv:/path/nb201_published.csv)"
                    )
                continue
            published = reference.table(dataset, metric, epochs)["value"]
            frame["published"] = published.reindex(frame["nb201_index"]).to_numpy()
            frame["primary"] = rank == 0
            parts.append(frame)
    columns = [*keys, "arch_str", "primary", "n_seeds", "ours", "published", "delta"]
    if not parts:
        return pd.DataFrame(columns=columns), notes
    cells = pd.concat(parts, ignore_index=True)
    cells["delta"] = cells["ours"] - cells["published"]
    return cells[columns], notes


def load_run(
    run_dir: Path, reference: Reference, keep: Sequence[str] = DEFAULT_KEEP, epochs: int = REFERENCE_EPOCHS
) -> RunData:
    """Read a run folder and join it with the reference (see `RunData`)."""
    run_dir = Path(run_dir)
    trials = read_results(run_dir)
    seeds = seed_values(trials, keep)
    try:
        cells, notes = join_reference(seeds, reference, epochs)
    except ReferenceSourceError as err:
        raise RunTableError(str(err)) from None
    return RunData(run_dir, trials, seeds, cells, excluded_counts(trials, keep), notes)


def series(cells: pd.DataFrame, dataset: str, metric: str, protocol: str, column: str = "ours") -> pd.Series:
    """One protocol's per-cell column (`ours`, `published`, `delta`) indexed by nb201_index."""
    rows = cells[(cells["dataset"] == dataset) & (cells["metric"] == metric) & (cells["protocol"] == protocol)]
    return rows.set_index("nb201_index")[column].astype(np.float64)
