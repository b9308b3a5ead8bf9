"""analysis/verdicts.py: the words follow the interval. A protocol is "above", "below" or "closer" only
where the paired bootstrap CI of the τ difference on the same cells excludes 0; the fidelity gate
passes only then; the headline says what the gate says."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis import Settings, compare_run, load_run
from analysis.report import write_report
from analysis.stats import Estimate
from analysis.synthetic import synthetic_results, write_run
from analysis.verdicts import ABOVE, BELOW, LEVEL, UNKNOWN, fidelity_gate, headline_sentence, side
from analysis.yardsticks import SeedRange
from benchmarks import Reference

FAST = Settings(n_resamples=100)
CELLS = list(range(7000, 7030))


def test_side_reads_the_interval_not_the_point() -> None:
    assert side(Estimate(0.2, 0.01, 0.4, 24)) == ABOVE
    assert side(Estimate(-0.2, -0.4, -0.01, 24)) == BELOW
    assert side(Estimate(0.195, -0.05, 0.41, 24)) == LEVEL  # point above, interval holds 0
    assert side(Estimate(0.1, n=2)) == UNKNOWN  # no interval, no verdict


def _comparison(vs_floor: Estimate, vs_bar: Estimate, tau_difference: Estimate | None = None) -> SimpleNamespace:
    """The report's own numbers of audit 17: `nb201` τ 0.674 [0.440, 0.866] vs a params floor of 0.479."""
    summary = pd.DataFrame(
        [
            {
                "protocol": "nb201",
                "cells": 24,
                "tau": Estimate(0.674, 0.440, 0.866, 24),
                "floor_params": Estimate(0.479, 0.2, 0.7, 24),
                "bar": Estimate(0.732, 0.5, 0.9, 24),
                "nb201_seeds": SeedRange(0.8, 0.9, 24),
                "vs_floor": vs_floor,
                "vs_bar": vs_bar,
            }
        ]
    )
    pairs = pd.DataFrame(
        [{"new": "scaled", "old": "nb201", "gain": Estimate(0.3, -0.2, 0.8, 24), "tau_difference": tau_difference}]
        if tau_difference is not None
        else [],
        columns=["new", "old", "gain", "tau_difference"],
    )
    return SimpleNamespace(summary=summary, paper_comparison=pairs)


def test_the_gate_of_the_audit_is_not_distinguishable_from_the_floor() -> None:
    c = _comparison(Estimate(0.195, -0.05, 0.41, 24), Estimate(-0.058, -0.3, 0.2, 24), Estimate(0.05, -0.1, 0.2, 24))
    gate = fidelity_gate(c)
    assert gate.startswith("Fidelity gate: not passed: not distinguishable from the floor.")
    assert "passed." not in gate.replace("not passed", "")
    headline = headline_sentence(c)
    assert "not distinguishable from the parameter-count floor's (fidelity gate not passed)" in headline
    assert "not distinguishable from NB201's 12-epoch bar" in headline
    assert "no change shown" in headline and "not distinguishably closer to or farther from" in headline
    for word in ("above", "better", "(fidelity gate passed)"):
        assert word not in headline


def test_the_gate_passes_and_fails_only_on_the_interval() -> None:
    passed = _comparison(Estimate(0.2, 0.05, 0.35, 24), Estimate(0.1, 0.02, 0.2, 24), Estimate(0.1, 0.01, 0.2, 24))
    assert fidelity_gate(passed).startswith("Fidelity gate: passed.")
    headline = headline_sentence(passed)
    assert "is above the parameter-count floor's (fidelity gate passed) and above NB201's 12-epoch bar" in headline
    assert "its ranking is closer to the published one" in headline
    below = _comparison(Estimate(-0.2, -0.35, -0.05, 24), Estimate(-0.3, -0.4, -0.2, 24))
    assert fidelity_gate(below).startswith("Fidelity gate: not passed: below the floor.")
    assert "below the parameter-count floor's (fidelity gate not passed) and below NB201's" in headline_sentence(below)
    few = _comparison(Estimate(0.2, 0.05, 0.35, 24), Estimate(0.1, 0.02, 0.2, 24))
    few.summary["cells"] = 5
    assert fidelity_gate(few).startswith("Fidelity gate: not judged") and headline_sentence(few) == ""


