"""The base-LR finder (paper §4): a Ray Tune grid of one-epoch, constant-LR trainings of the skip chain.

The paper finds the base LR once, on the shallowest network (`cells.BASE_CELL`), as "the maximal
learning rate which achieves the smallest training loss at the end of one epoch"; every scaled
protocol then uses base LR x `cells.scaled_lr`'s factor. Here:

- each grid LR (log-spaced, `BaseLRSearch`) trains the base network at the run's shape and data for
  `epochs` (1) at that LR held constant, once per seed in `BaseLRSearch.seeds`;
- its score is `SCORE`: the loss of the weights the epoch ends with, over the whole training split
  (`engine.end_of_training_loss`); a diverged trial scores +inf, and so does its grid point;
- the pick is `RULE`: among grid points, the largest LR whose mean loss over seeds is within one
  standard error of the minimum mean (the minimum's SE), so seed noise cannot decide between LRs
  that are tied, and ties go to the larger LR as the paper's "maximal" says.

Every (LR, seed, loss), the per-point mean and SE and the pick go to the cache
(`results/base_lr_cache.json`, keyed by everything that determines them) and to the run's
`base_lr_search.json`; the report plots them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from cells import BASE_CELL
from core.atomic import atomic_write_text
from core.config import TrainConfig
from core.errors import UserError
from core.provenance import code_identity
from pipeline.cluster import Log, gpus_per_trial, task_device
from pipeline.spec import Protocol, RunSpec

if TYPE_CHECKING:
    from pipeline.data import DatasetSplits

SEARCH_FILE = "base_lr_search.json"
"""Per run: protocol -> its finder record (every trial, the per-LR summary, the pick)."""
SCORE = (
    "mean cross-entropy of the weights at the end of the epoch over one full pass of the training split "
    "(train-mode BN, the training augmentation, no update); a non-finite loss = diverged = +inf"
)
RULE = "largest LR whose mean loss over seeds is <= the minimum mean + the standard error of that minimum"


class BaseLRError(UserError):
    """No usable base LR (every grid point diverged, or an unreadable cache)."""


@dataclass(frozen=True)
class GridPoint:
    """One LR of the grid over its seeds: mean loss and its standard error (inf if any seed diverged)."""

    lr: float
    losses: tuple[float, ...]
    mean: float
    se: float
    diverged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "losses": [_finite_or_none(v) for v in self.losses],
            "mean": _finite_or_none(self.mean),
            "se": _finite_or_none(self.se),
            "seeds": len(self.losses),
            "diverged": self.diverged,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def grid_points(losses: Mapping[float, Sequence[float]]) -> list[GridPoint]:
    """Mean and standard error (sample sd / √n; 0 with one seed) per LR, sorted by LR.

    A point with a diverged seed (non-finite loss) scores +inf: an LR that diverges for some seeds
    is not a usable base LR, whatever the other seeds reached."""
    out = []
    for lr in sorted(losses):
        values = tuple(float(v) for v in losses[lr])
        if not values:
            raise ValueError(f"grid point {lr} has no trials")
        diverged = sum(not math.isfinite(v) for v in values)
        if diverged:
            mean = se = math.inf
        else:
            n = len(values)
            mean = math.fsum(values) / n
            se = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0
        out.append(GridPoint(float(lr), values, mean, se, diverged))
    return out


def pick_base_lr(losses: Mapping[float, Sequence[float]]) -> float:
    """`RULE` over per-seed losses {lr: [loss per seed]}; BaseLRError when every point diverged."""
    return pick(grid_points(losses))[0]


def pick(points: Sequence[GridPoint]) -> tuple[float, GridPoint, float]:
    """(picked LR, the minimum point, the threshold = its mean + its SE)."""
    finite = [p for p in points if math.isfinite(p.mean)]
    if not finite:
        raise BaseLRError("every base-LR grid point diverged; lower base_lr_search.low/high")
    best = min(finite, key=lambda p: (p.mean, -p.lr))
    threshold = best.mean + best.se
    chosen = max(p.lr for p in finite if p.mean <= threshold * (1 + 1e-12))
    return chosen, best, threshold


# --- one trial ------------------------------------------------------------------------------------


def finder_config(spec: RunSpec, protocol: Protocol, lr: float, seed: int, device: str | None = None) -> TrainConfig:
    """A grid trial: the run's training settings for the protocol's init, but `epochs` (1) at a
    constant LR, no intermediate evaluation, and the end-of-epoch loss pass switched on."""
    return spec.train_config(protocol, seed, lr, device=device).with_(
        epochs=spec.base_lr_search.epochs, schedule="constant", eval_every=0, end_train_pass=True
    )


def trial_loss(cfg: TrainConfig, data: DatasetSplits) -> float:
    """`SCORE` of one grid trial on the base network; +inf when it diverged."""
    from pipeline.engine import train

    record = train(BASE_CELL, dataclasses.replace(data, eval={}), cfg)  # eval splits play no part
    loss = record.end_train_loss
    return loss if record.status == "ok" and loss is not None and math.isfinite(loss) else math.inf


# --- the grid, through Tune ---------------------------------------------------------------------


def cache_key(spec: RunSpec, protocol: Protocol, fingerprint: str) -> str:
    """Everything the search's outcome depends on: data, network, the trial config, grid, seeds,
    score, rule and the code that trains."""
    search = spec.base_lr_search
    trial = finder_config(spec, protocol, search.grid()[0], 0).to_dict()
    for varying in ("lr", "seed", "threads", "device"):
        trial.pop(varying)
    return json.dumps(
        {
            "dataset": spec.dataset,
            "max_train": spec.max_train,
            "data": fingerprint,
            "device": spec.device,
            "cell": BASE_CELL.official_code,
            "trial": trial,
            "grid": search.grid(),
            "seeds": list(search.seeds),
            "score": SCORE,
            "rule": RULE,
            "code": code_identity(),
        },
        sort_keys=True,
    )


def find_base_lr(spec: RunSpec, protocol: Protocol, data_ref: Any, log: Log) -> dict[str, Any]:
    """Run the grid (one Tune trial per (LR, seed)) and return the search record (`search_record`)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's boxed tables: our own log line says it all
    from ray import tune

    search = spec.base_lr_search
    gpus = gpus_per_trial(spec)

    def trainable(config: dict[str, Any]) -> None:
        cfg = finder_config(spec, protocol, config["lr"], config["seed"], task_device(spec.device))
        tune.report({"train_loss": trial_loss(cfg, ray.get(data_ref))})

    storage = (spec.run_dir / "tune").resolve()
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
        trials.append({"lr": lr, "seed": seed, "loss": _finite_or_none(value), "failed": result.error is not None})
    record = search_record(spec, protocol, losses)
    record["trials"] = sorted(trials, key=lambda t: (t["lr"], t["seed"]))
    table = ", ".join(f"{p['lr']:g}:{_fmt(p['mean'])}±{_fmt(p['se'])}" for p in record["points"])
    log(f"base LR for {protocol.name!r} = {record['base_lr']:g}  (mean ± SE of the end-of-epoch loss: {table})")
    return record


