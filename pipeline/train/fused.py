"""Horizontal fusion: K trainings of one NB201 cell computed as one network (issue 12).

At C=8 or C=16 a single TinyNetwork leaves most of a GPU (and much of a CPU's vector units)
idle: its convs are tiny. K runs of the *same* cell (other seeds, init rules or LRs) have the
same graph, so we stack them along channels and run one network of K·C channels in which every
conv is grouped (groups=K), every BN is per channel (so per model by construction), pooling and
skips are channelwise anyway and the classifier is a batched matmul. No op mixes channels of two
models, so model k's forward, backward and update are those of a lone TinyNetwork, up to
floating-point summation order: grouped oneDNN convs and the batched classifier round differently
(~1e-7 per step in fp32). In float64 the fused run equals K separate runs to ~1e-14 at every step
(tests/test_fused.py); in fp32 that holds to 1e-5 where training is well conditioned, while at
NB201's LRs these tiny nets are chaotic enough that a lone run perturbed by 1e-7 drifts as far.

Layout: every parameter and buffer has the K models stacked along dim 0, model k being slice
k of `t.unflatten(0, (K, -1))` (conv weights K·C_out×C_in×k×k, BN K·C, classifier K×classes×4C).
That one convention gives packing (`FusedTinyNetwork.from_members`), unpacking (`unpack`) and a
per-model learning rate in the optimizer (`FusedSGD`).

Input: B×(K·3)×H×W, model k's own augmented batch (its own `TrainBatches` seed: permutation,
crop, flip) in channels 3k..3k+2. Output: logits K×B×classes.

Divergence: the loss is Σ_k mean-CE_k; a non-finite loss in member k freezes k (its slices stop
updating, its loss is masked out with `torch.where`, never multiplied by 0, since NaN·0 = NaN)
while the others go on. The bookkeeping lives on the device, so a step never syncs and can be
captured in a CUDA graph (`cuda_graphs=True`).

`train_group(cell, data, cfgs)` is the pipeline's entry: K `TrainConfig`s that differ only in
init rule, seed and LR in, K `engine.TrainRecord`s out, so each member writes its own row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cells import Cell
from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, Normalise, TrainBatches, eval_batches
from pipeline.train.engine import TrainRecord, describe_device, prepare_device
from pipeline.train.model import BN_MOMENTUM, InferCell, ReLUConvBN, TinyNetwork, build_model, n_params

# --- the fused network --------------------------------------------------------------------------


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class FusedBasicblock(nn.Module):
    """K × NB201's reduction block (C → 2C, stride 2): downsample(x) + conv_b(conv_a(x)), all grouped."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(k * c_in, k * c_out, 3, stride=2, groups=k)
        self.conv_b = ReLUConvBN(k * c_out, k * c_out, 3, groups=k)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(k * c_in, k * c_out, kernel_size=1, bias=False, groups=k),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class FusedLinear(nn.Module):
    """K linear classifiers as one batched matmul: features B×(K·F) → logits K×B×classes."""

    def __init__(self, in_features: int, out_features: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.zeros(k, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)  # K×B×F
        return torch.baddbmm(self.bias.unsqueeze(1), feats, self.weight.transpose(1, 2))


class FusedTinyNetwork(nn.Module):
    """K TinyNetworks of one cell as one network; parameter names are TinyNetwork's, K-wide on dim 0.

    Build it with `from_members` (or `build_fused`), which copies the members' own weights, so each
    member's init is exactly the single-net init; `unpack(k)` gives member k back as a TinyNetwork.
    """

    def __init__(self, cell: Cell, num_classes: int, k: int, width: int = 16, cells_per_stage: int = 5) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"need at least one member, got k={k}")
        self.cell, self.num_classes, self.k = cell, num_classes, k
        self.width, self.cells_per_stage = width, cells_per_stage
        c = width
        self.stem = nn.Sequential(nn.Conv2d(3 * k, c * k, 3, padding=1, bias=False, groups=k), _bn(c * k))
        blocks: list[nn.Module] = []
        for stage, channels in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                blocks.append(FusedBasicblock(channels // 2, channels, k))
            blocks.extend(InferCell(cell, k * channels, groups=k) for _ in range(cells_per_stage))
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(_bn(4 * c * k), nn.ReLU(inplace=True))
        self.classifier = FusedLinear(4 * c, num_classes, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.stem(x)
        for block in self.cells:
            feature = block(feature)
        out = self.lastact(feature)
        return self.classifier(out.mean((2, 3)))

    @classmethod
    def from_members(cls, members: Sequence[TinyNetwork]) -> FusedTinyNetwork:
        """Stack K TinyNetworks of one cell and shape (weights and BN statistics, on the CPU)."""
        first = members[0]
        # The skeleton read off NB201's module names (stable), not off TinyNetwork's attributes.
        width = first.stem[0].out_channels
        cells_per_stage = sum(isinstance(b, InferCell) for b in first.cells) // 3
        fused = cls(first.cell, first.classifier.out_features, len(members), width, cells_per_stage)
        states = [m.state_dict() for m in members]
        for m, state in zip(members, states, strict=True):
            shapes = {n: t.shape for n, t in state.items()}
            if m.cell != first.cell or shapes != {n: t.shape for n, t in states[0].items()}:
                raise ValueError("fused members must share cell, width, cells per stage and classes")
        packed = {}
        for name, ref in fused.state_dict().items():
            parts = [s[name] for s in states]
            if name.endswith("num_batches_tracked"):
                packed[name] = parts[0].clone()  # BN ran equally often in every member
            elif name.startswith("classifier."):
                packed[name] = torch.stack(parts)
            else:
                packed[name] = torch.cat(parts)
            assert packed[name].shape == ref.shape, name
        fused.load_state_dict(packed)
        return fused

    def unpack(self, k: int) -> TinyNetwork:
        """Member k as a plain TinyNetwork (CPU, contiguous, this network's dtype): its weights and BN statistics."""
        dtype = self.stem[0].weight.dtype
        model = TinyNetwork(self.cell, self.num_classes, self.width, self.cells_per_stage).to(dtype)
        state = {}
        for name, t in self.state_dict().items():
            t = t.detach().cpu()
            if name.endswith("num_batches_tracked"):
                state[name] = t.clone()
            elif name.startswith("classifier."):
                state[name] = t[k].contiguous()
            else:
                state[name] = t.unflatten(0, (self.k, -1))[k].contiguous()
        model.load_state_dict(state)
        return model


def build_fused(cell: Cell, num_classes: int, members: Sequence[TrainConfig]) -> FusedTinyNetwork:
    """Each member built by `model.build_model` (its own shape, init rule and seed), then packed.

    So each member's init is exactly the single-net init, by construction.
    """
    nets = [
        build_model(
            cell,
            num_classes,
            width=m.width,
            cells_per_stage=m.cells_per_stage,
            init_rule=m.init_rule,
            seed=m.seed,
        )
        for m in members
    ]
    return FusedTinyNetwork.from_members(nets)


# --- per-member SGD -------------------------------------------------------------------------------


class FusedSGD:
    """`torch.optim.SGD` (momentum, dampening 0, weight decay, Nesterov) with one LR per member.

    Per parameter p with gradient g, for each member slice (dim 0 split in K):
    d = g + wd·p; buf = d on the first step, else momentum·buf + d; d += momentum·buf if
    nesterov (else d = buf); p -= lr_k·d. The buffer starts at zero, so the first step's
    momentum·0 + d = d is exact and no step branches (a CUDA graph can capture it). Parameters
    without a gradient are skipped (as torch's SGD does: dead edges get no weight decay either).
    Slices of inactive members are left untouched via `torch.where`, so NaN there stays there.
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        k: int,
        *,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
    ) -> None:
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum")
        self.params = list(params)
        self.k, self.momentum, self.weight_decay, self.nesterov = k, momentum, weight_decay, nesterov
        for p in self.params:
            if p.shape[0] % k:
                raise ValueError(f"parameter of shape {tuple(p.shape)} does not split into {k} members on dim 0")
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def reset(self) -> None:
        """Forget the momentum (back to before the first step)."""
        for buf in self.buffers:
            buf.zero_()

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """One update; `lr` (K,) per member, `active` (K,) bool: False leaves that member's slices alone."""
        k = self.k
        for p, buf in zip(self.params, self.buffers, strict=True):
            if p.grad is None:
                continue
            shape = (k,) + (1,) * p.dim()  # broadcasts over p.unflatten(0, (k, -1))
            w, g, b = p.unflatten(0, (k, -1)), p.grad.unflatten(0, (k, -1)), buf.unflatten(0, (k, -1))
            d = g.add(w, alpha=self.weight_decay) if self.weight_decay else g
            if self.momentum:
                b.mul_(self.momentum).add_(d)
                d = d.add(b, alpha=self.momentum) if self.nesterov else b
            update = d * lr.view(shape)
            if active is not None:
                update = torch.where(active.view(shape), update, 0.0)
            w.sub_(update)


# --- schedules ------------------------------------------------------------------------------------


def lr_table(members: Sequence[TrainConfig], steps_per_epoch: int) -> torch.Tensor:
    """Every step's LR per member, (epochs·steps_per_epoch)×K float64 on the CPU: `TrainConfig.lr_at`,
    the single-net engine's own schedule, so both paths take the same LR at every step."""
    epochs = members[0].epochs
    rows = [
        [m.lr_at(step // steps_per_epoch, step, steps_per_epoch) for m in members]
        for step in range(epochs * steps_per_epoch)
    ]
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), len(members))


# --- training -------------------------------------------------------------------------------------


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
    autocast: Any,
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


@torch.inference_mode()
def evaluate_fused(
    model: FusedTinyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    normalise: Normalise,
    device: torch.device,
    channels_last: bool,
    autocast: Any,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[float], list[float]]:
    """Per member (top-1 % over all classes, mean CE), eval mode, every member on the same images."""
    model.eval()
    k = model.k
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    for xb, yb in eval_batches(
        x, y, batch_size=batch_size, normalise=normalise, device=device, channels_last=channels_last
    ):
        xk = xb.to(dtype).repeat(1, k, 1, 1)
        if channels_last:
            xk = xk.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(xk)
        correct += (logits.argmax(-1) == yb).sum(1)
        loss = F.cross_entropy(logits.float().flatten(0, 1), yb.repeat(k), reduction="none")
        loss_sum += loss.view(k, -1).sum(1, dtype=torch.float64)
    n = len(y)
    return (100.0 * correct.double() / n).tolist(), (loss_sum / n).tolist()


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
        autocast: Any,
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
    `engine.train`: SGD (Nesterov) with weight decay on every parameter, batches with the last
    partial batch kept, each member drawing its own batches (`TrainBatches` with its seed), eval in
    eval mode in large batches, top-1 over all classes. `cuda_graphs`: capture the step in a CUDA
    graph (CUDA only; falls back to eager, saying so, if capture fails). `float64`: model and
    batches in float64, no autocast (exactness tests only). `step_losses` records every step's
    per-member loss; `keep_models` returns each member unpacked.
    """
    cell = Cell.parse(cell) if isinstance(cell, str) else cell
    if not members or not can_fuse(members):
        raise ValueError(f"fused members may differ only in {', '.join(sorted(FUSABLE_DIFFERENCES))}")
    group, k = members[0], len(members)
    wall_start = time.perf_counter()

    # --- device and numerics ---
    dev, bf16 = prepare_device(group)
    bf16 = bf16 and not float64
    on_cuda = dev.type == "cuda"
    # Autocast's weight cache must be off under CUDA graphs (cached casts would be stale on replay).
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False) if bf16 else nullcontext()
    memory_format = torch.channels_last if group.channels_last else torch.contiguous_format
    dtype = torch.float64 if float64 else torch.float32
    precision = "bf16 autocast" if bf16 else ("fp64" if float64 else "fp32")

    # --- model: each member built as a single net, packed, moved ---
    model = build_fused(cell, data.num_classes, members)
    member_params = n_params(model) // k
    model = model.to(device=dev, dtype=dtype, memory_format=memory_format)
    optimizer = FusedSGD(
        list(model.parameters()),
        k,
        momentum=group.momentum,
        weight_decay=group.weight_decay,
        nesterov=group.nesterov,
    )

    # --- data: one padded copy on the device, one batch stream (seed) per member ---
    batches = member_batches(
        data,
        [m.seed for m in members],
        batch_size=group.batch_size,
        device=dev,
        channels_last=group.channels_last,
    )
    steps_per_epoch = len(batches[0])
    lrs = lr_table(members, steps_per_epoch).to(device=dev, dtype=dtype)
    eval_sets = {name: (x.to(dev), y.to(dev)) for name, (x, y) in data.eval.items()}

    # --- training loop: state on the device, one sync per epoch ---
    active = torch.ones(k, dtype=torch.bool, device=dev)
    steps_done = torch.zeros(k, dtype=torch.int64, device=dev)
    diverged_epoch: list[int | None] = [None] * k
    train_loss: list[list[float]] = [[] for _ in range(k)]
    train_acc: list[list[float]] = [[] for _ in range(k)]
    per_step: list[torch.Tensor] = []
    graphed: GraphedStep | None = None
    use_graphs = on_cuda and cuda_graphs
    full_batch = group.batch_size
    step = images = 0
    train_start = time.perf_counter()
    for epoch in range(1, group.epochs + 1):
        model.train()
        loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
        correct = torch.zeros(k, dtype=torch.int64, device=dev)
        seen = 0
        for x, y in fused_batches(batches, memory_format, dtype):
            steps_done += active
            if use_graphs and graphed is None and y.shape[1] == full_batch:
                try:
                    graphed = GraphedStep(model, optimizer, x, y, active, autocast)
                except CaptureFailed as error:  # state restored: train eagerly, say so once
                    print(f"fused: CUDA graph capture failed ({error}); running eagerly")
                    use_graphs = False
            if graphed is not None and y.shape[1] == full_batch:
                losses, logits = graphed(x, y, lrs[step])
            else:
                losses, logits = fused_step(model, optimizer, x, y, lrs[step], active, autocast)
            loss_sum += losses.double() * y.shape[1]
            correct += (logits.argmax(-1) == y).sum(1)
            if step_losses:
                per_step.append(losses.clone())
            seen += y.shape[1]
            step += 1
        images += seen
        still = active.tolist()
        epoch_loss, epoch_acc = (loss_sum / seen).tolist(), (100.0 * correct.double() / seen).tolist()
        for i in range(k):
            if diverged_epoch[i] is not None:
                continue
            train_loss[i].append(epoch_loss[i])
            train_acc[i].append(epoch_acc[i])
            if not still[i] or not math.isfinite(epoch_loss[i]):
                diverged_epoch[i] = epoch
        if all(d is not None for d in diverged_epoch):
            break
    if on_cuda:
        torch.cuda.synchronize(dev)
    train_s = time.perf_counter() - train_start

    # --- evaluation: all members at once, top-1 over all classes, every eval split ---
    eval_start = time.perf_counter()
    evals = {
        name: evaluate_fused(
            model,
            x,
            y,
            batch_size=group.eval_batch_size,
            normalise=batches[0].normalise,
            device=dev,
            channels_last=group.channels_last,
            autocast=autocast,
            dtype=dtype,
        )
        for name, (x, y) in eval_sets.items()
    }
    eval_s = time.perf_counter() - eval_start

    wall_s = time.perf_counter() - wall_start
    steps_per_member = steps_done.tolist()
    step_table = torch.stack(per_step).cpu().tolist() if per_step else []
    dev_name = describe_device(dev)
    results = []
    for i, cfg in enumerate(members):
        ok = diverged_epoch[i] is None
        member_images = images if ok else seen_images(steps_per_member[i], steps_per_epoch, full_batch, batches[0].n)
        record = TrainRecord(
            config=cfg,
            arch=cell.arch_str,
            dataset=data.name,
            status="ok" if ok else "diverged",
            diverged_epoch=diverged_epoch[i],
            train_loss=tuple(train_loss[i]),
            train_acc=tuple(train_acc[i]),
            eval_acc={name: (acc[i] if ok else None) for name, (acc, _) in evals.items()},
            eval_loss={name: (loss[i] if ok else None) for name, (_, loss) in evals.items()},
            n_train=batches[0].n,
            n_eval={name: len(y) for name, (_, y) in eval_sets.items()},
            steps=steps_per_member[i],
            n_params=member_params,
            device=dev_name,
            precision=precision,
            wall_s=wall_s,
            train_s=train_s,
            eval_s=eval_s,
            images_per_s=member_images / train_s if train_s > 0 else 0.0,
        )
        results.append(
            FusedResult(
                record=record,
                k=k,
                cuda_graphs=graphed is not None,
                images_per_s_total=k * images / train_s if train_s > 0 else 0.0,
                step_loss=tuple(row[i] for row in step_table),
                model=model.unpack(i) if keep_models else None,
            )
        )
    return results


def seen_images(steps: int, steps_per_epoch: int, batch_size: int, n: int) -> int:
    """Training images in the first `steps` steps (the last batch of each epoch may be partial)."""
    full, rest = divmod(steps, steps_per_epoch)
    return full * n + min(rest * batch_size, n)


FUSABLE_DIFFERENCES = frozenset({"init_rule", "seed", "lr"})
"""What K fused members may differ in; every other TrainConfig field is shared by the group."""


def can_fuse(cfgs: Sequence[TrainConfig]) -> bool:
    """Whether these trainings of one cell can run as one fused network (no mid-run evaluation, no
    extra end-of-training pass: what `train_fused` implements)."""
    first = cfgs[0].to_dict()
    if first.get("eval_every") or first.get("end_train_pass"):
        return False
    return all(
        all(value == first[name] for name, value in cfg.to_dict().items() if name not in FUSABLE_DIFFERENCES)
        for cfg in cfgs[1:]
    )


def train_group(cell: Cell | str, data: DatasetSplits, cfgs: Sequence[TrainConfig]) -> list[TrainRecord]:
    """K trainings of `cell` that differ only in init rule, seed and LR, as one fused network.

    One `TrainRecord` per config, in order, as `engine.train` would return it (its own config,
    status, curves and accuracies; device and timings are the group's)."""
    return [result.record for result in train_fused(cell, data, cfgs)]