@pytest.mark.parametrize("noise", [0.3, 8.0])
def test_every_sentence_follows_its_interval(tmp_path: Path, csv_ref: Reference, noise: float) -> None:
    """On a real comparison: each "above / below / not distinguishable" clause, the gate and the
    "ranks closer / farther" sentence of a pair match the side of their paired CI."""
    results = synthetic_results(csv_ref, "cifar10", CELLS, noise=noise, diverged=[("scaled", CELLS[0], 0)])
    run_dir = write_run(tmp_path / "run", results)
    comparison = compare_run(load_run(run_dir, csv_ref), csv_ref, None, None, FAST)[0]
    findings = comparison.findings
    summary = comparison.summary.set_index("protocol")
    words = {
        ABOVE: "above the parameter-count floor",
        BELOW: "below the parameter-count floor",
        LEVEL: "not distinguishable from the parameter-count floor",
    }
    bar_words = {
        ABOVE: "above NB201's 12-epoch bar",
        BELOW: "below the bar of NB201's own 12-epoch runs",
        LEVEL: "not distinguishable from NB201's 12-epoch bar",
    }
    for protocol, row in summary.iterrows():
        sentence = next(f for f in findings if f.startswith(f"{protocol} vs published: τ over its compared cells"))
        for table, verdict in ((words, side(row["vs_floor"])), (bar_words, side(row["vs_bar"]))):
            assert table[verdict] in sentence
            assert all(table[other] not in sentence for other in table if other != verdict)
    gate = next(f for f in findings if f.startswith("Fidelity gate"))
    assert gate.startswith("Fidelity gate: passed.") == (side(summary.loc["nb201", "vs_floor"]) == ABOVE)
    assert findings[0].startswith("Headline:") and ("(fidelity gate passed)" in findings[0]) == (
        side(summary.loc["nb201", "vs_floor"]) == ABOVE
    )
    pair = comparison.paper_comparison.set_index("comparison").loc["scaled − nb201"]
    sentence = next(f for f in findings if f.startswith("Mean test accuracy change scaled − nb201"))
    closer = "`scaled` ranks the cells closer to the published ranking than `nb201`"
    assert (closer in sentence) == (side(pair["tau_difference"]) == ABOVE)
    assert ("neither ranks closer" in sentence) == (side(pair["tau_difference"]) == LEVEL)
    if noise == 0.3:
        assert gate.startswith("Fidelity gate: passed.")  # 0.3 points of noise rank far above counting parameters
    else:
        assert not gate.startswith("Fidelity gate: passed.")
    text = write_report(run_dir, reference=csv_ref, settings=FAST).read_text()
    assert ("Fidelity gate: passed." in text) == gate.startswith("Fidelity gate: passed.")
    assert "τ − params floor (paired)" in text and "τ vs published, new − old (paired)" in text


def test_the_depth_clause_follows_its_interval(tmp_path: Path, csv_ref: Reference) -> None:
    """τ between the LR rule's depth factor Σ L_p³ and a pair's per-cell gain: a loss built to grow with depth
    is named as such; the clause always says what its CI says."""
    import numpy as np

    from analysis.comparison import depth_factor

    assert depth_factor(pd.Index([25, 4681])).tolist() == [1.0, 126.0]  # the skip chain; the deepest cell
    cells = list(range(7000, 7040))
    results = synthetic_results(csv_ref, "cifar10", cells, noise=0.3)
    depth = depth_factor(pd.Index(cells))
    scaled = results["protocol"] == "scaled"
    results.loc[scaled, "test_acc"] -= 2.0 * np.log1p(depth.loc[results.loc[scaled, "nb201_index"]].to_numpy())
    run_dir = write_run(tmp_path / "run", results)
    comparison = compare_run(load_run(run_dir, csv_ref), csv_ref, None, None, FAST)[0]
    pair = comparison.paper_comparison.set_index("comparison").loc["scaled − nb201"]
    assert pair["depth_tau"].high < 0
    sentence = next(f for f in comparison.findings if f.startswith("Mean test accuracy change scaled − nb201"))
    assert "τ between Σ L_p³ and the per-cell gain" in sentence
    assert "the deeper the cell, the larger the loss" in sentence
    for _, row in comparison.paper_comparison.iterrows():  # every pair's clause says what its CI says
        if row["old"] == "published":
            continue
        text = next(f for f in comparison.findings if f.startswith(f"Mean test accuracy change {row['comparison']}"))
        assert ("does not follow depth" in text) == (not row["depth_tau"].excludes(0.0))
