"""perf/proxy_ladder.py --trend, the parts that train nothing: configs, resume, the table and the plot."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pandas as pd
import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("proxy_ladder", REPO / "perf" / "proxy_ladder.py")
ladder = sys.modules["proxy_ladder"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ladder)

CELLS = [3316, 4494, 5282, 7486, 8271, 11976, 14060, 14329]  # stratified_cells(8, 0)


def rows(epochs: int, nb201: list[float | None], scaled: list[float | None]) -> list[dict]:
    common = {"epochs": epochs, "wall_s": 10.0, "cpu_s": 8.0, "budget": f"{epochs}ep"}
    return [
        common | {"index": i, "protocol": p, "test_acc": acc}
        for p, accs in (("nb201", nb201), ("scaled", scaled))
        for i, acc in zip(CELLS, accs, strict=True)
    ]


def test_the_trend_cells_are_the_stratified_draw():
    assert ladder.stratified_cells(8, 0) == CELLS
    assert ladder.stratified_cells(24, 0)[:3] == [913, 1521, 2349]  # cpu.yaml's list starts so


def test_protocol_configs_fuse_and_scale_the_lr():
    from cells import cell_at, lr_factor

    shape = ladder.replace(ladder.CPU_SHAPE, epochs=3)
    nb201, scaled = ladder.protocol_configs(shape, CELLS[0], ladder.PROTOCOLS, 0.2)
    assert (nb201.init_rule, nb201.lr, scaled.init_rule) == ("torch-default", 0.1, "arch-source")
    assert scaled.lr == pytest.approx(0.2 * lr_factor(cell_at(CELLS[0]), "official"))
    assert (nb201.width, nb201.batch_size, nb201.epochs, nb201.schedule) == (4, 64, 3, "epoch")
    a, b = nb201.to_dict(), scaled.to_dict()
    assert {k for k in a if a[k] != b[k]} == {"init_rule", "lr"}  # what fused.train_group may fuse


def test_resume_skips_complete_pairs_longest_first(tmp_path):
    stored = rows(3, [50.0] * 8, [40.0] * 8)[:-1]  # the last cell lacks its scaled row
    todo = ladder.trend_todo(stored, [3, 24], CELLS[:2] + [CELLS[-1]])
    assert todo == [(24, CELLS[0]), (24, CELLS[1]), (24, CELLS[-1]), (3, CELLS[-1])]
    path = tmp_path / "budget_trend.json"
    setup = {"base_lr": 0.152319, "max_train": None}
    doc = ladder.load_trend(path, setup)
    assert doc == {"setup": setup, "rows": [], "wall_s": 0.0}
    path.write_text(json.dumps(doc | {"rows": stored}))
    assert ladder.load_trend(path, setup)["rows"] == stored
    with pytest.raises(SystemExit, match="another --out-dir"):
        ladder.load_trend(path, setup | {"base_lr": 0.3})


def test_summary_table_and_plot(tmp_path):
    pub = ladder.published()
    truth = pub.loc[CELLS, ladder.TARGET].rank().tolist()
    early = rows(3, [50 + t for t in truth], [45 + t / 2 for t in truth][:-1] + [None])  # one diverged
    late = rows(24, [60 + t for t in truth], [59 + t for t in truth])
    frame = pd.DataFrame(early + late + rows(6, [50.0] * 8, [50.0] * 8)[:3])  # 6 ep: no complete pair
    acc = ladder.accuracies(frame, 3, CELLS)
    assert acc.loc[CELLS[-1], "scaled"] == ladder.CHANCE and len(ladder.accuracies(frame, 6, CELLS)) == 0
    summary = ladder.trend_summary(frame, CELLS, [3, 6, 24], pub, workers=2)
    assert [s["epochs"] for s in summary] == [3, 24]
    first, last = summary
    assert last["tau"]["nb201"].value == pytest.approx(1.0) and last["gain"].value == pytest.approx(-1.0)
    assert first["diverged"] == 1 and first["wall_min"] == pytest.approx(8 * 10 / 2 / 60)
    assert first["gain"].low <= first["gain"].value <= first["gain"].high < 0
    change = ladder.gap_change(frame, CELLS, 3, 24, pub)
    assert change["gain"].value > 0 and math.isfinite(change["gain"].low)
    text = ladder.trend_table(summary, {"base_lr": 0.152319, "max_train": None, "max_eval": None}, change)
    assert "| 24 | 8 | 1.00" in text and "24 epochs minus 3" in text and "base LR 0.152319" in text
    ladder.trend_plot(summary, tmp_path / "trend.png")
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"
