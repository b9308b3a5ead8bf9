"""NB201's TinyNetwork, computing only what can change its output.

Module and parameter names follow NB201 (`stem`, `cells.i.layers.k.op.1.weight`, `cells.i.conv_a`,
`lastact`, `classifier`) and every parameter NB201 has exists here, so parameter counts equal
`cells.network_params` (= NB201's published `params`). The forward pass, however, walks the
cell's *live* graph (`cells.live_graph`): `none` edges, edges that cannot reach the output and
skip/pool edges out of all-zero nodes are skipped, skip copies are aliased, and a conv edge fed by
an all-zero node is replaced by its BN bias β (exact: BN of an all-zero input outputs β in train
mode, and in eval mode too because its running mean only ever sees zeros). Convs reading the same
node share one ReLU. `prune=False` gives NB201's original forward (all six edges, `none` as x·0),
kept as the reference the tests and the benchmark compare against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cells import (
    CONV_KERNEL,
    DEGREE_FREE_RULES,
    INIT_RULES,
    Cell,
    edge_correspondence,
    edge_init_degrees,
    live_graph,
    reduction_init_degrees,
)
from cells.classes import INPUT
from core import nb201
from core.shape import NetShape

BN_MOMENTUM = 0.1
"""PyTorch's default, as NB201."""


class ReLUConvBN(nn.Module):
    """NB201's `ReLUConvBN`: ReLU → Conv(k, pad k//2, no bias) → BN(affine, running stats).

    `groups` > 1 is K of them side by side (pipeline/train/fused_model.py): one grouped conv, BN per channel."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False, groups=groups),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True, momentum=BN_MOMENTUM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def conv_bn(self, relu_x: torch.Tensor) -> torch.Tensor:
        """The edge applied to an input that is already ReLU'd (so several edges share one ReLU)."""
        return self.op[2](self.op[1](relu_x))


