"""The base-LR finder: a Ray Tune grid of one-epoch trainings of the skip-chain base network.

The paper (§4) finds the base LR once, on the shallowest network (`cells.BASE_CELL`), as the
largest LR with the smallest training loss after one epoch; every scaled protocol then uses
base LR x `cells.scaled_lr`'s factor. Results are cached in `results/base_lr_cache.json`, keyed by
everything that determines them, and recorded per run in `results/<run>/base_lr.json`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import ray

from cells import BASE_CELL
from core.atomic import atomic_write_text
from core.errors import UserError
from pipeline.cluster import Log, gpus_per_trial, task_device
from pipeline.spec import Protocol, RunSpec


class BaseLRError(UserError):
    """No usable base LR (every trial diverged, or an unreadable cache)."""


def cache_key(spec: RunSpec, protocol: Protocol) -> str:
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
        raise BaseLRError("every base-LR trial diverged; lower base_lr_search.low/high")
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

        cfg = spec.train_config(protocol, 0, config["lr"], device=task_device(spec.device)).with_(epochs=search.epochs)
        record = train(BASE_CELL, ray.get(data_ref), cfg)
        loss = record.train_loss[-1] if record.status == "ok" and record.train_loss else math.inf
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
    cache = read_cache(cache_path)
    resolved: dict[str, float | None] = {}
    for protocol in spec.protocols:
        if not protocol.scaled:
            resolved[protocol.name] = None
        elif protocol.base_lr != "auto":
            resolved[protocol.name] = float(protocol.base_lr)  # type: ignore[arg-type]
        else:
            key = cache_key(spec, protocol)
            if key not in cache:
                chosen, losses = find_base_lr(spec, protocol, data_ref, log)
                cache[key] = {"base_lr": chosen, "losses": {str(k): v for k, v in losses.items()}}
                atomic_write_text(cache_path, json.dumps(cache, indent=1))
            else:
                log(f"base LR for {protocol.name!r} = {cache[key]['base_lr']:g} (cached in {cache_path})")
            resolved[protocol.name] = cache[key]["base_lr"]
    return resolved


def read_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BaseLRError(f"{path} is unreadable ({error}); delete it to search the base LRs again") from None
    if not isinstance(cache, dict):
        raise BaseLRError(f"{path} is not a base-LR cache; delete it to search the base LRs again")
    return cache
