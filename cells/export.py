"""One row of statistics per cell: the table `python -m cells export` writes."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from cells.cell import Cell
from cells.classes import class_key, nb201_unique_str
from cells.paths import in_degrees, network_params, paths, sum_depth_cubed
from cells.rules import INIT_RULES, lr_factor
from cells.space import all_cells
from core.datasets import DATASETS
from core.shape import NetShape

PARAM_FILES: dict[str, int] = {d.files: d.num_classes for d in DATASETS.values()}
"""Parameter counts differ by classifier only: one column per dataset's files (NB201's `params_m_*`)."""


def class_column(init_rule: str) -> str:
    """The export column of a rule's class ids: `class_id` (He-normal, `kaiming`), else `class_id_<rule>`.
    The degree-free rules' columns are equal (`cells.rules.DEGREE_FREE_RULES`)."""
    return "class_id" if init_rule == "kaiming" else "class_id_" + init_rule.replace("-", "_")


def representative_column(init_rule: str) -> str:
    return class_column(init_rule).replace("class_id", "representative")


def cell_row(index: int, cell: Cell) -> dict[str, object]:
    """Statistics of one cell (class ids are filled in by `cells_table`)."""
    cell_paths = paths(cell)
    degrees = in_degrees(cell)
    ops = Counter(cell.ops)
    row: dict[str, object] = {
        "nb201_index": index,
        "arch_str": cell.arch_str,
        "op_code": cell.op_code,
        "official_code": cell.official_code,
        "n_paths": len(cell_paths),
        "path_depths": [p.depth for p in cell_paths],
        "path_convs": [p.n_convs for p in cell_paths],
        "sum_l3": sum_depth_cubed(cell),
        "has_path": bool(cell_paths),
        "lr_factor": lr_factor(cell, "official"),
        "lr_factor_kernel": lr_factor(cell, "kernel"),
        "in_degree_1": degrees[1],
        "in_degree_2": degrees[2],
        "in_degree_3": degrees[3],
        "n_conv_1x1": ops["nor_conv_1x1"],
        "n_conv_3x3": ops["nor_conv_3x3"],
        "n_skip": ops["skip_connect"],
        "n_avg_pool": ops["avg_pool_3x3"],
        "n_none": ops["none"],
    }
    for files, classes in PARAM_FILES.items():
        row[f"params_{files}"] = network_params(cell, NetShape(num_classes=classes))
    return row


def _class_ids(keys: list[str]) -> tuple[list[int], list[bool]]:
    """Dense class ids in order of first appearance (by NB201 index); the first member represents."""
    ids: dict[str, int] = {}
    class_of, representative = [], []
    for key in keys:
        representative.append(key not in ids)
        class_of.append(ids.setdefault(key, len(ids)))
    return class_of, representative


def cells_table() -> pd.DataFrame:
    """All 15,625 cells with statistics, class ids (sound, per init rule) and NB201's symbolic class."""
    cells = all_cells()
    table = pd.DataFrame([cell_row(i, c) for i, c in enumerate(cells)])
    for rule in INIT_RULES:
        ids, reps = _class_ids([class_key(c, rule) for c in cells])
        table[class_column(rule)] = ids
        table[representative_column(rule)] = reps
    table["nb201_class_id"], _ = _class_ids([nb201_unique_str(c) for c in cells])
    table["lr_factor"] = table["lr_factor"].astype("Float64")
    table["lr_factor_kernel"] = table["lr_factor_kernel"].astype("Float64")
    return table
