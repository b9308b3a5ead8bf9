"""The sweep: every (cell, protocol, seed) of a run config trained through Ray, resumable.

Read top to bottom: `sweep` checks every user input before Ray starts (`_prepare`), resolves
the base LRs (pipeline.sweep.finder), asks the store what is left (`units.remaining`, a pure step),
writes the rows that need no training, and `drain`s the rest through Ray tasks (drain.py), writing
each unit's rows as it lands. The driver is the only writer of the results store. Admitting a run
(`_prepare`, `refusal_leaves_no_trace`) is here; training it is drain.py's.

Why Ray core tasks for the sweep and Tune only for the base-LR grid: a Tune trial costs about
2.5 s more than a task on this machine (11 h over 15,625 cells), and the sweep needs none of
Tune's search machinery. Tasks give retries of killed workers and lost nodes (`max_retries`),
fractional GPUs, and run unchanged on a laptop (embedded `ray.init()`) or a cluster (`RAY_ADDRESS`,
or as a Ray Job: `make submit`, whose entrypoint Ray gives the cluster's `host:port` in RAY_ADDRESS).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from core.atomic import atomic_write_text
from core.errors import UserError
from core.runfiles import LATEST, RESULTS_DB, RESULTS_TABLE, SPEC_FILE
from pipeline.run.base_lr import PIN_KEY, check_pinned
from pipeline.run.identity import RunIdentity, check_resume
from pipeline.run.lock import RunLock, check_free
from pipeline.run.rows import no_path_row
from pipeline.run.spec import RunSpec
from pipeline.run.store import (
    DiskFullError,
    MirrorError,
    ResultsMirror,
    ResultsStore,
    StoredRun,
    StoreError,
    inspect_store,
    is_disk_full,
    make_run_dir,
    point_latest,
)
from pipeline.run.units import remaining
from pipeline.sweep.cluster import Log, check_address, connect, job_path_warnings, shutdown
from pipeline.sweep.drain import drain, stamped
from pipeline.sweep.finder import resolve_base_lrs
from pipeline.sweep.preflight import (
    check_base_lr_cache,
    check_cluster_resources,
    check_labels,
    check_latest,
    check_local_device,
)
from pipeline.train.data import load_splits

Trainer = Callable[[RunSpec, list[int], Any, ResultsStore, Log], dict[str, int]] | None


def _train_all(spec: RunSpec, selected: list[int], data: Any, store: ResultsStore, log: Log) -> dict[str, int]:
    """Base LRs, what is left, the rows that need no training, then the trainings through Ray."""
    data_ref = ray.put(data)
    base_lrs = resolve_base_lrs(
        spec, data_ref, data.fingerprint, log, pinned_base_lrs(store.meta(), inspect_store(store.path))
    )
    store.write_meta({PIN_KEY: json.dumps(base_lrs, sort_keys=True)})  # reused by every resume of this run
    atomic_write_text(spec.run_dir / "base_lr.json", json.dumps(base_lrs, indent=1))  # the base LRs this run used
    todo = remaining(spec, selected, store.statuses())
    no_path = [no_path_row(spec, p, i, s, base_lrs[p.name]) for p, s, i in todo.no_path]
    store.write(stamped(no_path, data.fingerprint))
    log(todo.summary(len(selected), spec.max_attempts))
    progress = drain(spec, todo, base_lrs, data_ref, len(data.train_y), store, log, data.fingerprint)
    return todo.counts(progress.done, progress.failed)


# --- entry points for the CLI --------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    table: Path
    counts: dict[str, int]


def _prepare(spec: RunSpec, log: Log, *, allow_code_change: bool = False) -> tuple[Any, ResultsStore, RunLock]:
    """Everything that can fail on user input, before Ray starts: the base-LR cache, the data (its
    labels and fingerprint), the run's identity against what its folder holds (read-only first, so a
    refused run changes no file), then the folder's lock. Returns the data, the open store and the
    held lock; spec.yaml and results/latest are written only once the run is known to be this one."""
    check_latest(Path(spec.results_dir))
    check_base_lr_cache(spec)
    data = load_splits(
        spec.dataset,
        spec.data_dir,
        download=spec.download,
        max_train=spec.max_train,
        max_eval=spec.max_eval,
        image_size=spec.image_size,
    )
    check_labels(data, str(spec.data_dir))
    log(data.describe())
    identity = RunIdentity.of(spec, data.fingerprint)
    db = spec.run_dir / RESULTS_DB
    check_free(spec.run_dir)  # a driver at work: name it, not its half-made store
    try:
        _check_stored(identity, inspect_store(db), str(db), allow_code_change)
    except UserError:
        check_free(spec.run_dir)  # it may have started in between
        raise
    if spec.results_uri:
        ResultsMirror(spec.results_uri, spec.run_id)  # its probe write, before this run writes anything
    lock = RunLock(make_run_dir(spec.run_dir)).acquire()
    try:
        stored = inspect_store(db)  # again, now that no other driver can write it
        code_changed = _check_stored(identity, stored, str(db), allow_code_change)
        store = ResultsStore(spec.run_dir, spec.results_uri)
    except BaseException:
        lock.release()
        raise
    if code_changed:
        log(f"code changed since this run's rows were trained (now {identity.code_identity}); kept, recorded")
    store.write_meta(identity.meta(stored.meta if stored else None, code_changed=code_changed))
    atomic_write_text(spec.run_dir / SPEC_FILE, spec.to_yaml())
    point_latest(spec.run_dir)
    return data, store, lock


def _check_stored(identity: RunIdentity, stored: StoredRun | None, where: str, allow_code_change: bool) -> bool:
    """`check_resume`, then the base LRs of the stored rows against those the run recorded."""
    code_changed = check_resume(identity, stored, where, allow_code_change=allow_code_change)
    if stored is not None:
        check_pinned(pinned_base_lrs(stored.meta, stored), stored.base_lrs, where)
    return code_changed


def pinned_base_lrs(meta: dict[str, str], stored: StoredRun | None) -> dict[str, float | None]:
    """The base LRs a run recorded on its first start; for a store from before the record, the one base LR
    each protocol's rows carry."""
    if PIN_KEY in meta:
        return json.loads(meta[PIN_KEY])
    rows = stored.base_lrs if stored is not None else {}
    return {name: next(iter(values)) for name, values in rows.items() if len(values) == 1}


