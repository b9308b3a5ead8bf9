"""Compute cost of the full NB201 network built from a cell: multiply-accumulates per image.

NB201 reports this number as "FLOPs" (in millions); it counts every conv edge of the cell,
which our engine does not run when the edge is dead. `live_only=True` counts what the
engine computes (cells.classes.live_graph), the figure a cost plan needs.
"""

from __future__ import annotations

from cells.cell import CONV_KERNEL, Cell
from cells.classes import live_graph
from core.shape import NetShape


def cell_conv_macs(ops: list[str], channels: int, side: int) -> int:
    return sum(CONV_KERNEL[op] ** 2 * channels * channels * side * side for op in ops if op in CONV_KERNEL)


def network_macs(cell: Cell, shape: NetShape, live_only: bool = False) -> int:
    """Conv and linear MACs of one forward pass of one image (BN, ReLU, pooling omitted, as NB201)."""
    ops = [e.op for e in live_graph(cell).edges] if live_only else list(cell.ops)
    total = 27 * shape.width * shape.image_size**2  # stem 3x3, 3 -> C
    for stage in shape.stages():
        c_out, side = stage.channels, stage.side
        if stage.reduction_from is not None:
            c_in = stage.reduction_from
            total += 9 * c_in * c_out * side * side  # conv_a, stride 2
            total += 9 * c_out * c_out * side * side  # conv_b
            total += c_in * c_out * side * side  # downsample 1x1
        total += stage.cells * cell_conv_macs(ops, c_out, side)
    return total + shape.final_channels * shape.num_classes
