"""The LR-transfer study (issue 18): its spec, its units and trial configs, the picks and predictions
of `lr_transfer.parquet`, its report, and a tiny study end to end through a real local Ray."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cells import all_cells, scaled_lr, sum_depth_cubed
from pipeline.run.lr_transfer import (
    BASE_INDEX,
    cell_pick,
    grid_protocols,
    scores_of,
    stratified_cells,
    study_todo,
    transfer_table,
    trial_config,
)
from pipeline.run.spec import SpecError
from pipeline.run.spec_load import load_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[1]
CELLS = [2000, 3000]


def study(**changes: object) -> dict:
    data = {
        "name": "study",
        "width": 4,
        "cells_per_stage": 1,
        "lr_transfer": {"init": "arch-source"},
        "cells": {"select": "list", "cells": CELLS},
        "base_lr_search": {"low": 0.05, "high": 0.8, "points": 5, "epochs": 1, "seeds": [0, 1]},
    }
    data.update(changes)
    return data


def test_spec_rules_and_run_ids_of_existing_configs():
    spec = spec_from_dict(study())
    assert spec.lr_transfer is not None and spec.protocols == ()
    with pytest.raises(SpecError, match="remove `protocols`"):
        spec_from_dict(study(protocols=[{"name": "nb201", "lr": 0.1}]))
    with pytest.raises(SpecError, match=r"lr_transfer\.init"):
        spec_from_dict(study(lr_transfer={"init": "he"}))
    with pytest.raises(SpecError, match=r"base_lr_search\.score"):
        spec_from_dict(study(base_lr_search={"score": "last-batch"}))
    sweep = load_spec(REPO / "configs" / "cpu.yaml")
    assert "lr_transfer" not in sweep.identity() and "score" not in sweep.identity()["base_lr_search"]
    other = load_spec(REPO / "configs" / "cpu.yaml", {"base_lr_search.score": "epoch-mean"})
    assert other.run_id != sweep.run_id  # a non-default score is part of the identity


def test_units_and_trial_configs():
    spec = spec_from_dict(study())
    grid = grid_protocols(spec)
    assert [p.lr for p in grid] == spec.base_lr_search.grid() and all(p.init == "arch-source" for p in grid)
    todo = study_todo(spec, CELLS, {})
    assert {u.index for u, _ in todo.train} == {BASE_INDEX, *CELLS}
    assert len(todo.train) == 3 * 5 * 2
    unit = todo.train[0][0]
    cfg = trial_config(spec, unit, unit.lr({p.name: None for p in grid}))
    assert (cfg.epochs, cfg.schedule, cfg.end_train_pass, cfg.init_rule) == (1, "constant", True, "arch-source")
    mean = spec_from_dict(study(base_lr_search={"seeds": [0, 1], "score": "epoch-mean"}))
    assert not trial_config(mean, unit, 0.1).end_train_pass
    assert scores_of(spec) == ("end-pass", "epoch-mean") and scores_of(mean) == ("epoch-mean",)
    done = {(unit.protocol.name, unit.index, unit.seed): ("ok", 1)}
    assert len(study_todo(spec, CELLS, done).train) == len(todo.train) - 1


def test_stratified_cells_cover_the_factor():
    chosen = stratified_cells(16, 0)
    sums = sorted(sum_depth_cubed(all_cells()[i]) for i in chosen)
    assert len(set(sums)) == 16 and sums[0] == 1 and sums[-1] == 126 and BASE_INDEX not in chosen
    assert chosen == load_spec(REPO / "configs" / "lr-transfer.yaml").cells.resolve()


def fake_rows(best: dict[int, float], grid: list[float], seeds=(0, 1, 2)) -> pd.DataFrame:
    """Losses a parabola in log LR with its minimum at `best[cell]`; the top LR diverges everywhere."""
    rows = []
    for index, target in best.items():
        for lr in grid:
            for seed in seeds:
                loss = 1.0 + (math.log10(lr) - math.log10(target)) ** 2 + 0.001 * seed
                diverged = lr == max(grid)
                rows.append(
                    {
                        "nb201_index": index,
                        "lr": lr,
                        "seed": seed,
                        "status": "diverged" if diverged else "ok",
                        "train_loss": None if diverged else [loss + 0.2],
                        "end_train_loss": None if diverged else loss,
                    }
                )
    return pd.DataFrame(rows)


def test_picks_predictions_and_edges():
    spec = spec_from_dict(study(base_lr_search={"low": 0.01, "high": 2.0, "points": 13, "seeds": [0, 1, 2]}))
    grid = spec.base_lr_search.grid()
    best = {BASE_INDEX: grid[7], 2000: grid[3], 3000: grid[0]}
    table = transfer_table(spec, fake_rows(best, grid))
    assert set(table["score"]) == {"end-pass", "epoch-mean"}
    main = table[table["primary"]].set_index("nb201_index")
    for index, target in best.items():
        assert main.at[index, "empirical_lr"] == target
        assert main.at[index, "lr_low"] <= target == main.at[index, "lr_high"]
    assert main.at[3000, "at_edge"] == "low" and main.at[2000, "at_edge"] == ""
    base = grid[7]
    assert (main["base_lr"] == base).all()
    for index in best:
        for rule in ("official", "kernel"):
            assert main.at[index, f"pred_{rule}"] == pytest.approx(scaled_lr(all_cells()[index], base, rule).lr)
    assert main.at[BASE_INDEX, "pred_official"] == pytest.approx(base)
    diverged = cell_pick({0.1: [math.inf, math.inf]}, [0.1])
    assert diverged["at_edge"] == "diverged" and math.isnan(diverged["empirical_lr"])


def test_study_report(tmp_path):
    from analysis.lr_transfer import reading_table, write_study_report
    from analysis.settings import Settings

    spec = spec_from_dict(study(base_lr_search={"low": 0.01, "high": 2.0, "points": 13, "seeds": [0, 1, 2]}))
    grid = spec.base_lr_search.grid()
    cells = stratified_cells(12, 1)
    base = grid[8]
    best = {BASE_INDEX: base}
    for index in cells:  # each cell's maximum at the grid point nearest the official prediction
        predicted = scaled_lr(all_cells()[index], base, "official").lr
        best[index] = min(grid, key=lambda lr, p=predicted: abs(math.log(lr / p)))
    table = transfer_table(spec, fake_rows(best, grid))
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    table.to_parquet(tmp_path / "lr_transfer.parquet")
    settings = Settings(n_resamples=200)
    readings = reading_table(table[table["primary"]], settings).set_index("reading")
    assert readings.loc["Eq. 8 (official)", "Pearson r (logs)"].value > 0.95
    assert readings.loc["Eq. 8 (official)", "slope"].value == pytest.approx(1.0, abs=0.15)
    assert not readings.loc["NB201's 0.1", "Pearson r (logs)"].ok  # a constant has no r
    text = write_study_report(tmp_path, settings).read_text()
    assert "0.856" in text and "Eq. 8 (official) predicts best" in text
    assert (tmp_path / "lr_transfer_end-pass.png").is_file() and (tmp_path / "lr_transfer_epoch-mean.png").is_file()


@pytest.mark.slow
def test_tiny_study_through_ray(tmp_path, root, cifar10_dir):
    """3 cells (the skip chain added) x 2 LRs x 2 seeds on 256 images, through `python -m pipeline
    evaluate` and a real local Ray, then its report."""
    from raytools import ray_env

    config = tmp_path / "tiny.yaml"
    data = study(
        data_dir=str(cifar10_dir),
        max_train=256,
        max_eval=64,
        image_size=16,
        batch_size=64,
        precision="fp32",
        results_dir=str(tmp_path / "results"),
        base_lr_search={"low": 0.05, "high": 0.5, "points": 2, "epochs": 1, "seeds": [0, 1]},
        resources={"cpus_per_trial": 1, "torch_threads": 1, "fuse": 2},
        reference="published",
    )
    config.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", "--config", str(config)],
        cwd=REPO,
        env=ray_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "results").glob("study-*")
    rows = pd.read_parquet(run / "results.parquet")
    assert len(rows) == 3 * 2 * 2 and not rows.duplicated(["protocol", "nb201_index", "seed"]).any()
    assert set(rows["protocol"]) == {"lr-0.05", "lr-0.5"} and (rows["lr_schedule"] == "constant").all()
    ok = rows[rows["status"] == "ok"]
    assert np.isfinite(ok["end_train_loss"].astype(float)).all() and (ok["epochs"] == 1).all()
    assert (rows["fused_k"] == 2).all()  # a cell's trials train as fused pairs, the end-of-epoch pass included
    table = pd.read_parquet(run / "lr_transfer.parquet")
    assert set(table["nb201_index"]) == {BASE_INDEX, *CELLS} and len(table) == 6  # 3 cells x 2 scores
    assert "LR-transfer report" in (run / "report.md").read_text()


def test_the_words_blame_the_base_only_when_the_ratios_hold() -> None:
    """A wrong slope moves the mean ratio as well, so the report then names no base error: it says the
    average mixes both. With the slope right, the mean ratio is the base's, and is named."""
    from analysis.lr_transfer import _ratios_or_base
    from analysis.stats import Estimate

    steep, right = Estimate(0.26, 0.14, 0.42, 16), Estimate(0.95, 0.7, 1.2, 16)
    offset, centred = Estimate(0.26, 0.15, 0.37, 16), Estimate(0.02, -0.05, 0.09, 16)
    words = _ratios_or_base(steep, offset)
    assert "ratios do not hold" in words and "mixes the base" in words and "base is off" not in words
    assert "base is off: the cells' maxima are x1.8" in _ratios_or_base(right, offset)
    assert "ratios hold" in _ratios_or_base(right, centred) and "base fits" in _ratios_or_base(right, centred)
