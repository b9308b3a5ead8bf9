"""The NB201 search space: cells, their graph statistics, isomorphism classes and scaling rules.

Pure Python + numpy; imports nothing else of this project.
"""

from cells.cell import CONV_KERNEL, EDGES, OPS, Cell, CellError
from cells.classes import class_key, edge_correspondence, live_graph, nb201_unique_str
from cells.paths import in_degrees, network_params, paths, sum_depth_cubed
from cells.rules import (
    BASE_CELL,
    DEGREE_FREE_RULES,
    INIT_RULES,
    LR_RULES,
    ReductionDegrees,
    ScaledLR,
    edge_init_degrees,
    edge_init_multipliers,
    lr_factor,
    reduction_init_degrees,
    scaled_lr,
)
from cells.space import N_CELLS, all_cells, cell_at, index_of

__all__ = [
    "BASE_CELL",
    "CONV_KERNEL",
    "DEGREE_FREE_RULES",
    "EDGES",
    "INIT_RULES",
    "LR_RULES",
    "N_CELLS",
    "OPS",
    "Cell",
    "CellError",
    "ReductionDegrees",
    "ScaledLR",
    "all_cells",
    "cell_at",
    "class_key",
    "edge_correspondence",
    "edge_init_degrees",
    "edge_init_multipliers",
    "in_degrees",
    "index_of",
    "live_graph",
    "lr_factor",
    "nb201_unique_str",
    "network_params",
    "paths",
    "reduction_init_degrees",
    "scaled_lr",
    "sum_depth_cubed",
]
