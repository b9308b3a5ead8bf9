"""What one Ray task does: train its units (one fused network when they allow it) and return one
outcome per unit. Ray calls `run_group` in a worker process (`orchestrate`); tests and a GPU box
without Ray can call it directly. Exceptions become status `failed`, never escape.
"""

from __future__ import annotations

import platform
import traceback
from importlib import metadata
from typing import Any

import numpy
import ray
import torch

from core.config import TrainConfig
from pipeline.run.rows import config_columns, record_columns
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
        "mup": metadata.version("mup"),
    }


def run_unit(unit: Unit, cfg: TrainConfig, data: DatasetSplits) -> dict[str, Any]:
    """Train one unit as `cfg` says; returns the outcome columns. Exceptions become status `failed`."""
    outcome = _started(cfg, data)
    try:
        announce_attempt(unit)
        maybe_kill_self()
        record = train(unit.cell, data, cfg)
    except Exception as error:  # a failed trial is data, not a crash of the run
        return dict(outcome, status="failed", error=_failure(error))
    outcome.update(record_columns(record), versions=package_versions())
    return outcome


def run_group(units: list[Unit], cfgs: list[TrainConfig], data: DatasetSplits) -> list[dict[str, Any]]:
    """Train units of one cell, unit i as `cfgs[i]` says: one fused network when there are several and
    their configs allow it (`fused.can_fuse`), else one by one. One outcome per unit, in order; never raises."""
    if len(units) == 1 or len({u.index for u in units}) > 1 or not can_fuse(cfgs):
        return [run_unit(u, cfg, data) for u, cfg in zip(units, cfgs, strict=True)]
    outcomes = [_started(cfg, data) for cfg in cfgs]
    try:
        for unit in units:
            announce_attempt(unit)
        maybe_kill_self()
        records = train_group(units[0].cell, data, cfgs)
    except Exception as error:  # the whole group failed: each of its units says why
        return [dict(outcome, status="failed", error=_failure(error)) for outcome in outcomes]
    versions = package_versions()
    for outcome, record in zip(outcomes, records, strict=True):
        outcome.update(record_columns(record), versions=versions, fused_k=len(units))
    return outcomes


def _started(cfg: TrainConfig, data: DatasetSplits) -> dict[str, Any]:
    """What a unit's row says before training: the config it runs and the data it reads."""
    return {**config_columns(cfg), "data_fingerprint": data.fingerprint, "image_size": data.image_size}


def _failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
