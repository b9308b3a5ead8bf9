"""Source 2: the official NB201 benchmark file (`NAS-Bench-201-v1_[01]-*.pth`) via `nas_201_api`.

For users who have the multi-GB file: it is loaded by the real `NASBench201API` class, and every
setting it holds (12 and 200 epochs, the four datasets, each evaluation set) is read seed by seed
at the last epoch, the value `get_more_info(..., is_random=seed)` reports. `python -m benchmarks
export` turns it into the small table form once.

`nas_201_api` imports torch, so it is imported here, lazily, only when this source is chosen;
it loads the file with `torch.load` (weights-only by default in current torch, so no code runs).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import ReferenceSourceError
from benchmarks.names import DATASETS, column_name
from cells import N_CELLS, Cell, CellError, all_cells


def _api(path: Path) -> Any:
    if not path.is_file():
        raise ReferenceSourceError(
            f"NB201 benchmark file {path} does not exist. Fix: download NAS-Bench-201-v1_1-096897.pth "
            "and pass nas201:/path/to/it"
        )
    try:
        from nas_201_api import NASBench201API
    except ImportError as err:
        raise ReferenceSourceError(
            f"the nas201 source needs the nas-bench-201 package ({err}). Fix: `pip install nas-bench-201==2.1`"
        ) from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NASBench201API(str(path), verbose=False)
    except Exception as err:  # the API asserts and raises many kinds on a foreign file
        raise ReferenceSourceError(
            f"{path} is not a NAS-Bench-201 benchmark file that nas_201_api can load "
            f"({type(err).__name__}: {err}). Fix: pass the official NAS-Bench-201-v1_0/v1_1 .pth file"
        ) from None


def _check_order(meta_archs: list[str], path: Path) -> None:
    if len(meta_archs) != N_CELLS:
        raise ReferenceSourceError(
            f"{path} lists {len(meta_archs)} architectures, not NB201's {N_CELLS}. Fix: pass the NB201 topology file"
        )
    cells = all_cells()
    for i, text in enumerate(meta_archs):
        try:
            same = Cell.parse(text) == cells[i]
        except CellError:
            same = False
        if not same:
            raise ReferenceSourceError(
                f"{path}: architecture {i} is {text!r}, not NB201's {cells[i].arch_str!r}. "
                "Fix: pass the official NB201 file (its meta_archs order)"
            )


def _records(api: Any) -> list[tuple[int, str, float]]:
    """(index, column, value) for every seed of every setting the file holds."""
    out: list[tuple[int, str, float]] = []
    for index in api.evaluated_indexes:
        for hp, results in api.arch2infos_dict[index].items():
            epochs = int(hp)
            present = results.get_dataset_names()
            for names in DATASETS.values():
                if names.api_name not in present:
                    continue
                for metric, eval_set in names.eval_sets.items():
                    for seed in results.get_dataset_seeds(names.api_name):
                        try:
                            acc = results.get_metrics(names.api_name, eval_set, is_random=seed)["accuracy"]
                        except (KeyError, AssertionError, ValueError):
                            continue  # this run has no such evaluation set (e.g. cifar10 has no x-valid)
                        out.append((index, column_name(names.name, metric, epochs, seed), float(acc)))
    return out


def load_nas201_file(path: Path) -> pd.DataFrame:
    """Every accuracy the file holds, per seed and as the mean over seeds (NB201's `is_random=False`)."""
    path = Path(path)
    api = _api(path)
    _check_order(list(api.meta_archs), path)
    records = _records(api)
    if not records:
        raise ReferenceSourceError(f"{path} holds no evaluated architecture with accuracies")
    long = pd.DataFrame(records, columns=["nb201_index", "column", "value"])
    seeds = long.pivot(index="nb201_index", columns="column", values="value")
    means = {}
    for column in seeds.columns:
        base = column.rsplit("_seed", 1)[0]
        means.setdefault(base, []).append(column)
    mean_frame = pd.DataFrame({base: seeds[cols].mean(axis=1) for base, cols in means.items()})
    frame = pd.concat([mean_frame, seeds], axis=1).astype(np.float64)
    frame.columns.name = None
    return frame.sort_index(axis=1).sort_index()
