"""The LR-transfer study (paper §4.1-4.2, Figs. 2-3; issue 18), without Ray or torch: does the LR rule
predict each NB201 cell's own maximal LR?

A run with `lr_transfer` set trains, for every selected cell and for the skip chain (`cells.BASE_CELL`),
the finder's grid (`base_lr_search`: each LR held constant for `epochs`, once per seed, under
`lr_transfer.init`). Each (cell, LR, seed) trial is one ordinary `TrialRow` of the run's table: its
`protocol` is the grid point (`lr-<LR>`), its `lr` the LR, and it carries both scores (`train_loss`, the
epoch's running mean, and, under the `end-pass` score, `end_train_loss`). So the store, resume, run
identity, Ray tasks and fused groups are the sweep's own.

Per cell and score, the finder's pick rule (`base_lr.pick`) gives the empirical maximal LR and, as its
interval, the range of grid LRs whose mean loss is within one SE of the minimum (the pick is its top).
The skip chain's pick is the run's base LR; each reading (`official` Eq. 8, `kernel` Eq. 9) predicts a
cell's LR from it (`cells.scaled_lr`), and NB201's constant 0.1 is the null model. `transfer_table` is
`<run>/lr_transfer.parquet`; `python -m analysis report` turns it into the report.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from cells import BASE_CELL, LR_RULES, all_cells, index_of, scaled_lr, sum_depth_cubed
from cells.export import cells_table
from core import nb201
from core.config import TrainConfig
from pipeline.run.base_lr import BaseLRError, divergence_cap, finder_config, grid_points, pick, score_of
from pipeline.run.spec import FINDER_SCORES, Protocol, RunSpec
from pipeline.run.units import Todo, Unit, remaining

READINGS: tuple[str, ...] = LR_RULES
"""Every reading of the LR rule the project has: `official` (Eq. 8) and `kernel` (Eq. 9)."""
NULL_LR = nb201.LR
"""The null model: NB201's one LR for every cell."""
BASE_INDEX = index_of(BASE_CELL)


def grid_protocols(spec: RunSpec) -> tuple[Protocol, ...]:
    """One fixed-LR protocol per grid point, named after its LR (the rows' `protocol`)."""
    assert spec.lr_transfer is not None, "only an LR-transfer study has grid protocols"
    init = spec.lr_transfer.init
    return tuple(Protocol(name=f"lr-{lr:g}", init=init, lr=lr) for lr in spec.base_lr_search.grid())


def study_cells(selected: Sequence[int]) -> list[int]:
    """The selected cells plus the skip chain, whose pick is the base LR of every prediction."""
    return [BASE_INDEX, *(i for i in selected if i != BASE_INDEX)]


def trial_spec(spec: RunSpec) -> RunSpec:
    """The study as the sweep's bookkeeping sees it (`units.plan_units`, the planner): the grid as
    protocols, the finder's seeds and epochs. Its `run_id` is not the study's: rows use `spec`'s."""
    search = spec.base_lr_search
    return replace(spec, protocols=grid_protocols(spec), seeds=search.seeds, epochs=search.epochs)


def study_todo(spec: RunSpec, selected: Sequence[int], stored: Mapping[tuple[str, int, int], tuple[str, int]]) -> Todo:
    """What is left to train: every (cell, grid LR, seed) not finished in the store."""
    return remaining(trial_spec(spec), study_cells(selected), dict(stored))


def trial_config(spec: RunSpec, unit: Unit, lr: float) -> TrainConfig:
    """A study trial is a finder trial on this unit's cell: `base_lr.finder_config`."""
    return finder_config(spec, unit.protocol, lr, unit.seed)


def scores_of(spec: RunSpec) -> tuple[str, ...]:
    """The scores a study's rows carry: both under `end-pass` (the running mean comes free), else its own."""
    chosen = spec.base_lr_search.score
    return (chosen, *(s for s in FINDER_SCORES if s != chosen)) if chosen == "end-pass" else (chosen,)


