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
from typing import Any

from cells import all_cells
from pipeline.spec import Protocol, RunSpec
from pipeline.units import Unit, class_id_of

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
    """The columns every row has, whether trained, shared, failed or without a path."""
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


def run_unit(spec: RunSpec, unit: Unit, base_lr: float | None, data: Any, device: str, threads: int) -> dict:
    """Train one unit; returns the outcome columns. Exceptions become status `failed`, never escape."""
    from pipeline.engine import train

    lr = unit.lr(base_lr)
    outcome: dict[str, Any] = {"lr": lr}
    try:
        _announce_attempt(unit)
        _maybe_kill_self()
        record = train(
            unit.arch,
            data,
            width=spec.width,
            cells_per_stage=spec.cells_per_stage,
            init_rule=unit.protocol.init,
            lr=lr,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            seed=unit.seed,
            device=device,
            threads=threads,
        )
    except Exception as error:  # a failed trial is data, not a crash of the run
        outcome.update(status="failed", error=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
        return outcome
    result = record.to_dict()
    accuracies = result.get("eval_acc", {})
    outcome.update(
        status=result["status"],
        valid_acc=accuracies.get("valid"),
        test_acc=accuracies.get("test"),
        train_acc=(result["train_acc"][-1] if result["train_acc"] else None),
        train_loss=result["train_loss"],
        train_acc_curve=result["train_acc"],
        diverged_epoch=result.get("diverged_epoch"),
        wall_s=result["wall_s"],
        images_per_s=result["images_per_s"],
        n_params=result["n_params"],
        device=result["device"],
        versions=package_versions(),
        error=None,
    )
    return outcome
