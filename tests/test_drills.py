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
import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from drill_cases import BAD_INPUTS, OTHER_COMMANDS, _bad, _files
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
    command = OTHER_COMMANDS.get(kind, "evaluate")
    with hold:
        before = _files(tmp_path / "results")
        code = main([command, *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    print(f"\nDRILL bad-input | {kind} | {code} | {lines[0] if lines else err.strip()[-200:]}")
    assert code == 2, err
    assert len(lines) == 1 and expected in lines[0], err
    assert err.strip().splitlines()[-1] == lines[0], "the error runs over more than one line"
    assert "Traceback" not in err
    after = _files(tmp_path / "results")
    changed = sorted(set(after or {}) ^ set(before or {})) or [k for k in after or {} if after[k] != before[k]]
    assert after == before, f"files under results/ changed: {changed}"


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


# --- issue 20, items 2-5 on a real Ray: finder retries, signals, the pinned base LR ------------------------


def _interrupt(driver: subprocess.Popen, signum: int, logs: Path) -> str:
    """Send `signum` to the driver alone; it must end with one "interrupted" line, exit 128 + signum."""
    os.kill(driver.pid, signum)
    try:
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    err = (logs / "stderr").read_text()
    assert driver.returncode == 128 + signum, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({signal.Signals(signum).name})"), err[-2000:]
    assert "Traceback" not in err and "error:" not in err and "Aborted" not in err and "*** SIG" not in err
    return err


def test_signals_finder_retries_and_the_pinned_base_lr(root, cifar10_dir):
    """One run, three drivers: (1) the finder's first trial worker is SIGKILLed (Tune retries it, the pick
    is made of finite losses only), then SIGINT once the sweep runs: exit 130; (2) with the cache entry
    changed meanwhile, SIGTERM mid-sweep: exit 143, no stack dump; (3) resume to the end: every scaled row
    at the base LR the run recorded first, not the changed cache's."""
    pid_dir = root / "pids"
    pid_dir.mkdir()
    (pid_dir / "hold").touch()
    results = root / "results"
    protocols = [
        {"name": "nb201", "init": "kaiming", "lr": 0.1},
        {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": "auto"},
    ]
    search = {"low": 0.1, "high": 0.4, "points": 2, "epochs": 1, "seeds": [0, 1]}
    config = write_config(root / "drill.yaml", cifar10_dir, CELLS[:2], results, protocols=protocols,
                          base_lr_search=search)  # fmt: skip
    marker = root / "killed-once"
    env = ray_env(root, NB201_TRIAL_PID_DIR=str(pid_dir), NB201_FAULT_KILL_ONCE=str(marker))

    driver = start_driver(config, env, root / "logs-1")
    wait_for("the sweep's first trial", lambda: attempts(pid_dir), timeout=400, driver=driver)
    _interrupt(driver, signal.SIGINT, root / "logs-1")
    run_dir = next(results.glob("drill-*"))
    assert marker.exists() and (run_dir / "results.parquet").is_file()
    search_record = json.loads((run_dir / "base_lr_search.json").read_text())["scaled"]
    assert all(t["loss"] is not None for t in search_record["trials"]) and len(search_record["trials"]) == 4
    assert search_record["se_defined"] is True
    picked = search_record["base_lr"]
    home = Path(env["HOME"]) / ".ray"
    assert home.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for p in home.glob("auth_token*")), "the Ray token is readable by others"

    cache_path = results / "base_lr_cache.json"
    cache = json.loads(cache_path.read_text())
    for entry in cache.values():
        entry["base_lr"] = picked / 2  # another driver, or a hand edit, changes the cache between invocations
    cache_path.write_text(json.dumps(cache))
    seen = len(attempts(pid_dir))
    driver = start_driver(config, ray_env(root, NB201_TRIAL_PID_DIR=str(pid_dir)), root / "logs-2")
    wait_for("a trial of the resumed sweep", lambda: len(attempts(pid_dir)) > seen, timeout=400, driver=driver)
    _interrupt(driver, signal.SIGTERM, root / "logs-2")
    assert (run_dir / "results.parquet").is_file()

    (pid_dir / "hold").unlink()
    _, err = finish(start_driver(config, ray_env(root), root / "logs-3"), root / "logs-3", timeout=400)
    assert "recorded by this run" in err
    table = pd.read_parquet(run_dir / "results.parquet")
    scaled = table[(table["protocol"] == "scaled") & (table["status"] == "ok")]
    assert len(scaled) and (scaled["base_lr"] == picked).all(), scaled["base_lr"]
    print(f"\nDRILL signals: pick {picked:g} kept over the cache's {picked / 2:g}; SIGINT 130, SIGTERM 143")


_WEAKREF_EXIT = """
import weakref
from pipeline.sweep.cluster import exit_quietly_when_stopped
if {hook}:
    exit_quietly_when_stopped()
class Thing: pass
thing = Thing()
def stop(_): raise {error}
ref = weakref.ref(thing, stop)
del thing  # the callback runs here: its exception is unraisable
print("lived on", flush=True)
"""


def _weakref_exit(hook: bool, error: str) -> subprocess.CompletedProcess[str]:
    code = _WEAKREF_EXIT.format(hook=hook, error=error)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("hook", [False, True])
def test_a_stop_inside_a_weakref_callback_exits_without_a_traceback(hook: bool) -> None:
    """Ray's SIGTERM handler raises SystemExit; landing in a weakref callback (the finder drill's race on a fast
    machine) Python prints it as an ignored exception and the worker lives on. With the hook a worker installs,
    it exits with the code Ray meant and prints nothing; any other unraisable error is still reported."""
    run = _weakref_exit(hook, "SystemExit(7)")
    if hook:
        assert (run.returncode, run.stdout, "Traceback" in run.stderr) == (7, "", False), run.stderr
    else:  # what the drill saw: a traceback, and a worker that ignores its stop
        assert run.returncode == 0 and "lived on" in run.stdout and "Traceback" in run.stderr
    other = _weakref_exit(True, "ValueError('kept')")
    assert other.returncode == 0 and "lived on" in other.stdout and "ValueError: kept" in other.stderr
