"""The base-LR finder through Ray Tune: one trial per (grid LR, seed), each a one-epoch, constant-LR
training of the skip chain (`cells.BASE_CELL`) scored by `pipeline.run.base_lr.SCORE`, picked by its
`RULE` (the paper's §4: "the maximal learning rate which achieves the smallest training loss at the
end of one epoch", on the shallowest network).

Every (LR, seed, loss), the per-point mean and SE and the pick go to the cache
(`results/base_lr_cache.json`, keyed by everything that determines them) and to the run's
`base_lr_search.json`; the report plots them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cells import BASE_CELL
from core.atomic import atomic_write_text
from core.config import TrainConfig
from core.runfiles import BASE_LR_CACHE, SEARCH_FILE, TUNE_DIR
from pipeline.run.base_lr import (
    BaseLRError,
    cache_key,
    finder_config,
    finite_or_none,
    format_loss,
    read_cache,
    score_of,
    search_record,
    update_cache,
)
from pipeline.run.spec import Protocol, RunSpec
from pipeline.sweep.cluster import Log, exit_quietly_when_stopped, gpus_per_trial, honour_signals, task_device
from pipeline.sweep.drills import maybe_kill_self
from pipeline.train.data import DatasetSplits
from pipeline.train.engine import train

TRIAL_RETRIES = 2
"""Tune re-runs a grid trial that raised or whose worker died this many times (`FailureConfig`)."""


def trial_loss(cfg: TrainConfig, data: DatasetSplits) -> float:
    """`SCORE` of one grid trial on the base network: +inf only for a non-finite loss (a divergence).
    Anything else that goes wrong raises, so that Tune retries the trial instead of scoring it."""
    record = train(BASE_CELL, dataclasses.replace(data, eval={}), cfg)  # eval splits play no part
    if record.status == "diverged":
        return math.inf
    score = "end-pass" if cfg.end_train_pass else "epoch-mean"  # finder_config: the pass is end-pass's
    loss = score_of(score, record.status, record.end_train_loss, record.train_loss)
    if loss is None:
        raise RuntimeError(f"the trial ended {record.status!r} without its {score} loss")
    return loss


def collect(results: Iterable[Any], protocol: Protocol, log: Log) -> tuple[dict[float, list[float]], list[dict]]:
    """Per-LR losses and the trial list from Tune's results; BaseLRError (one line) when a trial still
    failed after its retries: an error is never scored as a divergence."""
    losses: dict[float, list[float]] = {}
    trials, failed = [], []
    for result in results:
        lr, seed = float(result.config["lr"]), int(result.config["seed"])
        loss = (result.metrics or {}).get("train_loss")
        if result.error is not None or loss is None:
            failed.append((lr, seed, result.error))
            continue
        value = float(loss)
        losses.setdefault(lr, []).append(value)
        trials.append({"lr": lr, "seed": seed, "loss": finite_or_none(value)})
    if failed:
        lr, seed, error = failed[0]
        why = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}" if error is not None else "no loss"
        raise BaseLRError(
            f"base-LR search for {protocol.name!r} failed: {len(failed)} trial(s) failed {TRIAL_RETRIES + 1} times, "
            f"e.g. lr={lr:g} seed={seed} ({why}); fix the cause (memory, a dying node) and rerun"
        )
    return losses, sorted(trials, key=lambda t: (t["lr"], t["seed"]))


def find_base_lr(spec: RunSpec, protocol: Protocol, data_ref: Any, log: Log) -> dict[str, Any]:
    """Run the grid (one Tune trial per (LR, seed)) and return the search record (`search_record`)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's boxed tables: our own log line says it all
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C stops the run (Tune's handler outlives the search)
    search = spec.base_lr_search
    gpus = gpus_per_trial(spec)

    def trainable(config: dict[str, Any]) -> None:
        exit_quietly_when_stopped()
        maybe_kill_self()  # fault drill (pipeline.sweep.drills); a no-op in real runs
        cfg = finder_config(spec, protocol, config["lr"], config["seed"], task_device(spec.device))
        tune.report({"train_loss": trial_loss(cfg, ray.get(data_ref))})

    storage = (spec.run_dir / TUNE_DIR).resolve()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}),
        param_space={"lr": tune.grid_search(search.grid()), "seed": tune.grid_search(list(search.seeds))},
        # Reused actors: one process per slot for the whole grid, not one per trial (each trial is a
        # pure function of its config), which saves a process start per trial.
        tune_config=tune.TuneConfig(metric="train_loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"base-lr-{protocol.name}",
            storage_path=str(storage),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
        ),
    )
    log(
        f"base LR for {protocol.name!r}: {search.points} LRs x {len(search.seeds)} seeds, {search.epochs} epoch(s) "
        f"at constant LR on {BASE_CELL}"
    )
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)  # a failed trial's traceback: Tune retries it, `collect` names a last failure
    try:
        results = tuner.fit()
    finally:
        tune_log.setLevel(level)
        honour_signals()  # Tune may have installed its own SIGINT handler
    losses, trials = collect(results, protocol, log)
    record = search_record(spec, protocol, losses)
    record["trials"] = trials
    table = ", ".join(f"{p['lr']:g}:{format_loss(p['mean'])}±{format_loss(p['se'])}" for p in record["points"])
    log(f"base LR for {protocol.name!r} = {record['base_lr']:g}  (mean ± SE of the end-of-epoch loss: {table})")
    return record


def resolve_base_lrs(
    spec: RunSpec, data_ref: Any, fingerprint: str, log: Log, pinned: Mapping[str, float | None] | None = None
) -> dict[str, float | None]:
    """Per protocol: its fixed base LR; the one this run `pinned` on its first start (a cache change never
    reaches an existing run); the cached found one; or a fresh Tune search (then merged into the cache).
    `data_ref` is the run's data in Ray's object store, `fingerprint` its hash (part of the cache key).
    Writes every search of the run to `<run>/base_lr_search.json`."""
    cache_path = Path(spec.results_dir) / BASE_LR_CACHE
    pinned = pinned or {}
    resolved: dict[str, float | None] = {}
    searches: dict[str, Any] = {}
    for protocol in spec.protocols:
        if not protocol.scaled:
            resolved[protocol.name] = None
        elif protocol.base_lr != "auto":
            resolved[protocol.name] = float(protocol.base_lr)  # type: ignore[arg-type]
        elif pinned.get(protocol.name) is not None:
            resolved[protocol.name] = float(pinned[protocol.name])  # type: ignore[arg-type]
            log(f"base LR for {protocol.name!r} = {resolved[protocol.name]:g} (recorded by this run)")
        else:
            key = cache_key(spec, protocol, fingerprint)
            entry = read_cache(cache_path).get(key)
            if entry is None:
                entry = update_cache(cache_path, key, find_base_lr(spec, protocol, data_ref, log))
            else:
                log(f"base LR for {protocol.name!r} = {entry['base_lr']:g} (cached in {cache_path})")
            searches[protocol.name] = {**entry, "protocol": protocol.name}
            resolved[protocol.name] = float(entry["base_lr"])
    if searches:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec.run_dir / SEARCH_FILE, json.dumps(searches, indent=1))
    return resolved