class Pool(nn.Module):
    """NB201's `POOLING` with equal channels and stride 1: just the 3×3 average."""

    def __init__(self) -> None:
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """NB201's `Zero` op (x·0); only the unpruned reference forward calls it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def edge_module(op: str, channels: int, groups: int = 1) -> nn.Module:
    if op in CONV_KERNEL:
        return ReLUConvBN(channels, channels, CONV_KERNEL[op], groups=groups)
    if op == "avg_pool_3x3":
        return Pool()
    if op == "skip_connect":
        return nn.Identity()
    return Zero()


class InferCell(nn.Module):
    """One NB201 cell (stride 1, C→C). Node j = Σ incoming edges; the cell returns node 3.

    `groups` = K builds K cells side by side over `channels` = K·C (pipeline/train/fused_model.py): every op
    is channelwise or a grouped conv, so the same live-graph plan serves K models."""

    def __init__(self, cell: Cell, channels: int, prune: bool = True, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(edge_module(op, channels, groups) for op in cell.ops)
        self.prune = prune
        graph = live_graph(cell)
        self.output = graph.output
        # Plan: per target node (topological order), its live incoming (op, source, edge index).
        targets = sorted({e.target for e in graph.edges})
        self.plan = tuple((t, tuple((e.op, e.source, e.edge) for e in graph.edges if e.target == t)) for t in targets)
        self.bias_only = {t: all(op == "bias" for op, _, _ in inc) for t, inc in self.plan}
        self.zero_output = graph.output != INPUT and graph.output not in self.bias_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_live(x) if self.prune else self.forward_all_edges(x)

    def forward_live(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == INPUT:
            return x
        if self.zero_output:
            # Constant zero: no graph to x at all; parameters upstream then get no gradient
            # (None, so SGD leaves them alone), which cannot change the network's output.
            return torch.zeros_like(x)
        nodes: dict[int, torch.Tensor] = {INPUT: x}
        relu: dict[int, torch.Tensor] = {}
        for target, incoming in self.plan:
            total: torch.Tensor | None = None
            for op, source, k in incoming:
                layer = self.layers[k]
                if op == "bias":  # conv fed by zeros: BN(0) = β in train and eval mode
                    term = layer.op[2].bias.view(1, -1, 1, 1)
                elif op == "skip_connect":
                    term = nodes[source]
                elif op == "avg_pool_3x3":
                    term = layer(nodes[source])
                else:
                    if source not in relu:
                        relu[source] = F.relu(nodes[source])
                    term = layer.conv_bn(relu[source])
                total = term if total is None else total + term
            assert total is not None
            if self.bias_only[target]:
                total = total.expand_as(x)
            nodes[target] = total
        return nodes[self.output]

    def forward_all_edges(self, x: torch.Tensor) -> torch.Tensor:
        """NB201's `InferCell.forward`, verbatim in effect: every edge, `none` as x·0."""
        nodes = [x]
        k = 0
        for target in range(1, 4):
            feats = []
            for source in range(target):
                feats.append(self.layers[k](nodes[source]))
                k += 1
            nodes.append(sum(feats))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """NB201's reduction block: out = downsample(x) + conv_b(conv_a(x)), C → 2C, stride 2.

    `groups` = K builds K blocks side by side over K·C channels (pipeline/train/fused_model.py)."""

    def __init__(self, c_in: int, c_out: int, groups: int = 1) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2, groups=groups)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, groups=groups)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False, groups=groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Skeleton(nn.Module):
    """NB201's macro skeleton as `core.NetShape` lays it out: stem, 3 stages of N cells (C, 2C, 4C)
    joined by reductions, BN-ReLU, GAP, then the subclass's classifier.

    `groups` = K lays out K networks of one cell side by side (every width K-fold, every conv
    grouped), so the lone and the fused network share one layout. The subclass assigns
    `self.classifier` after this runs (construction order, hence parameter order, is NB201's).
    """

    classifier: nn.Module

    def __init__(self, cell: Cell, shape: NetShape, groups: int = 1, prune: bool = True) -> None:
        super().__init__()
        self.cell, self.shape = cell, shape
        self.stem = nn.Sequential(
            nn.Conv2d(3 * groups, shape.width * groups, 3, padding=1, bias=False, groups=groups),
            nn.BatchNorm2d(shape.width * groups, momentum=BN_MOMENTUM),
        )
        blocks: list[nn.Module] = []
        for stage in shape.stages():
            if stage.reduction_from is not None:
                blocks.append(ResNetBasicblock(groups * stage.reduction_from, groups * stage.channels, groups))
            blocks.extend(InferCell(cell, groups * stage.channels, prune, groups) for _ in range(stage.cells))
        self.cells = nn.ModuleList(blocks)
        final = groups * shape.final_channels
        self.lastact = nn.Sequential(nn.BatchNorm2d(final, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.stem(x)
        for block in self.cells:
            feature = block(feature)
        out = self.lastact(feature)
        return self.classifier(out.mean((2, 3)))


class TinyNetwork(Skeleton):
    """NB201's TinyNetwork: the skeleton (`Skeleton`) with one linear classifier."""

    def __init__(
        self,
        cell: Cell,
        num_classes: int,
        width: int = nb201.WIDTH,
        cells_per_stage: int = nb201.CELLS_PER_STAGE,
        prune: bool = True,
    ) -> None:
        super().__init__(cell, NetShape(width, cells_per_stage, num_classes=num_classes), prune=prune)
        self.classifier = nn.Linear(self.shape.final_channels, num_classes)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- init ------------------------------------------------------------------------------------


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:])


def _he_normal(weight: torch.Tensor, degree: int, generator: torch.Generator) -> None:
    """N(0, 2 / (fan_in · degree)): He-normal fan_in, variance divided by the degree (Eq. 4)."""
    weight.normal_(0.0, math.sqrt(2.0 / (_fan_in(weight) * max(1, degree))), generator=generator)


