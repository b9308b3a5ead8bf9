"""Graph statistics of a cell: input->output paths, depths, in-degrees, parameter counts.

Depth follows the official code (digest 3.4): L_p = 1 + number of conv edges on path p;
skip_connect and avg_pool_3x3 add no depth, `none` removes the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cells.cell import CONV_KERNEL, EDGES, N_NODES, Cell
from core.shape import NetShape

OUTPUT = N_NODES - 1


@dataclass(frozen=True)
class Path:
    """One input->output path: the edge indices it uses and the ops on them."""

    edges: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def n_convs(self) -> int:
        return sum(op in CONV_KERNEL for op in self.ops)

    @property
    def depth(self) -> int:
        """L_p = 1 + convs on the path (official code's convention)."""
        return 1 + self.n_convs

    @property
    def max_kernel(self) -> int | None:
        """Largest conv kernel side on the path; None for a conv-free path."""
        kernels = [CONV_KERNEL[op] for op in self.ops if op in CONV_KERNEL]
        return max(kernels) if kernels else None


@cache
def paths(cell: Cell) -> tuple[Path, ...]:
    """All directed paths 0 -> 3 over non-`none` edges, in a deterministic order."""
    out_edges: dict[int, list[int]] = {v: [] for v in range(N_NODES)}
    for k, (source, _) in enumerate(EDGES):
        if cell.ops[k] != "none":
            out_edges[source].append(k)

    found: list[Path] = []

    def walk(node: int, taken: tuple[int, ...]) -> None:
        if node == OUTPUT:
            found.append(Path(taken, tuple(cell.ops[k] for k in taken)))
            return
        for k in out_edges[node]:
            walk(EDGES[k][1], taken + (k,))

    walk(0, ())
    return tuple(found)


def sum_depth_cubed(cell: Cell) -> int:
    """Sum over input->output paths of L_p^3 (Eq. 8); 0 when the cell has no path."""
    return sum(p.depth**3 for p in paths(cell))


def in_degrees(cell: Cell) -> tuple[int, ...]:
    """Non-`none` incoming edges per node, node 0 fixed at 1 (the official degree table).

    Edges count even when their source is unreachable from the input, as in the official code.
    """
    degrees = [1] + [0] * (N_NODES - 1)
    for k, (_, target) in enumerate(EDGES):
        if cell.ops[k] != "none":
            degrees[target] += 1
    return tuple(degrees)


# --- parameter count of the full NB201 network ---------------------------------------------


def conv_edge_params(op: str, channels: int) -> int:
    """ReLU-Conv(k x k, no bias)-BN(affine): k^2 C^2 weights + 2C BN parameters."""
    if op not in CONV_KERNEL:
        return 0
    return CONV_KERNEL[op] ** 2 * channels * channels + 2 * channels


def network_params(cell: Cell, shape: NetShape) -> int:
    """Trainable parameters of NB201's TinyNetwork built from this cell.

    Stem Conv3x3(3->C)+BN; per stage N cells, entered (after the first) through a ResNet basic-block
    reduction (conv_a 3x3 s2 + BN, conv_b 3x3 + BN, downsample AvgPool + Conv1x1); final BN, linear
    classifier. BN running stats are buffers, not parameters.
    """
    total = 3 * 9 * shape.width + 2 * shape.width  # stem
    for stage in shape.stages():
        c_out = stage.channels
        if stage.reduction_from is not None:
            c_in = stage.reduction_from
            total += 9 * c_in * c_out + 2 * c_out  # conv_a
            total += 9 * c_out * c_out + 2 * c_out  # conv_b
            total += c_in * c_out  # downsample 1x1
        total += stage.cells * sum(conv_edge_params(op, c_out) for op in cell.ops)
    total += 2 * shape.final_channels  # last BN
    return total + shape.final_channels * shape.num_classes + shape.num_classes  # classifier
