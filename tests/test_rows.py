"""The results table is declared once (`core.rows.TrialRow`): the SQLite schema, the Parquet schema,
results/README.md and the analysis all agree with it, and a training record loses no field on the way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.runs import REQUIRED_COLUMNS
from core.config import TrainConfig
from core.rows import COLUMNS, KEY, arrow_schema, markdown_table, sqlite_columns, to_record
from pipeline.run.rows import no_path_row, record_columns
from pipeline.run.spec_load import spec_from_dict
from pipeline.run.store import ResultsStore
from pipeline.train.data import load_splits
from pipeline.train.engine import train

REPO = Path(__file__).resolve().parents[1]


def test_results_readme_shows_the_declared_columns() -> None:
    text = (REPO / "results" / "README.md").read_text()
    assert markdown_table() in text, "results/README.md is stale: paste `.venv/bin/python -m core.rows` into it"


def test_sqlite_and_parquet_schemas_are_the_declaration(tmp_path: Path) -> None:
    spec = spec_from_dict({"name": "t", "protocols": [{"name": "nb201", "lr": 0.1}]})
    with ResultsStore(tmp_path / "run") as store:
        store.write([no_path_row(spec, spec.protocols[0], 3, 0, None)])
        out = store.export_parquet()
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as db:
        info = db.execute("PRAGMA table_info(results)").fetchall()
    declared = sqlite_columns()
    assert [row[1] for row in info] == list(COLUMNS)
    assert {name: kind + (" NOT NULL" if notnull else "") for _, name, kind, notnull, _, _ in info} == declared
    assert [row[1] for row in info if row[5]] == list(KEY)
    assert pq.read_schema(out).remove_metadata() == arrow_schema()


def test_analysis_reads_declared_columns_only() -> None:
    assert set(REQUIRED_COLUMNS) <= set(COLUMNS)


def test_rows_refuse_unknown_columns_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="not columns"):
        to_record({"run_id": "r", "dataset": "cifar10", "protocol": "p", "nb201_index": 1, "seed": 0, "colour": 1})
    with pytest.raises(ValueError, match="key columns"):
        to_record({"run_id": "r", "dataset": "cifar10", "protocol": "p", "nb201_index": 1})


def test_every_training_field_that_matters_reaches_the_row(cifar10_dir: Path) -> None:
    data = load_splits("cifar10-valid", cifar10_dir, max_train=64, max_eval=32)
    record = train("3_14_002", data, TrainConfig(width=2, cells_per_stage=1, epochs=1, device="cpu", precision="fp32"))
    columns = record_columns(record)
    assert set(columns) <= set(COLUMNS)
    assert columns["precision"] == "fp32" and columns["lr_schedule"] == record.config.schedule
    assert columns["momentum"] == 0.9 and columns["weight_decay"] == 5e-4 and columns["nesterov"] is True
    assert columns["valid_loss"] is not None and columns["test_loss"] is not None
    assert columns["steps"] == 1 and columns["n_train"] == 64