def _torch_uniform(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    """U(±1/√fan_in): PyTorch's default for Conv2d/Linear weights (kaiming_uniform_ with a=√5, i.e.
    std 1/√(3·fan_in)) and for Linear biases."""
    bound = 1.0 / math.sqrt(fan_in)
    tensor.uniform_(-bound, bound, generator=generator)


def _convs(model: TinyNetwork, rule: str) -> list[tuple[torch.Tensor, int]]:
    """Every conv weight in a fixed order (stem, then blocks in order), with its Eq. 4 degree."""
    degrees = edge_init_degrees(model.cell, rule)
    red = reduction_init_degrees(rule)
    out: list[tuple[torch.Tensor, int]] = [(model.stem[0].weight, 1)]
    for block in model.cells:
        if isinstance(block, InferCell):
            out += [
                (layer.op[1].weight, degrees[k])
                for k, layer in enumerate(block.layers)
                if isinstance(layer, ReLUConvBN)
            ]
        else:
            assert isinstance(block, ResNetBasicblock)
            out += [
                (block.conv_a.op[1].weight, red.conv_a),
                (block.conv_b.op[1].weight, red.conv_b),
                (block.downsample[1].weight, red.downsample),
            ]
    return out


def init_weights(model: TinyNetwork, rule: str, seed: int) -> None:
    """Initialise by rule (`cells.INIT_RULES`), reproducibly from `seed` (a private CPU generator).

    torch-default (NB201's recipe: its training code never re-initialises, digest §4.1b): every
    conv and the classifier weight U(±1/√fan_in) (kaiming-uniform a=√5: std 1/√(3·fan_in)), the
    classifier bias U(±1/√fan_in). Drawn from our generator, so a seed gives the same network
    on every device, unlike torch's global RNG at construction.
    kaiming: He-normal fan_in (std √(2/fan_in)) on every conv; classifier as torch-default.
    arch-source / arch-target: cell convs Var = 2/(fan_in·d) with d = `edge_init_degrees`;
    reduction convs d = `reduction_init_degrees`; stem d = 1; classifier N(0, (2/fan_in)²)
    with bias 0 (the official code's std_power=2). Every rule: BN weight 1, bias 0, fresh running stats.
    """
    if rule not in INIT_RULES:
        raise ValueError(f"unknown init rule {rule!r}; expected one of {', '.join(INIT_RULES)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for weight, degree in _convs(model, rule):
            if rule == "torch-default":
                _torch_uniform(weight, _fan_in(weight), generator)
            else:
                _he_normal(weight, degree, generator)
        fc = model.classifier
        if rule in DEGREE_FREE_RULES:  # torch.nn.Linear.reset_parameters, on our generator
            _torch_uniform(fc.weight, fc.in_features, generator)
            _torch_uniform(fc.bias, fc.in_features, generator)
        else:
            fc.weight.normal_(0.0, 2.0 / fc.in_features, generator=generator)
            fc.bias.zero_()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.reset_running_stats()


def build_model(
    cell: Cell,
    num_classes: int,
    *,
    width: int = nb201.WIDTH,
    cells_per_stage: int = nb201.CELLS_PER_STAGE,
    init_rule: str = "torch-default",
    seed: int = 0,
    prune: bool = True,
) -> TinyNetwork:
    """A freshly initialised TinyNetwork on the CPU (move it afterwards: init is device-independent)."""
    model = TinyNetwork(cell, num_classes, width, cells_per_stage, prune)
    init_weights(model, init_rule, seed)
    return model


# --- class members share weights ---------------------------------------------------------------


def transfer_weights(source: TinyNetwork, target: TinyNetwork, init_rule: str = "kaiming") -> None:
    """Copy `source`'s weights into `target`, a network of another cell of the same isomorphism class.

    Everything outside the cells is copied as is; inside each cell, every live edge of the source
    goes to its counterpart (`cells.edge_correspondence`): conv weight and BN state for conv edges,
    BN state alone for `bias` edges (their conv never matters). Raises ValueError across classes.
    Afterwards both networks compute the same function, which is what makes training one member
    per class sound.
    """
    if source.shape != target.shape:
        raise ValueError("networks differ in shape (width, cells per stage or classes)")
    mapping = edge_correspondence(target.cell, source.cell, init_rule)  # source edge -> target edge
    live_op = {e.edge: e.op for e in live_graph(source.cell).edges}
    with torch.no_grad():
        for (name, src_mod), (_, dst_mod) in zip(source.named_children(), target.named_children(), strict=True):
            if name != "cells":
                dst_mod.load_state_dict(src_mod.state_dict())
        for src_block, dst_block in zip(source.cells, target.cells, strict=True):
            if not isinstance(src_block, InferCell):
                dst_block.load_state_dict(src_block.state_dict())
                continue
            for r, m in mapping.items():
                src_edge, dst_edge = src_block.layers[r], dst_block.layers[m]
                if isinstance(src_edge, ReLUConvBN) and isinstance(dst_edge, ReLUConvBN):
                    dst_edge.op[2].load_state_dict(src_edge.op[2].state_dict())
                    if live_op[r] != "bias":
                        dst_edge.op[1].weight.copy_(src_edge.op[1].weight)
