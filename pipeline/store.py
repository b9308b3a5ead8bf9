"""The results store: one SQLite table per run, written only by the driver, exported to Parquet.

SQLite gives what a long run needs: each finished unit's rows land in one transaction, so a
killed driver leaves whole rows or none; a rerun reads what is finished and skips it. The
Parquet file next to it is rewritten atomically (temp file + rename) for pandas users, and,
with `results_uri` set, copied to `<results_uri>/<run_id>/` the same way (a cluster's head node
may have no disk that outlives it). Schema: results/README.md.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import atomic_path
from core.errors import UserError
from core.rows import KEY, arrow_schema, column_kinds, encode_json, sqlite_columns, to_record


class StoreError(UserError):
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
        tmp = f"{target}.{uuid.uuid4().hex[:12]}.tmp"  # unique: two writers never share a temp file
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
        columns = ", ".join(f"{name} {kind}" for name, kind in sqlite_columns().items())
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
        """Every row, typed as `core.rows.TrialRow` declares (JSON columns decoded)."""
        frame = pd.read_sql_query("SELECT * FROM results ORDER BY protocol, nb201_index, seed", self._db)
        for name, (kind, _) in column_kinds().items():
            if kind == "bool":
                frame[name] = frame[name].map(lambda v: None if v is None or pd.isna(v) else bool(v)).astype("boolean")
            elif kind == "list[float]":
                frame[name] = frame[name].map(lambda text: json.loads(text) if text else [])
        return frame

    # --- writing (driver only) -------------------------------------------------------------

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or replace rows in one transaction: all of them land, or none."""
        kinds = column_kinds()
        records = []
        for row in rows:
            record = to_record(row)
            records.append(tuple(encode_json(kinds[name][0], value) for name, value in record.items()))
        if not records:
            return
        names = list(kinds)
        sql = f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        with self._db:  # BEGIN ... COMMIT, rolled back on error
            self._db.execute("BEGIN")
            self._db.executemany(sql, records)

    def export_parquet(self) -> Path:
        """Rewrite results.parquet atomically from the SQLite table, then copy it to the mirror."""
        out = self.run_dir / "results.parquet"
        with atomic_path(out) as tmp:
            self.table().to_parquet(tmp, index=False, schema=arrow_schema())
        if self.mirror is not None:
            self.mirror.copy(out)
        return out
