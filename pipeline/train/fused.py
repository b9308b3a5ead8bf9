"""Horizontal fusion: K trainings of one NB201 cell computed as one network (issue 12).

The network and its per-member SGD live in fused_model.py; this module trains them through the
shared loop (loop.py) with a `FusedTrainee`: K members, one batch stream per member, one step for
all. Model k's forward, backward and update are those of a lone TinyNetwork up to floating-point
summation order: grouped oneDNN convs and the batched classifier round differently (~1e-7 per
step in fp32). In float64 the fused run equals K separate runs to ~1e-14 at every step
(tests/test_fused.py); in fp32 that holds to 1e-5 where training is well conditioned, while at
NB201's LRs these tiny nets are chaotic enough that a lone run perturbed by 1e-7 drifts as far.

Input: model k's own augmented batch (its own `TrainBatches` seed: permutation, crop, flip) in
channels 3k..3k+2 (`fused_batches`). Output: logits K×B×classes.

Divergence: the loss is Σ_k mean-CE_k; a non-finite loss in member k freezes k (its slices stop
updating, its loss is masked out with `torch.where`, never multiplied by 0, since NaN·0 = NaN)
while the others go on. The bookkeeping lives on the device, so a step never syncs and can be
captured in a CUDA graph (`cuda_graphs=True`, `GraphedStep`).

`train_group(cell, data, cfgs)` is the pipeline's entry: K `TrainConfig`s that differ only in
init rule, seed and LR in, K `TrainRecord`s out, so each member writes its own row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cells import Cell
from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, TrainBatches
from pipeline.train.fused_model import FusedSGD, FusedTinyNetwork, build_fused
from pipeline.train.loop import Trainee, TrainRecord, build_record, device_splits, lr_table, train_epochs
from pipeline.train.model import TinyNetwork, n_params
from pipeline.train.numerics import Numerics, setup_numerics

FUSABLE_DIFFERENCES = frozenset({"init_rule", "seed", "lr"})
"""What K fused members may differ in; every other TrainConfig field is shared by the group."""


@dataclass(frozen=True)
class FusedResult:
    """One member's run: `record` is what `engine.train` returns for that config (status, curves,
    accuracies; device and timings are the group's, `images_per_s` this member's training images/s),
    plus what only a fused run has: the group size, whether a CUDA graph ran the step, the group's
    images/s (K·member), every step's loss (`step_losses=True`) and the member unpacked
    (`keep_models=True`)."""

    record: TrainRecord
    k: int
    cuda_graphs: bool
    images_per_s_total: float
    step_loss: tuple[float, ...] = ()
    model: TinyNetwork | None = field(default=None, compare=False, repr=False)


def member_batches(data: DatasetSplits, seeds: Sequence[int], **kwargs: Any) -> list[TrainBatches]:
    """One `TrainBatches` per member, its own seed, all sharing one padded copy of the images.

    Equivalent to `TrainBatches(..., seed=s)` each (tested); only the generator differs between
    members, so the K−1 others are shallow copies with their own generator (no K copies of the data).
    """
    base = TrainBatches(data.train_x, data.train_y, mean=data.mean, std=data.std, pad=data.pad, seed=seeds[0], **kwargs)
    out = [base]
    for seed in seeds[1:]:
        other = object.__new__(TrainBatches)
        other.__dict__.update(base.__dict__)
        other.generator = torch.Generator(device=base.device).manual_seed(seed)
        out.append(other)
    return out


def fused_batches(
    batches: Sequence[TrainBatches], memory_format: torch.memory_format, dtype: torch.dtype = torch.float32
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of fused batches: images B×(K·3)×H×W (member k in channels 3k..3k+2), labels K×B."""
    for parts in zip(*(b.epoch() for b in batches), strict=True):
        x = torch.cat([xb.to(dtype) for xb, _ in parts], dim=1).contiguous(memory_format=memory_format)
        yield x, torch.stack([yb for _, yb in parts])


