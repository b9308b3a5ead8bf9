"""The results store: one SQLite table per run, written only by the driver, exported to Parquet.

SQLite gives what a long run needs: each finished unit's rows land in one transaction, so a
killed driver leaves whole rows or none; a rerun reads what is finished and skips it. The
Parquet file next to it is rewritten atomically (temp file + rename) for pandas users, and,
with `results_uri` set, copied to `<results_uri>/<run_id>/` the same way (a cluster's head node
may have no disk that outlives it). Schema: results/README.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyarrow import fs

from core.atomic import atomic_path
from core.errors import UserError
from core.rows import KEY, arrow_schema, column_kinds, encode_json, sqlite_columns, to_record
from core.runfiles import LATEST, RESULTS_DB, RESULTS_TABLE


class StoreError(UserError):
    """The results location cannot be used (read-only, not a directory, another run's files)."""


class DiskFullError(StoreError):
    """The disk filled up mid-run: what finished is safe in SQLite; free space and rerun to resume."""


class MirrorError(StoreError):
    """A copy to `results_uri` failed; the local files are whole."""


META_TABLE = "run_meta"
"""Key/value facts of the run that owns a store (run id, config, data fingerprint, code identity)."""


@dataclass(frozen=True)
class StoredIdentity:
    """One distinct (run, data, code) among a store's rows, and how many rows carry it."""

    run_id: str | None
    data_fingerprint: str | None
    code_identity: str | None
    rows: int


@dataclass(frozen=True)
class StoredRun:
    """What an existing results.sqlite says about the run(s) that wrote it, read without changing it."""

    meta: dict[str, str]
    """The `run_meta` table (empty for a store written before it existed)."""
    identities: tuple[StoredIdentity, ...]
    """Each distinct identity among the stored rows, most rows first."""
    base_lrs: dict[str, frozenset[float]] = dataclasses.field(default_factory=dict)
    """{protocol: the distinct base LRs its rows were trained at} (scaled protocols only)."""

    @property
    def rows(self) -> int:
        return sum(identity.rows for identity in self.identities)


def inspect_store(path: Path) -> StoredRun | None:
    """Read a results.sqlite read-only (None when absent): a corrupt file, another program's database or
    an older schema is a StoreError naming the fix, and the file is left exactly as it was."""
    if not path.exists():
        return None
    fix = f"move {path} away (or delete it), or give this run a new name (--set name=...)"
    # Without a -wal file everything is in the main file: `immutable` reads it without creating -shm/-wal
    # files (a refused run leaves the folder exactly as it was); with one, a read-only reader needs them.
    mode = "ro" if path.with_name(path.name + "-wal").exists() else "ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode={mode}", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "results" not in tables:
                raise StoreError(f"{path} is not a results store of this pipeline (no results table); {fix}")
            have = {row[1] for row in db.execute("PRAGMA table_info(results)")}
            # a nullable column added to TrialRow since is added when the store opens (ResultsStore)
            missing = [name for name, kind in sqlite_columns().items() if name not in have and "NOT NULL" in kind]
            if missing:
                raise StoreError(
                    f"{path} was written by another version of this pipeline (no column {', '.join(missing[:3])}); "
                    f"{fix}"
                )
            meta = dict(db.execute(f"SELECT key, value FROM {META_TABLE}")) if META_TABLE in tables else {}
            identities = tuple(
                StoredIdentity(*row)
                for row in db.execute(
                    "SELECT run_id, data_fingerprint, code_identity, COUNT(*) FROM results "
                    "GROUP BY run_id, data_fingerprint, code_identity ORDER BY COUNT(*) DESC"
                )
            )
            base_lrs: dict[str, set[float]] = {}
            for protocol, base_lr in db.execute(
                "SELECT DISTINCT protocol, base_lr FROM results WHERE base_lr IS NOT NULL"
            ):
                base_lrs.setdefault(protocol, set()).add(float(base_lr))
    except sqlite3.DatabaseError as error:  # not a database, truncated, encrypted ...
        raise StoreError(f"{path} is unreadable ({_first_line(error)}); {fix}") from None
    return StoredRun(meta, identities, {name: frozenset(values) for name, values in base_lrs.items()})


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC/EDQUOT from the OS, or SQLite's own "database or disk is full"."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


class ResultsMirror:
    """`<uri>/<run_id>/`: copies of the exported files on any filesystem pyarrow opens (s3://, gs://,
    abfs://, hdfs://, file://). Each copy goes to a temporary name and is then moved into place, so a
    reader finds the previous file or the new one, never part of one. Opening it writes a probe file,
    so that a wrong URI or missing credentials fail before any training."""

    def __init__(self, uri: str, run_id: str) -> None:
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
            raise MirrorError(
                f"could not copy {path.name} to results_uri {self.uri} ({_first_line(error)}); the local files are "
                f"whole in {path.parent}: rerun the same command to copy them again"
            ) from None
        return f"{self.uri}/{path.name}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def make_run_dir(run_dir: Path) -> Path:
    """Create the run folder and prove it writable (a probe file), or raise StoreError naming the fix."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"cannot create results folder {run_dir}: {error.strerror}; choose a writable --results-dir"
        ) from None
    probe = run_dir / f".write-probe.{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StoreError(
            f"results folder {run_dir} is not writable ({error.strerror}); choose a writable --results-dir"
        ) from None
    return run_dir


def point_latest(run_dir: Path) -> Path:
    """`<results_dir>/latest` -> the run folder (a relative symlink, replaced atomically), so that
    `pd.read_parquet("results/latest/results.parquet")` reads the newest run. Where the filesystem
    has no symlinks, `latest` is a text file holding the run folder's name."""
    run_dir = Path(run_dir)
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        if link.is_dir() and not link.is_symlink():  # a real folder named `latest`: leave it alone
            tmp.unlink()
            return link
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        with atomic_path(link) as pointer:
            pointer.write_text(run_dir.name + "\n")
    return link


class ResultsStore:
    """`results/<run_id>/results.sqlite` plus its Parquet export (and its mirror at `mirror_uri`)."""

    def __init__(self, run_dir: Path, mirror_uri: str | None = None) -> None:
        self.run_dir = make_run_dir(run_dir)
        self.mirror = ResultsMirror(mirror_uri, self.run_dir.name) if mirror_uri else None
        self.path = self.run_dir / RESULTS_DB
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            columns = ", ".join(f"{name} {kind}" for name, kind in sqlite_columns().items())
            self._db.execute(f"CREATE TABLE IF NOT EXISTS results ({columns}, PRIMARY KEY ({', '.join(KEY)}))")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
            have = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            for name, kind in sqlite_columns().items():  # nullable columns TrialRow gained since (null in old rows)
                if name not in have:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
        except (OSError, sqlite3.Error) as error:  # disk full, read-only, a locked or damaged file
            kind = DiskFullError if is_disk_full(error) else StoreError
            raise kind(
                f"cannot open {self.path} ({_first_line(error)}); free space or fix the folder, then rerun the same "
                "command"
            ) from None

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

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute(f"SELECT key, value FROM {META_TABLE}"))

    def table(self) -> pd.DataFrame:
        """Every row, typed as `core.rows.TrialRow` declares (JSON columns decoded)."""
        frame = pd.read_sql_query("SELECT * FROM results ORDER BY protocol, nb201_index, seed", self._db)
        for name, (kind, _) in column_kinds().items():
            if kind == "bool":
                frame[name] = frame[name].map(lambda v: None if v is None or pd.isna(v) else bool(v)).astype("boolean")
            elif kind == "list[float]":
                frame[name] = frame[name].map(lambda text: json.loads(text) if isinstance(text, str) else [])
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

    def write_meta(self, items: dict[str, str]) -> None:
        """Record run-level facts (one transaction)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", items.items())

    def export_parquet(self) -> Path:
        """Rewrite results.parquet atomically from the SQLite table, then copy it to the mirror."""
        out = self.run_dir / RESULTS_TABLE
        with atomic_path(out) as tmp:
            self.table().to_parquet(tmp, index=False, schema=arrow_schema())
        if self.mirror is not None:
            self.mirror.copy(out)
        return out
