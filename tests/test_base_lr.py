"""The base-LR finder (paper §4): constant LR for one epoch, end-of-epoch loss, ≥ 3 seeds, largest LR
within one SE of the minimum. Pure parts here; the Tune grid itself runs in test_evaluate_ray."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from core.errors import UserError
from pipeline.run.base_lr import (
    RULE,
    BaseLRError,
    cache_key,
    finder_config,
    grid_points,
    pick,
    pick_base_lr,
    search_record,
)
from pipeline.run.spec import BaseLRSearch
from pipeline.run.spec_load import spec_from_dict
from pipeline.sweep.finder import trial_loss
from pipeline.train.data import DatasetSplits, load_splits

INF = math.inf


def _raw() -> dict:
    return {
        "name": "finder",
        "width": 4,
        "cells_per_stage": 1,
        "epochs": 7,
        "batch_size": 128,
        "protocols": [{"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": "auto"}],
    }


def _spec(**search: object):
    return spec_from_dict({**_raw(), "base_lr_search": search})


def test_largest_lr_within_one_se_of_the_minimum() -> None:
    """Audit defect 3: a strict argmin over one seed let noise pick. 0.2 has the smallest mean, but 0.4's
    mean is within the minimum's standard error: the rule picks the larger, 0.4; 0.8 is beyond it."""
    losses = {0.1: [2.0, 2.1, 1.9], 0.2: [1.5, 1.6, 1.7], 0.4: [1.62, 1.65, 1.68], 0.8: [1.7, 1.7, 1.7]}
    points = {p.lr: p for p in grid_points(losses)}
    assert points[0.2].mean == pytest.approx(1.6) and points[0.2].se == pytest.approx(0.1 / math.sqrt(3))
    assert pick_base_lr(losses) == 0.4
    chosen, best, threshold = pick(list(points.values()))
    assert (chosen, best.lr, threshold) == (0.4, 0.2, pytest.approx(1.6 + 0.1 / math.sqrt(3)))
    assert min(losses, key=lambda lr: sum(losses[lr])) == 0.2  # what a strict argmin would have said


def test_ties_go_to_the_larger_lr_and_one_seed_has_no_se() -> None:
    assert pick_base_lr({0.1: [1.0], 0.2: [1.0], 0.4: [2.0]}) == 0.2
    assert grid_points({0.1: [1.0]})[0].se == 0.0
    assert pick_base_lr({0.1: [1.0], 0.2: [1.0 + 1e-9]}) == 0.1  # no SE with one seed: strict


def test_divergence_scores_infinity() -> None:
    """One diverged seed makes the whole point +inf: it is never picked, however good the others."""
    losses = {0.1: [2.0, 2.0, 2.0], 1.0: [0.5, INF, 0.5], 4.0: [INF, INF, INF]}
    points = grid_points(losses)
    assert [p.diverged for p in points] == [0, 1, 3] and math.isinf(points[1].mean)
    assert pick_base_lr(losses) == 0.1
    with pytest.raises(BaseLRError, match="every base-LR grid point diverged") as error:
        pick_base_lr({0.5: [INF, INF, INF], 1.0: [INF, 0.3, 0.3]})
    assert isinstance(error.value, UserError)


def test_search_defaults_and_record() -> None:
    """≥ 12 log-spaced points over at least 0.01-4 and ≥ 3 seeds by default; the record has every point."""
    search = BaseLRSearch()
    grid = search.grid()
    assert len(grid) >= 12 and grid[0] <= 0.01 and grid[-1] >= 4.0 and len(search.seeds) >= 3
    assert all(b / a == pytest.approx(grid[1] / grid[0], rel=1e-4) for a, b in itertools.pairwise(grid))
    spec = _spec()
    record = search_record(spec, spec.protocols[0], {0.1: [2.0, 2.1, 1.9], 0.2: [1.5, 1.6, 1.7], 0.4: [INF, 1, 1]})
    assert record["base_lr"] == 0.2 and record["rule"] == RULE and record["schedule"] == "constant"
    assert record["points"][2] == {"lr": 0.4, "losses": [None, 1.0, 1.0], "mean": None, "se": None, "seeds": 3,
                                   "diverged": 1}  # fmt: skip
    json.dumps(record, allow_nan=False)


def test_cache_key_covers_what_determines_the_result() -> None:
    spec = _spec()
    protocol = spec.protocols[0]
    key = cache_key(spec, protocol, "data-a")
    assert key == cache_key(spec, protocol, "data-a")
    for other in (
        cache_key(spec, protocol, "data-b"),
        cache_key(_spec(seeds=[0, 1, 2, 3]), protocol, "data-a"),
        cache_key(_spec(points=14), protocol, "data-a"),
        cache_key(spec_from_dict({**_raw(), "batch_size": 64}), protocol, "data-a"),
    ):
        assert other != key
    trial = json.loads(key)["trial"]
    assert trial["schedule"] == "constant" and trial["epochs"] == 1 and trial["end_train_pass"]
    assert trial["init_rule"] == "arch-source" and "lr" not in trial and json.loads(key)["code"]


@pytest.fixture(scope="module")
def small(cifar10_dir: Path) -> DatasetSplits:
    return load_splits("cifar10", cifar10_dir, max_train=512, max_eval=64)


