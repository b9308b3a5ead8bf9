"""Ray, joined or started: the cluster connection, what a task may ask of it, where a task ran.

`connect` joins the cluster at RAY_ADDRESS (or `--address`), else starts an embedded local Ray;
the sweep (pipeline.sweep.orchestrate) and the base-LR finder (pipeline.sweep.finder) run on it. Together
these three are the only modules that import Ray; the engine runs without it.

GPUs: a task asks for `gpus_per_trial` (a fraction: several nets share one GPU, pipeline.sweep.packing);
Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned, so inside the task torch's `cuda` (= cuda:0)
is that GPU. `placement()` records the assignment for the `device` column:
`...; ray gpu ids [0], CUDA_VISIBLE_DEVICES=0; node 10.0.0.7`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray._private import ray_constants

from core.errors import UserError
from pipeline.run.spec import RunSpec
from pipeline.sweep.drills import FAULT_ENV, TRIAL_PID_ENV
from pipeline.sweep.packing import gpu_fraction
from pipeline.train.readers import data_dirs

Log = Callable[[str], None]
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray in a job's entrypoint (`ray job submit`): the job's runtime env, as JSON."""


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ClusterError(UserError):
    """Ray could not be started or reached; the message says which address and what to do."""


def check_address(address: str | None) -> None:
    """Fail in seconds, not minutes, when a given `host:port` does not answer (Ray's own retries are slow)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ClusterError(
            f"Ray address {address!r} is a dashboard (job submission) address: submit the run with "
            f"`make submit RAY_ADDRESS={address}`, or give the driver the cluster's host:port (default port 6379)"
        )
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not host:port; fix RAY_ADDRESS / --address")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({error.strerror or error}); check RAY_ADDRESS / --address, "
            "or unset it to run locally"
        ) from None


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start an embedded local Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = _drill_env()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "configure_logging": True,
        "logging_level": "warning",
        "log_to_driver": True,
        "runtime_env": {"env_vars": env} if env else None,
    }
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colour codes in logs written to files
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            _embedded_on_loopback()
            _private_token_folder()
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError or its own types
        where = f"Ray cluster at {address}" if address else "a local Ray instance"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClusterError(
            f"cannot reach {where} ({first_line}); check RAY_ADDRESS / --address, or unset it to run locally"
        ) from None
    finally:
        honour_signals()  # ray.init replaces the SIGTERM handler with one that dumps a C++ stack
    _private_token_folder()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: ends the driver through its cleanup (Parquet written, Ray shut down); the
    CLI prints one "interrupted" line and exits 128 + the signal's number (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


RECEIVED: list[int] = []
"""Signals `honour_signals` caught, newest last: Ray's waits re-raise a plain KeyboardInterrupt for them."""


def _interrupt(signum: int, _frame: object) -> None:
    RECEIVED.append(signum)
    raise Interrupted(signum)


def honour_signals() -> None:
    """SIGINT and SIGTERM raise `Interrupted` in the driver's main thread. Called at start, and again
    after anything that installs its own handlers (ray.init for SIGTERM, Tune for SIGINT)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


def exit_quietly_when_stopped() -> None:
    """In a Ray worker (a sweep task, a finder trial): exit as Ray means to when it stops the worker, without
    a traceback on the driver's terminal. Ray turns SIGTERM into SystemExit; when that lands inside a weakref
    callback or a finalizer, Python cannot raise it, so it prints an "Exception ignored" traceback (which Ray
    forwards to the driver) and the worker lives on until it is killed. Other unraisable errors are reported
    as Python reports them."""
    sys.unraisablehook = _exit_on_unraisable_system_exit


def _exit_on_unraisable_system_exit(unraisable: Any) -> None:
    error = unraisable.exc_value
    if isinstance(error, SystemExit):
        os._exit(error.code if isinstance(error.code, int) else 1)
    sys.__unraisablehook__(unraisable)


def _private_token_folder() -> None:
    """`~/.ray` 0700 and its auth token 0600 (Ray writes the token world-readable, 0644)."""
    home = Path.home() / ".ray"
    try:
        home.mkdir(mode=0o700, exist_ok=True)
        home.chmod(0o700)
        token = home / "auth_token"
        if token.exists():
            token.chmod(0o600)
    except OSError:  # a read-only or foreign home: Ray's own defaults stand
        pass


EMBEDDED_ENV: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single-node mode: every Ray process binds to 127.0.0.1
    "RAY_enable_metrics_collection": "0",  # no metrics pipeline behind the Prometheus endpoints
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""What an embedded Ray is started with; a variable the user set wins (a cluster run sets none of them)."""


