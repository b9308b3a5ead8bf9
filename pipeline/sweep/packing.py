"""How many NB201 nets share one GPU: the per-trial GPU fraction Ray schedules with.

An NB201 net at the benchmark size (C=16, N=5, batch 256, 32 px) keeps a large GPU busy only
in part: its kernels are small and launch-bound, so several trials per GPU raise total
throughput. The rule scales the count with compute per step, which grows as width^2 x depth:

    trials_per_gpu = clamp(floor(MAX_PER_GPU x (16 / width)^2 x (5 / cells_per_stage)), 1, MAX_PER_GPU)
    fraction       = 1 / trials_per_gpu

C=16, N=5 -> 8 per GPU (0.125); C=32 -> 2; C=64 -> 1; C=8, N=1 -> 8. Override with
`resources.gpus_per_trial: <fraction>` in the run config.
"""

from __future__ import annotations

MAX_PER_GPU = 8


def trials_per_gpu(width: int, cells_per_stage: int) -> int:
    scaled = MAX_PER_GPU * (16 / width) ** 2 * (5 / cells_per_stage)
    return max(1, min(MAX_PER_GPU, int(scaled)))


def gpu_fraction(width: int, cells_per_stage: int) -> float:
    return 1.0 / trials_per_gpu(width, cells_per_stage)
