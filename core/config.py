"""TrainConfig: every setting of one training, in one value that the engine reads and the row keeps.

Defaults are NB201's 200-epoch recipe (digest §4.1b): PyTorch's default init, SGD with Nesterov
momentum 0.9, weight decay 5e-4 on every parameter, batch 256, LR 0.1, cosine to 0 with no warm-up,
updated once per epoch (AutoDL's `CosineAnnealingLR` reads only the epoch). `lr` is the peak
(initial) LR of this training, already scaled by the caller when the protocol scales it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from core import nb201
from core.errors import UserError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
"""`fp32` (NB201's numerics; the default), `bf16` (autocast; faster on GPUs, other rounding), or `auto`
(bf16 where the device runs it natively, else fp32: the numerics then depend on the hardware)."""
SCHEDULES: tuple[str, ...] = ("epoch", "step", "constant")
"""Cosine updated once per epoch (NB201's and the official code's; the default), cosine updated at
every step, or a constant LR (the base-LR finder's one-epoch trials, paper §4)."""
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")
"""`sp`: the standard parametrization, `torch.optim.SGD` with one LR (NB201's; the default). `mup`: Microsoft's
`mup` package as its basic usage says (`MuReadout` classifier, `set_base_shapes` from a base and a delta
network of widths `mup_base_width` / `mup_delta_width`, `MuSGD`): pipeline/train/muparam.py."""


class ConfigError(UserError):
    """A training setting out of range; the message names the setting."""


@dataclass(frozen=True)
class TrainConfig:
    """One training: network size, init, optimisation, numerics and where it runs."""

    width: int = nb201.WIDTH
    cells_per_stage: int = nb201.CELLS_PER_STAGE
    init_rule: str = nb201.INIT_RULE
    lr: float = nb201.LR
    epochs: int = nb201.EPOCHS
    batch_size: int = nb201.BATCH_SIZE
    seed: int = 0
    momentum: float = nb201.MOMENTUM
    weight_decay: float = nb201.WEIGHT_DECAY
    nesterov: bool = nb201.NESTEROV
    schedule: str = "epoch"
    precision: str = "fp32"
    device: str = "auto"
    threads: int | None = None
    channels_last: bool = True
    eval_batch_size: int = 1024
    eval_every: int = 0
    """Also evaluate every k epochs (learning curves); 0 = only after the last epoch."""
    end_train_pass: bool = False
    """After the last epoch, one more pass over the training split with the final weights, no update:
    `TrainRecord.end_train_loss` (the base-LR finder's score)."""
    parametrization: str = "sp"
    mup_base_width: int | None = None
    """`mup` only: the width C of the base network (`mup.set_base_shapes`' base): where `lr` counts as tuned."""
    mup_delta_width: int | None = None
    """`mup` only: the width C of the delta network; it only marks which dimensions are widths (any value other
    than the base gives the same multipliers)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        for name in ("width", "cells_per_stage", "epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.eval_every, int) and self.eval_every >= 0):
            raise ConfigError(f"eval_every must be an integer >= 0 (0 = off), got {self.eval_every!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        self._check_parametrization()

    def _check_parametrization(self) -> None:
        widths = (self.mup_base_width, self.mup_delta_width)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(
                f"unknown parametrization {self.parametrization!r}; expected one of {', '.join(PARAMETRIZATIONS)}"
            )
        if self.parametrization == "sp" and widths != (None, None):
            raise ConfigError("mup_base_width and mup_delta_width only apply with parametrization 'mup'")
        if self.parametrization == "mup":
            if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
                raise ConfigError(
                    f"parametrization 'mup' needs positive integer mup_base_width and mup_delta_width, got {widths}"
                )
            if widths[0] == widths[1]:
                raise ConfigError(
                    "mup_delta_width must differ from mup_base_width (the delta marks which dimensions are widths)"
                )

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The LR of step `step` (0-based, counted over the run), in 0-based `epoch`.

        `epoch`: lr_e = lr·(1 + cos(π·e/E))/2 for the whole epoch e = 0..E-1 (AutoDL, official code);
        `step`: the same cosine over steps; `constant`: lr throughout."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "epoch":
            return cosine(self.lr, epoch, self.epochs)
        return cosine(self.lr, step, self.epochs * steps_per_epoch)

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosine(peak_lr: float, t: int, total: int) -> float:
    """Cosine from `peak_lr` at t = 0 towards 0 at t = total, no warm-up, eta_min 0."""
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * t / max(1, total)))
