"""cells/: parsing, official order, path statistics, parameter counts, classes, export."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cells import (
    CONV_KERNEL,
    OPS,
    Cell,
    CellError,
    all_cells,
    cell_at,
    class_key,
    in_degrees,
    index_of,
    lr_factor,
    nb201_unique_str,
    network_params,
    paths,
    sum_depth_cubed,
)
from cells.export import cells_table
from core.datasets import DATASETS
from core.shape import NetShape

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
any_cell = st.tuples(*[st.sampled_from(OPS)] * 6).map(Cell)


@pytest.fixture(scope="module")
def published(published_csv) -> pd.DataFrame:
    return pd.read_csv(published_csv)


# --- parsing -------------------------------------------------------------------------------


def test_three_forms_of_the_resnet_cell():
    cell = Cell.parse(RESNET)
    assert cell.op_code == "303101"
    assert cell.official_code == "3_03_101"
    assert Cell.parse("303101") == Cell.parse("3_03_101") == cell
    assert cell.arch_str == RESNET == str(cell)


@given(any_cell)
def test_every_form_round_trips(cell):
    assert Cell.from_str(cell.arch_str) == cell
    assert Cell.from_op_code(cell.op_code) == cell
    assert Cell.from_official_code(cell.official_code) == cell


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "nor_conv_5x5"),
        ("|skip_connect~1|+|none~0|none~1|+|none~0|none~1|none~2|", "skip_connect~1"),
        ("|skip_connect~0|+|none~0|none~1|", "3"),
        ("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|x", "none~2|x"),
        ("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|", "node 3"),
        ("|skip_connect0|+|none~0|none~1|+|none~0|none~1|none~2|", "skip_connect0"),
        ("30310", "30310"),
        ("303105", "5"),
        ("3_03_10", "3_03_10"),
    ],
)
def test_malformed_input_names_the_bad_token(text, named):
    with pytest.raises(CellError, match=None) as error:
        Cell.parse(text)
    assert named in str(error.value)
    assert "\n" not in str(error.value)


# --- the space --------------------------------------------------------------------------------


def test_official_index_order_matches_the_published_table(published):
    cells = all_cells()
    assert len(cells) == 15_625 == len(set(cells))
    assert [c.arch_str for c in cells] == list(published.sort_values("nb201_index")["arch_str"])
    assert index_of(Cell.parse(RESNET)) == 11472
    assert cell_at(6111).arch_str.startswith("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|")
    with pytest.raises(IndexError):
        cell_at(15_625)


def test_parameter_counts_equal_the_published_ones_for_every_cell(published):
    cells = all_cells()
    for info in DATASETS.values():  # the registry names the published column of each dataset's files
        shape = NetShape(num_classes=info.num_classes)
        ours = [round(network_params(cells[i], shape) / 1e6, 6) for i in published["nb201_index"]]
        assert ours == published[info.params_column()].tolist(), info.name


# --- paths and rules: the digest's worked examples --------------------------------------------


@pytest.mark.parametrize(
    ("code", "depths", "sum_l3", "lr"),
    [
        ("3_33_333", [4, 3, 3, 2], 126, 0.04098),
        ("2_22_222", [4, 3, 3, 2], 126, 0.04098),
        ("3_03_101", [3, 1], 28, 0.08693),
        ("1_01_001", [1], 1, 0.46),
        ("1_11_111", [1, 1, 1, 1], 4, 0.23),
        ("4_44_444", [1, 1, 1, 1], 4, 0.23),
    ],
)
def test_digest_lr_examples(code, depths, sum_l3, lr):
    from cells import scaled_lr

    cell = Cell.parse(code)
    assert sorted(p.depth for p in paths(cell)) == sorted(depths)
    assert sum_depth_cubed(cell) == sum_l3
    assert scaled_lr(cell, 0.46).lr == pytest.approx(lr, abs=5e-6)


def test_no_path_cell_gets_a_reason_not_an_exception():
    from cells import scaled_lr

    result = scaled_lr(Cell.parse("3_00_003"), 0.46)
    assert result.lr is None and result.factor is None and "no input->output path" in result.reason


def test_341_cells_have_no_path():
    assert sum(not paths(c) for c in all_cells()) == 341


@pytest.mark.parametrize(
    ("code", "source", "target"),
    [
        ("3_33_333", (1, 1, 1, 1, 1, 2), (1, 2, 2, 3, 3, 3)),  # digest example A
        ("3_03_101", (1, 1, 1, 1, 1, 1), (1, 1, 1, 2, 2, 2)),  # example B: both plain Kaiming on the convs
        ("3_14_002", (1, 1, 1, 1, 1, 2), (1, 2, 2, 1, 1, 1)),  # example C: 2->3 conv1x1 source 2, target 1
    ],
)
def test_digest_init_degree_tables(code, source, target):
    from cells import edge_init_degrees, reduction_init_degrees

    cell = Cell.parse(code)
    assert edge_init_degrees(cell, "arch-source") == source
    assert edge_init_degrees(cell, "arch-target") == target
    assert edge_init_degrees(cell, "kaiming") == (1,) * 6
    assert reduction_init_degrees("arch-source") == reduction_init_degrees("arch-target")
    assert (reduction_init_degrees("arch-source").conv_a, reduction_init_degrees("arch-source").downsample) == (2, 2)


def test_kernel_rule_reduces_to_eq9_with_one_kernel_size():
    # all 3x3: q = 3 everywhere, so the kernel factor equals the official one; all 1x1: 3x larger.
    assert lr_factor(Cell.parse("3_33_333"), "kernel") == pytest.approx(lr_factor(Cell.parse("3_33_333")))
    assert lr_factor(Cell.parse("2_22_222"), "kernel") == pytest.approx(3 * lr_factor(Cell.parse("2_22_222")))


@given(any_cell, st.integers(0, 5))
def test_lr_does_not_rise_when_a_skip_on_a_path_becomes_a_conv(cell, edge):
    if cell.ops[edge] != "skip_connect" or not paths(cell):
        return
    for conv in ("nor_conv_1x1", "nor_conv_3x3"):
        deeper = Cell(cell.ops[:edge] + (conv,) + cell.ops[edge + 1 :])
        on_a_path = any(edge in p.edges for p in paths(cell))
        assert (lr_factor(deeper) < lr_factor(cell)) if on_a_path else (lr_factor(deeper) == lr_factor(cell))


@given(any_cell, st.integers(0, 5))
def test_adding_an_edge_never_raises_the_lr(cell, edge):
    if cell.ops[edge] != "none" or not paths(cell):
        return
    for op in OPS[1:]:
        wider = Cell(cell.ops[:edge] + (op,) + cell.ops[edge + 1 :])
        assert lr_factor(wider) <= lr_factor(cell)
        assert sum_depth_cubed(wider) >= sum_depth_cubed(cell)


@given(any_cell)
def test_path_and_degree_invariants(cell):
    degrees = in_degrees(cell)
    assert degrees[0] == 1
    assert sum(degrees[1:]) == sum(op != "none" for op in cell.ops)
    for path in paths(cell):
        assert 1 <= path.depth <= 4
        assert path.depth == 1 + path.n_convs
    factor = lr_factor(cell)
    assert (factor is None) == (not paths(cell))
    if factor is not None:
        assert math.sqrt(1 / 126) - 1e-12 <= factor <= 1.0


# --- isomorphism classes -----------------------------------------------------------------------


def test_nb201_symbolic_count_is_reproduced():
    assert len({nb201_unique_str(c) for c in all_cells()}) == 6466


def test_nb201_symbolic_classes_are_not_sound():
    # 2·f(x) (one conv read twice through a skip copy) vs f1(x) + f2(x) (two convs): NB201 merges them.
    twice = Cell.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|")
    two = Cell.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|")
    assert nb201_unique_str(twice) == nb201_unique_str(two)
    assert class_key(twice) != class_key(two)
    # A conv fed by an all-zero node outputs its BN bias; NB201 calls it zero.
    biased = Cell.parse("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    plain = Cell.parse("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|")
    assert nb201_unique_str(biased) == nb201_unique_str(plain)
    assert class_key(biased) != class_key(plain)


def test_classes_merge_what_is_the_same_computation():
    # node 1 = skip(x) is a copy of x: conv from node 1 == conv from node 0.
    via_copy = Cell.parse("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    direct = Cell.parse("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    assert class_key(via_copy) == class_key(direct)
    # Dead skip/pool edges (fed by an all-zero node) and edges that never reach the output vanish.
    dead = Cell.parse("|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")
    assert class_key(dead) != class_key(direct)  # conv from the zero node 1 into 3 is a live bias edge
    dead_pool = Cell.parse("|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|skip_connect~1|skip_connect~2|")
    assert class_key(dead_pool) == class_key(direct)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return cells_table()


def test_class_members_share_lr_and_init_degrees(table):
    from cells import edge_init_degrees, live_graph

    for rule, column in (
        ("kaiming", "class_id"),
        ("arch-source", "class_id_arch_source"),
        ("arch-target", "class_id_arch_target"),
    ):
        by_class = defaultdict(list)
        for cell, class_id in zip(all_cells(), table[column], strict=True):
            by_class[class_id].append(cell)
        for members in by_class.values():
            lrs = {(lr_factor(c), lr_factor(c, "kernel")) for c in members}
            assert len(lrs) == 1, members
            if rule != "kaiming":
                degrees = {
                    tuple(
                        sorted(edge_init_degrees(c, rule)[e.edge] for e in live_graph(c).edges if e.op in CONV_KERNEL)
                    )
                    for c in members
                }
                assert len(degrees) == 1, members


def test_export_table(table):
    assert len(table) == 15_625
    assert list(table["nb201_index"]) == list(range(15_625))
    required = {
        "nb201_index",
        "arch_str",
        "op_code",
        "class_id",
        "representative",
        "n_paths",
        "sum_l3",
        "has_path",
        "lr_factor",
        "nb201_class_id",
    }
    assert required <= set(table.columns)
    assert table["nb201_class_id"].nunique() == 6466
    assert table["class_id"].nunique() == table["representative"].sum()
    # NB201's own init (torch-default) is degree-free like He-normal: the same classes
    assert table["class_id_torch_default"].equals(table["class_id"])
    assert table["representative_torch_default"].equals(table["representative"])
    assert table["class_id"].nunique() >= 6466
    assert int((~table["has_path"]).sum()) == 341
    assert table["lr_factor"].isna().sum() == 341
    resnet = table.loc[11472]
    assert (resnet["n_paths"], resnet["sum_l3"]) == (2, 28)


def test_export_cli_writes_parquet(tmp_path):
    from cells.__main__ import main

    out = tmp_path / "cells.parquet"
    assert main(["export", "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 15_625
    assert main(["export", "--out", str(tmp_path / "cells.txt")]) == 2