def fused_step(
    model: FusedTinyNetwork,
    optimizer: FusedSGD,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: torch.Tensor,
    active: torch.Tensor,
    autocast: AbstractContextManager[object],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and update of all K members; returns (per-member loss (K,), logits K×B×n).

    Members whose loss is non-finite now join the inactive ones: their loss is masked out of the
    sum and their slices are not updated; `active` is updated in place. No host sync anywhere.
    """
    with autocast:
        logits = model(x)
        per_image = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    if per_image.dtype in (torch.bfloat16, torch.float16):
        per_image = per_image.float()
    losses = per_image.view(y.shape).mean(1)
    active.logical_and_(torch.isfinite(losses))
    optimizer.zero_grad()
    torch.where(active, losses, 0.0).sum().backward()
    optimizer.step(lr, active)
    return losses.detach(), logits.detach()


class CaptureFailed(RuntimeError):
    """CUDA graph capture did not work here; the state was restored, so training can go on eagerly."""


class GraphedStep:
    """`fused_step` captured once in a CUDA graph, replayed on static input buffers.

    Warm-up runs on a side stream (as torch.cuda.graphs asks), on a snapshot of all state that is
    restored afterwards, so capturing changes no weight, BN statistic or momentum buffer. Only
    full batches are graphed; the caller runs the last partial batch eagerly (same parameters,
    same momentum buffers: both paths update the same tensors in place). Raises `CaptureFailed`
    (state restored) when capture is not possible; any other error means the state is unknown.
    """

    def __init__(
        self,
        model: FusedTinyNetwork,
        optimizer: FusedSGD,
        x: torch.Tensor,
        y: torch.Tensor,
        active: torch.Tensor,
        autocast: AbstractContextManager[object],
        warmup: int = 3,
    ) -> None:
        self.x, self.y = x.clone(), y.clone()
        self.lr = torch.zeros(model.k, dtype=model.stem[0].weight.dtype, device=x.device)
        saved_model = {n: t.clone() for n, t in model.state_dict().items()}
        saved_active = active.clone()
        failure: Exception | None = None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fused_step(model, optimizer, self.x, self.y, self.lr, active, autocast)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad()
            with torch.cuda.graph(self.graph):
                self.losses, self.logits = fused_step(model, optimizer, self.x, self.y, self.lr, active, autocast)
        except Exception as error:  # not capturable here (op, driver, memory): fall back, after restoring
            failure = error
        # Training starts from the state it had before; if this raises, the device is unusable anyway.
        torch.cuda.synchronize()
        with torch.no_grad():
            model.load_state_dict(saved_model)  # copies in place: the graph keeps its addresses
            optimizer.reset()
            active.copy_(saved_active)
        if failure is not None:
            raise CaptureFailed(f"{type(failure).__name__}: {failure}") from failure

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x.copy_(x)
        self.y.copy_(y)
        self.lr.copy_(lr)
        self.graph.replay()
        return self.losses, self.logits


class FusedTrainee(Trainee):
    """K members as one `FusedTinyNetwork` under `FusedSGD`, each on its own batch stream and LR.

    Per-member state lives on the device (`active`, `steps_done`), read once per epoch (`alive`).
    The first full batch captures the step in a CUDA graph when asked (`cuda_graphs`, CUDA only).
    """

    def __init__(
        self,
        model: FusedTinyNetwork,
        members: Sequence[TrainConfig],
        streams: list[TrainBatches],
        numerics: Numerics,
        *,
        cuda_graphs: bool,
        step_losses: bool,
    ) -> None:
        group, k, dev = members[0], len(members), numerics.device
        self.model, self.members, self.numerics = model, k, numerics
        self.streams, self.normalise = streams, streams[0].normalise
        self.optimizer = FusedSGD(
            list(model.parameters()),
            k,
            momentum=group.momentum,
            weight_decay=group.weight_decay,
            nesterov=group.nesterov,
        )
        self.lrs = lr_table(members, len(streams[0])).to(device=dev, dtype=numerics.dtype)
        self.active = torch.ones(k, dtype=torch.bool, device=dev)
        self.steps_done = torch.zeros(k, dtype=torch.int64, device=dev)
        self.full_batch = group.batch_size
        self.graphed: GraphedStep | None = None
        self.use_graphs = numerics.on_cuda and cuda_graphs
        self.per_step: list[torch.Tensor] | None = [] if step_losses else None

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return fused_batches(self.streams, self.numerics.memory_format, self.numerics.dtype)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.steps_done += self.active
        full = y.shape[1] == self.full_batch
        if self.use_graphs and self.graphed is None and full:
            try:
                self.graphed = GraphedStep(self.model, self.optimizer, x, y, self.active, self.numerics.autocast)
            except CaptureFailed as error:  # state restored: train eagerly, say so once
                print(f"fused: CUDA graph capture failed ({error}); running eagerly")
                self.use_graphs = False
        if self.graphed is not None and full:
            losses, logits = self.graphed(x, y, self.lrs[step])
        else:
            losses, logits = fused_step(
                self.model, self.optimizer, x, y, self.lrs[step], self.active, self.numerics.autocast
            )
        if self.per_step is not None:
            self.per_step.append(losses.clone())  # the graph's output buffer is reused on replay
        return losses.double() * y.shape[1], (logits.argmax(-1) == y).sum(1)

    def score(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member on the same images."""
        k = self.members
        xk = x.to(self.numerics.dtype).repeat(1, k, 1, 1).contiguous(memory_format=self.numerics.memory_format)
        with self.numerics.autocast:
            logits = self.model(xk)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.repeat(k), reduction="none")
        return (logits.argmax(-1) == y).sum(1), loss.view(k, -1).sum(1, dtype=torch.float64)

    def loss_sum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member on its own batch (channels 3k..3k+2, labels row k); a frozen member's NaNs stay in its slices."""
        with self.numerics.autocast:
            logits = self.model(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least; fp64 stays fp64
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return loss.view(y.shape).sum(1, dtype=torch.float64)

    def alive(self) -> list[bool]:
        return self.active.tolist()


def train_fused(
    cell: Cell | str,
    data: DatasetSplits,
    members: Sequence[TrainConfig],
    *,
    cuda_graphs: bool = True,
    float64: bool = False,
    step_losses: bool = False,
    keep_models: bool = False,
) -> list[FusedResult]:
    """Train K = len(members) configs of `cell` as one fused network; one result per member, in order.

    The members may differ only in init rule, seed and LR (`can_fuse`); everything else (shape,
    schedule, batch size, optimizer, precision, device) is the group's and means what it means in
    `engine.train`. `cuda_graphs`: capture the step in a CUDA graph (CUDA only; falls back to
    eager, saying so, if capture fails). `float64`: model and batches in float64, no autocast
    (exactness tests only). `step_losses` records every step's per-member loss; `keep_models`
    returns each member unpacked.
    """
    cell = Cell.parse(cell) if isinstance(cell, str) else cell
    refusal = fuse_refusal(members) if members else "no members"
    if refusal is not None:
        raise ValueError(f"cannot fuse: {refusal}")
    group, k = members[0], len(members)
    wall_start = time.perf_counter()
    # Autocast's weight cache off: under CUDA graphs cached casts would be stale on replay.
    numerics = setup_numerics(group, float64=float64, cache_casts=False)
    dev = numerics.device
    model = build_fused(cell, data.num_classes, members)  # each member built as a single net, packed
    member_params = n_params(model) // k
    model = model.to(device=dev, dtype=numerics.dtype, memory_format=numerics.memory_format)
    # One padded copy of the images on the device, one batch stream (seed) per member.
    streams = member_batches(
        data, [m.seed for m in members], batch_size=group.batch_size, device=dev, channels_last=group.channels_last
    )
    trainee = FusedTrainee(model, members, streams, numerics, cuda_graphs=cuda_graphs, step_losses=step_losses)
    trace = train_epochs(trainee, group, device_splits(data, dev))

    wall_s = time.perf_counter() - wall_start
    steps = trainee.steps_done.tolist()
    step_table = torch.stack(trainee.per_step).cpu().tolist() if trainee.per_step else []
    results = []
    for i, cfg in enumerate(members):
        # A diverged member trained on fewer images than the group (it stopped stepping).
        images = trace.images if trace.ok(i) else seen_images(steps[i], len(streams[0]), group.batch_size, streams[0].n)
        record = build_record(
            cfg,
            i,
            trace,
            arch=cell.arch_str,
            data=data,
            numerics=numerics,
            n_params=member_params,
            steps=steps[i],
            images=images,
            wall_s=wall_s,
        )
        results.append(
            FusedResult(
                record=record,
                k=k,
                cuda_graphs=trainee.graphed is not None,
                images_per_s_total=k * trace.images / trace.train_s if trace.train_s > 0 else 0.0,
                step_loss=tuple(row[i] for row in step_table),
                model=model.unpack(i) if keep_models else None,
            )
        )
    return results


def seen_images(steps: int, steps_per_epoch: int, batch_size: int, n: int) -> int:
    """Training images in the first `steps` steps (the last batch of each epoch may be partial)."""
    full, rest = divmod(steps, steps_per_epoch)
    return full * n + min(rest * batch_size, n)


def can_fuse(cfgs: Sequence[TrainConfig]) -> bool:
    """Whether these trainings of one cell can run as one fused network (`fuse_refusal`)."""
    return fuse_refusal(cfgs) is None


def fuse_refusal(cfgs: Sequence[TrainConfig]) -> str | None:
    """Why these trainings cannot run as one fused network, or None when they can."""
    first = cfgs[0].to_dict()
    if any(cfg.parametrization != "sp" for cfg in cfgs):
        # FusedSGD steps every member with one LR per member; μP needs mup's MuReadout and MuSGD's per-layer LR
        # and weight-decay multipliers (pipeline/train/muparam.py), which only the lone trainer builds.
        return "parametrization mup trains with MuSGD (per-layer LR multipliers), another optimizer than FusedSGD"
    for cfg in cfgs[1:]:
        differing = sorted(
            name for name, value in cfg.to_dict().items() if name not in FUSABLE_DIFFERENCES and value != first[name]
        )
        if differing:
            return (
                f"members differ in {', '.join(differing)}; they may differ only in "
                f"{', '.join(sorted(FUSABLE_DIFFERENCES))}"
            )
    return None


def train_group(cell: Cell | str, data: DatasetSplits, cfgs: Sequence[TrainConfig]) -> list[TrainRecord]:
    """K trainings of `cell` that differ only in init rule, seed and LR, as one fused network.

    One `TrainRecord` per config, in order, as `engine.train` would return it (its own config,
    status, curves and accuracies; device and timings are the group's)."""
    return [result.record for result in train_fused(cell, data, cfgs)]
