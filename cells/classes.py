"""Isomorphism classes: which cells are the same computation, so each is trained once.

Sound by construction: two cells share a key only if their *live* computation graphs are
identical up to relabelling the two intermediate nodes, with the same op on every edge
and each parametric edge its own weight instance (a multigraph: parallel edges count).

Live graph of a cell (`live_graph`):
1. drop `none` edges;
2. a node is identically zero when every incoming edge is skip/avg_pool from a zero node;
   skip/avg_pool edges out of a zero node are dropped, but a ReLU-Conv-BN edge out of a
   zero node is kept as a `bias` edge: it outputs its BN bias, a learnable constant
   (conv kind is irrelevant then, its weights never reach the output);
3. a node whose only input is one skip edge is a copy: it is contracted into its source;
4. edges and nodes that cannot reach the output are dropped.

NB201's own symbolic count (`nb201_unique_str`, skip = identity, none = zero) gives 6,466
classes, but it is not sound in this sense: its string for a node sorts and joins the terms,
so `2·f(x)` (one conv read twice through skip copies) and `f1(x) + f2(x)` (two convs)
get the same string, and a conv fed by zeros becomes zero (it drops the BN bias).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

from cells.cell import CONV_KERNEL, EDGES, N_NODES, Cell
from cells.paths import OUTPUT
from cells.rules import DEGREE_FREE_RULES, edge_init_degrees

INPUT = 0
ZERO = -1
"""Pseudo-source of `bias` edges (a conv fed by an identically-zero node)."""


@dataclass(frozen=True)
class LiveEdge:
    """An edge of the live graph; `edge` is the index of the cell edge it comes from."""

    source: int
    target: int
    op: str
    edge: int


@dataclass(frozen=True)
class LiveGraph:
    """The live computation of a cell; `output` is the node whose value the cell returns."""

    edges: tuple[LiveEdge, ...]
    output: int


@cache
def live_graph(cell: Cell) -> LiveGraph:
    ops = cell.ops
    zero = [False] + [True] * (N_NODES - 1)
    for k, (source, target) in enumerate(EDGES):  # EDGES is in topological order of targets
        if ops[k] == "none":
            continue
        if ops[k] in CONV_KERNEL or not zero[source]:
            zero[target] = False

    edges: list[LiveEdge] = []
    for k, (source, target) in enumerate(EDGES):
        op = ops[k]
        if op == "none" or (zero[source] and op not in CONV_KERNEL):
            continue
        if zero[source]:
            edges.append(LiveEdge(ZERO, target, "bias", k))
        else:
            edges.append(LiveEdge(source, target, op, k))

    # Contract pure skip copies (node = skip(source) and nothing else), in topological order.
    alias = list(range(N_NODES))
    for node in range(1, N_NODES):
        incoming = [e for e in edges if e.target == node]
        if len(incoming) == 1 and incoming[0].op == "skip_connect":
            alias[node] = alias[incoming[0].source]
    output = alias[OUTPUT]
    edges = [
        LiveEdge(e.source if e.source == ZERO else alias[e.source], e.target, e.op, e.edge)
        for e in edges
        if alias[e.target] == e.target  # the copy edge itself disappears
    ]

    # Keep what reaches the output.
    reaches = {output}
    for node in range(N_NODES - 1, -1, -1):
        if any(e.source == node and e.target in reaches for e in edges):
            reaches.add(node)
    edges = [e for e in edges if e.target in reaches]
    return LiveGraph(tuple(edges), output)


def _labellings(graph: LiveGraph, degrees: tuple[int, ...] | None) -> list[tuple[str, list[int]]]:
    """Every relabelling of the (at most 2) intermediate nodes: (edge listing, cell edges in listing order)."""
    intermediates = sorted({n for e in graph.edges for n in (e.source, e.target)} - {INPUT, ZERO, graph.output})
    result = []
    for perm in itertools.permutations(range(len(intermediates))):
        name = {INPUT: "in", ZERO: "zero", graph.output: "out"}
        if graph.output == INPUT:
            name[INPUT] = "in=out"
        name.update({node: f"n{perm[i]}" for i, node in enumerate(intermediates)})
        labelled = sorted(
            (
                f"{name[e.source]}>{name[e.target]}:{e.op}"
                + (f"/d{degrees[e.edge]}" if degrees and e.op in CONV_KERNEL else ""),
                e.edge,
            )
            for e in graph.edges
        )
        text = ",".join(label for label, _ in labelled) + f"|out={name[graph.output]}"
        result.append((text, [edge for _, edge in labelled]))
    return result


def _canonical(cell: Cell, init_rule: str) -> tuple[str, list[int]]:
    degrees = None if init_rule in DEGREE_FREE_RULES else edge_init_degrees(cell, init_rule)
    return min(_labellings(live_graph(cell), degrees))


@cache
def class_key(cell: Cell, init_rule: str = "kaiming") -> str:
    """Key of the cell's class. Under an arch-aware init rule the live convs' degrees join it,
    so that members also share their init (dead `bias` edges' weights never matter); the
    degree-free rules (`torch-default`, `kaiming`) share one key."""
    return _canonical(cell, init_rule)[0]


def edge_correspondence(cell: Cell, representative: Cell, init_rule: str = "kaiming") -> dict[int, int]:
    """Map each live edge of `representative` to the matching edge of `cell` (same class).

    Used to copy weights across class members; raises if they are not in the same class.
    """
    key_c, edges_c = _canonical(cell, init_rule)
    key_r, edges_r = _canonical(representative, init_rule)
    if key_c != key_r:
        raise ValueError(f"{cell} and {representative} are not in the same class")
    return dict(zip(edges_r, edges_c, strict=True))


def nb201_unique_str(cell: Cell) -> str:
    """NB201's `CellStructure.to_unique_str(consider_zero=True)`: skip = identity, none = zero."""
    nodes = {0: "0"}
    k = 0
    for target in range(1, N_NODES):
        terms = []
        for source in range(target):
            op = cell.ops[k]
            k += 1
            if op == "none" or nodes[source] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[source])
            else:
                terms.append(f"({nodes[source]})@{op}")
        nodes[target] = "+".join(sorted(terms))
    return nodes[N_NODES - 1]
