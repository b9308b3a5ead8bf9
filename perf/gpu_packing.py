"""How many NB201 trainings should share one GPU? Aggregate img/s with k concurrent processes.

Runs without Ray (a lent GPU box has torch only): k processes each train the same cell on
synthetic images at the benchmark size; prints total img/s per k and the ratio to k = 1.
The packing rule in pipeline/sweep/packing.py should sit near the knee of this curve.

    python perf/gpu_packing.py --config configs/cifar10-full.yaml --ks 1 2 4 8 --steps 40
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from cells import Cell
from pipeline.run.spec_load import load_spec

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"  # NB201's best


def _worker(config: str, steps: int, start: mp.Event, out: mp.Queue) -> None:
    from pipeline.plan import synthetic_splits
    from pipeline.train.engine import train

    spec = load_spec(config)
    data = synthetic_splits(spec, spec.batch_size * steps)
    cfg = spec.train_config(spec.protocols[0], 0, 0.05, device="cuda").with_(epochs=1)
    train(Cell.parse(CELL), data, cfg)  # warm-up: cudnn autotune, allocator
    start.wait()
    record = train(Cell.parse(CELL), data, cfg)
    out.put(record.images_per_s)


def measure(config: str, k: int, steps: int) -> float:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(config, steps, start, out)) for _ in range(k)]
    for p in procs:
        p.start()
    time.sleep(2)
    start.set()
    rates = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10-full.yaml")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    base = None
    print(f"cell {CELL}, config {args.config}, {args.steps} steps per process")
    for k in args.ks:
        total = measure(args.config, k, args.steps)
        base = base or total
        print(
            f"k={k:2d} processes: {total:9,.0f} img/s total, {total / k:8,.0f} per process, x{total / base:.2f} vs k=1",
            flush=True,
        )


if __name__ == "__main__":
    main()
