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
import math
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cells import BASE_CELL
from core.atomic import atomic_write_text
from core.config import TrainConfig
from core.runfiles import BASE_LR_CACHE, SEARCH_FILE, TUNE_DIR
from pipeline.run.base_lr import (
    cache_key,
    finder_config,
    finite_or_none,
    format_loss,
    read_cache,
    search_record,
    write_cache,
)
from pipeline.run.spec import Protocol, RunSpec
from pipeline.sweep.cluster import Log, gpus_per_trial, task_device
from pipeline.train.data import DatasetSplits
from pipeline.train.engine import train


def trial_loss(cfg: TrainConfig, data: DatasetSplits) -> float:
    """`SCORE` of one grid trial on the base network; +inf when it diverged."""
    record = train(BASE_CELL, dataclasses.replace(data, eval={}), cfg)  # eval splits play no part
    loss = record.end_train_loss
    return loss if record.status == "ok" and loss is not None and math.isfinite(loss) else math.inf


def find_base_lr(spec: RunSpec, protocol: Protocol, data_ref: Any, log: Log) -> dict[str, Any]:
    """Run the grid (one Tune trial per (LR, seed)) and return the search record (`search_record`)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's boxed tables: our own log line says it all
    search = spec.base_lr_search
    gpus = gpus_per_trial(spec)

    def trainable(config: dict[str, Any]) -> None:
        cfg = finder_config(spec, protocol, config["lr"], config["seed"], task_device(spec.device))
        tune.report({"train_loss": trial_loss(cfg, ray.get(data_ref))})

    storage = (spec.run_dir / TUNE_DIR).resolve()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}),
        param_space={"lr": tune.grid_search(search.grid()), "seed": tune.grid_search(list(search.seeds))},
        # Reused actors: one process per slot for the whole grid, not one per trial (each trial is a
        # pure function of its config), which saves a process start per trial and the SIGTERM
        # tracebacks Ray prints now and then when it stops a trial's actor.
        tune_config=tune.TuneConfig(metric="train_loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(name=f"base-lr-{protocol.name}", storage_path=str(storage), verbose=0),
    )
    log(
        f"base LR for {protocol.name!r}: {search.points} LRs x {len(search.seeds)} seeds, {search.epochs} epoch(s) "
        f"at constant LR on {BASE_CELL}"
    )
    losses: dict[float, list[float]] = {}
    trials = []
    for result in tuner.fit():
        loss = (result.metrics or {}).get("train_loss")
        lr, seed = float(result.config["lr"]), int(result.config["seed"])
        value = float(loss) if loss is not None else math.inf
        if result.error is not None:
            log(f"base-LR trial lr={lr:g} seed={seed} failed ({type(result.error).__name__}); scored +inf")
        losses.setdefault(lr, []).append(value)
        trials.append({"lr": lr, "seed": seed, "loss": finite_or_none(value), "failed": result.error is not None})
    record = search_record(spec, protocol, losses)
    record["trials"] = sorted(trials, key=lambda t: (t["lr"], t["seed"]))
    table = ", ".join(f"{p['lr']:g}:{format_loss(p['mean'])}±{format_loss(p['se'])}" for p in record["points"])
    log(f"base LR for {protocol.name!r} = {record['base_lr']:g}  (mean ± SE of the end-of-epoch loss: {table})")
    return record


def resolve_base_lrs(spec: RunSpec, data_ref: Any, fingerprint: str, log: Log) -> dict[str, float | None]:
    """Per protocol: its fixed base LR, the cached found one, or a fresh Tune search (then cached).
    `data_ref` is the run's data in Ray's object store, `fingerprint` its hash (part of the cache key).
    Writes every search of the run to `<run>/base_lr_search.json`."""
    cache_path = Path(spec.results_dir) / BASE_LR_CACHE
    cache = read_cache(cache_path)
    resolved: dict[str, float | None] = {}
    searches: dict[str, Any] = {}
    for protocol in spec.protocols:
        if not protocol.scaled:
            resolved[protocol.name] = None
        elif protocol.base_lr != "auto":
            resolved[protocol.name] = float(protocol.base_lr)  # type: ignore[arg-type]
        else:
            key = cache_key(spec, protocol, fingerprint)
            if key not in cache:
                cache[key] = find_base_lr(spec, protocol, data_ref, log)
                write_cache(cache_path, cache)
            else:
                log(f"base LR for {protocol.name!r} = {cache[key]['base_lr']:g} (cached in {cache_path})")
            searches[protocol.name] = {**cache[key], "protocol": protocol.name}
            resolved[protocol.name] = float(cache[key]["base_lr"])
    if searches:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec.run_dir / SEARCH_FILE, json.dumps(searches, indent=1))
    return resolved
