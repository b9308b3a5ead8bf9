"""A real multi-node Ray cluster on loopback, started with `ray start` as on real machines: a head
(127.0.0.2, 1 CPU, no GPU, dashboard on 127.0.0.1) and GPU worker nodes (127.0.0.3; 127.0.0.4 for
the node-loss drill). The run goes in through `make submit` as a Ray Job; a node is removed mid-run.

The worker nodes declare GPUs this machine does not have (Ray allows it): trials are scheduled on the
GPU path (fractional `num_gpus`, CUDA_VISIBLE_DEVICES set by Ray) and torch, seeing no CUDA, trains
on the CPU. Loopback only: Ray 2.60's `ray start` swaps 127.0.0.1 for the host's address but keeps
the rest of 127/8, hence one such address per node. Each node has its own --temp-dir under one short
root, and the module's fixture kills every process under that root however the tests end.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest
from raytools import (
    CELLS,
    REPO,
    attempts,
    finish,
    kill_ray,
    one_row_per_unit,
    ray_env,
    short_root,
    start_driver,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow
RAY = REPO / ".venv" / "bin" / "ray"
GPU_FRACTION = 0.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalCluster:
    """Nodes started by `ray start`, each under `<root>/<name>`; stop() kills all of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pid_dir = root / "pids"
        self.pid_dir.mkdir()
        self.env = ray_env(root, RAY_AUTH_MODE="disabled", NB201_TRIAL_PID_DIR=str(self.pid_dir))
        del self.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]  # set, it refuses worker nodes
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.ips: dict[str, str] = {}

    @property
    def gcs_address(self) -> str:
        return f"{self.ips['head']}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, ip: str, *args: str) -> None:
        ports = (
            "node-manager",
            "object-manager",
            "dashboard-agent-listen",
            "dashboard-agent-grpc",
            "runtime-env-agent",
        )
        command = [str(RAY), "start", "--node-ip-address", ip, "--temp-dir", str(self.root / name)]
        command += [f"--{flag}-port={free_port()}" for flag in (*ports, "metrics-export")]
        command += ["--object-store-memory", str(80 * 2**20), "--disable-usage-stats", *args]
        with (self.root / f"{name}.log").open("w") as log:
            started = subprocess.run(command, env=self.env, stdout=log, stderr=log, timeout=120, check=False)
        assert started.returncode == 0, (self.root / f"{name}.log").read_text()[-3000:]
        self.ips[name] = ip

    def start_head(self) -> None:
        self._start(
            "head",
            "127.0.0.2",
            "--head",
            f"--port={self.gcs_port}",
            "--num-cpus=1",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            # notice a lost node in ~3 s rather than ~30 s
            "--system-config=" + json.dumps({"health_check_period_ms": 1000, "health_check_failure_threshold": 3}),
        )

    def add_node(self, name: str, ip: str, cpus: int, gpus: int) -> None:
        self._start(name, ip, f"--address={self.gcs_address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}")

    def node_of(self, pid: int) -> str:
        """Which node a worker process belongs to: the temp dir named by the raylet above it."""
        for process in psutil.Process(pid).parents():
            command = " ".join(process.cmdline())
            for name in self.ips:
                if f"{self.root / name}/" in command:
                    return name
        raise AssertionError(f"pid {pid} belongs to no node of this cluster")

    def remove_node(self, name: str) -> int:
        """SIGKILL every process of one node, as a machine lost at once would end them."""
        killed = kill_ray(self.root / name)
        del self.ips[name]
        return killed

    def stop(self) -> None:
        kill_ray(self.root)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    root = short_root("cluster")
    nodes = LocalCluster(root)
    try:
        nodes.start_head()
        nodes.add_node("w1", "127.0.0.3", cpus=2, gpus=1)
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


