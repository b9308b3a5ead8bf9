"""All 15,625 NB201 cells in the official index order.

NB201 generated its list as the product of ops over the six edges (NB201's
`CellStructure.gen_all`, op order of `OPS`, edges in string order), then shuffled it
with `random.seed(88); random.shuffle(...)`. Python's shuffle is stable across
versions, so replaying it gives the official `meta_archs` order exactly (tested
against the published table row by row).
"""

from __future__ import annotations

import itertools
import random
from functools import cache

from cells.cell import EDGES, OPS, Cell

N_CELLS = len(OPS) ** len(EDGES)
_NB201_SHUFFLE_SEED = 88


@cache
def all_cells() -> tuple[Cell, ...]:
    """Every cell; position i is NB201 index i."""
    cells = [Cell(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]
    random.Random(_NB201_SHUFFLE_SEED).shuffle(cells)
    return tuple(cells)


@cache
def _index_by_cell() -> dict[Cell, int]:
    return {cell: i for i, cell in enumerate(all_cells())}


def index_of(cell: Cell) -> int:
    """NB201 index of a cell."""
    return _index_by_cell()[cell]


def cell_at(index: int) -> Cell:
    """Cell at an NB201 index, with a clear error outside 0..15624."""
    if not 0 <= index < N_CELLS:
        raise IndexError(f"NB201 index must be in 0..{N_CELLS - 1}, got {index}")
    return all_cells()[index]
