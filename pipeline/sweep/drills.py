"""Fault drills: environment switches that let tests kill or hold the very process training a unit.
Never set in normal runs; `cluster.connect` forwards them to every worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pipeline.run.units import Unit

FAULT_ENV = "NB201_FAULT_KILL_ONCE"
"""Fault drill: if set to a path that does not exist yet, the first unit creates it and SIGKILLs
its own worker process mid-trial, so tests can watch Ray retry it. Never set in normal runs."""

TRIAL_PID_ENV = "NB201_TRIAL_PID_DIR"
"""Fault drills: if set to a folder, every attempt at a unit writes `<protocol>-<cell>-<seed>.<pid>`
there as it starts, then waits while `<folder>/hold` exists (at most HOLD_MAX_S), so that a test can
SIGKILL the very process, or node, training a unit, and count the attempts. Never set in normal runs."""
HOLD_MAX_S = 300.0


def maybe_kill_self() -> None:
    marker = os.environ.get(FAULT_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def announce_attempt(unit: Unit) -> None:
    folder = os.environ.get(TRIAL_PID_ENV)
    if not folder:
        return
    pid = os.getpid()
    Path(folder, f"{unit.protocol.name}-{unit.index}-{unit.seed}.{pid}").write_text(str(pid))
    hold, deadline = Path(folder, "hold"), time.monotonic() + HOLD_MAX_S
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
