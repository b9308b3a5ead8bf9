"""The cost planner (`python -m pipeline plan`): its numbers follow from the spec, the cells' MACs and
NB201's own recorded training times; the CLI prints the report or one clear error line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cells import Cell, all_cells, cell_at, index_of
from cells.cost import network_macs
from cells.export import cells_table
from core.datasets import DATASETS
from core.shape import NetShape
from pipeline.commands import THROUGHPUT_TABLE
from pipeline.plan import load_throughput, make_plan
from pipeline.run.spec_load import spec_from_dict
from pipeline.run.units import class_column, plan_units

REPO = Path(__file__).resolve().parents[1]
ISOMORPHIC_PAIR = [
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|",
    "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|",
]
NO_PATH = "3_00_003"
CELL_REFS = [0, 11, 284, *ISOMORPHIC_PAIR, NO_PATH]


def small_spec(dataset: str = "cifar10-valid", dedup: bool = True):
    return spec_from_dict(
        {
            "name": "plan-test",
            "dataset": dataset,
            "width": 16,
            "cells_per_stage": 5,
            "epochs": 200,
            "seeds": [777, 888],
            "dedup": dedup,
            "cells": {"select": "list", "cells": CELL_REFS},
            "protocols": [
                {"name": "nb201", "init": "kaiming", "lr": 0.1},
                {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.46},
            ],
        }
    )


@pytest.mark.parametrize(("index", "mflops"), [(0, 15.65), (11, 113.95), (284, 11.72)])
def test_network_macs_match_nb201_recorded_flops(index, mflops):
    """NB201's `flops` (cifar10-valid, C=16, N=5, 32 px; it counts MACs) for three cells."""
    assert round(network_macs(cell_at(index), NetShape(16, 5, 32, 10)) / 1e6, 2) == mflops


def test_plan_counts_follow_from_the_spec(published_csv):
    spec = small_spec()
    throughput = load_throughput("cpu-2core", THROUGHPUT_TABLE)
    plan = make_plan(spec, throughput, gpus=4, published=pd.read_csv(published_csv))

    selected = spec.cells.resolve()
    table = cells_table().set_index("nb201_index")
    with_path = [i for i in selected if table.at[i, "has_path"]]
    assert (plan.cells, plan.no_path) == (len(CELL_REFS), 1) and len(with_path) == len(CELL_REFS) - 1
    # trainings = isomorphism classes x protocols x seeds; without dedup, cells x protocols x seeds
    classes = {p.name: table.loc[with_path, class_column(p.init)].nunique() for p in spec.protocols}
    assert classes == {"nb201": 4, "scaled": 4}  # the isomorphic pair is one class under both inits
    assert plan.trainings == sum(classes.values()) * len(spec.seeds) == 16
    assert plan.trainings_without_dedup == len(with_path) * len(spec.protocols) * len(spec.seeds) == 20
    assert plan.trainings == len(plan_units(spec, selected)[0])
    assert make_plan(small_spec(dedup=False), throughput, 4, None).trainings == plan.trainings_without_dedup

    # compute and time: per unit, 6 x live MACs x images x epochs; seconds = overhead + MACs / rate per image
    units, _ = plan_units(spec, selected)
    cells, images = all_cells(), DATASETS["cifar10-valid"].train_images
    macs = [network_macs(cells[u.index], NetShape(16, 5, 32, 10), live_only=True) for u in units]
    assert plan.train_flops == pytest.approx(sum(6.0 * m * images * 200 for m in macs))
    seconds = sum(200 * images * throughput.seconds_per_image(m) for m in macs)
    assert plan.gpu_hours == pytest.approx(seconds / 3600 / throughput.trials_per_gpu)
    assert plan.wall_hours == pytest.approx(plan.gpu_hours / 4)

    # NB201's own record: its train_time_s_200ep_cifar10_valid, summed over the trained cells
    times = pd.read_csv(published_csv, usecols=["nb201_index", "train_time_s_200ep_cifar10_valid"])
    recorded = times.set_index("nb201_index").loc[with_path, "train_time_s_200ep_cifar10_valid"].sum()
    assert plan.nb201_gpu_hours == pytest.approx(recorded / 3600)
    cifar10 = make_plan(small_spec("cifar10"), throughput, 4, pd.read_csv(published_csv))
    assert cifar10.nb201_gpu_hours == pytest.approx(2 * recorded / 3600)  # 50k images vs 25k

    report = plan.report(spec, 4)
    assert "trainings           16 (isomorphism dedup saves 20.0% of 20)" in report
    assert "cells selected      6 (1 without a path" in report
    assert f"x{len(spec.protocols) * len(spec.seeds)} for this spec's protocols x seeds" in report
    assert index_of(Cell.parse(NO_PATH)) in selected


def test_plan_cli_prints_the_report(published_csv, capsys):
    from pipeline.__main__ import main

    code = main(
        ["plan", "--config", str(REPO / "configs" / "cpu.yaml"), "--gpu-type", "cpu-2core", "--gpus", "2"]
        + ["--published", str(published_csv)]
    )
    out = capsys.readouterr().out
    assert code == 0
    for line in ("plan for cpu-", "trainings", "device-hours", "wall-clock", "on 2 device(s)", "NB201's own record"):
        assert line in out, out
    assert "cpu-2core:" in out


def test_plan_cli_unknown_gpu_type_is_one_clear_error(capsys):
    from pipeline.__main__ import main

    code = main(["plan", "--config", str(REPO / "configs" / "cpu.yaml"), "--gpu-type", "tpu-v9"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1 and "tpu-v9" in lines[0] and "--calibrate" in lines[0], err
    assert "Traceback" not in err


def test_plan_reads_nb201s_training_times_from_the_shipped_table(capsys):
    """No `--published`: the table that ships with the code, so a machine without ../shared compares too."""
    from pipeline.__main__ import main

    code = main(["plan", "--config", str(REPO / "configs" / "cifar10-full.yaml"), "--gpu-type", "cpu-2core"])
    assert code == 0 and "NB201's own record" in capsys.readouterr().out
