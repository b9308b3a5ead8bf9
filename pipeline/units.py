"""From a RunSpec to the list of units Ray schedules, and the rows each unit fills.

A unit is (class representative, protocol, seed). Isomorphic cells are the same computation
(cells.classes), so one training serves every selected member; their rows say `shared`.
Cells without an input->output path become `no-path` rows at once, with no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandas as pd

from cells import Cell, all_cells, lr_factor
from pipeline.spec import Protocol, RunSpec

FINISHED = ("ok", "diverged", "no-path")
"""Statuses a rerun does not retrain; `failed` units are retried up to max_attempts."""


@dataclass(frozen=True)
class Unit:
    """One training: `cell` (an NB201 index) stands for every index in `members`."""

    cell: int
    protocol: Protocol
    seed: int
    members: tuple[int, ...]
    class_id: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.protocol.name, self.cell, self.seed)

    @property
    def arch(self) -> Cell:
        return all_cells()[self.cell]

    def lr(self, base_lr: float | None) -> float:
        if not self.protocol.scaled:
            assert self.protocol.lr is not None
            return float(self.protocol.lr)
        factor = lr_factor(self.arch, self.protocol.lr_rule or "official")
        assert factor is not None and base_lr is not None, "no-path cells never become units"
        return base_lr * factor


@cache
def _class_columns() -> pd.DataFrame:
    from cells.export import cells_table

    return cells_table()[["class_id", "class_id_arch_source", "class_id_arch_target", "has_path"]]


def class_column(init_rule: str) -> str:
    return "class_id" if init_rule == "kaiming" else "class_id_" + init_rule.replace("-", "_")


def plan_units(spec: RunSpec, selected: list[int]) -> tuple[list[Unit], list[tuple[Protocol, int, int]]]:
    """Units to train, and (protocol, seed, cell) triples that are `no-path` without training."""
    table = _class_columns()
    units: list[Unit] = []
    no_path: list[tuple[Protocol, int, int]] = []
    for protocol in spec.protocols:
        column = class_column(protocol.init)
        groups: dict[int, list[int]] = {}
        for index in selected:
            if not table.at[index, "has_path"]:
                no_path.extend((protocol, seed, index) for seed in spec.seeds)
                continue
            key = int(table.at[index, column]) if spec.dedup else -1 - index
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            class_id = int(table.at[members[0], column])
            units.extend(Unit(members[0], protocol, seed, tuple(members), class_id) for seed in spec.seeds)
    return units, no_path


def class_id_of(index: int, init_rule: str) -> int:
    return int(_class_columns().at[index, class_column(init_rule)])
