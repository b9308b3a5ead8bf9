"""The base-LR finder's bookkeeping (paper §4), without Ray or torch: the grid trial's config, the
score and the pick rule, the search record, and the cache of found base LRs.

- each grid LR (log-spaced, `BaseLRSearch`) trains the base network (`cells.BASE_CELL`) at the run's
  shape and data for `epochs` (1) at that LR held constant, once per seed (`finder_config`);
- its score is `SCORE`; a diverged trial scores +inf, and so does its grid point;
- the pick is `RULE`: among grid points, the largest LR whose mean loss over seeds is within one
  standard error of the minimum mean (the minimum's SE), so seed noise cannot decide between LRs
  that are tied, and ties go to the larger LR as the paper's "maximal" says; never at or above an LR
  that diverged for every seed. A one-seed grid (no standard error) needs `allow_one_seed`.
- a trial that errors (crash, out of memory) is not a divergence: Tune retries it, then the search fails.
- the cache is shared by runs (merged under a lock); a run pins the base LRs it used in its own store.

The trials themselves run through Ray Tune in `pipeline.sweep.finder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cells import BASE_CELL
from core.atomic import atomic_write_text
from core.config import TrainConfig
from core.errors import UserError
from core.provenance import code_identity
from pipeline.run.spec import Protocol, RunSpec

SCORE = (
    "mean cross-entropy of the weights at the end of the epoch over one full pass of the training split "
    "(train-mode BN, the training augmentation, no update); a non-finite loss = diverged = +inf"
)
SCORES: dict[str, str] = {
    "end-pass": SCORE,
    "epoch-mean": "running mean cross-entropy over the epoch's training steps (each batch scored by the weights "
    "of its step, so it favours fast early progress); a non-finite loss = diverged = +inf",
}
"""`base_lr_search.score` -> what it means. An audit found the two pick 0.3 and 0.5 on the same grid."""
RULE = (
    "largest LR whose mean loss over seeds is <= the minimum mean + the standard error of that minimum, "
    "below the smallest LR that diverged for every seed"
)


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
            "losses": [finite_or_none(v) for v in self.losses],
            "mean": finite_or_none(self.mean),
            "se": finite_or_none(self.se),
            "seeds": len(self.losses),
            "diverged": self.diverged,
        }


def finite_or_none(value: float) -> float | None:
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


def divergence_cap(points: Sequence[GridPoint]) -> float:
    """The smallest LR that diverged for every seed (+inf if none): no pick lies at or above it."""
    return min((p.lr for p in points if p.diverged == len(p.losses)), default=math.inf)


def pick(points: Sequence[GridPoint]) -> tuple[float, GridPoint, float]:
    """(picked LR, the minimum point, the threshold = its mean + its SE), among the finite points below
    `divergence_cap`: an LR above one that diverged for every seed is never picked."""
    cap = divergence_cap(points)
    finite = [p for p in points if math.isfinite(p.mean) and p.lr < cap]
    if not finite:
        raise BaseLRError(
            f"every base-LR grid point diverged (or lies above {cap:g}, which diverged for every seed); "
            "lower base_lr_search.low/high"
        )
    best = min(finite, key=lambda p: (p.mean, -p.lr))
    threshold = best.mean + best.se
    chosen = max(p.lr for p in finite if p.mean <= threshold * (1 + 1e-12))
    return chosen, best, threshold


def finder_config(spec: RunSpec, protocol: Protocol, lr: float, seed: int, device: str | None = None) -> TrainConfig:
    """A grid trial: the run's training settings for the protocol's init, but `epochs` (1) at a
    constant LR, no intermediate evaluation, and the end-of-epoch loss pass on for the `end-pass` score."""
    search = spec.base_lr_search
    return spec.train_config(protocol, seed, lr, device=device).with_(
        epochs=search.epochs, schedule="constant", eval_every=0, end_train_pass=search.score == "end-pass"
    )


def score_of(score: str, status: str, end_train_loss: float | None, train_loss: Sequence[float] | None) -> float | None:
    """A trial's `SCORES[score]` from its record or row: +inf when it diverged, None when not measured."""
    if status == "diverged":
        return math.inf
    last = train_loss[-1] if train_loss is not None and len(train_loss) else None
    value = end_train_loss if score == "end-pass" else last
    if value is None:
        return None
    return float(value) if math.isfinite(value) else math.inf


def cache_key(spec: RunSpec, protocol: Protocol, fingerprint: str) -> str:
    """Everything the search's outcome depends on: data, network, the trial config, grid, seeds,
    score, rule and the code that trains."""
    search = spec.base_lr_search
    trial = finder_config(spec, protocol, search.grid()[0], 0).to_dict()
    for varying in ("lr", "seed", "device"):  # threads stay: they change the losses' rounding
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
            "score": SCORES[search.score],
            "rule": RULE,
            "code": code_identity(),
        },
        sort_keys=True,
    )


def format_loss(value: float | None) -> str:
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
        "score": SCORES[search.score],
        "score_name": search.score,
        "rule": RULE,
        "points": [p.to_dict() for p in points],
        "min_lr": best.lr,
        "threshold": threshold,
        "diverged_cap": finite_or_none(divergence_cap(points)),
        "se_defined": len(search.seeds) > 1,
        "base_lr": chosen,
    }


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


def write_cache(path: Path, cache: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(cache, indent=1))


@contextlib.contextmanager
def cache_locked(path: Path) -> Iterator[None]:
    """Hold `<cache>.lock` (fcntl, dropped by the kernel however the holder exits): one read-merge-write
    of the cache at a time, so that two drivers finishing searches together both keep their entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_cache(path: Path, key: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Add one search to the cache under its lock, merging with what other drivers wrote meanwhile; an
    entry already there for `key` wins (every driver then agrees on it). Returns the entry kept."""
    with cache_locked(path):
        cache = read_cache(path)
        kept = cache.setdefault(key, dict(record))
        write_cache(path, cache)
    return kept


PIN_KEY = "base_lrs"
"""`run_meta` key: {protocol: base LR} this run trained with, recorded the first time, reused on resume."""


def check_pinned(pinned: Mapping[str, float | None], stored: Mapping[str, set[float]], where: str) -> None:
    """The base LRs a run records (`pinned`) against those its stored rows carry ({protocol: values}):
    one value per protocol, the recorded one; else BaseLRError naming both."""
    for name, values in sorted(stored.items()):
        expected = pinned.get(name)
        if len(values) > 1 or (expected is not None and values != {expected}):
            shown = ", ".join(f"{v:g}" for v in sorted(values))
            recorded = f", the run records {expected:g}" if expected is not None else ""
            raise BaseLRError(
                f"base LR differs within {where}: protocol {name!r} has rows trained at base LR {shown}{recorded}; "
                "these rows are not one experiment: give this run a new name (--set name=...) to start afresh"
            )
