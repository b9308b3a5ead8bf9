"""One training run of one cell: `train(cell, data, cfg) -> TrainRecord`.

Read top to bottom: set up the numerics (numerics.py), build the model (dead edges pruned, see
model.py), put the whole training split on the device, then the shared loop (loop.py) drives
`LoneTrainee`'s plain SGD steps, evaluates every eval split (also every `cfg.eval_every` epochs,
for learning curves), adds the finder's end-of-training loss under `cfg.end_train_pass`, and
builds the record.

Protocol (`core.TrainConfig`; defaults are NB201's 200-epoch config, digest §4.1b): SGD with
Nesterov momentum 0.9, weight decay 5e-4 on every parameter, one LR for all parameters (one param
group, as the official code), batch 256 with the last partial batch kept, cosine from the peak LR
to 0 updated once per epoch (NB201's; per step or constant via `cfg.schedule`), no warm-up,
cross-entropy, crop+flip augmentation; init `cfg.init_rule` (NB201's: `torch-default`).
`cfg.parametrization = "mup"`: the same recipe under Microsoft's `mup` (muparam.py: MuReadout, base
shapes, MuSGD's per-layer LR and weight-decay multipliers), the paper's App. E.3 baseline.

Numerics: channels_last, bf16 autocast where native (numerics.py). CPU runs are bit-for-bit
reproducible: same seed, machine and thread count → same record. A non-finite training loss ends
the run with status 'diverged'; no exception escapes for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from cells import Cell
from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, TrainBatches
from pipeline.train.loop import EpochProgress, Trainee, TrainRecord, build_record, device_splits, lr_table, train_epochs
from pipeline.train.model import TinyNetwork, build_model, n_params
from pipeline.train.muparam import MuTinyNetwork, build_mup_model, move, mu_sgd
from pipeline.train.numerics import Numerics, setup_numerics

DIVERGENCE_CHECK_EVERY = 25
"""Steps between finiteness checks on CUDA (each check syncs); on the CPU every step is checked."""


class LoneTrainee(Trainee):
    """One TinyNetwork under `torch.optim.SGD`: one param group, one LR for every parameter (the
    official code); fused kernels on CUDA. Under `cfg.parametrization == "mup"` the network is a
    `muparam.MuTinyNetwork` and the optimizer mup's MuSGD, whose groups keep their LR multipliers
    through the schedule (`lr_mults`; None = one LR for every group, the `sp` path)."""

    def __init__(self, model: TinyNetwork, cfg: TrainConfig, batches: TrainBatches, numerics: Numerics) -> None:
        self.model, self.members, self.numerics = model, 1, numerics
        self.train_batches, self.normalise = batches, batches.normalise
        self.lr_mults: list[float] | None = None
        if cfg.parametrization == "mup":
            assert isinstance(model, MuTinyNetwork)
            self.optimizer, self.lr_mults = mu_sgd(model, cfg, fused=numerics.on_cuda)
        else:
            self.optimizer = torch.optim.SGD(
                model.parameters(),
                lr=cfg.lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                nesterov=cfg.nesterov,
                fused=numerics.on_cuda,
            )
        self.lrs: list[float] = lr_table([cfg], len(batches))[:, 0].tolist()
        self.check_every = DIVERGENCE_CHECK_EVERY if numerics.on_cuda else 1

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return self.train_batches.epoch()

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lr_mults is None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lrs[step]
        else:
            for group, mult in zip(self.optimizer.param_groups, self.lr_mults, strict=True):
                group["lr"] = self.lrs[step] * mult
        with self.numerics.autocast:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()

    def score(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.numerics.autocast:
            logits = self.model(x)
        return (logits.argmax(1) == y).sum(), F.cross_entropy(logits.float(), y, reduction="sum")

    def loss_sum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.numerics.autocast:
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y, reduction="sum").double().view(1)


def _mup_model(cell: Cell, num_classes: int, cfg: TrainConfig, numerics: Numerics) -> MuTinyNetwork:
    """The μP network (muparam.build_mup_model), built on the CPU like the `sp` one, then moved."""
    assert cfg.mup_base_width is not None and cfg.mup_delta_width is not None
    model = build_mup_model(
        cell,
        num_classes,
        width=cfg.width,
        cells_per_stage=cfg.cells_per_stage,
        init_rule=cfg.init_rule,
        seed=cfg.seed,
        base_width=cfg.mup_base_width,
        delta_width=cfg.mup_delta_width,
    )
    return move(model, numerics.device, numerics.memory_format)


def train(
    cell: Cell | str,
    data: DatasetSplits,
    cfg: TrainConfig,
    progress: Callable[[EpochProgress], None] | None = None,
) -> TrainRecord:
    """Train `cell` on `data.train_*` as `cfg` says, then evaluate on every split of `data.eval`.

    `cfg.lr` is the peak LR, already scaled by the caller if it wants a scaled LR. `cfg.threads`
    sets torch's intra-op threads for this process. `cfg.channels_last` is faster on both CUDA and
    the CPU (measured). `cfg.precision`: 'auto' = bf16 autocast where the device runs bf16 natively
    (`numerics.native_bf16`), else fp32; 'bf16' or 'fp32' force one.
    """
    cell = Cell.parse(cell) if isinstance(cell, str) else cell
    wall_start = time.perf_counter()
    numerics = setup_numerics(cfg)
    dev = numerics.device
    # Seeded init on the CPU (device-independent), then moved.
    if cfg.parametrization == "mup":
        model: TinyNetwork = _mup_model(cell, data.num_classes, cfg, numerics)
    else:
        model = build_model(
            cell,
            data.num_classes,
            width=cfg.width,
            cells_per_stage=cfg.cells_per_stage,
            init_rule=cfg.init_rule,
            seed=cfg.seed,
        ).to(device=dev, memory_format=numerics.memory_format)
    batches = TrainBatches(
        data.train_x,
        data.train_y,
        batch_size=cfg.batch_size,
        mean=data.mean,
        std=data.std,
        pad=data.pad,
        seed=cfg.seed,
        device=dev,
        channels_last=cfg.channels_last,
    )
    trace = train_epochs(LoneTrainee(model, cfg, batches, numerics), cfg, device_splits(data, dev), progress)
    return build_record(
        cfg,
        0,
        trace,
        arch=cell.arch_str,
        data=data,
        numerics=numerics,
        n_params=n_params(model),
        steps=trace.steps,
        images=trace.images,
        wall_s=time.perf_counter() - wall_start,
    )
