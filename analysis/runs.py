"""A run folder's results table, averaged over our seeds per cell and joined with the published values.

This module holds THE mapping from a dataset setting to the published numbers our results are
compared with (`COMPARED_METRICS`, `RESULT_COLUMN`): `cifar10` test_acc vs
`cifar10_test_acc_200ep`, `cifar10-valid` valid_acc vs `cifar10_valid_valid_acc_200ep`,
cifar100 / imagenet16_120 test_acc vs `*_test_acc_200ep` (and valid vs valid).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import Reference, ReferenceSourceError, column_name
from core.datasets import DATASETS
from core.errors import UserError
from core.rows import KEY, STATUSES
from core.runfiles import LATEST, RESULTS_TABLE, SEARCH_FILE, SPEC_FILE

"""The base-LR finder's record of a run (written by pipeline.sweep.finder; read here for the report)."""
DEFAULT_KEEP: tuple[str, ...] = ("ok",)
"""Statuses whose measured accuracies enter the statistics; no-path cells and failed trials are counted
instead, and diverged trials follow the `diverged` policy."""
DIVERGED_POLICIES: tuple[str, ...] = ("chance", "drop")
"""`chance` (default): a diverged trial is scored at chance accuracy, 100/classes, in every statistic.
Dropping them instead would favour the protocols that diverge (typically the high-LR ones): their
worst trials would vanish from the means and the ranks. `drop`: counted, left out."""

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
    `notes`: comparisons that could not be made (e.g. the reference lacks a column). `diverged`:
    the policy for diverged trials (`DIVERGED_POLICIES`). `base_lr_search`: the run's finder record.
    """

    run_dir: Path
    trials: pd.DataFrame
    seeds: pd.DataFrame
    cells: pd.DataFrame
    excluded: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    diverged: str = "chance"
    base_lr_search: dict[str, Any] | None = None


def read_results(run_dir: Path) -> pd.DataFrame:
    """The run's results table, with the columns the analysis relies on checked."""
    path = Path(run_dir) / RESULTS_TABLE
    if not path.is_file():
        raise RunTableError(f"no {RESULTS_TABLE} in {run_dir}. Fix: pass a run folder written by `make evaluate`")
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


def chance_accuracy(dataset: str) -> float:
    """Top-1 (%) of a uniform guess: 100 / classes."""
    return 100.0 / DATASETS[dataset].num_classes


def score_diverged(trials: pd.DataFrame, diverged: str = "chance") -> pd.DataFrame:
    """The trials with diverged ones scored at chance on every split their dataset compares
    (`chance`), or unchanged (`drop`: their accuracies stay NaN and they are not kept)."""
    if diverged not in DIVERGED_POLICIES:
        raise RunTableError(f"unknown diverged policy {diverged!r}; choose one of {', '.join(DIVERGED_POLICIES)}")
    trials = trials.copy()
    trials["at_chance"] = False
    if diverged == "drop":
        return trials
    for dataset, group in trials[trials["status"] == "diverged"].groupby("dataset"):
        for metric in COMPARED_METRICS[str(dataset)]:
            trials.loc[group.index, RESULT_COLUMN[metric]] = chance_accuracy(str(dataset))
        trials.loc[group.index, "at_chance"] = True
    return trials


def kept_statuses(keep: Sequence[str], diverged: str) -> tuple[str, ...]:
    return (*keep, "diverged") if diverged == "chance" and "diverged" not in keep else tuple(keep)


def excluded_counts(trials: pd.DataFrame, keep: Sequence[str] = DEFAULT_KEEP) -> pd.DataFrame:
    """Per (dataset, protocol): trials by status, how many were scored at chance, and cells with no
    kept trial that has an accuracy (left out of every statistic)."""
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
        row["at_chance"] = int(group["at_chance"].sum()) if "at_chance" in group else 0
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


def read_search(run_dir: Path) -> dict[str, Any] | None:
    """The run's base-LR finder record, or None when no protocol searched."""
    path = Path(run_dir) / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunTableError(f"{path} is unreadable ({err})") from None
    return record if isinstance(record, dict) and record else None


def run_dataset(run_dir: Path) -> str:
    """The dataset a run trained on (its first row's); a run with no rows at all is a RunTableError."""
    trials = read_results(Path(run_dir))
    if trials.empty:
        raise RunTableError(
            f"{Path(run_dir) / RESULTS_TABLE} has no rows yet. Fix: wait for the run's first units, or rerun it"
        )
    return str(trials["dataset"].iloc[0])


def load_run(
    run_dir: Path,
    reference: Reference,
    keep: Sequence[str] = DEFAULT_KEEP,
    epochs: int = REFERENCE_EPOCHS,
    diverged: str = "chance",
) -> RunData:
    """Read a run folder and join it with the reference (see `RunData`); diverged trials follow
    `diverged` (`DIVERGED_POLICIES`: scored at chance by default)."""
    run_dir = Path(run_dir)
    trials = score_diverged(read_results(run_dir), diverged)
    kept = kept_statuses(keep, diverged)
    if not trials["status"].isin(kept).any():
        counts = ", ".join(f"{status} {n}" for status, n in trials["status"].value_counts().items()) or "no rows"
        raise RunTableError(
            f"{run_dir} has no trained rows to compare ({counts}). Fix: see the `error` column of its "
            f"{RESULTS_TABLE} for why, then rerun `make evaluate` (failed units are retried)"
        )
    seeds = seed_values(trials, kept)
    try:
        cells, notes = join_reference(seeds, reference, epochs)
    except ReferenceSourceError as err:
        raise RunTableError(str(err)) from None
    excluded = excluded_counts(trials, kept)
    return RunData(run_dir, trials, seeds, cells, excluded, notes, diverged, read_search(run_dir))


def series(cells: pd.DataFrame, dataset: str, metric: str, protocol: str, column: str = "ours") -> pd.Series:
    """One protocol's per-cell column (`ours`, `published`, `delta`) indexed by nb201_index."""
    rows = cells[(cells["dataset"] == dataset) & (cells["metric"] == metric) & (cells["protocol"] == protocol)]
    return rows.set_index("nb201_index")[column].astype(np.float64)


def run_reference(run_dir: Path) -> str | None:
    """The `reference` the run's spec.yaml names (the one its config chose), else None (the default)."""
    import yaml

    path = Path(run_dir) / SPEC_FILE
    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    return spec.get("reference") if isinstance(spec, dict) else None


def check_covered(run_dir: Path, reference: str | None) -> None:
    """Every dataset of the run's table has its primary compared number in `reference`, or a
    ReferenceSourceError naming sources that do (so a report is never rewritten as "Nothing to compare")."""
    from benchmarks import open_covering

    for dataset in sorted(set(read_results(run_dir)["dataset"])):
        open_covering(reference, str(dataset))


def latest_run(start: Path | None = None) -> Path:
    """`results/latest` of the repository holding `start` (default: the working folder), so that the
    notebook finds the newest run whether Jupyter starts in the repo or in analysis/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "results" / LATEST).exists():
            return folder / "results" / LATEST
    raise RunTableError(
        f"no results/latest above {here}: run `make evaluate` first, or set NB201_RUN_DIR=results/<run>"
    )
