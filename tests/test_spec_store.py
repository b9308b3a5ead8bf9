"""Run specs, unit planning and the results store (no Ray, no training)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from cells import Cell, index_of
from pipeline.run.rows import no_path_row
from pipeline.run.spec import SpecError
from pipeline.run.spec_load import load_spec, spec_from_dict
from pipeline.run.store import ResultsStore, StoreError
from pipeline.run.units import plan_units

REPO = Path(__file__).resolve().parents[1]
NO_PATH = index_of(Cell.parse("3_00_003"))


def minimal(**changes) -> dict:
    spec = {
        "name": "t",
        "width": 4,
        "cells_per_stage": 1,
        "epochs": 1,
        "protocols": [
            {"name": "nb201", "init": "kaiming", "lr": 0.1},
            {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.46},
        ],
    }
    spec.update(changes)
    return spec


RUN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "throughput.yaml")


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    spec = load_spec(path)
    assert (spec.protocols or spec.lr_transfer) and spec.run_id.startswith(spec.name + "-")
    assert len(RUN_CONFIGS) == 8  # cpu, ablation, the three paper-scale configs, the two LR-transfer studies, μP


def test_cpu_config_ranks_at_least_24_trainable_cells_with_both_protocols():
    """Issue 10 item 8: >= 24 cells with an input->output path (stratified by published accuracy, see
    perf/proxy_ladder.py), both real CIFAR-10 subsets joined, 16 px, NB201's recipe as `nb201`."""
    from cells import cell_at, paths

    spec = load_spec(REPO / "configs" / "cpu.yaml")
    selected = spec.cells.resolve()
    assert len(set(selected)) >= 24 and all(paths(cell_at(i)) for i in selected)
    assert {p.name for p in spec.protocols} == {"nb201", "scaled"}
    nb201 = next(p for p in spec.protocols if p.name == "nb201")
    assert (nb201.init, nb201.lr, spec.schedule) == ("torch-default", 0.1, "epoch")
    assert len(spec.data_dir) == 2 and spec.image_size == 16 and spec.shape.image_size == 16


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"widht": 8}, "unknown key widht"),
        ({"dataset": "mnist"}, "dataset 'mnist' is unknown"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"protocols": [{"name": "x", "init": "xavier", "lr": 0.1}]}, "init 'xavier' is unknown"),
        ({"protocols": [{"name": "x", "lr": 0.1, "lr_rule": "official"}]}, "exactly one of lr"),
        ({"protocols": [{"name": "x", "lr_rule": "magic", "base_lr": 1}]}, "lr_rule 'magic' is unknown"),
        ({"protocols": [{"name": "x", "lr": 0.1, "colour": 1}]}, "unknown key protocols.0.colour"),
        ({"protocols": []}, "'protocols' must be a non-empty list"),
        ({"cells": {"select": "list", "cells": ["|bogus~0|"]}}, "bogus"),
        ({"cells": {"select": "list", "cells": [99999]}}, "0..15624"),
        ({"cells": {"select": "some"}}, "cells.select 'some' is unknown"),
    ],
)
def test_bad_configs_name_the_problem(changes, message):
    with pytest.raises(SpecError) as error:
        spec_from_dict(minimal(**changes))
    assert message in str(error.value)


def test_yaml_errors_and_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  width: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    spec = load_spec(REPO / "configs" / "cpu.yaml", {"cells.count": 5, "epochs": 1})
    assert (spec.cells.count, spec.epochs) == (5, 1)


def test_run_id_ignores_where_data_lives_but_not_what_is_trained():
    a = spec_from_dict(minimal())
    assert a.run_id == spec_from_dict(minimal(data_dir="/elsewhere")).run_id
    assert a.run_id != spec_from_dict(minimal(epochs=2)).run_id


def test_units_dedup_isomorphic_cells_and_set_aside_no_path_cells():
    via_copy = index_of(Cell.parse("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"))
    direct = index_of(Cell.parse("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"))
    other = index_of(Cell.parse("3_33_333"))
    spec = spec_from_dict(minimal(cells={"select": "list", "cells": [via_copy, direct, other, NO_PATH]}, seeds=[0, 1]))
    units, no_path = plan_units(spec, spec.cells.resolve())
    assert len(no_path) == 2 * 2  # two protocols x two seeds
    assert len(units) == 2 * 2 * 2  # two classes x two protocols x two seeds
    shared = [u for u in units if len(u.members) == 2]
    assert {frozenset(u.members) for u in shared} == {frozenset({via_copy, direct})}
    nodedup = spec_from_dict(minimal(cells={"select": "list", "cells": [via_copy, direct]}, dedup=False))
    assert len(plan_units(nodedup, nodedup.cells.resolve())[0]) == 2 * 2


def test_scaled_unit_lr_follows_the_rule():
    spec = spec_from_dict(minimal(cells={"select": "list", "cells": ["3_33_333"]}))
    units, _ = plan_units(spec, spec.cells.resolve())
    by_protocol = {u.protocol.name: u for u in units}
    base_lrs = {"nb201": None, "scaled": 0.46}
    assert by_protocol["nb201"].lr(base_lrs) == 0.1
    assert by_protocol["scaled"].lr(base_lrs) == pytest.approx(0.04098, abs=5e-6)


def test_store_is_keyed_resumable_and_exports_parquet(tmp_path):
    spec = spec_from_dict(minimal())
    protocol = spec.protocols[0]
    with ResultsStore(tmp_path / "run") as store:
        store.write([no_path_row(spec, protocol, NO_PATH, 0, None)])
        store.write([no_path_row(spec, protocol, NO_PATH, 0, None)])  # same key: replaced, not duplicated
        assert store.statuses() == {("nb201", NO_PATH, 0): ("no-path", 0)}
        out = store.export_parquet()
    table = pd.read_parquet(out)
    assert len(table) == 1 and table.loc[0, "status"] == "no-path" and table.loc[0, "run_id"] == spec.run_id
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_store_writes_all_rows_of_a_unit_or_none(tmp_path):
    spec = spec_from_dict(minimal())
    good = no_path_row(spec, spec.protocols[0], NO_PATH, 0, None)
    broken = dict(good, seed=None)
    with ResultsStore(tmp_path / "run") as store:
        with pytest.raises(ValueError, match="key columns"):
            store.write([good, broken])
        with pytest.raises(sqlite3.IntegrityError):
            store.write([good, dict(good, nb201_index=1, arch_str=None)])
        assert store.statuses() == {}


@pytest.mark.parametrize("where", ["file-parent", "proc"])
def test_store_on_an_unwritable_path_is_one_clear_error(tmp_path, where):
    if where == "file-parent":
        (tmp_path / "plain-file").write_text("")
        target = tmp_path / "plain-file" / "run"
    else:
        target = Path("/proc/nb201-results/run")  # not writable, even for root
    with pytest.raises(StoreError, match=r"cannot create|not writable") as error:
        ResultsStore(target)
    assert "\n" not in str(error.value)
