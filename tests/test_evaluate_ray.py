"""End to end through a real local Ray (2 CPUs) on real CIFAR-10 images: `python -m pipeline evaluate`.

Ray runs under a private temp root with a HOME that stops its cloud-metadata probes, on loopback
(tests/raytools.py), so nothing leaves this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from raytools import ray_env, write_config

from cells import Cell, index_of

REPO = Path(__file__).resolve().parents[1]
CELLS = [
    "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",  # ResNet-like
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|",  # same class as the next
    "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|",
    "3_00_003",  # no input->output path
    "2_14_012",
]

pytestmark = pytest.mark.slow


def e2e_config(tmp_path: Path, cifar10_dir: Path, reference: Path) -> Path:
    return write_config(
        tmp_path / "e2e.yaml",
        cifar10_dir,
        CELLS,
        tmp_path / "results",
        name="e2e",
        max_train=512,
        protocols=[
            {"name": "nb201", "init": "kaiming", "lr": 0.1},
            {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": "auto"},
        ],
        base_lr_search={"low": 0.1, "high": 0.4, "points": 2, "epochs": 1},
        reference=f"csv:{reference}",
    )


def evaluate(config: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_evaluate_resumes_and_survives_a_killed_worker(tmp_path, root, cifar10_dir, published_csv):
    config = e2e_config(tmp_path, cifar10_dir, published_csv)
    marker = tmp_path / "killed-once"
    first = evaluate(config, ray_env(root, NB201_FAULT_KILL_ONCE=str(marker)))
    assert first.returncode == 0, first.stderr[-3000:]
    assert marker.exists(), "the fault drill did not fire"

    run_dirs = list((tmp_path / "results").glob("e2e-*"))
    assert len(run_dirs) == 1
    table = pd.read_parquet(run_dirs[0] / "results.parquet")
    assert len(table) == len(CELLS) * 2
    assert not table.duplicated(["protocol", "nb201_index", "seed"]).any()
    no_path = index_of(Cell.parse("3_00_003"))
    statuses = table.set_index(["protocol", "nb201_index"])["status"]
    assert (statuses.xs(no_path, level="nb201_index") == "no-path").all()
    trained = table[table["nb201_index"] != no_path]
    assert (trained["status"] == "ok").all(), trained[["protocol", "nb201_index", "status", "error"]]
    assert trained["test_acc"].between(0, 100).all()
    assert trained.groupby("protocol")["shared"].sum().tolist() == [1, 1]  # the isomorphic pair trained once
    scaled = trained[trained["protocol"] == "scaled"]
    assert (scaled["lr"] < scaled["base_lr"] + 1e-12).all() and scaled["base_lr"].nunique() == 1
    assert (trained[trained["protocol"] == "nb201"]["lr"] == 0.1).all()
    assert (run_dirs[0] / "report.md").is_file()
    used = json.loads((run_dirs[0] / "base_lr.json").read_text())
    assert used["nb201"] is None and used["scaled"] == scaled["base_lr"].iloc[0]

    second = evaluate(config, ray_env(root))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 trained now" in second.stdout and "recorded by this run" in second.stderr  # the run's own base LR
    again = pd.read_parquet(run_dirs[0] / "results.parquet")
    assert len(again) == len(table)
    pd.testing.assert_frame_equal(
        again.sort_values(["protocol", "nb201_index"]).reset_index(drop=True)[["status", "test_acc", "finished_at"]],
        table.sort_values(["protocol", "nb201_index"]).reset_index(drop=True)[["status", "test_acc", "finished_at"]],
    )


def test_unreachable_ray_address_is_one_clear_error_before_work(tmp_path, root, cifar10_dir, published_csv):
    config = e2e_config(tmp_path, cifar10_dir, published_csv)
    env = ray_env(root, RAY_ADDRESS="127.0.0.1:1")
    result = evaluate(config, env, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "RAY_ADDRESS" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
