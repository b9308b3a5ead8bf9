"""Trainings through Ray: `drain` sends units to Ray tasks (a bounded window in flight), writes each
unit's rows as it lands and shows progress with an ETA. What a task runs is `worker.run_group`.

Used by the sweep and the LR-transfer study (`orchestrate`, `lr_transfer`) once their driver has
admitted the run; nothing here refuses input or reads a run's identity, so everything here is on
the training path (`core.provenance`): it builds, sends and stores the trainings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from core.config import TrainConfig
from pipeline.run.rows import config_columns, unit_rows
from pipeline.run.spec import RunSpec
from pipeline.run.store import ResultsStore, StoreError
from pipeline.run.units import Todo, Unit, fused_groups
from pipeline.sweep.cluster import (
    Log,
    exit_quietly_when_stopped,
    fuse_size,
    gpus_per_trial,
    placement,
    task_attempt,
    task_device,
)
from pipeline.sweep.worker import run_group

EXPORT_EVERY_S = 60.0
"""Seconds between re-exports of the Parquet table while trainings land."""
RAY_RETRIES = 3
"""Ray re-runs a unit whose worker process or node died, this many times."""


@ray.remote
def _unit_task(units: list[Unit], cfgs: list[TrainConfig], data: Any) -> list[dict]:
    """Train a group of units of one cell, each as its config says (one fused network when it has
    several); one outcome each. `auto` devices become the GPU Ray gave this task, if any."""
    exit_quietly_when_stopped()
    where, attempt = placement(), task_attempt()  # Ray's retries of this task are counted in `attempts`
    cfgs = [cfg.with_(device=task_device(cfg.device)) for cfg in cfgs]
    outcomes = run_group(units, cfgs, data)
    for outcome in outcomes:
        outcome["device"] = "; ".join(part for part in (outcome.get("device"), where) if part)
        outcome["ray_attempt"] = attempt
    return outcomes


@dataclass
class Progress:
    """Driver-side counters for the progress line: done / running / failed, img/s, ETA."""

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    images: float = 0.0

    def line(self, running: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        throughput = self.images / elapsed if elapsed > 0 else 0.0
        return (
            f"[{self.done}/{self.total}] running {running}, failed {self.failed} | "
            f"{throughput:,.0f} img/s | elapsed {_clock(elapsed)} | ETA {_clock(eta)}"
        )


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def drain(
    spec: RunSpec,
    todo: Todo,
    base_lrs: dict[str, float | None],
    data_ref: Any,
    n_train: int,
    store: ResultsStore,
    log: Log,
    fingerprint: str | None = None,
    configure: Callable[[Unit, float], TrainConfig] | None = None,
) -> Progress:
    """Train `todo.train` through Ray tasks (a bounded window in flight), writing each unit's rows as
    it lands; re-exports the Parquet table every `EXPORT_EVERY_S`. `attempts` counts every run of a
    unit: earlier driver attempts, this one, and Ray's own retries of its task. `configure`: a unit's config."""
    configure = configure or (lambda u, lr: spec.train_config(u.protocol, u.seed, lr))
    k, gpus = fuse_size(spec), gpus_per_trial(spec)
    slots = max(1, int(ray.available_resources().get("CPU", 1) // spec.resources.cpus_per_trial))
    window = max(4, 2 * slots)
    progress = Progress(total=len(todo.train))
    pending: dict[Any, list[tuple[Unit, int]]] = {}
    queue = fused_groups(todo.train, k)
    last_export = time.monotonic()
    while queue or pending:
        while queue and len(pending) < window:
            group = queue.pop(0)
            share = min(1.0, len(group) * gpus)  # a fused group asks for its members' GPU shares, at most one GPU
            task = _unit_task.options(num_cpus=spec.resources.cpus_per_trial, num_gpus=share, max_retries=RAY_RETRIES)
            units = [unit for unit, _ in group]
            cfgs = [configure(u, u.lr(base_lrs)) for u in units]
            pending[task.remote(units, cfgs, data_ref)] = group
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=30.0)
        if not ready:
            log(progress.line(min(len(pending), slots)))
            continue
        for ref in ready:
            group = pending.pop(ref)
            try:
                outcomes = ray.get(ref)
            except ray.exceptions.RayError as error:  # retries exhausted: worker died every time
                failure = {"status": "failed", "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
                cfgs = [configure(u, u.lr(base_lrs)) for u, _ in group]
                outcomes = [dict(failure, **config_columns(cfg), ray_attempt=RAY_RETRIES) for cfg in cfgs]
            for (unit, attempts), outcome in zip(group, outcomes, strict=True):
                tries = attempts + 1 + int(outcome.pop("ray_attempt", 0) or 0)
                rows = unit_rows(spec, unit, base_lrs[unit.protocol.name], outcome, tries)
                store.write(stamped(rows, fingerprint))
                progress.done += 1
                progress.failed += outcome["status"] == "failed"
                progress.images += outcome.get("epochs", spec.epochs) * n_train if outcome["status"] == "ok" else 0
                accuracy = outcome.get("test_acc") if outcome.get("test_acc") is not None else outcome.get("valid_acc")
                shown = f"{accuracy:.2f}%" if accuracy is not None else "-"
                log(
                    f"{outcome['status']:>8} {unit.protocol.name:<8} cell {unit.index:>5} seed {unit.seed} "
                    f"lr {outcome['lr']:.4g} acc {shown} ({outcome.get('wall_s') or 0:.0f}s)  "
                    + progress.line(min(len(pending) + len(queue), slots))
                )
        if time.monotonic() - last_export > EXPORT_EVERY_S:
            try:
                store.export_parquet()
            except StoreError as error:  # the SQLite store is intact; the final export raises
                log(f"warning: {error}")
            last_export = time.monotonic()
    return progress


def stamped(rows: list[dict[str, Any]], fingerprint: str | None) -> list[dict[str, Any]]:
    """Rows that no worker filled (no-path, failed in Ray) still record the data of their run."""
    for row in rows:
        if fingerprint and not row.get("data_fingerprint"):
            row["data_fingerprint"] = fingerprint
    return rows
