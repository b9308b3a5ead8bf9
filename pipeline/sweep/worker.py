"""What one Ray task does: train its units (one fused network when they allow it) and return one
outcome per unit. Ray calls `run_group` in a worker process (`orchestrate`); tests and a GPU box
without Ray can call it directly. Exceptions become status `failed`, never escape.
"""

from __future__ import annotations

import platform
import traceback
from typing import Any

import numpy
import ray
import torch

from pipeline.run.rows import record_columns
from pipeline.run.spec import RunSpec
from pipeline.run.units import Unit
from pipeline.sweep.drills import announce_attempt, maybe_kill_self
from pipeline.train.data import DatasetSplits
from pipeline.train.engine import train
from pipeline.train.fused import can_fuse, train_group


def package_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ray": ray.__version__,
    }


def run_unit(spec: RunSpec, unit: Unit, base_lr: float | None, data: DatasetSplits, device: str) -> dict:
    """Train one unit; returns the outcome columns. Exceptions become status `failed`, never escape."""
    lr = unit.protocol.lr_for(unit.arch, base_lr)
    outcome: dict[str, Any] = {"lr": lr, "data_fingerprint": data.fingerprint}
    try:
        announce_attempt(unit)
        maybe_kill_self()
        record = train(unit.arch, data, spec.train_config(unit.protocol, unit.seed, lr, device=device))
    except Exception as error:  # a failed trial is data, not a crash of the run
        outcome.update(status="failed", error=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
        return outcome
    outcome.update(record_columns(record), versions=package_versions())
    return outcome


def run_group(
    spec: RunSpec, units: list[Unit], base_lrs: dict[str, float | None], data: DatasetSplits, device: str
) -> list[dict]:
    """Train units of one cell together: one fused network when there are several and their configs
    allow it (`fused.can_fuse`), else one by one. One outcome per unit, in order; never raises."""
    lrs = [unit.protocol.lr_for(unit.arch, base_lrs[unit.protocol.name]) for unit in units]
    cfgs = [spec.train_config(u.protocol, u.seed, lr, device=device) for u, lr in zip(units, lrs, strict=True)]
    if len(units) == 1 or len({u.cell for u in units}) > 1 or not can_fuse(cfgs):
        return [run_unit(spec, u, base_lrs[u.protocol.name], data, device) for u in units]
    outcomes: list[dict[str, Any]] = [{"lr": lr, "data_fingerprint": data.fingerprint} for lr in lrs]
    try:
        for unit in units:
            announce_attempt(unit)
        maybe_kill_self()
        records = train_group(units[0].arch, data, cfgs)
    except Exception as error:  # the whole group failed: each of its units says why
        text = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
        return [dict(outcome, status="failed", error=text) for outcome in outcomes]
    versions = package_versions()
    for outcome, record in zip(outcomes, records, strict=True):
        outcome.update(record_columns(record), versions=versions, fused_k=len(units))
    return outcomes
