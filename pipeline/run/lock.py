"""One writer per run folder: the driver holds `flock` on `<run>/.lock` for the whole run.

Two drivers on one folder would train the same units twice and race on its files. The lock is an
advisory `fcntl.flock`: the kernel drops it when the holder exits, however it exits (SIGKILL too),
so a stale lock never blocks a rerun. The holder writes its pid, host and start time into the file
so that the second driver's error can name it. The file itself is never deleted (deleting a lock
file that another process has open re-opens the race it prevents).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from core.errors import UserError
from core.runfiles import LOCK_FILE

LOCK_NAME = LOCK_FILE


class RunLockError(UserError):
    """Another driver is writing this run folder."""


class RunLock:
    """`with RunLock(run_dir):` holds the folder's lock or raises RunLockError naming the holder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunLockError(
                f"run folder {self.path.parent} is in use by another driver ({holder}); wait for it to finish, "
                "or stop it and rerun the same command to resume"
            ) from None
        except OSError as error:  # a filesystem without flock support
            os.close(fd)
            raise RunLockError(
                f"cannot lock {self.path} ({error.strerror}); use a local or NFSv4 --results-dir"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def check_free(run_dir: Path) -> None:
    """Read-only: RunLockError when another driver holds the folder's lock now (nothing is created), so
    that a driver started a moment after another one names the lock, not the other's half-made store."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file yet (or unreadable: acquire says so)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockError(
            f"run folder {path.parent} is in use by another driver ({_describe(os.pread(fd, 4096, 0))}); wait for "
            "it to finish, or stop it and rerun the same command to resume"
        ) from None
    except OSError:
        return
    finally:
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        holder = json.loads(raw.decode())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
