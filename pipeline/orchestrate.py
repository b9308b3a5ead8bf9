"""Ray orchestration: the only module that imports Ray.

Why Ray core tasks for the sweep and Tune only for the base-LR grid: a Tune trial costs about
2.5 s more than a task on this machine (11 h over 15,625 cells), and the sweep needs none of
Tune's search machinery. Tasks give retries of killed workers and lost nodes (`max_retries`),
fractional GPUs, and run unchanged on a laptop (embedded `ray.init()`) or a cluster (`RAY_ADDRESS`,
or as a Ray Job: `make submit`, whose entrypoint Ray gives the cluster's `host:port` in RAY_ADDRESS).
The driver is the only writer of the results store; a rerun skips what is finished.

GPUs: a task asks for `gpus_per_trial` (a fraction: several nets share one GPU, pipeline.packing);
Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned, so inside the task torch's `cuda` (= cuda:0)
is that GPU. The `device` column records the assignment: `...; ray gpu ids [0], CUDA_VISIBLE_DEVICES=0;
node 10.0.0.7`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from cells import BASE_CELL
from pipeline.spec import Protocol, RunSpec
from pipeline.store import ResultsStore, StoreError
from pipeline.units import FINISHED, Unit, plan_units
from pipeline.worker import FAULT_ENV, TRIAL_PID_ENV, no_path_row, run_unit, unit_rows

Log = Callable[[str], None]
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray in a job's entrypoint (`ray job submit`): the job's runtime env, as JSON."""


class ClusterError(RuntimeError):
    """Ray could not be started or reached; the message says which address and what to do."""


def check_address(address: str | None) -> None:
    """Fail in seconds, not minutes, when a given `host:port` does not answer (Ray's own retries are slow)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ClusterError(
            f"Ray address {address!r} is a dashboard (job submission) address: submit the run with "
            f"`make submit RAY_ADDRESS={address}`, or give the driver the cluster's host:port (default port 6379)"
        )
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not host:port; fix RAY_ADDRESS / --address")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({error.strerror or error}); check RAY_ADDRESS / --address, "
            "or unset it to run locally"
        ) from None


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start an embedded local Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = _drill_env()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "configure_logging": True,
        "logging_level": "warning",
        "log_to_driver": True,
        "runtime_env": {"env_vars": env} if env else None,
    }
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # Ray 2.60 may still pick the host's address for an embedded instance; set
            # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before starting to keep it on loopback (tests do).
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError or its own types
        where = f"Ray cluster at {address}" if address else "a local Ray instance"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClusterError(
            f"cannot reach {where} ({first_line}); check RAY_ADDRESS / --address, or unset it to run locally"
        ) from None


def _drill_env() -> dict[str, str]:
    """Fault-drill variables of the driver, for workers on every node. In a Ray Job, those that the job's
    runtime env already sets are left to it (Ray refuses a driver env var that the job also sets)."""
    job_env = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env", {}).get("env_vars", {})
    return {name: os.environ[name] for name in (FAULT_ENV, TRIAL_PID_ENV) if name in os.environ and name not in job_env}


def running_as_ray_job() -> bool:
    return JOB_CONFIG_ENV in os.environ


def job_path_warnings(spec: RunSpec) -> list[str]:
    """In a Ray Job the driver runs in a copy of the repo on the head node that Ray deletes in time;
    relative paths point into it (data re-read or re-downloaded per job, results lost)."""
    if not running_as_ray_job():
        return []
    where = f"this job's working directory ({Path.cwd()}), which Ray deletes in time"
    warnings = []
    if not Path(spec.data_dir).is_absolute():
        warnings.append(f"warning: data_dir {spec.data_dir!r} is inside {where}: pass --data-dir on the head's disk")
    if not Path(spec.results_dir).is_absolute() and not spec.results_uri:
        warnings.append(
            f"warning: results_dir {spec.results_dir!r} is inside {where}: pass --results-dir on shared storage "
            "or set results_uri"
        )
    return warnings


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _task_device(preferred: str) -> str:
    """CUDA when Ray gave this task a GPU and torch sees one; CPU otherwise."""
    if preferred == "cpu":
        return "cpu"
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _placement() -> str:
    """Where Ray ran this task, for the `device` column: its GPU ids, the CUDA_VISIBLE_DEVICES Ray set
    from them (so that torch's `cuda` is the assigned GPU), and the node's IP."""
    parts = []
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        ids = ", ".join(str(i) for i in gpu_ids)
        parts.append(f"ray gpu ids [{ids}], CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    parts.append(f"node {ray.util.get_node_ip_address()}")
    return "; ".join(parts)


@ray.remote
def _unit_task(spec: RunSpec, unit: Unit, base_lr: float | None, data: Any) -> dict:
    outcome = run_unit(spec, unit, base_lr, data, _task_device(spec.device), spec.resources.torch_threads)
    outcome["device"] = "; ".join(part for part in (outcome.get("device"), _placement()) if part)
    return outcome


def gpus_per_trial(spec: RunSpec) -> float:
    """Resolved GPU fraction: a number from the spec, or `auto` packing by model size."""
    from pipeline.packing import gpu_fraction

    value = spec.resources.gpus_per_trial
    if value == "auto":
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        return gpu_fraction(spec.width, spec.cells_per_stage) if has_gpus else 0.0
    return float(value)


# --- the base-LR finder (Ray Tune) ---------------------------------------------------------


def _base_lr_key(spec: RunSpec, protocol: Protocol) -> str:
    search = spec.base_lr_search
    return json.dumps(
        {
            "dataset": spec.dataset,
            "width": spec.width,
            "cells_per_stage": spec.cells_per_stage,
            "batch_size": spec.batch_size,
            "init": protocol.init,
            "grid": search.grid(),
            "epochs": search.epochs,
            "tolerance": search.tolerance,
            "max_train": spec.max_train,
        },
        sort_keys=True,
    )


def pick_base_lr(losses: dict[float, float], tolerance: float) -> float:
    """The paper's criterion (§4): the largest LR whose one-epoch training loss is the smallest.

    `tolerance` (relative) treats losses within min x (1 + tolerance) as tied; 0 = strict argmin.
    Diverged trials carry loss inf and are never picked unless all diverged (then: error).
    """
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise RuntimeError("every base-LR trial diverged; lower base_lr_search.low/high")
    best = min(finite.values())
    return max(lr for lr, loss in finite.items() if loss <= best * (1 + tolerance))


def find_base_lr(spec: RunSpec, protocol: Protocol, data_ref: Any, log: Log) -> tuple[float, dict[float, float]]:
    """Grid over log-spaced LRs on the skip-chain base network, one Tune trial per LR."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's boxed tables: our own log line says it all
    from ray import tune

    search = spec.base_lr_search
    gpus = gpus_per_trial(spec)

    def trainable(config: dict[str, Any]) -> None:
        from pipeline.engine import train

        record = train(
            BASE_CELL,
            ray.get(data_ref),
            width=spec.width,
            cells_per_stage=spec.cells_per_stage,
            init_rule=protocol.init,
            lr=config["lr"],
            epochs=search.epochs,
            batch_size=spec.batch_size,
            seed=0,
            device=_task_device(spec.device),
            threads=spec.resources.torch_threads,
        ).to_dict()
        loss = record["train_loss"][-1] if record["status"] == "ok" and record["train_loss"] else math.inf
        tune.report({"train_loss": loss})

    storage = (spec.run_dir / "tune").resolve()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}),
        param_space={"lr": tune.grid_search(search.grid())},
        tune_config=tune.TuneConfig(metric="train_loss", mode="min"),
        run_config=tune.RunConfig(name=f"base-lr-{protocol.name}", storage_path=str(storage), verbose=0),
    )
    log(f"base LR for {protocol.name!r}: {search.points} trials x {search.epochs} epoch(s) on {BASE_CELL}")
    results = tuner.fit()
    losses = {}
    for result in results:
        loss = (result.metrics or {}).get("train_loss", math.inf)
        losses[float(result.config["lr"])] = float(loss) if loss is not None else math.inf
    chosen = pick_base_lr(losses, search.tolerance)
    table = ", ".join(f"{lr:g}:{loss:.3f}" for lr, loss in sorted(losses.items()))
    log(f"base LR for {protocol.name!r} = {chosen:g}  (final train loss per LR: {table})")
    return chosen, losses


