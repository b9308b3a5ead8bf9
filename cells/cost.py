"""Compute cost of the full NB201 network built from a cell: multiply-accumulates per image.

NB201 reports this number as "FLOPs" (in millions); it counts every conv edge of the cell,
which our engine does not run when the edge is dead. `live_only=True` counts what the
engine computes (cells.classes.live_graph), the figure a cost plan needs.
"""

from __future__ import annotations

from cells.cell import CONV_KERNEL, Cell
from cells.classes import live_graph


def cell_conv_macs(ops: list[str], channels: int, side: int) -> int:
    return sum(CONV_KERNEL[op] ** 2 * channels * channels * side * side for op in ops if op in CONV_KERNEL)


def network_macs(
    cell: Cell,
    num_classes: int,
    width: int = 16,
    cells_per_stage: int = 5,
    image_size: int = 32,
    live_only: bool = False,
) -> int:
    """Conv and linear MACs of one forward pass of one image (BN, ReLU, pooling omitted, as NB201)."""
    if live_only:
        ops = [e.op for e in live_graph(cell).edges if e.op in CONV_KERNEL]
    else:
        ops = list(cell.ops)
    c, side = width, image_size
    total = 27 * c * side * side  # stem 3x3, 3 -> C
    for stage, channels in enumerate((c, 2 * c, 4 * c)):
        total += cells_per_stage * cell_conv_macs(ops, channels, side)
        if stage < 2:
            side //= 2
            c_out = 2 * channels
            total += 9 * channels * c_out * side * side  # conv_a, stride 2
            total += 9 * c_out * c_out * side * side  # conv_b
            total += channels * c_out * side * side  # downsample 1x1
    return total + 4 * c * num_classes


def training_flops_per_image(cell: Cell, num_classes: int, width: int, cells_per_stage: int, image_size: int) -> float:
    """FLOPs to train on one image: 2 per MAC, x3 for forward + backward (the usual estimate)."""
    return 6.0 * network_macs(cell, num_classes, width, cells_per_stage, image_size, live_only=True)
