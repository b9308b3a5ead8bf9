"""Checks of what a run will use, made before any training: a mistake found after hours is a lost day.

Each check raises a `UserError` subclass whose one-line message names the problem and the fix:
labels outside the dataset's classes, an unreadable base-LR cache, and per-trial resources that no
node of the cluster can give (a task asking for them would wait forever).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import ray
import torch

from core.errors import UserError
from core.runfiles import BASE_LR_CACHE, LATEST
from pipeline.run.base_lr import read_cache
from pipeline.run.spec import RunSpec
from pipeline.run.store import StoreError
from pipeline.sweep.cluster import gpus_per_trial
from pipeline.train.data import DatasetSplits
from pipeline.train.readers import DataError


class ResourceError(UserError):
    """A trial asks for more than any node of the cluster has."""


def check_labels(data: DatasetSplits, data_dir: str) -> None:
    """Every label of every split lies in 0..num_classes-1 (else every unit would fail, one traceback each)."""
    for name, labels in [("train", data.train_y), *((n, y) for n, (_, y) in data.eval.items())]:
        if len(labels) == 0:
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= data.num_classes:
            raise DataError(
                f"{data.name} {name} labels in {data_dir} run {low}..{high}, outside 0..{data.num_classes - 1}; "
                "the files are not this dataset's (check dataset and data_dir), or fetch them again"
            )


def check_base_lr_cache(spec: RunSpec) -> None:
    """The base-LR cache is read after Ray starts; read it now so a damaged file fails first."""
    if any(p.base_lr == "auto" for p in spec.protocols):
        read_cache(Path(spec.results_dir) / BASE_LR_CACHE)


def check_latest(results_dir: Path) -> None:
    """`<results_dir>/latest` is this pipeline's link to the newest run; a real folder of that name would be
    left stale silently."""
    link = Path(results_dir) / LATEST
    if link.is_dir() and not link.is_symlink():
        raise StoreError(
            f"{link} is a real folder, not the link to the newest run that this pipeline keeps there; "
            "move it away (or rename it) and rerun"
        )


def check_local_device(spec: RunSpec, address: str | None) -> None:
    """`device: cuda` on an embedded Ray (no address) needs a GPU here; a trial would otherwise train on
    the CPU under a `cuda` config (`pipeline train` refuses the same request)."""
    if spec.device == "cuda" and not (address or os.environ.get("RAY_ADDRESS")) and not torch.cuda.is_available():
        raise ResourceError(
            "device is cuda but this machine has no CUDA GPU (torch sees none); set device: auto or cpu, or run on "
            "a GPU machine or cluster (--address)"
        )


def check_trial_fits(cpus: float, gpus: float, nodes: Iterable[Mapping[str, float]], autoscaling: bool) -> None:
    """Some node must hold `cpus` CPUs and `gpus` GPUs at once (Ray places a task on one node).

    `nodes`: each alive node's total resources. On an autoscaling cluster a node may still come,
    so nothing is refused there."""
    nodes = list(nodes)
    if autoscaling or any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    fix = []
    if not any(n.get("CPU", 0) >= cpus for n in nodes):
        fix.append(f"resources.cpus_per_trial <= {max((n.get('CPU', 0) for n in nodes), default=0):g}")
    if not any(n.get("GPU", 0) >= gpus for n in nodes):
        fix.append(f"resources.gpus_per_trial <= {max((n.get('GPU', 0) for n in nodes), default=0):g}")
    raise ResourceError(
        f"a trial asks for {cpus:g} CPU(s) and {gpus:g} GPU(s) but no node of the cluster has them (largest: "
        f"{largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs over {len(nodes)} node(s)), so it "
        f"would wait forever; set {' and '.join(fix) or 'smaller resources'} (--set ...) or add such a node"
    )


def check_cluster_resources(spec: RunSpec, autoscaling: bool | None = None) -> None:
    """Right after connecting: some alive node of the cluster can hold one trial (else Ray would leave
    it pending forever). `NB201_AUTOSCALING=1` says nodes may still come."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if autoscaling is None:
        autoscaling = os.environ.get("NB201_AUTOSCALING", "") == "1"
    gpus = gpus_per_trial(spec)
    if spec.device == "cuda" and gpus == 0:
        raise ResourceError(
            "device is cuda but the cluster has no GPU for its trials (resources.gpus_per_trial resolves to 0); "
            "set device: auto or cpu, or add GPU nodes"
        )
    check_trial_fits(spec.resources.cpus_per_trial, gpus, nodes, autoscaling)
