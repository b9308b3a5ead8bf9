"""The cost planner: how many trainings, GPU-hours and days a run spec means, before it runs.

Time per training image is modelled as `overhead + macs / rate` (per trial, with
`trials_per_gpu` nets sharing one GPU): small NB201 nets are launch-bound, large ones
compute-bound. (overhead, rate) come from `configs/throughput.yaml` (measured, with the
command that measured them) or from `--calibrate`, a short timing on this machine's device.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

from cells import all_cells
from cells.cost import network_macs
from core.config import TrainConfig
from core.datasets import DATASETS
from core.errors import UserError
from pipeline.run.spec import RunSpec
from pipeline.run.units import plan_units
from pipeline.sweep.packing import trials_per_gpu
from pipeline.train.data import DatasetSplits, load_splits
from pipeline.train.engine import train
from pipeline.train.numerics import describe_device, resolve_device
from pipeline.train.readers import DataError


class PlanError(UserError):
    """No throughput known for the asked device; the message says how to get one."""


@dataclass(frozen=True)
class Throughput:
    """Per-trial speed model on one device type: seconds per training image = overhead + macs / rate."""

    device: str
    overhead_s: float
    macs_per_s: float
    trials_per_gpu: int
    source: str

    def seconds_per_image(self, macs: float) -> float:
        return self.overhead_s + macs / self.macs_per_s


def load_throughput(device: str, path: Path) -> Throughput:
    table = yaml.safe_load(path.read_text()) or {}
    if device not in table:
        known = ", ".join(sorted(table)) or "none"
        raise PlanError(
            f"no throughput for device {device!r} in {path} (known: {known}); "
            "pass --calibrate to measure this machine, or add an entry"
        )
    entry = table[device]
    return Throughput(
        device,
        float(entry["overhead_s"]),
        float(entry["macs_per_s"]),
        int(entry.get("trials_per_gpu", 1)),
        entry.get("source", str(path)),
    )


def synthetic_splits(spec: RunSpec, n_images: int) -> DatasetSplits:
    """Random images of the spec's shape: timing needs the real engine, not real pixels."""
    info = DATASETS[spec.dataset]
    side, classes = spec.shape.image_size, info.num_classes  # follows the spec's image_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_images, 3, side, side), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, classes, (n_images,), generator=generator)
    return DatasetSplits(
        spec.dataset,
        x,
        y,
        {"test": (x[:256], y[:256])},
        classes,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        side,
        info.pad if side == info.image_size else max(1, info.pad * side // info.image_size),
    )


def calibrate(spec: RunSpec, steps: int = 8) -> Throughput:
    """Time the real engine on a cheap and a costly cell on this machine's device; fit the model."""
    device = resolve_device(spec.device)
    shape = spec.shape
    data = synthetic_splits(spec, spec.batch_size * steps)
    by_cost = sorted(all_cells(), key=lambda c: network_macs(c, shape, live_only=True))
    cfg = TrainConfig(
        width=spec.width,
        cells_per_stage=spec.cells_per_stage,
        lr=0.01,
        epochs=1,
        batch_size=spec.batch_size,
        device=str(device),
        threads=spec.resources.torch_threads,
    )
    points = []
    for cell in (by_cost[len(by_cost) // 20], by_cost[-1]):
        for _ in range(2):  # the second run is timed: warm caches, cudnn autotuned
            record = train(cell, data, cfg)
        macs = network_macs(cell, shape, live_only=True)
        points.append((macs, 1.0 / record.images_per_s))
    (m0, t0), (m1, t1) = points
    slope = max((t1 - t0) / (m1 - m0), 1e-18)
    overhead = max(t0 - slope * m0, 0.0)
    return Throughput(
        describe_device(device),
        overhead,
        1.0 / slope,
        1,
        f"calibrated {time.strftime('%Y-%m-%d')}, {steps} steps x batch {spec.batch_size}",
    )


@dataclass(frozen=True)
class Plan:
    cells: int
    no_path: int
    trainings: int
    trainings_without_dedup: int
    train_flops: float
    gpu_hours: float
    wall_hours: float
    nb201_gpu_hours: float | None
    throughput: Throughput

    def report(self, spec: RunSpec, gpus: int) -> str:
        saved = 1 - self.trainings / self.trainings_without_dedup if self.trainings_without_dedup else 0.0
        lines = [
            f"plan for {spec.run_id}: {spec.dataset}, C={spec.width}, N={spec.cells_per_stage}, "
            f"{spec.epochs} epochs, {len(spec.protocols)} protocol(s) x {len(spec.seeds)} seed(s)",
            f"  cells selected      {self.cells:,} ({self.no_path:,} without a path: recorded, not trained)",
            f"  trainings           {self.trainings:,} (isomorphism dedup saves {saved:.1%} of "
            f"{self.trainings_without_dedup:,})",
            f"  training compute    {self.train_flops / 1e15:,.1f} PFLOP (6 x live MACs x images x epochs)",
            f"  throughput model    {self.throughput.device}: {self.throughput.overhead_s * 1e6:.1f} us/img + "
            f"MACs / {self.throughput.macs_per_s / 1e9:,.1f} GMAC/s, {self.throughput.trials_per_gpu} trial(s) "
            f"per device [{self.throughput.source}]",
            f"  device-hours        {self.gpu_hours:,.0f}",
            f"  wall-clock          {self.wall_hours:,.1f} h on {gpus} device(s) ({self.wall_hours / 24:,.1f} days)",
        ]
        if self.nb201_gpu_hours is not None:
            repeats = len(spec.protocols) * len(spec.seeds)
            lines.append(
                f"  NB201's own record  {self.nb201_gpu_hours:,.0f} GPU-hours for one training of each of these "
                f"cells (train_time_s_200ep_*, scaled to {spec.epochs} epochs, its hardware); x{repeats} for this "
                f"spec's protocols x seeds = {self.nb201_gpu_hours * repeats:,.0f}"
            )
        return "\n".join(lines)


def train_images(spec: RunSpec) -> int:
    """Training images per epoch: the split actually in data_dir when it is readable there (a folder may
    hold fewer images than the full dataset), else the registry's full size; capped by max_train."""
    full = DATASETS[spec.dataset].train_images
    with contextlib.suppress(DataError, OSError):  # no data here (a cluster config): the full size
        full = len(load_splits(spec.dataset, spec.data_dir).train_y)
    return full if spec.max_train is None else min(spec.max_train, full)


def make_plan(
    spec: RunSpec, throughput: Throughput, gpus: int, published: pd.DataFrame | None, images: int | None = None
) -> Plan:
    """`images`: training images per epoch (`train_images`; default the full split, capped by max_train).
    `published`: the published table (`benchmarks.published.read_published()`), for NB201's own training
    times; None leaves that comparison out."""
    selected = spec.cells.resolve()
    units, no_path = plan_units(spec, selected)
    n_no_path_cells = len({index for _, _, index in no_path})
    full = DATASETS[spec.dataset].train_images
    if images is None:
        images = full if spec.max_train is None else min(spec.max_train, full)
    shape, cells = spec.shape, all_cells()
    seconds = flops = 0.0
    for unit in units:
        macs = network_macs(cells[unit.index], shape, live_only=True)
        seconds += spec.epochs * images * throughput.seconds_per_image(macs)
        flops += 6.0 * macs * images * spec.epochs
    per_device = throughput.trials_per_gpu if throughput.trials_per_gpu > 1 else 1
    gpu_hours = seconds / 3600 / per_device
    nb201 = None
    if published is not None:
        column, factor = DATASETS[spec.dataset].nb201_time
        times = published.set_index("nb201_index")[column]
        with_path = [i for i in selected if i not in {index for _, _, index in no_path}]
        nb201 = float(times.loc[with_path].sum() * factor * spec.epochs / 200 / 3600)
    trainings_all = (len(selected) - n_no_path_cells) * len(spec.protocols) * len(spec.seeds)
    return Plan(
        len(selected), n_no_path_cells, len(units), trainings_all, flops, gpu_hours, gpu_hours / gpus, nb201, throughput
    )


def default_trials_per_gpu(spec: RunSpec) -> int:
    return trials_per_gpu(spec.width, spec.cells_per_stage)
