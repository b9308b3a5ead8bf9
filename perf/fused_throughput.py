"""Training throughput of horizontal fusion (pipeline/train/fused.py) against single-net training.

Side by side in one process on one device: a plain single-net loop like the engine's
(`model.build_model` + `torch.optim.SGD` Nesterov + `TrainBatches`, channels_last, the same
precision) and the fused network with K = 1, 2, 4, 6, 8 members (on CUDA each with and without
a CUDA graph of the whole step). Reported: aggregate training img/s (K · images/s: K trainings
progress at once) and the ratio to the single net, for three cells: the all-conv 3_33_333,
NB201's best (index 6111) and a sparse one (0_00_034). Each variant runs `--warmup` untimed
steps (allocator, cudnn autotune, graph capture); then all variants of a cell are timed
round-robin, `--rounds` × `--steps` steps each, and the median round is reported, so that load
from other processes on a shared machine affects every variant alike.

    .venv/bin/python perf/fused_throughput.py --width 8 --cells-per-stage 1 --steps 3 --rounds 3
    .venv/bin/python perf/fused_throughput.py --width 16 --cells-per-stage 5 --steps 1 --rounds 2 --warmup 1
    python perf/fused_throughput.py --device cuda --width 16 --cells-per-stage 5 --steps 50 --json-out fused.json

Random uint8 images unless --data-dir points at CIFAR-10 (the pixels do not change the speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cells import Cell, cell_at
from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, TrainBatches, load_splits
from pipeline.train.fused import CaptureFailed, GraphedStep, fused_batches, fused_step, member_batches
from pipeline.train.fused_model import FusedSGD, build_fused
from pipeline.train.model import build_model

CELLS = {"all-conv 3_33_333": "3_33_333", "best (6111)": cell_at(6111).arch_str, "sparse 0_00_034": "0_00_034"}
RULES = ("kaiming", "arch-source")


def random_splits(n: int, image_size: int = 32) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DatasetSplits(
        name="random",
        train_x=x,
        train_y=y,
        eval={},
        num_classes=10,
        mean=(0.49, 0.48, 0.45),
        std=(0.25, 0.24, 0.26),
        image_size=image_size,
        pad=max(1, 4 * image_size // 32),  # the loader's rule: 4 px at 32, 2 at 16
    )


def forever(epoch: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    while True:
        yield from epoch()


def timed(step: Callable[[], int], steps: int, device: torch.device) -> float:
    """Images per second of `step` (which returns the images it trained) over `steps` steps."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    sync()
    return images / (time.perf_counter() - start)


def single_net(
    cell: Cell, data: DatasetSplits, args: argparse.Namespace, dev: torch.device, autocast: Any
) -> Callable[[], int]:
    """The engine's loop: one TinyNetwork, torch SGD (fused kernels on CUDA), on-device batches."""
    model = build_model(cell, data.num_classes, width=args.width, cells_per_stage=args.cells_per_stage, seed=0)
    model = model.to(dev, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True, fused=dev.type == "cuda"
    )
    batches = TrainBatches(
        data.train_x,
        data.train_y,
        batch_size=args.batch_size,
        mean=data.mean,
        std=data.std,
        pad=data.pad,
        seed=0,
        device=dev,
        channels_last=True,
    )
    stream = forever(batches.epoch)

    def step() -> int:
        x, y = next(stream)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(y)

    return step