def test_a_grid_trial_is_one_epoch_at_constant_lr_scored_at_its_end(small: DatasetSplits, sgd_lrs: list[float]) -> None:
    """Audit defect 3: the old finder decayed the LR to 0 inside its epoch and scored the epoch-mean loss."""
    spec = _spec()
    cfg = finder_config(spec, spec.protocols[0], 0.46, seed=1, device="cpu")
    assert (cfg.epochs, cfg.schedule, cfg.lr, cfg.seed, cfg.end_train_pass) == (1, "constant", 0.46, 1, True)
    assert (cfg.width, cfg.cells_per_stage, cfg.batch_size, cfg.init_rule) == (4, 1, 128, "arch-source")
    loss = trial_loss(cfg, small)
    assert sgd_lrs == [0.46] * 4 and 0 < loss < 10
    assert trial_loss(cfg.with_(lr=1e7), small) == INF  # divergence scores +inf


# --- issue 17.5 / 20.2-3: finder edge cases, the cache under a lock ------------------------------------


def test_no_pick_above_an_lr_that_diverged_for_every_seed() -> None:
    losses = {0.1: [1.5, 1.5], 0.2: [INF, INF], 0.4: [1.5, 1.5]}
    assert pick_base_lr(losses) == 0.1
    assert pick_base_lr({0.1: [1.5, 1.5], 0.2: [INF, 1.4], 0.4: [1.5, 1.5]}) == 0.4  # diverged for some seeds only
    with pytest.raises(BaseLRError, match="diverged for every seed"):
        pick_base_lr({0.1: [INF, INF], 0.2: [1.0, 1.0]})
    record = search_record(_spec(seeds=[0, 1]), _spec().protocols[0], losses)
    assert record["base_lr"] == 0.1 and record["diverged_cap"] == 0.2 and record["se_defined"] is True


def test_a_one_seed_grid_is_refused_unless_allowed_and_then_has_no_error_bar() -> None:
    with pytest.raises(UserError, match=r"base_lr_search\.seeds has one seed.*allow_one_seed"):
        _spec(seeds=[0])
    spec = _spec(seeds=[0], allow_one_seed=True)
    record = search_record(spec, spec.protocols[0], {0.1: [1.0], 0.2: [0.9]})
    assert record["se_defined"] is False and record["base_lr"] == 0.2
    assert "allow_one_seed" not in spec.identity()["base_lr_search"]  # a permission, not a number


def test_cache_key_covers_torch_threads() -> None:
    spec = _spec()
    threads = spec_from_dict({**_raw(), "resources": {"torch_threads": 2}})
    assert cache_key(spec, spec.protocols[0], "d") != cache_key(threads, threads.protocols[0], "d")


def test_an_errored_trial_fails_the_search_in_one_line_never_scored_as_divergence() -> None:
    from types import SimpleNamespace

    from pipeline.sweep.finder import collect

    def result(lr: float, seed: int, loss: float | None, error: Exception | None = None) -> SimpleNamespace:
        return SimpleNamespace(config={"lr": lr, "seed": seed}, metrics={"train_loss": loss}, error=error)

    protocol = _spec().protocols[0]
    ok = [result(0.1, 0, 1.0), result(0.1, 1, 1.1), result(0.2, 0, INF), result(0.2, 1, 0.9)]
    losses, trials = collect(ok, protocol, print)
    assert losses == {0.1: [1.0, 1.1], 0.2: [INF, 0.9]} and len(trials) == 4  # a non-finite loss is a divergence
    crashed = [*ok[:3], result(0.2, 1, None, RuntimeError("worker died\nsecond line"))]
    with pytest.raises(BaseLRError) as caught:
        collect(crashed, protocol, print)
    message = str(caught.value)
    assert "\n" not in message and "lr=0.2 seed=1" in message and "RuntimeError: worker died" in message


def test_only_a_non_finite_loss_scores_infinity(monkeypatch: pytest.MonkeyPatch, small: DatasetSplits) -> None:
    from types import SimpleNamespace

    import pipeline.sweep.finder

    cfg = finder_config(_spec(), _spec().protocols[0], 0.1, 0)
    for status, loss, expected in (("ok", 1.25, 1.25), ("ok", INF, INF), ("diverged", None, INF)):
        record = SimpleNamespace(status=status, end_train_loss=loss, train_loss=[])
        monkeypatch.setattr(pipeline.sweep.finder, "train", lambda *_, r=record: r)
        assert trial_loss(cfg, small) == expected
    monkeypatch.setattr(
        pipeline.sweep.finder, "train", lambda *_: SimpleNamespace(status="ok", end_train_loss=None, train_loss=[])
    )
    with pytest.raises(RuntimeError):  # an error: Tune retries it, it is not a divergence
        trial_loss(cfg, small)


def _update_many(path: str, prefix: str, n: int, start: float) -> None:
    import time

    from pipeline.run.base_lr import update_cache

    while time.time() < start:
        time.sleep(0.001)
    for i in range(n):
        update_cache(Path(path), f"{prefix}-{i}", {"base_lr": i})


def test_cache_updates_of_two_drivers_are_merged_under_a_lock(tmp_path: Path) -> None:
    import multiprocessing
    import time

    from pipeline.run.base_lr import read_cache, update_cache

    path = tmp_path / "results" / "base_lr_cache.json"
    start = time.time() + 1.0
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_update_many, args=(str(path), p, 40, start)) for p in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    cache = read_cache(path)
    assert sorted(cache) == sorted(f"{p}-{i}" for p in "ab" for i in range(40))  # no update lost
    assert update_cache(path, "a-1", {"base_lr": 99}) == {"base_lr": 1}  # an entry already there wins
