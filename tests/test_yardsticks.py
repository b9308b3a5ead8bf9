"""analysis/yardsticks.py and the paired statistics under it: every yardstick on each protocol's own
cells (never the union over protocols), the network shape read from the rows, this budget's seed ceiling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import Settings, compare_run, load_run, stats
from analysis.synthetic import synthetic_results, write_run
from analysis.tables import summary_table, tau_tables
from analysis.yardsticks import FLOORS, cost_columns, run_shape
from benchmarks import Reference
from core.shape import NetShape

FAST = Settings(n_resamples=100)
CELLS = list(range(6000, 6024))


def _kendall(x: pd.Series, y: pd.Series) -> float:
    joined = pd.concat([x, y], axis=1, join="inner").dropna()
    return float(sps.kendalltau(joined.iloc[:, 0], joined.iloc[:, 1], variant="b").statistic)


# --- the paired statistics ------------------------------------------------------------------------


def test_kendall_fast_path_equals_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 7, 40, stats.SMALL_N):
        x = rng.integers(0, 6, n).astype(float)
        y = np.round(rng.normal(size=n), 1)
        assert stats.kendall_tau(x, y) == pytest.approx(sps.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert math.isnan(stats.kendall_tau(np.ones(5), np.arange(5.0)))


def test_tau_difference_is_paired_and_seeded() -> None:
    rng = np.random.default_rng(0)
    target = pd.Series(rng.normal(size=60))
    close = target + rng.normal(0, 0.2, 60)
    far = target + rng.normal(0, 2.0, 60)
    est = stats.tau_difference(close, target, far, target, n_resamples=300, seed=3)
    assert est.value == pytest.approx(_kendall(close, target) - _kendall(far, target))
    assert est.low > 0 and est.n == 60  # clearly closer: the paired CI excludes 0
    assert est == stats.tau_difference(close, target, far, target, n_resamples=300, seed=3)  # deterministic
    same = stats.tau_difference(close, target, close, target, n_resamples=50)
    assert same.value == 0 and same.low == 0 and same.high == 0  # pairing cancels what both share
    assert not stats.tau_difference(close[:2], target, far, target).ok  # too few cells


def test_seed_ceiling_is_the_mean_over_seed_pairs() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=30)
    seeds = {s: truth + rng.normal(0, 0.5, 30) for s in (0, 1, 2)}
    long = pd.concat([pd.DataFrame({"seed": s, "value": v}, index=range(30)) for s, v in seeds.items()])
    est = stats.seed_ceiling(long, n_resamples=200)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = np.mean([sps.kendalltau(seeds[a], seeds[b]).statistic for a, b in pairs])
    assert est.value == pytest.approx(expected) and est.low < est.value < est.high and est.n == 30
    one = stats.seed_ceiling(long[long["seed"] == 0])
    assert not one.ok and "one seed" in one.note


# --- the network shape from the rows -------------------------------------------------------------------


def test_shape_is_read_from_the_rows() -> None:
    rows = pd.DataFrame(
        {"dataset": ["cifar10"] * 2, "width": [4, 4], "cells_per_stage": [1, 1], "image_size": [16, 16]}
    )
    assert run_shape(rows, "cifar10") == NetShape(4, 1, 16, 10)
    older = rows.drop(columns=["image_size"])  # a run written before the column: the dataset's native side
    assert run_shape(older, "cifar10") == NetShape(4, 1, 32, 10)
    nulls = rows.assign(image_size=[None, None])
    assert run_shape(nulls, "cifar10") == NetShape(4, 1, 32, 10)
    imagenet = pd.DataFrame({"dataset": ["imagenet16_120"], "width": [8], "cells_per_stage": [2]})
    assert run_shape(imagenet, "imagenet16_120") == NetShape(8, 2, 16, 120)


def test_spec_yaml_is_no_longer_read_for_the_shape(tmp_path: Path, csv_ref: Reference) -> None:
    results = synthetic_results(csv_ref, "cifar10", CELLS, protocols=("nb201",))
    run_dir = write_run(tmp_path / "run", results)
    (run_dir / "spec.yaml").write_text("image_size: 8\nwidth: 99\n")  # ignored: the rows say C=16 N=5, native side
    comparison = compare_run(load_run(run_dir, csv_ref), csv_ref, None, None, FAST)[0]
    assert comparison.floor_shape == NetShape(16, 5, 32, 10).describe()


# --- each protocol's own cells ------------------------------------------------------------------------


def _run_with_a_failed_and_a_diverged_nb201_row(tmp_path: Path, ref: Reference) -> Path:
    results = synthetic_results(ref, "cifar10", CELLS, diverged=[("nb201", CELLS[3], 0)], noise=1.0)
    failed = (results["protocol"] == "nb201") & (results["nb201_index"] == CELLS[7])
    results.loc[failed, ["status", "test_acc", "valid_acc"]] = ["failed", np.nan, np.nan]
    return write_run(tmp_path / "run", results)


@pytest.mark.parametrize("diverged", ["chance", "drop"])
def test_yardsticks_are_on_each_protocols_own_cells(tmp_path: Path, csv_ref: Reference, diverged: str) -> None:
    """The union bug: one failed and one diverged `nb201` row. The floor beside `nb201`'s τ must be
    counted on `nb201`'s cells (23 with the diverged one at chance, 22 dropped), not on the 24 of the union."""
    run_dir = _run_with_a_failed_and_a_diverged_nb201_row(tmp_path, csv_ref)
    comparison = compare_run(load_run(run_dir, csv_ref, diverged=diverged), csv_ref, None, None, FAST)[0]
    lost = [CELLS[7]] if diverged == "chance" else [CELLS[3], CELLS[7]]
    own = pd.Index([c for c in CELLS if c not in lost])
    assert list(comparison.cells_by_protocol["nb201"]) == list(own)
    assert len(comparison.cells_by_protocol["scaled"]) == len(CELLS)

    published = csv_ref.table("cifar10", "test")["value"]
    params = cost_columns(pd.Index(CELLS), NetShape(16, 5, 32, 10))["params"]
    on_own, on_union = _kendall(params.reindex(own), published), _kendall(params, published)
    assert on_own != pytest.approx(on_union)  # the two cell sets give different floors
    summary = comparison.summary.set_index("protocol")
    assert summary.loc["nb201", "floor_params"].value == pytest.approx(on_own)
    assert summary.loc["nb201", "floor_params"].n == len(own)
    assert summary.loc["scaled", "floor_params"].value == pytest.approx(on_union)
    assert summary.loc["nb201", "bar"].n == len(own)
    # the paired difference is exactly τ − floor on those cells
    nb201 = summary.loc["nb201"]
    assert nb201["vs_floor"].value == pytest.approx(nb201["tau"].value - on_own)

    curves = comparison.tau_at_k
    floor = curves[(curves["curve"] == FLOORS["params"]) & (curves["k"] == 100)].set_index("cells_of")
    assert floor.loc["nb201", "n"] == len(own) and floor.loc["scaled", "n"] == len(CELLS)
    # every table that shows a τ shows the protocol's own floor
    assert f"{on_own:.3f}" in summary_table(comparison).set_index("protocol").loc["nb201", "params floor τ"]
    pairs = comparison.paper_comparison.set_index("comparison")
    assert pairs.loc["nb201 − published", "floor_params"].value == pytest.approx(on_own)
    assert pairs.loc["scaled − nb201", "floor_params"].n == len(own)  # a pair: the cells both have
    captions = [caption for caption, _ in tau_tables(comparison)]
    assert captions[0].startswith(f"`nb201`: {len(own)} cells") and captions[1].startswith("`scaled`: 24 cells")