def trial_losses(rows: pd.DataFrame, score: str) -> dict[int, dict[float, list[float]]]:
    """cell -> {grid LR -> [score per seed]}; a diverged trial is +inf, a failed or unmeasured one is left out."""
    out: dict[int, dict[float, list[float]]] = {}
    for row in rows.itertuples(index=False):
        end = getattr(row, "end_train_loss", None)
        end = None if end is None or pd.isna(end) else float(end)
        loss = score_of(score, str(row.status), end, row.train_loss)
        if loss is not None and row.status in ("ok", "diverged"):
            out.setdefault(int(row.nb201_index), {}).setdefault(float(row.lr), []).append(loss)
    return out


def cell_pick(losses: Mapping[float, Sequence[float]], grid: Sequence[float]) -> dict[str, Any]:
    """The pick rule on one cell's grid: the empirical maximal LR, its interval (the grid LRs within one
    SE of the minimum), whether it sits at an edge of the grid (then the true one may lie beyond)."""
    points = grid_points(losses)
    counts = {"n_seeds": min(len(p.losses) for p in points), "diverged_points": sum(p.diverged > 0 for p in points)}
    try:
        chosen, best, threshold = pick(points)
    except BaseLRError:
        return {"empirical_lr": math.nan, "lr_low": math.nan, "lr_high": math.nan, "at_edge": "diverged", **counts}
    cap = divergence_cap(points)
    within = [p.lr for p in points if math.isfinite(p.mean) and p.lr < cap and p.mean <= threshold * (1 + 1e-12)]
    edge = "high" if chosen >= max(grid) else "low" if chosen <= min(grid) else ""
    return {
        "empirical_lr": chosen,
        "lr_low": min(within),
        "lr_high": chosen,
        "min_loss_lr": best.lr,
        "at_edge": edge,
        **counts,
    }


def transfer_table(spec: RunSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """`lr_transfer.parquet`: per (score, cell) the empirical maximal LR and its interval, Σ L_p³, the
    base LR (the skip chain's pick under that score) and each reading's prediction from it."""
    grid = spec.base_lr_search.grid()
    assert spec.lr_transfer is not None
    out = []
    for score in scores_of(spec):
        losses = trial_losses(rows, score)
        picks = {index: cell_pick(by_lr, grid) for index, by_lr in sorted(losses.items())}
        base = picks.get(BASE_INDEX, {}).get("empirical_lr", math.nan)
        for index, found in picks.items():
            cell = all_cells()[index]
            predictions = {f"pred_{rule}": _predicted(cell, base, rule) for rule in READINGS}
            out.append(
                {
                    "nb201_index": index,
                    "arch_str": cell.arch_str,
                    "sum_l3": sum_depth_cubed(cell),
                    "is_base": index == BASE_INDEX,
                    "score": score,
                    "primary": score == spec.base_lr_search.score,
                    "init_rule": spec.lr_transfer.init,
                    **found,
                    "base_lr": base,
                    **predictions,
                    "pred_nb201": NULL_LR,
                    "grid_low": min(grid),
                    "grid_high": max(grid),
                    "grid_points": len(grid),
                }
            )
    return pd.DataFrame(out)


def _predicted(cell: Any, base: float, rule: str) -> float:
    if not math.isfinite(base):
        return math.nan
    scaled = scaled_lr(cell, base, rule)
    return math.nan if scaled.lr is None else scaled.lr


def stratified_cells(count: int, seed: int = 0) -> list[int]:
    """`count` cells spread over the rule's factor: for `count` targets log-spaced over Σ L_p³ in
    [1, max], the nearest Σ value not yet used, then one seeded cell with that Σ (never the skip chain,
    which the study adds itself). How configs/lr-transfer.yaml's list was drawn."""
    table = cells_table()
    table = table[table["has_path"] & (table["nb201_index"] != BASE_INDEX)]
    values = sorted(set(int(v) for v in table["sum_l3"]))
    top = max(values)
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in range(count):
        target = math.log(top) * k / max(1, count - 1)
        free = [v for v in values if v not in {int(table.at[i, "sum_l3"]) for i in chosen}]
        value = min(free, key=lambda v: (abs(math.log(v) - target), v))
        members = table.index[table["sum_l3"] == value].tolist()
        chosen.append(rng.choice(members))
    return sorted(int(table.at[i, "nb201_index"]) for i in chosen)