def _embedded_on_loopback() -> None:
    """Keep an embedded Ray on loopback. Ray 2.60 ignores `_node_ip_address="127.0.0.1"` and binds GCS,
    raylet, workers and agents to every interface or the host's address, unless it runs in its
    single-node mode, which it reads from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import: the variable
    is set for the processes Ray starts, and the constant for this already-imported one."""
    for name, value in EMBEDDED_ENV.items():
        os.environ.setdefault(name, value)
    # Ray's default for a local cluster (token auth on) is fine here; its warning saying so is noise.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")


def task_attempt() -> int:
    """0 for a task's first run, n for Ray's n-th retry of it (after its worker or node died)."""
    try:
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except (AttributeError, RuntimeError, TypeError, ValueError):  # a private API: absent in other versions
        return 0


def _drill_env() -> dict[str, str]:
    """Fault-drill variables of the driver, for workers on every node. In a Ray Job, those that the job's
    runtime env already sets are left to it (Ray refuses a driver env var that the job also sets)."""
    job_env = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env", {}).get("env_vars", {})
    return {name: os.environ[name] for name in (FAULT_ENV, TRIAL_PID_ENV) if name in os.environ and name not in job_env}


def running_as_ray_job() -> bool:
    return JOB_CONFIG_ENV in os.environ


def job_path_warnings(spec: RunSpec) -> list[str]:
    """In a Ray Job the driver runs in a copy of the repo on the head node that Ray deletes in time;
    relative paths point into it (data re-read or re-downloaded per job, results lost)."""
    if not running_as_ray_job():
        return []
    where = f"this job's working directory ({Path.cwd()}), which Ray deletes in time"
    warnings = []
    if not all(folder.is_absolute() for folder in data_dirs(spec.data_dir)):
        warnings.append(f"warning: data_dir {spec.data_dir!r} is inside {where}: pass --data-dir on the head's disk")
    if not Path(spec.results_dir).is_absolute() and not spec.results_uri:
        warnings.append(
            f"warning: results_dir {spec.results_dir!r} is inside {where}: pass --results-dir on shared storage "
            "or set results_uri"
        )
    return warnings


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def task_device(preferred: str) -> str:
    """CUDA when Ray gave this task a GPU and torch sees one; CPU otherwise."""
    if preferred == "cpu":
        return "cpu"
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def placement() -> str:
    """Where Ray ran this task, for the `device` column: its GPU ids, the CUDA_VISIBLE_DEVICES Ray set
    from them (so that torch's `cuda` is the assigned GPU), and the node's IP."""
    parts = []
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        ids = ", ".join(str(i) for i in gpu_ids)
        parts.append(f"ray gpu ids [{ids}], CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    parts.append(f"node {ray.util.get_node_ip_address()}")
    return "; ".join(parts)


def gpus_per_trial(spec: RunSpec) -> float:
    """Resolved GPU fraction: a number from the spec, or `auto` packing by model size."""
    value = spec.resources.gpus_per_trial
    if value == "auto":
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        return gpu_fraction(spec.width, spec.cells_per_stage) if has_gpus else 0.0
    return float(value)


# --- the sweep -----------------------------------------------------------------------------


FUSE_ON_GPU = 8
"""`resources.fuse: auto` on GPUs: HFTA's range for small models; pending the H200 calibration."""


def fuse_size(spec: RunSpec) -> int:
    """How many units of one cell a task trains as one fused network (`resources.fuse`)."""
    value = spec.resources.fuse
    if value == "auto":
        return FUSE_ON_GPU if gpus_per_trial(spec) > 0 else 1
    return int(value)