def test_this_budgets_ceiling_with_two_seeds_and_without(tmp_path: Path, csv_ref: Reference) -> None:
    two = write_run(tmp_path / "two", synthetic_results(csv_ref, "cifar10", CELLS, seeds=(0, 1), noise=1.0))
    comparison = compare_run(load_run(two, csv_ref), csv_ref, None, None, FAST)[0]
    ceiling = comparison.summary.set_index("protocol").loc["nb201", "ceiling"]
    run = load_run(two, csv_ref)
    seeds = run.seeds[(run.seeds["protocol"] == "nb201") & (run.seeds["metric"] == "test")]
    wide = seeds.pivot(index="nb201_index", columns="seed", values="value")
    assert ceiling.value == pytest.approx(_kendall(wide[0], wide[1])) and ceiling.n == len(CELLS)
    assert math.isfinite(ceiling.low) and math.isfinite(ceiling.high)
    assert any("`nb201`: this budget's seed ceiling (τ between two of its own seeds" in f for f in comparison.findings)

    one = write_run(tmp_path / "one", synthetic_results(csv_ref, "cifar10", CELLS, noise=1.0))
    comparison = compare_run(load_run(one, csv_ref), csv_ref, None, None, FAST)[0]
    assert not comparison.summary.set_index("protocol").loc["nb201", "ceiling"].ok
    assert any("this budget's seed ceiling is not measured" in f for f in comparison.findings)
    assert summary_table(comparison)["this budget's seed ceiling τ"].str.startswith("not measured").all()