def resolve_base_lrs(spec: RunSpec, data_ref: Any, log: Log) -> dict[str, float | None]:
    """Per protocol: its fixed base LR, the cached found one, or a fresh Tune search (then cached)."""
    cache_path = Path(spec.results_dir) / "base_lr_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    resolved: dict[str, float | None] = {}
    for protocol in spec.protocols:
        if not protocol.scaled:
            resolved[protocol.name] = None
        elif protocol.base_lr != "auto":
            resolved[protocol.name] = float(protocol.base_lr)  # type: ignore[arg-type]
        else:
            key = _base_lr_key(spec, protocol)
            if key not in cache:
                chosen, losses = find_base_lr(spec, protocol, data_ref, log)
                cache[key] = {"base_lr": chosen, "losses": {str(k): v for k, v in losses.items()}}
                tmp = cache_path.with_name(cache_path.name + ".tmp")
                tmp.write_text(json.dumps(cache, indent=1))
                os.replace(tmp, cache_path)
            else:
                log(f"base LR for {protocol.name!r} = {cache[key]['base_lr']:g} (cached in {cache_path})")
            resolved[protocol.name] = cache[key]["base_lr"]
    return resolved


# --- the sweep -----------------------------------------------------------------------------


@dataclass
class Progress:
    """Driver-side counters for the progress line: done / running / failed, img/s, ETA."""

    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    train_seconds: float = 0.0
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


