"""K networks of one NB201 cell as one network (`FusedTinyNetwork`) and its per-member SGD (`FusedSGD`).

At C=8 or C=16 a single TinyNetwork leaves most of a GPU (and much of a CPU's vector units)
idle: its convs are tiny. K runs of the *same* cell (other seeds, init rules or LRs) have the
same graph, so we stack them along channels: the skeleton of `model.Skeleton` with `groups=K`
(every conv grouped, every BN per channel, so per model by construction; pooling and skips are
channelwise anyway) and a batched-matmul classifier. No op mixes channels of two models, so model
k's forward, backward and update are those of a lone TinyNetwork, up to floating-point summation
order (see fused.py for what that means in fp32 and fp64).

Layout: every parameter and buffer has the K models stacked along dim 0, model k being slice
k of `t.unflatten(0, (K, -1))` (conv weights K·C_out×C_in×k×k, BN K·C, classifier K×classes×4C).
That one convention gives packing (`FusedTinyNetwork.from_members`), unpacking (`unpack`) and a
per-model learning rate in the optimizer (`FusedSGD`).

Input: B×(K·3)×H×W, model k's batch in channels 3k..3k+2. Output: logits K×B×classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cells import Cell
from core import nb201
from core.config import TrainConfig
from core.shape import NetShape
from pipeline.train.model import Skeleton, TinyNetwork, build_model


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


class FusedTinyNetwork(Skeleton):
    """K TinyNetworks of one cell as one network; parameter names are TinyNetwork's, K-wide on dim 0.

    Build it with `from_members` (or `build_fused`), which copies the members' own weights, so each
    member's init is exactly the single-net init; `unpack(k)` gives member k back as a TinyNetwork.
    `shape` is one member's shape.
    """

    def __init__(
        self,
        cell: Cell,
        num_classes: int,
        k: int,
        width: int = nb201.WIDTH,
        cells_per_stage: int = nb201.CELLS_PER_STAGE,
    ) -> None:
        if k < 1:
            raise ValueError(f"need at least one member, got k={k}")
        super().__init__(cell, NetShape(width, cells_per_stage, num_classes=num_classes), groups=k)
        self.k = k
        self.classifier = FusedLinear(self.shape.final_channels, num_classes, k)

    @classmethod
    def from_members(cls, members: Sequence[TinyNetwork]) -> FusedTinyNetwork:
        """Stack K TinyNetworks of one cell and shape (weights and BN statistics, on the CPU)."""
        first = members[0]
        shape = first.shape
        fused = cls(first.cell, shape.num_classes, len(members), shape.width, shape.cells_per_stage)
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
        shape = self.shape
        model = TinyNetwork(self.cell, shape.num_classes, shape.width, shape.cells_per_stage).to(dtype)
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
