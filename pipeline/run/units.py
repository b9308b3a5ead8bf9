"""From a RunSpec to the list of units Ray schedules, and the rows each unit fills.

A unit is (class representative, protocol, seed). Isomorphic cells are the same computation
(cells.classes), so one training serves every selected member; their rows say `shared`.
Cells without an input->output path become `no-path` rows at once, with no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandas as pd

from cells import INIT_RULES, Cell, all_cells
from cells.export import cells_table, class_column
from core.rows import FINISHED
from pipeline.run.spec import Protocol, RunSpec


@dataclass(frozen=True)
class Unit:
    """One training: the cell at NB201 index `index` stands for every index in `members`."""

    index: int
    protocol: Protocol
    seed: int
    members: tuple[int, ...]
    class_id: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.protocol.name, self.index, self.seed)

    @property
    def cell(self) -> Cell:
        return all_cells()[self.index]

    def lr(self, base_lrs: dict[str, float | None]) -> float:
        """The peak LR of this training, given each protocol's resolved base LR."""
        return self.protocol.lr_for(self.cell, base_lrs[self.protocol.name])


@cache
def _class_columns() -> pd.DataFrame:
    return cells_table()[[*dict.fromkeys(class_column(rule) for rule in INIT_RULES), "has_path"]]


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


@dataclass(frozen=True)
class Todo:
    """What a run still has to do, given what its store holds (`remaining`)."""

    units: tuple[Unit, ...]
    """Every unit of the run."""
    train: tuple[tuple[Unit, int], ...]
    """(unit, attempts so far) still to train."""
    no_path: tuple[tuple[Protocol, int, int], ...]
    """(protocol, seed, cell) `no-path` rows not stored yet."""
    no_path_total: int
    finished: int
    exhausted: int
    """Units that failed `max_attempts` times: not retried."""

    def summary(self, cells: int, max_attempts: int) -> str:
        return (
            f"{cells} cells -> {len(self.units)} units ({self.no_path_total} no-path rows); {self.finished} already "
            f"finished, {self.exhausted} failed {max_attempts}x (not retried), {len(self.train)} to train"
        )

    def counts(self, trained: int, failed: int) -> dict[str, int]:
        """The run's closing tally (the CLI's `done:` line), given what this invocation trained."""
        return {
            "units": len(self.units),
            "trained": trained,
            "failed": failed,
            "skipped": self.finished,
            "gave_up": self.exhausted,
        }


def remaining(spec: RunSpec, selected: list[int], stored: dict[tuple[str, int, int], tuple[str, int]]) -> Todo:
    """The pure "what is left" step: the run's units against the store's (status, attempts) per key."""
    units, no_path = plan_units(spec, selected)
    train: list[tuple[Unit, int]] = []
    finished = exhausted = 0
    for unit in units:
        status, attempts = stored.get(unit.key, ("", 0))
        if status in FINISHED:
            finished += 1
        elif attempts >= spec.max_attempts:
            exhausted += 1
        else:
            train.append((unit, attempts))
    new_no_path = tuple(t for t in no_path if stored.get((t[0].name, t[2], t[1]), ("",))[0] != "no-path")
    return Todo(tuple(units), tuple(train), new_no_path, len(no_path), finished, exhausted)


def fused_groups(train: tuple[tuple[Unit, int], ...], k: int) -> list[list[tuple[Unit, int]]]:
    """The units to train, as groups of at most `k` that train the same cell (one fused network
    each, pipeline/train/fused.py); k = 1 gives one unit per group. Order of first appearance is kept.
    A `lone_only` protocol's unit (μP: the fused trainer refuses it) is a group of its own, so it never holds up
    a group that does fuse."""
    by_cell: dict[tuple[int, int], list[tuple[Unit, int]]] = {}
    for n, item in enumerate(train):
        by_cell.setdefault((item[0].index, n + 1 if item[0].protocol.lone_only else 0), []).append(item)
    return [members[i : i + k] for members in by_cell.values() for i in range(0, len(members), k)]