def run_sweep(
    spec: RunSpec, selected: list[int], data: Any, n_train: int, store: ResultsStore, log: Log
) -> dict[str, int]:
    """Train every unfinished unit through Ray, writing each unit's rows as it lands."""
    data_ref = ray.put(data)
    base_lrs = resolve_base_lrs(spec, data_ref, log)
    record = spec.run_dir / "base_lr.json"  # next to spec.yaml: the base LRs this run's scaled protocols used
    record.with_name("base_lr.json.tmp").write_text(json.dumps(base_lrs, indent=1))
    os.replace(record.with_name("base_lr.json.tmp"), record)
    units, no_path = plan_units(spec, selected)
    stored = store.statuses()

    store.write(
        no_path_row(spec, p, i, s, base_lrs[p.name])
        for p, s, i in no_path
        if stored.get((p.name, i, s), ("",))[0] != "no-path"
    )

    todo: list[tuple[Unit, int]] = []
    skipped = exhausted = 0
    for unit in units:
        status, attempts = stored.get(unit.key, ("", 0))
        if status in FINISHED:
            skipped += 1
        elif attempts >= spec.max_attempts:
            exhausted += 1
        else:
            todo.append((unit, attempts))
    log(
        f"{len(selected)} cells -> {len(units)} units ({len(no_path)} no-path rows); "
        f"{skipped} already finished, {exhausted} failed {spec.max_attempts}x (not retried), {len(todo)} to train"
    )

    gpus = gpus_per_trial(spec)
    task = _unit_task.options(num_cpus=spec.resources.cpus_per_trial, num_gpus=gpus, max_retries=3)
    slots = max(1, int(ray.available_resources().get("CPU", 1) // spec.resources.cpus_per_trial))
    window = max(4, 2 * slots)
    progress = Progress(total=len(todo))
    pending: dict[Any, tuple[Unit, int]] = {}
    queue = list(todo)
    last_export = time.monotonic()
    while queue or pending:
        while queue and len(pending) < window:
            unit, attempts = queue.pop(0)
            pending[task.remote(spec, unit, base_lrs[unit.protocol.name], data_ref)] = (unit, attempts)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=30.0)
        if not ready:
            log(progress.line(min(len(pending), slots)))
            continue
        for ref in ready:
            unit, attempts = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:  # retries exhausted: worker died every time
                outcome = {
                    "lr": unit.lr(base_lrs[unit.protocol.name]),
                    "status": "failed",
                    "error": f"{type(error).__name__}: {str(error).splitlines()[0]}",
                }
            store.write(unit_rows(spec, unit, base_lrs[unit.protocol.name], outcome, attempts + 1))
            progress.done += 1
            progress.failed += outcome["status"] == "failed"
            progress.images += spec.epochs * n_train if outcome["status"] == "ok" else 0
            accuracy = outcome.get("test_acc") if outcome.get("test_acc") is not None else outcome.get("valid_acc")
            shown = f"{accuracy:.2f}%" if accuracy is not None else "-"
            log(
                f"{outcome['status']:>8} {unit.protocol.name:<8} cell {unit.cell:>5} seed {unit.seed} "
                f"lr {outcome['lr']:.4g} acc {shown} ({outcome.get('wall_s') or 0:.0f}s)  "
                + progress.line(min(len(pending) + len(queue), slots))
            )
        if time.monotonic() - last_export > 60:
            try:
                store.export_parquet()
            except StoreError as error:  # the SQLite store is intact; the final export raises
                log(f"warning: {error}")
            last_export = time.monotonic()
    store.export_parquet()
    return {"units": len(units), "trained": progress.done, "failed": progress.failed, "skipped": skipped}


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- entry points for the CLI --------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    table: Path
    counts: dict[str, int]


def _prepare(spec: RunSpec, log: Log) -> tuple[Any, ResultsStore]:
    """Everything that can fail on user input, before Ray starts: data, results folder."""
    from pipeline.data import load_splits

    data = load_splits(
        spec.dataset, spec.data_dir, download=spec.download, max_train=spec.max_train, max_eval=spec.max_eval
    )
    log(data.describe())
    store = ResultsStore(spec.run_dir, spec.results_uri)
    spec_file = spec.run_dir / "spec.yaml"
    tmp = spec_file.with_name("spec.yaml.tmp")
    tmp.write_text(spec.to_yaml())
    os.replace(tmp, spec_file)
    return data, store


def evaluate(spec: RunSpec, address: str | None, log: Log = print) -> RunOutcome:
    """The main job: every selected cell under every protocol and seed, resumable."""
    check_address(address)
    selected = spec.cells.resolve()
    for warning in job_path_warnings(spec):
        log(warning)
    data, store = _prepare(spec, log)
    try:
        connect(address)
        try:
            counts = run_sweep(spec, selected, data, len(data.train_y), store, log)
        finally:
            shutdown()
        table = store.export_parquet()
    finally:
        store.close()
    return RunOutcome(spec.run_dir, table, counts)


def find_base_lrs(spec: RunSpec, address: str | None, log: Log = print) -> dict[str, float | None]:
    """`find-base-lr`: resolve (and cache) every scaled protocol's base LR."""
    check_address(address)
    data, store = _prepare(spec, log)
    store.close()
    connect(address)
    try:
        return resolve_base_lrs(spec, ray.put(data), log)
    finally:
        shutdown()
