"""The results store: one SQLite table per run, written only by the driver, exported to Parquet.

SQLite gives what a long run needs: each finished unit's rows land in one transaction, so a
killed driver leaves whole rows or none; a rerun reads what is finished and skips it. The
Parquet file next to it is rewritten atomically (temp file + rename) for pandas users, and,
with `results_uri` set, copied to `<results_uri>/<run_id>/` the same way (a cluster's head node
may have no disk that outlives it). Schema: results/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

KEY = ("run_id", "dataset", "protocol", "nb201_index", "seed")

COLUMNS: dict[str, str] = {
    "run_id": "TEXT NOT NULL",
    "dataset": "TEXT NOT NULL",
    "protocol": "TEXT NOT NULL",
    "nb201_index": "INTEGER NOT NULL",
    "seed": "INTEGER NOT NULL",
    "arch_str": "TEXT NOT NULL",
    "class_id": "INTEGER",
    "shared": "INTEGER NOT NULL",
    "trained_index": "INTEGER",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "init_rule": "TEXT NOT NULL",
    "lr_rule": "TEXT",
    "base_lr": "REAL",
    "lr": "REAL",
    "width": "INTEGER NOT NULL",
    "cells_per_stage": "INTEGER NOT NULL",
    "epochs": "INTEGER NOT NULL",
    "batch_size": "INTEGER NOT NULL",
    "split": "TEXT",
    "valid_acc": "REAL",
    "test_acc": "REAL",
    "train_acc": "REAL",
    "train_loss": "TEXT",
    "train_acc_curve": "TEXT",
    "diverged_epoch": "INTEGER",
    "attempts": "INTEGER NOT NULL",
    "wall_s": "REAL",
    "images_per_s": "REAL",
    "n_params": "INTEGER",
    "device": "TEXT",
    "versions": "TEXT",
    "finished_at": "TEXT",
}
JSON_LISTS = ("train_loss", "train_acc_curve")


class StoreError(ValueError):
    """The results location cannot be used (read-only, not a directory, another run's files)."""


class ResultsMirror:
    """`<uri>/<run_id>/`: copies of the exported files on any filesystem pyarrow opens (s3://, gs://,
    abfs://, hdfs://, file://). Each copy goes to a temporary name and is then moved into place, so a
    reader finds the previous file or the new one, never part of one. Opening it writes a probe file,
    so that a wrong URI or missing credentials fail before any training."""

    def __init__(self, uri: str, run_id: str) -> None:
        from pyarrow import fs

        self.uri = f"{uri.rstrip('/')}/{run_id}"
        try:
            self._fs, base = fs.FileSystem.from_uri(uri)
            self._base = f"{base.rstrip('/')}/{run_id}"
            self._fs.create_dir(self._base, recursive=True)
            probe = f"{self._base}/.write-probe"
            with self._fs.open_output_stream(probe) as out:
                out.write(b"")
            self._fs.delete_file(probe)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, its I/O errors OSErrors
            raise StoreError(
                f"cannot write to results_uri {self.uri} ({_first_line(error)}); check the URI, its credentials "
                "and that the destination is writable"
            ) from None

    def copy(self, path: Path) -> str:
        """Upload one local file under its own name; returns the URI it now has."""
        target = f"{self._base}/{path.name}"
        tmp = f"{target}.tmp"
        try:
            with path.open("rb") as source, self._fs.open_output_stream(tmp) as out:
                shutil.copyfileobj(source, out, 1 << 20)
            self._fs.move(tmp, target)
        except (OSError, ValueError) as error:
            raise StoreError(
                f"could not copy {path.name} to {self.uri} ({_first_line(error)}); the results are safe in "
                f"{path.parent}: rerun the same command to copy them again"
            ) from None
        return f"{self.uri}/{path.name}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ResultsStore:
    """`results/<run_id>/results.sqlite` plus its Parquet export (and its mirror at `mirror_uri`)."""

    def __init__(self, run_dir: Path, mirror_uri: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create results folder {self.run_dir}: {error.strerror}; choose a writable --results-dir"
            ) from None
        probe = self.run_dir / ".write-probe"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreError(
                f"results folder {self.run_dir} is not writable ({error.strerror}); choose a writable --results-dir"
            ) from None
        self.mirror = ResultsMirror(mirror_uri, self.run_dir.name) if mirror_uri else None
        self.path = self.run_dir / "results.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
        self._db.execute(f"CREATE TABLE IF NOT EXISTS results ({columns}, PRIMARY KEY ({', '.join(KEY)}))")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------

    def statuses(self) -> dict[tuple[str, int, int], tuple[str, int]]:
        """(protocol, nb201_index, seed) -> (status, attempts) for every stored row."""
        rows = self._db.execute("SELECT protocol, nb201_index, seed, status, attempts FROM results")
        return {(p, i, s): (status, attempts) for p, i, s, status, attempts in rows}

    def table(self) -> pd.DataFrame:
        frame = pd.read_sql_query("SELECT * FROM results ORDER BY protocol, nb201_index, seed", self._db)
        frame["shared"] = frame["shared"].astype(bool)
        for column in JSON_LISTS:
            frame[column] = frame[column].map(lambda text: json.loads(text) if text else [])
        return frame

    # --- writing (driver only) -------------------------------------------------------------

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or replace rows in one transaction: all of them land, or none."""
        records = []
        for row in rows:
            missing = [k for k in KEY if row.get(k) is None]
            if missing:
                raise ValueError(f"row lacks key columns {missing}")
            record = {name: row.get(name) for name in COLUMNS}
            for column in JSON_LISTS:
                record[column] = json.dumps(record[column] or [])
            if isinstance(record["versions"], dict):
                record["versions"] = json.dumps(record["versions"], sort_keys=True)
            record["shared"] = int(bool(record["shared"]))
            records.append(record)
        if not records:
            return
        names = list(COLUMNS)
        sql = f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        with self._db:  # BEGIN ... COMMIT, rolled back on error
            self._db.execute("BEGIN")
            self._db.executemany(sql, [tuple(r[n] for n in names) for r in records])

    def export_parquet(self) -> Path:
        """Rewrite results.parquet atomically from the SQLite table, then copy it to the mirror."""
        out = self.run_dir / "results.parquet"
        tmp = out.with_name(out.name + ".tmp")
        self.table().to_parquet(tmp, index=False)
        os.replace(tmp, out)
        if self.mirror is not None:
            self.mirror.copy(out)
        return out