def make(target: str, cluster: LocalCluster, **variables: str) -> subprocess.CompletedProcess:
    arguments = [f"{key}={value}" for key, value in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", target, f"RAY_ADDRESS={cluster.dashboard}", *arguments],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def held_attempts(cluster: LocalCluster, count: int, driver=None) -> list[tuple[str, int, str]]:
    """Wait until `count` trials sit at the drill hook's hold; (unit, pid, node) for each."""
    found = wait_for(f"{count} trials to start", lambda: len(attempts(cluster.pid_dir)) >= count or None, driver=driver)
    assert found
    return [(unit, pid, cluster.node_of(pid)) for unit, pid in attempts(cluster.pid_dir)]


def test_submitted_job_packs_two_trials_per_gpu(cluster, cifar10_dir, published_csv):
    from ray.job_submission import JobStatus, JobSubmissionClient

    cells = CELLS[:3]
    mirror = cluster.root / "mirror"
    config = write_config(
        cluster.root / "job.yaml",
        cifar10_dir,
        cells,
        cluster.root / "results",  # the head's disk; on a real cluster a shared filesystem
        name="job",
        results_uri=f"file://{mirror}",
        reference=f"csv:{published_csv}",
        resources={"cpus_per_trial": 1, "gpus_per_trial": GPU_FRACTION, "torch_threads": 1, "fuse": 1},
        protocols=[
            {"name": "nb201", "init": "kaiming", "lr": 0.1},
            {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.2},
        ],
    )
    hold = cluster.pid_dir / "hold"
    hold.touch()
    try:
        submitted = make("submit", cluster, CONFIG=str(config), JOB="nb201-test-job")
        assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-3000:]
        assert "submitted job nb201-test-job" in submitted.stdout
        assert "make status JOB=nb201-test-job" in submitted.stdout
        assert "make logs JOB=nb201-test-job" in submitted.stdout
        # Two trials at once on w1's one GPU (2 CPUs there, 0.5 GPU each): both alive, same node.
        (unit_a, pid_a, node_a), (unit_b, pid_b, node_b) = held_attempts(cluster, 2)[:2]
        assert node_a == node_b == "w1" and psutil.pid_exists(pid_a) and psutil.pid_exists(pid_b)
    finally:
        hold.unlink()

    client = JobSubmissionClient(cluster.dashboard)
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = wait_for("the job to end", lambda: (s := client.get_job_status("nb201-test-job")) in terminal and s, 300)
    logs = make("logs", cluster, JOB="nb201-test-job").stdout
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "succeeded" in make("status", cluster, JOB="nb201-test-job").stdout.lower()
    assert f"done: {2 * len(cells)} units ({2 * len(cells)} trained now, 0 already finished, 0 failed now" in logs

    run_dir = next((cluster.root / "results").glob("job-*"))
    table = pd.read_parquet(run_dir / "results.parquet")
    for _, protocol in table.groupby("protocol"):
        one_row_per_unit(protocol, cells)
    assert table["device"].str.contains(r"ray gpu ids \[0\], CUDA_VISIBLE_DEVICES=0; node 127\.0\.0\.3$").all(), table[
        "device"
    ]
    held = table.set_index(["protocol", "nb201_index"]).loc[
        [(u.split("-")[0], int(u.split("-")[1])) for u in (unit_a, unit_b)], "device"
    ]
    assert held.nunique() == 1  # the two concurrent trials: same GPU id, same node

    copied = mirror / run_dir.name
    pd.testing.assert_frame_equal(pd.read_parquet(copied / "results.parquet"), table)
    assert (copied / "report.md").read_text() == (run_dir / "report.md").read_text()
    print(f"\nCLUSTER job: {len(table)} rows, devices {sorted(set(table['device']))}")


def test_lost_node_units_are_rescheduled_on_the_rest(cluster, cifar10_dir):
    cluster.add_node("w2", "127.0.0.4", cpus=1, gpus=1)
    for stale in cluster.pid_dir.glob("*.*"):
        stale.unlink()
    cells = CELLS[:5]
    config = write_config(
        cluster.root / "lost.yaml",
        cifar10_dir,
        cells,
        cluster.root / "results",
        name="lost",
        resources={"cpus_per_trial": 1, "gpus_per_trial": GPU_FRACTION, "torch_threads": 1, "fuse": 1},
    )
    logs = cluster.root / "lost-logs"
    hold = cluster.pid_dir / "hold"
    hold.touch()
    env = {**cluster.env, "RAY_ADDRESS": cluster.gcs_address}  # a driver joining from outside the cluster
    driver = start_driver(config, env, logs)
    try:
        started = held_attempts(cluster, 3, driver)  # w1's two slots and w2's one
        on_w2 = [unit for unit, _, node in started if node == "w2"]
        assert len(on_w2) == 1, started
        killed = cluster.remove_node("w2")
        lost_at = time.monotonic()
    finally:
        hold.unlink()
    finish(driver, logs)
    recovered_s = time.monotonic() - lost_at

    table = pd.read_parquet(next((cluster.root / "results").glob("lost-*")) / "results.parquet")
    one_row_per_unit(table, cells)
    assert table["device"].str.endswith("node 127.0.0.3").all(), table["device"]
    tries = {unit: n for unit, n in pd.Series([u for u, _ in attempts(cluster.pid_dir)]).value_counts().items()}
    assert tries[on_w2[0]] == 2, tries  # its attempt on w2 died with the node; Ray ran it again on w1
    assert sum(tries.values()) == len(cells) + 1, tries
    print(
        f"\nCLUSTER node-loss: units {len(cells)}, on the lost node 1 ({on_w2[0]}), its processes killed "
        f"{killed}, retries {sum(tries.values()) - len(cells)}, rows {len(table)}, run finished "
        f"{recovered_s:.0f} s after the loss"
    )
