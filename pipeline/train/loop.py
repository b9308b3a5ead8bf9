"""The one training loop, for a lone network (engine.py) and K fused ones (fused.py) alike.

A trainer says only what differs (`Trainee`): its network, its batches, one update step and one
evaluation batch, all K-wide (K = 1 for a lone run). Everything else is written once here: the
LR schedule (`lr_table`, from `TrainConfig.lr_at`), the epoch loop with its per-member loss,
accuracy and divergence bookkeeping, mid-run and final evaluation of every split
(`evaluate_splits`), the finder's end-of-training pass (`end_of_training_losses`), and the
`TrainRecord` each member returns (`build_record`).

Divergence: a member whose epoch loss is non-finite (or whom the trainer reports dead, `alive`)
gets that epoch as `diverged_epoch`, no further curve entries and no evaluation; the loop ends
once every member has diverged. `Trainee.check_every` also ends an epoch early once every
member's running loss is non-finite (the lone trainer checks; the fused one masks on the device).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, Normalise, eval_batches
from pipeline.train.numerics import Numerics, describe_device

Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Eval split name -> (uint8 images, labels), on the training device."""


@dataclass(frozen=True)
class EpochProgress:
    """Handed to the `progress` callback after every epoch."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class TrainRecord:
    """What one run returns: its config, and what happened. Accuracies are top-1 in percent over
    all classes; losses are mean CE.

    `train_loss`/`train_acc` have one entry per epoch run (on augmented batches, as NB201 logs);
    `eval_acc`/`eval_loss` map each eval split ('valid', 'test') to its final value, None when
    the run diverged. `diverged_epoch` is the 1-based epoch whose loss became non-finite.
    `images_per_s` counts training images over the training loop alone (no eval, no setup).
    `eval_epochs` / `eval_curve` (split -> top-1 per listed epoch) hold the learning curve of
    `cfg.eval_every`, always ending with the final epoch; empty when it is 0.
    `end_train_loss`: with `cfg.end_train_pass`, the mean CE of the final weights over one more
    seeded, augmented pass of the training split in train mode, without updates (see
    `end_of_training_losses`); None otherwise or when the run diverged.
    """

    config: TrainConfig
    arch: str
    dataset: str
    status: str
    diverged_epoch: int | None
    train_loss: tuple[float, ...]
    train_acc: tuple[float, ...]
    eval_acc: dict[str, float | None]
    eval_loss: dict[str, float | None]
    n_train: int
    n_eval: dict[str, int]
    steps: int
    n_params: int
    device: str
    precision: str
    wall_s: float
    train_s: float
    eval_s: float
    images_per_s: float
    eval_epochs: tuple[int, ...] = ()
    eval_curve: dict[str, tuple[float, ...]] = field(default_factory=dict)
    end_train_loss: float | None = None
    torch_version: str = field(default_factory=lambda: torch.__version__)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types: lists for tuples, None for non-finite floats."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def lr_table(members: Sequence[TrainConfig], steps_per_epoch: int) -> torch.Tensor:
    """Every step's LR per member, (epochs·steps_per_epoch)×K float64 on the CPU, from
    `TrainConfig.lr_at`: one schedule, read the same way by the lone and the fused trainer."""
    epochs = members[0].epochs
    rows = [
        [m.lr_at(step // steps_per_epoch, step, steps_per_epoch) for m in members]
        for step in range(epochs * steps_per_epoch)
    ]
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), len(members))


def device_splits(data: DatasetSplits, device: torch.device) -> Splits:
    """Every eval split moved to the training device once, before training."""
    return {name: (x.to(device), y.to(device)) for name, (x, y) in data.eval.items()}


class Trainee(ABC):
    """A trainer's side of the loop: K ≥ 1 members trained as one network.

    Per-member values are tensors of shape (K,); labels are B (lone) or K×B (fused), so a batch
    holds `y.shape[-1]` images per member. The trainer keeps its own order of floating-point
    operations inside `step` and `score`; the loop only adds up what they return.
    """

    model: nn.Module
    members: int
    numerics: Numerics
    normalise: Normalise
    check_every: int = 0
    """Steps between host checks that end the epoch once every member's running loss is non-finite;
    0 = never (no sync)."""

    @abstractmethod
    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of augmented training batches (x, y)."""

    @abstractmethod
    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One update at the run's 0-based `step`; returns (CE summed over the batch, correct) per member."""

    @abstractmethod
    def score(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One normalised eval batch, eval mode, no grad: (correct, CE summed) per member."""

    @abstractmethod
    def loss_sum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training batch through the network as it is (no grad, no update): CE summed, float64, per member."""

    def alive(self) -> list[bool]:
        """Members still training, as the trainer sees it (one host sync per epoch at most)."""
        return [True] * self.members


@dataclass
class Trace:
    """What the loop saw, indexed by member; `eval_acc`/`eval_loss` are split -> per member."""

    train_loss: list[list[float]]
    train_acc: list[list[float]]
    diverged_epoch: list[int | None]
    eval_epochs: list[list[int]]
    eval_curve: list[dict[str, list[float]]]
    eval_acc: dict[str, list[float | None]]
    eval_loss: dict[str, list[float | None]]
    end_train_loss: list[float | None] = field(default_factory=list)
    """Per member, with `cfg.end_train_pass`: `end_of_training_losses`; None when it diverged or without the pass."""
    steps: int = 0
    """Steps the loop ran (the fused trainer counts each member's own)."""
    images: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0

    @classmethod
    def start(cls, k: int, splits: Iterable[str]) -> Trace:
        names = list(splits)
        return cls(
            train_loss=[[] for _ in range(k)],
            train_acc=[[] for _ in range(k)],
            diverged_epoch=[None] * k,
            eval_epochs=[[] for _ in range(k)],
            eval_curve=[{name: [] for name in names} for _ in range(k)],
            eval_acc={name: [None] * k for name in names},
            eval_loss={name: [None] * k for name in names},
            end_train_loss=[None] * k,
        )

    def ok(self, i: int) -> bool:
        return self.diverged_epoch[i] is None

    def add_curve_point(self, epoch: int, accs: dict[str, list[float]]) -> None:
        """Top-1 of every split at `epoch`, for every member still training."""
        for i, curve in enumerate(self.eval_curve):
            if self.ok(i):
                self.eval_epochs[i].append(epoch)
                for name, values in curve.items():
                    values.append(accs[name][i])


@torch.inference_mode()
def evaluate_splits(
    trainee: Trainee, splits: Splits, cfg: TrainConfig
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(top-1 % over all classes, mean CE) per split and member: eval mode, in-order, large batches."""
    dev, k = trainee.numerics.device, trainee.members
    accs, losses = {}, {}
    for name, (x, y) in splits.items():
        trainee.model.eval()
        correct = torch.zeros(k, dtype=torch.int64, device=dev)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
        for xb, yb in eval_batches(
            x,
            y,
            batch_size=cfg.eval_batch_size,
            normalise=trainee.normalise,
            device=dev,
            channels_last=cfg.channels_last,
        ):
            batch_correct, batch_loss = trainee.score(xb, yb)
            correct += batch_correct
            loss_sum += batch_loss
        n = len(y)
        accs[name] = [100.0 * c / n for c in correct.tolist()]
        losses[name] = [s / n for s in loss_sum.tolist()]
    return accs, losses


def _one_epoch(trainee: Trainee, step: int) -> tuple[list[float], list[float], int, int]:
    """Train one epoch from run step `step`: (mean loss, top-1 %) per member, the next step, images seen."""
    trainee.model.train()
    dev, k = trainee.numerics.device, trainee.members
    loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
    correct = torch.zeros(k, dtype=torch.int64, device=dev)
    seen = 0
    for x, y in trainee.batches():
        batch_loss, batch_correct = trainee.step(x, y, step)
        loss_sum += batch_loss
        correct += batch_correct
        seen += y.shape[-1]
        step += 1
        if trainee.check_every and step % trainee.check_every == 0 and not torch.isfinite(loss_sum).any():
            break
    return [s / seen for s in loss_sum.tolist()], [100.0 * c / seen for c in correct.tolist()], step, seen


@torch.no_grad()
def end_of_training_losses(trainee: Trainee) -> list[float]:
    """Per member, the mean cross-entropy of the final weights over one full pass of the training split.

    "The training loss at the end of one epoch" (paper §4) read literally: the loss of the weights
    the epoch ends with, on the whole training set, not the running mean over the epoch (that mean
    rewards fast early progress and mixes in every LR the epoch went through). Train mode, so BN
    normalises with batch statistics exactly as during training, and each member's next seeded
    augmented epoch; no gradient, no update (BN running stats move, so it runs after the final
    evaluation). Costs one forward pass over the split (about a third of a training epoch).
    """
    trainee.model.train()
    total = torch.zeros(trainee.members, dtype=torch.float64, device=trainee.numerics.device)
    seen = 0
    for x, y in trainee.batches():
        total += trainee.loss_sum(x, y)
        seen += y.shape[-1]
    return [s / max(1, seen) for s in total.tolist()]


def train_epochs(
    trainee: Trainee,
    cfg: TrainConfig,
    splits: Splits,
    progress: Callable[[EpochProgress], None] | None = None,
) -> Trace:
    """`cfg.epochs` epochs (fewer if every member diverges), the `cfg.eval_every` curve, then the
    final evaluation of every split for the members that finished and, with `cfg.end_train_pass`,
    their end-of-training loss. `progress` gets member 0's epoch."""
    trace = Trace.start(trainee.members, splits)
    eval_time = 0.0
    train_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        losses, accs, trace.steps, seen = _one_epoch(trainee, trace.steps)
        trace.images += seen
        alive = trainee.alive()
        for i in range(trainee.members):
            if trace.ok(i):
                trace.train_loss[i].append(losses[i])
                trace.train_acc[i].append(accs[i])
                if not alive[i] or not math.isfinite(losses[i]):
                    trace.diverged_epoch[i] = epoch
        if progress is not None:
            elapsed = time.perf_counter() - train_start
            progress(
                EpochProgress(epoch, cfg.epochs, losses[0], accs[0], elapsed, elapsed / epoch * (cfg.epochs - epoch))
            )
        if not any(trace.ok(i) for i in range(trainee.members)):
            break
        if cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < cfg.epochs:
            start = time.perf_counter()
            trace.add_curve_point(epoch, evaluate_splits(trainee, splits, cfg)[0])
            eval_time += time.perf_counter() - start
    if trainee.numerics.on_cuda:
        torch.cuda.synchronize(trainee.numerics.device)
    trace.train_s = time.perf_counter() - train_start - eval_time

    eval_start = time.perf_counter()
    if any(trace.ok(i) for i in range(trainee.members)):
        accs_by_split, losses_by_split = evaluate_splits(trainee, splits, cfg)
        for name in splits:
            trace.eval_acc[name] = list(accs_by_split[name])
            trace.eval_loss[name] = list(losses_by_split[name])
        if cfg.eval_every:
            trace.add_curve_point(cfg.epochs, accs_by_split)
        if cfg.end_train_pass:
            ends = end_of_training_losses(trainee)
            trace.end_train_loss = [end if trace.ok(i) else None for i, end in enumerate(ends)]
    trace.eval_s = time.perf_counter() - eval_start + eval_time
    return trace


def build_record(
    cfg: TrainConfig,
    i: int,
    trace: Trace,
    *,
    arch: str,
    data: DatasetSplits,
    numerics: Numerics,
    n_params: int,
    steps: int,
    images: int,
    wall_s: float,
) -> TrainRecord:
    """Member i's `TrainRecord`: its config and curves, the group's device and timings, its own
    `steps` and training `images` (for images/s); eval results only if it finished."""
    ok = trace.ok(i)
    return TrainRecord(
        config=cfg,
        arch=arch,
        dataset=data.name,
        status="ok" if ok else "diverged",
        diverged_epoch=trace.diverged_epoch[i],
        train_loss=tuple(trace.train_loss[i]),
        train_acc=tuple(trace.train_acc[i]),
        eval_acc={name: (values[i] if ok else None) for name, values in trace.eval_acc.items()},
        eval_loss={name: (values[i] if ok else None) for name, values in trace.eval_loss.items()},
        n_train=int(data.train_x.shape[0]),
        n_eval={name: len(y) for name, (_, y) in data.eval.items()},
        steps=steps,
        n_params=n_params,
        device=describe_device(numerics.device),
        precision=numerics.precision,
        wall_s=wall_s,
        train_s=trace.train_s,
        eval_s=trace.eval_s,
        images_per_s=images / trace.train_s if trace.train_s > 0 else 0.0,
        eval_epochs=tuple(trace.eval_epochs[i]),
        eval_curve={name: tuple(v) for name, v in trace.eval_curve[i].items()} if cfg.eval_every else {},
        end_train_loss=trace.end_train_loss[i],
    )
