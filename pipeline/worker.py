"""What one unit does, without Ray: train the representative, fill a row for every member.

Ray calls `run_unit` in a worker process (pipeline.orchestrate); tests and a GPU box without
Ray can call it directly.
"""

from __future__ import annotations

import os
import platform
import signal
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cells import all_cells
from core.provenance import code_identity, code_version
from pipeline.spec import Protocol, RunSpec
from pipeline.units import Unit, class_id_of

if TYPE_CHECKING:
    from pipeline.data import DatasetSplits
    from pipeline.engine import TrainRecord

FAULT_ENV = "NB201_FAULT_KILL_ONCE"
"""Fault drill: if set to a path that does not exist yet, the first unit creates it and SIGKILLs
its own worker process mid-trial, so tests can watch Ray retry it. Never set in normal runs."""

TRIAL_PID_ENV = "NB201_TRIAL_PID_DIR"
"""Fault drills: if set to a folder, every attempt at a unit writes `<protocol>-<cell>-<seed>.<pid>`
there as it starts, then waits while `<folder>/hold` exists (at most HOLD_MAX_S), so that a test can
SIGKILL the very process, or node, training a unit, and count the attempts. Never set in normal runs."""
HOLD_MAX_S = 300.0


def package_versions() -> dict[str, str]:
    import numpy
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import ray

        versions["ray"] = ray.__version__
    except ImportError:
        pass
    return versions


def base_row(spec: RunSpec, protocol: Protocol, index: int, seed: int, base_lr: float | None) -> dict[str, Any]:
    """The columns every row has, whether trained, shared, failed or without a path (`core.rows.TrialRow`)."""
    return {
        "run_id": spec.run_id,
        "dataset": spec.dataset,
        "protocol": protocol.name,
        "nb201_index": index,
        "seed": seed,
        "arch_str": all_cells()[index].arch_str,
        "class_id": class_id_of(index, protocol.init),
        "init_rule": protocol.init,
        "lr_rule": protocol.lr_rule,
        "base_lr": base_lr,
        "width": spec.width,
        "cells_per_stage": spec.cells_per_stage,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "code_version": code_version(),
        "code_identity": code_identity(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def no_path_row(spec: RunSpec, protocol: Protocol, index: int, seed: int, base_lr: float | None) -> dict[str, Any]:
    row = base_row(spec, protocol, index, seed, base_lr)
    row.update(status="no-path", shared=False, attempts=0, error="no input->output path; not trained")
    return row


def unit_rows(spec: RunSpec, unit: Unit, base_lr: float | None, outcome: dict[str, Any], attempts: int) -> list[dict]:
    """One row per member: the representative's outcome, flagged `shared` on the others."""
    rows = []
    for index in unit.members:
        row = base_row(spec, unit.protocol, index, unit.seed, base_lr)
        row.update(outcome, shared=index != unit.cell, trained_index=unit.cell, attempts=attempts)
        rows.append(row)
    return rows


def record_columns(record: TrainRecord) -> dict[str, Any]:
    """A training record as TrialRow columns: every field that matters survives into the row."""
    result = record.to_dict()
    cfg = record.config
    return {
        "status": result["status"],
        "lr": cfg.lr,
        "lr_schedule": cfg.schedule,
        "momentum": cfg.momentum,
        "nesterov": cfg.nesterov,
        "weight_decay": cfg.weight_decay,
        "precision": result["precision"],
        "valid_acc": result["eval_acc"].get("valid"),
        "test_acc": result["eval_acc"].get("test"),
        "valid_loss": result["eval_loss"].get("valid"),
        "test_loss": result["eval_loss"].get("test"),
        "train_acc": result["train_acc"][-1] if result["train_acc"] else None,
        "train_loss": result["train_loss"],
        "train_acc_curve": result["train_acc"],
        "diverged_epoch": result["diverged_epoch"],
        "eval_epochs": result["eval_epochs"] or None,
        "valid_acc_curve": result["eval_curve"].get("valid"),
        "test_acc_curve": result["eval_curve"].get("test"),
        "steps": result["steps"],
        "n_train": result["n_train"],
        "n_params": result["n_params"],
        "wall_s": result["wall_s"],
        "images_per_s": result["images_per_s"],
        "device": result["device"],
        "error": None,
    }


def _maybe_kill_self() -> None:
    marker = os.environ.get(FAULT_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def _announce_attempt(unit: Unit) -> None:
    folder = os.environ.get(TRIAL_PID_ENV)
    if not folder:
        return
    pid = os.getpid()
    Path(folder, f"{unit.protocol.name}-{unit.cell}-{unit.seed}.{pid}").write_text(str(pid))
    hold, deadline = Path(folder, "hold"), time.monotonic() + HOLD_MAX_S
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def run_unit(spec: RunSpec, unit: Unit, base_lr: float | None, data: DatasetSplits, device: str) -> dict:
    """Train one unit; returns the outcome columns. Exceptions become status `failed`, never escape."""
    from pipeline.engine import train

    lr = unit.protocol.lr_for(unit.arch, base_lr)
    outcome: dict[str, Any] = {"lr": lr, "data_fingerprint": data.fingerprint}
    try:
        _announce_attempt(unit)
        _maybe_kill_self()
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
    from pipeline.fused import can_fuse, train_group

    lrs = [unit.protocol.lr_for(unit.arch, base_lrs[unit.protocol.name]) for unit in units]
    cfgs = [spec.train_config(u.protocol, u.seed, lr, device=device) for u, lr in zip(units, lrs, strict=True)]
    if len(units) == 1 or len({u.cell for u in units}) > 1 or not can_fuse(cfgs):
        return [run_unit(spec, u, base_lrs[u.protocol.name], data, device) for u in units]
    outcomes: list[dict[str, Any]] = [{"lr": lr, "data_fingerprint": data.fingerprint} for lr in lrs]
    try:
        for unit in units:
            _announce_attempt(unit)
        _maybe_kill_self()
        records = train_group(units[0].arch, data, cfgs)
    except Exception as error:  # the whole group failed: each of its units says why
        text = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
        return [dict(outcome, status="failed", error=text) for outcome in outcomes]
    versions = package_versions()
    for outcome, record in zip(outcomes, records, strict=True):
        outcome.update(record_columns(record), versions=versions, fused_k=len(units))
    return outcomes