def _export_on_exit(store: ResultsStore, log: Log) -> tuple[Path | None, StoreError | None]:
    """Rewrite results.parquet from what SQLite holds, whatever ended the run: (the table, or None if
    that failed; the results_uri copy's error, if only that failed)."""
    try:
        return store.export_parquet(), None
    except MirrorError as error:  # the local table is whole; the copy is what failed
        return store.run_dir / RESULTS_TABLE, error
    except (OSError, StoreError) as error:
        log(f"warning: results.parquet not rewritten ({error}); `python -m pipeline export --run {store.run_dir}`")
        return None, None


def sweep(
    spec: RunSpec, address: str | None, log: Log = print, *, allow_code_change: bool = False, train: Trainer = None
) -> RunOutcome:
    """The main job (`make evaluate`): every selected cell under every protocol and seed, resumable.

    The Parquet table is rewritten on every exit (done, error, Ctrl-C, SIGTERM turned into
    KeyboardInterrupt by the CLI); a full disk is one DiskFullError line, the store left whole."""
    check_address(address)
    check_local_device(spec, address)
    selected = spec.cells.resolve()
    for warning in job_path_warnings(spec):
        log(warning)
    with refusal_leaves_no_trace(spec.run_dir):
        data, store, lock = _prepare(spec, log, allow_code_change=allow_code_change)
        table, mirror_error = None, None
        try:
            try:
                connect(address)
                try:
                    check_cluster_resources(spec)
                    counts = (train or _train_all)(spec, selected, data, store, log)
                finally:
                    shutdown()
            finally:
                table, mirror_error = _export_on_exit(store, log)
        except (OSError, sqlite3.OperationalError) as error:
            if not is_disk_full(error):
                raise
            kept = f"{RESULTS_DB} and {RESULTS_TABLE}" if table else RESULTS_DB
            raise DiskFullError(
                f"disk full while writing {spec.run_dir} ({error}); every finished unit is in {kept}: free space "
                "and rerun the same command to resume"
            ) from None
        finally:
            store.close()
            lock.release()
    if mirror_error is not None:
        raise mirror_error
    if table is None:
        raise StoreError(f"could not write {spec.run_dir / 'results.parquet'}; rerun `python -m pipeline export`")
    return RunOutcome(spec.run_dir, table, counts)


@contextlib.contextmanager
def refusal_leaves_no_trace(run_dir: Path) -> Iterator[None]:
    """A refusal (a UserError) of a run whose folder this invocation created, before any row landed,
    removes the folder (and a results folder it created) and points `latest` back where it was."""
    results = run_dir.parent
    created = [folder for folder in (results, run_dir) if not folder.exists()]
    link = results / LATEST
    before = os.readlink(link) if link.is_symlink() else None
    try:
        yield
    except UserError:
        if created and not _has_rows(run_dir / RESULTS_DB):
            shutil.rmtree(run_dir, ignore_errors=True)
            if link.is_symlink() and os.readlink(link) == run_dir.name:
                if before is None:
                    link.unlink()
                else:
                    _repoint(link, before)
            if results in created and results.is_dir() and not any(results.iterdir()):
                results.rmdir()
        raise


def _has_rows(db: Path) -> bool:
    try:
        stored = inspect_store(db)
    except StoreError:
        return True  # unreadable: not ours to delete
    return stored is not None and stored.rows > 0


def _repoint(link: Path, target: str) -> None:
    tmp = link.with_name(f".{LATEST}.restore.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def find_base_lrs(spec: RunSpec, address: str | None, log: Log = print) -> dict[str, float | None]:
    """`find-base-lr`: resolve (and cache) every scaled protocol's base LR."""
    check_address(address)
    check_local_device(spec, address)
    with refusal_leaves_no_trace(spec.run_dir):
        data, store, lock = _prepare(spec, log)
        pinned = pinned_base_lrs(store.meta(), inspect_store(store.path))
        store.close()
        try:
            connect(address)
            try:
                check_cluster_resources(spec)
                return resolve_base_lrs(spec, ray.put(data), data.fingerprint, log, pinned)
            finally:
                shutdown()
        finally:
            lock.release()