def fused_net(
    cell: Cell, data: DatasetSplits, k: int, graphs: bool, args: argparse.Namespace, dev: torch.device, autocast: Any
) -> Callable[[], int]:
    """K members in one FusedTinyNetwork; a step returns K × its batch (aggregate images)."""
    members = [
        TrainConfig(init_rule=RULES[i % 2], seed=i, lr=0.05, width=args.width, cells_per_stage=args.cells_per_stage)
        for i in range(k)
    ]
    model = build_fused(cell, data.num_classes, members)
    model = model.to(dev, memory_format=torch.channels_last).train()
    opt = FusedSGD(list(model.parameters()), k)
    seeds = [m.seed for m in members]
    batches = member_batches(data, seeds, batch_size=args.batch_size, device=dev, channels_last=True)
    stream = forever(lambda: fused_batches(batches, torch.channels_last))
    lr = torch.full((k,), 0.05, device=dev)
    active = torch.ones(k, dtype=torch.bool, device=dev)
    graphed: list[GraphedStep] = []
    if graphs:
        x, y = next(stream)
        try:
            graphed.append(GraphedStep(model, opt, x, y, active, autocast))
        except CaptureFailed as error:
            print(f"  K={k}: CUDA graph capture failed, timing eager instead ({error})")

    def step() -> int:
        x, y = next(stream)
        if graphed and y.shape[1] == args.batch_size:
            graphed[0](x, y, lr)
        else:
            fused_step(model, opt, x, y, lr, active, autocast)
        return k * y.shape[1]

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 CPU, 10 CUDA)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32, help="image side (cpu.yaml's proxy: 16)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: random uint8 images)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json-out", default=None, metavar="PATH")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.warmup is None:
        args.warmup = 10 if dev.type == "cuda" else 2
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    native = torch.cuda.is_bf16_supported() if dev.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False) if bf16 else nullcontext()
    n_images = args.batch_size * 8  # batches cycle through epochs; the size of the set does not matter
    if args.data_dir:
        data = load_splits("cifar10", args.data_dir, max_train=n_images, max_eval=1, image_size=args.image_size)
    else:
        data = random_splits(n_images, args.image_size)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}; {name}; {'bf16 autocast' if bf16 else 'fp32'}, channels_last; "
        f"C={args.width}, N={args.cells_per_stage}, {args.image_size} px, batch {args.batch_size}; "
        f"{args.warmup} warm-up + {args.rounds}×{args.steps} timed steps per variant; "
        f"load {load:.2f}"
    )

    graph_modes = [False, True] if dev.type == "cuda" else [False]
    rows: list[dict[str, Any]] = []
    for label in args.cells:
        # Build every variant, warm each up, then time them round-robin (`--rounds` times, median):
        # load from other processes then hits all variants alike, so the ratios stay fair.
        cell = Cell.parse(CELLS[label])
        variants: dict[str, tuple[int, bool, Callable[[], int]]] = {
            "single net": (1, False, single_net(cell, data, args, dev, autocast))
        }
        for k in args.ks:
            for graphs in graph_modes:
                variant = f"fused K={k}" + (" graph" if graphs else "")
                variants[variant] = (k, graphs, fused_net(cell, data, k, graphs, args, dev, autocast))
        for _, _, step in variants.values():
            for _ in range(args.warmup):
                step()
        speeds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (_, _, step) in variants.items():
                speeds[name].append(timed(step, args.steps, dev))
        base = statistics.median(speeds["single net"])
        print(f"\n{label}\n  {'variant':<18} {'agg img/s':>10} {'vs single':>9}   (per round)")
        for name, (k, graphs, _) in variants.items():
            speed = statistics.median(speeds[name])
            rounds = " ".join(f"{v:,.0f}" for v in speeds[name])
            print(f"  {name:<18} {speed:>10,.0f} {speed / base:>9.2f}   ({rounds})")
            rows.append(
                {
                    "cell": label,
                    "variant": name,
                    "k": k,
                    "graphs": graphs,
                    "img_s": speed,
                    "ratio": speed / base,
                    "rounds": speeds[name],
                }
            )
        del variants
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average (1 min) before {load:.2f}, after {load_after:.2f}")
    if args.json_out:
        out = {
            "device": name,
            "precision": "bf16" if bf16 else "fp32",
            "width": args.width,
            "cells_per_stage": args.cells_per_stage,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "steps": args.steps,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "load_before": load,
            "load_after": load_after,
            "rows": rows,
        }
        Path(args.json_out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