def _fmt(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3f}"


def search_record(spec: RunSpec, protocol: Protocol, losses: Mapping[float, Sequence[float]]) -> dict[str, Any]:
    """What the cache and `base_lr_search.json` keep of one search (JSON: +inf written as null)."""
    points = grid_points(losses)
    chosen, best, threshold = pick(points)
    search = spec.base_lr_search
    return {
        "protocol": protocol.name,
        "init": protocol.init,
        "cell": BASE_CELL.arch_str,
        "epochs": search.epochs,
        "schedule": "constant",
        "seeds": list(search.seeds),
        "score": SCORE,
        "rule": RULE,
        "points": [p.to_dict() for p in points],
        "min_lr": best.lr,
        "threshold": threshold,
        "base_lr": chosen,
    }


def resolve_base_lrs(spec: RunSpec, data_ref: Any, fingerprint: str, log: Log) -> dict[str, float | None]:
    """Per protocol: its fixed base LR, the cached found one, or a fresh Tune search (then cached).
    `data_ref` is the run's data in Ray's object store, `fingerprint` its hash (part of the cache key).
    Writes every search of the run to `<run>/base_lr_search.json`."""
    cache_path = Path(spec.results_dir) / "base_lr_cache.json"
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
                atomic_write_text(cache_path, json.dumps(cache, indent=1))
            else:
                log(f"base LR for {protocol.name!r} = {cache[key]['base_lr']:g} (cached in {cache_path})")
            searches[protocol.name] = {**cache[key], "protocol": protocol.name}
            resolved[protocol.name] = float(cache[key]["base_lr"])
    if searches:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec.run_dir / SEARCH_FILE, json.dumps(searches, indent=1))
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
