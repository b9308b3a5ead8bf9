"""Architecture-aware scaling rules of Chen et al. (ICLR 2024) as pure functions.

Learning rate (Eq. 8, CNN form Eq. 9) and per-edge init variance multipliers (Eq. 4).
The readings taken where the paper is ambiguous are stated at each function and in
README.md; `../shared/docs/paper-digest.md` sections 2, 3 and 6 give the evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cells.cell import EDGES, Cell
from cells.paths import in_degrees, paths, sum_depth_cubed

LR_RULES: tuple[str, ...] = ("official", "kernel")
INIT_RULES: tuple[str, ...] = ("torch-default", "kaiming", "arch-source", "arch-target")
DEGREE_FREE_RULES: tuple[str, ...] = ("torch-default", "kaiming")
"""Init rules that ignore the graph: every conv's degree is 1, so their isomorphism classes coincide.
`torch-default` is NB201's own (its training code never calls an init: PyTorch's layer defaults);
`kaiming` is He-normal fan_in."""

BASE_CELL = Cell.from_official_code("1_01_001")
"""The shallowest network: identity cells (a skip chain), Σ L^3 = 1 (digest 3.4)."""

SKELETON_KERNEL = 3
"""Kernel side of the convs outside the cell (stem, reductions); q of the base network."""


@dataclass(frozen=True)
class ScaledLR:
    """A scaled learning rate, or the reason there is none (never an exception in a batch)."""

    lr: float | None
    factor: float | None
    reason: str = ""


def kernel_sum(cell: Cell) -> int:
    """Σ_p L_p^3 q_p^2, the Eq. 9 path sum with a per-path kernel side q_p.

    Reading of q: the kernel side k (not k^2), as the official CNN code's `3/k` factor uses;
    a path's q is the largest conv kernel on it; a conv-free path only meets the skeleton's
    3x3 convs, so it gets q = 3. With one kernel size everywhere this reduces to Eq. 9's
    (Σ L^3)^(-1/2) q^(-1) exactly.
    """
    return sum(p.depth**3 * (p.max_kernel or SKELETON_KERNEL) ** 2 for p in paths(cell))


def lr_factor(cell: Cell, rule: str = "official") -> float | None:
    """Scaled LR / base LR; None when the cell has no input->output path.

    `official` (Eq. 8 as the official code applies it to NB201):
        (Σ_base L^3 / Σ_cell L^3)^(1/2), base = skip chain (Σ = 1).
    `kernel` (Eq. 9): (Σ_base L^3 q^2 / Σ_cell L_p^3 q_p^2)^(1/2), see `kernel_sum`.
    """
    if rule not in LR_RULES:
        raise ValueError(f"unknown LR rule {rule!r}; expected one of {', '.join(LR_RULES)}")
    if not paths(cell):
        return None
    if rule == "official":
        return math.sqrt(sum_depth_cubed(BASE_CELL) / sum_depth_cubed(cell))
    return math.sqrt(kernel_sum(BASE_CELL) / kernel_sum(cell))


def scaled_lr(cell: Cell, base_lr: float, rule: str = "official") -> ScaledLR:
    """η_cell = η_base · lr_factor(cell, rule) (paper §4 transfer recipe, step 4)."""
    factor = lr_factor(cell, rule)
    if factor is None:
        return ScaledLR(None, None, "no input->output path: the cell's output is not a function of its input")
    return ScaledLR(base_lr * factor, factor)


# --- init (Eq. 4) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReductionDegrees:
    """Degrees of the three convs in a ResNet reduction block (variance divided by each)."""

    conv_a: int
    conv_b: int
    downsample: int


def edge_init_degrees(cell: Cell, rule: str) -> tuple[int, ...]:
    """Per edge, the degree d in Var(W) = 2 / (fan_in · d); 1 on weightless edges' slots too.

    `torch-default`, `kaiming`: d = 1 (no degree; the distribution itself is pipeline.train.model's).
    `arch-source`: d = in-degree of the edge's source node (the official code, literal Eq. 4).
    `arch-target`: d = in-degree of the edge's target node (appendix Eq. 11-12).
    In-degrees count non-`none` edges, node 0 counts 1, and d is at least 1.
    """
    if rule not in INIT_RULES:
        raise ValueError(f"unknown init rule {rule!r}; expected one of {', '.join(INIT_RULES)}")
    if rule in DEGREE_FREE_RULES:
        return (1,) * len(EDGES)
    degrees = in_degrees(cell)
    end = 0 if rule == "arch-source" else 1
    return tuple(max(1, degrees[edge[end]]) for edge in EDGES)


def edge_init_multipliers(cell: Cell, rule: str) -> tuple[float, ...]:
    """Per edge, the factor on He-normal variance: 1 / degree."""
    return tuple(1.0 / d for d in edge_init_degrees(cell, rule))


def reduction_init_degrees(rule: str) -> ReductionDegrees:
    """Reduction-block degrees: the official code's (2, 1, 2) under either arch rule (digest 2.4)."""
    if rule not in INIT_RULES:
        raise ValueError(f"unknown init rule {rule!r}; expected one of {', '.join(INIT_RULES)}")
    if rule in DEGREE_FREE_RULES:
        return ReductionDegrees(1, 1, 1)
    return ReductionDegrees(conv_a=2, conv_b=1, downsample=2)
