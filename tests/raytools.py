"""Running real Ray in tests: isolated temp roots, a HOME that stops cloud-metadata probes, loopback
only, drivers as subprocesses, and cleanup of everything a (killed) driver leaves behind.

Each Ray instance lives under its own short temp root (RAY_TMPDIR, so that it neither finds nor is
found by any other Ray on the machine), with a HOME whose `ray_bootstrap_config.yaml` stops Ray's
cloud-metadata probes, on loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps a single-node Ray
on 127.0.0.1; Ray 2.60 turns an explicit 127.0.0.1 into the host's address). `kill_ray(root)` ends
whatever runs under a root, also what a SIGKILLed driver leaves behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
CELLS = [11, 284, 1000, 2000, 3000, 4000]
"""NB201 indices with an input->output path, each its own isomorphism class: one unit, one row each."""

# --- Ray processes under a root -----------------------------------------------------------------


def short_root(kind: str) -> Path:
    """Ray's socket paths (<root>/.../session_<date>_<pid>/sockets/plasma_store) must stay < 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=f"nb201-{kind}-", dir="/tmp"))


def ray_env(root: Path, **extra: str) -> dict[str, str]:
    home = root / "home"
    home.mkdir(exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    drop = ("RAY_ADDRESS", "NB201_FAULT_KILL_ONCE", "NB201_TRIAL_PID_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        HOME=str(home),
        RAY_TMPDIR=str(root),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def ray_processes(root: Path) -> list[psutil.Process]:
    """Processes of the Ray instances under `root`: a command line naming it (gcs_server, raylet,
    dashboard, log monitor) or an open file under it (workers and agents retitle themselves, but log
    into <root>/.../logs), and their descendants; never this process or its parents."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    key = str(root)
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        try:
            if key in " ".join(proc.cmdline()) or any(f.path.startswith(key) for f in proc.open_files()):
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:  # gone, or a zombie
            continue
    return [proc for pid, proc in found.items() if pid not in mine]


def kill_ray(root: Path) -> int:
    """SIGKILL every process under `root` until none is left; returns how many were killed."""
    killed: set[int] = set()
    for _ in range(10):
        procs = ray_processes(root)
        if not procs:
            return len(killed)
        for proc in procs:
            try:
                proc.kill()
                killed.add(proc.pid)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
    left = [f"{p.pid} {p.name()}" for p in ray_processes(root)]
    raise AssertionError(f"processes under {root} survive SIGKILL: {left}")


# --- runs -------------------------------------------------------------------------------------------


def write_config(path: Path, cifar10_dir: Path, cells: list[int | str], results_dir: Path, **extra: Any) -> Path:
    """A tiny run config (C=4, N=1, 1 epoch, 256 images); `extra` overrides or adds keys."""
    config = {
        "name": "drill",
        "dataset": "cifar10",
        "data_dir": str(cifar10_dir),
        "width": 4,
        "cells_per_stage": 1,
        "epochs": 1,
        "batch_size": 128,
        "max_train": 256,
        "max_eval": 256,
        "seeds": [0],
        "cells": {"select": "list", "cells": cells},
        "protocols": [{"name": "nb201", "init": "kaiming", "lr": 0.1}],
        "results_dir": str(results_dir),
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_driver(config: Path, env: dict[str, str], log_dir: Path, *flags: str) -> subprocess.Popen:
    """`python -m pipeline evaluate` in its own session (a process group to SIGKILL); output to files,
    so that a full pipe never stalls it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "evaluate", "--config", str(config), "--no-report", *flags],
        cwd=REPO,
        env=env,
        stdout=(log_dir / "stdout").open("w"),
        stderr=(log_dir / "stderr").open("w"),
        start_new_session=True,
    )


def finish(driver: subprocess.Popen, log_dir: Path, timeout: float = 300) -> tuple[str, str]:
    try:
        driver.wait(timeout=timeout)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    stdout, stderr = (log_dir / "stdout").read_text(), (log_dir / "stderr").read_text()
    assert driver.returncode == 0, stderr[-4000:]
    return stdout, stderr


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 180, driver: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the driver exited ({driver.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def attempts(pid_dir: Path) -> list[tuple[str, int]]:
    """(unit, worker pid) for every attempt the NB201_TRIAL_PID_DIR hook recorded, oldest first."""
    files = sorted((p for p in pid_dir.glob("*.*") if p.name != "hold"), key=lambda p: p.stat().st_mtime)
    return [(p.name.rsplit(".", 1)[0], int(p.name.rsplit(".", 1)[1])) for p in files]


def stored_rows(db: Path) -> pd.DataFrame:
    """The results table as another process sees it mid-run (read-only; WAL lets it read alongside)."""
    if not db.exists():
        return pd.DataFrame()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'results'").fetchone():
            return pd.DataFrame()  # the driver has created the file, not yet the table
        return pd.read_sql_query("SELECT * FROM results", connection)


def one_row_per_unit(table: pd.DataFrame, cells: list[int]) -> None:
    assert sorted(table["nb201_index"]) == sorted(cells), "a unit is lost or extra"
    assert not table.duplicated(["protocol", "nb201_index", "seed"]).any(), "duplicate rows"
    assert (table["status"] == "ok").all(), table[["nb201_index", "status", "error"]]
    assert table["test_acc"].between(0, 100).all()


# --- the drills ---------------------------------------------------------------------------------------
