"""The sweep's side of fusion: units of one cell grouped (`units.fused_groups`), trained as one network
by `worker.run_group`, each writing its own full row."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.rows import to_record
from pipeline.run.rows import unit_rows
from pipeline.run.spec_load import spec_from_dict
from pipeline.run.units import fused_groups, plan_units
from pipeline.sweep.worker import run_group, run_unit
from pipeline.train.data import load_splits

CELL = "3_13_313"


def _spec(**extra: object):
    return spec_from_dict(
        {
            "name": "fuse",
            "width": 4,
            "cells_per_stage": 1,
            "epochs": 1,
            "batch_size": 64,
            "seeds": [0, 1],
            "cells": {"select": "list", "cells": [CELL, "3_03_101"]},
            "protocols": [
                {"name": "nb201", "init": "kaiming", "lr": 0.02},
                {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.05},
            ],
            **extra,
        }
    )


def test_groups_hold_one_cell_and_at_most_k_units() -> None:
    spec = _spec()
    units, _ = plan_units(spec, spec.cells.resolve())
    train = tuple((unit, 0) for unit in units)
    for k in (1, 2, 3, 8):
        groups = fused_groups(train, k)
        assert sorted(u.key for g in groups for u, _ in g) == sorted(u.key for u in units)
        assert all(len(g) <= k and len({u.index for u, _ in g}) == 1 for g in groups)
    assert len(fused_groups(train, 8)) == 2  # two cells, four units each (2 protocols x 2 seeds)


def test_a_fused_group_writes_one_full_row_per_unit(cifar10_dir: Path) -> None:
    spec = _spec(device="cpu")
    data = load_splits("cifar10", cifar10_dir, max_train=128, max_eval=64)
    units, _ = plan_units(spec, [spec.cells.resolve()[0]])
    base_lrs = {"nb201": None, "scaled": 0.05}
    cfgs = [spec.train_config(u.protocol, u.seed, u.lr(base_lrs), device="cpu") for u in units]
    outcomes = run_group(units, cfgs, data)
    assert [o["fused_k"] for o in outcomes] == [len(units)] * len(units) == [4] * 4
    for unit, outcome in zip(units, outcomes, strict=True):
        assert outcome["status"] == "ok" and outcome["lr"] == pytest.approx(unit.lr(base_lrs))
        for row in unit_rows(spec, unit, base_lrs[unit.protocol.name], outcome, 1):
            to_record(row)  # every column is a TrialRow column
    # the same unit alone: same LR, same data, same schedule; accuracy within fp32 rounding drift
    alone = run_unit(units[0], cfgs[0], data)
    assert alone["lr"] == outcomes[0]["lr"] and alone["n_train"] == outcomes[0]["n_train"]
    assert abs(alone["train_loss"][0] - outcomes[0]["train_loss"][0]) < 1e-3
