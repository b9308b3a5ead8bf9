"""The μP baseline of the paper's Appendix E.3 (Fig. 8): NB201's network and recipe under Microsoft's `mup`.

`mup`'s basic usage, step by step (its README; mup 1.0.0, pinned):
1. the output layer is a `MuReadout` (`MuTinyNetwork`: NB201's TinyNetwork with its classifier swapped);
2. `set_base_shapes(model, base, delta=delta)` with a base network of width `mup_base_width` and a delta
   network of width `mup_delta_width`: every parameter gets an `infshape`, the dimensions that differ
   between base and delta are widths, and the readout's weight and bias are rescaled by
   √(width/base width) (the convs have no bias, so nothing else is rescaled);
3. `MuSGD(model.parameters(), lr=0.1, ...)` with NB201's momentum, Nesterov and weight decay.
Everything else is NB201's recipe as the lone trainer runs it (engine.py): the init rule (`torch-default`,
PyTorch's layer defaults, which is what `set_base_shapes` assumes), batch, schedule, augmentation.

What MuSGD does to NB201's network, with m = C / mup_base_width (mup.optim.MuSGD): parameters with one width
dimension (stem conv (C, 3, k, k), every BatchNorm weight and bias, the readout weight (classes, 4C)) get LR
× m and weight decay / m; parameters with two (every other conv) get LR × (fan-in mult / fan-out mult) = 1;
the readout bias (no width dimension) keeps both. The readout divides its input by m. At m = 1 (base width =
trained width) all of it is the identity and μP is NB201's recipe exactly (tests/test_mup.py).

The loop sets each step's LR from the schedule (loop.lr_table); `engine.LoneTrainee` multiplies it by each param
group's multiplier, taken from MuSGD's own groups, so the schedule scales every group as a PyTorch scheduler
would. The fused trainer refuses μP (fused.fuse_refusal): it steps with its own SGD.
"""

from __future__ import annotations

import torch
from mup import MuReadout, MuSGD, set_base_shapes
from mup.shape import apply_infshapes, get_infshapes

from cells import Cell
from core import nb201
from core.config import TrainConfig
from pipeline.train.model import TinyNetwork, init_weights


class MuTinyNetwork(TinyNetwork):
    """NB201's TinyNetwork with `mup.MuReadout` as its classifier (same name, same place in the parameter order)."""

    def __init__(
        self,
        cell: Cell,
        num_classes: int,
        width: int = nb201.WIDTH,
        cells_per_stage: int = nb201.CELLS_PER_STAGE,
        prune: bool = True,
    ) -> None:
        super().__init__(cell, num_classes, width, cells_per_stage, prune)
        self.classifier = MuReadout(self.shape.final_channels, num_classes)


def build_mup_model(
    cell: Cell,
    num_classes: int,
    *,
    width: int,
    cells_per_stage: int,
    init_rule: str,
    seed: int,
    base_width: int,
    delta_width: int,
) -> MuTinyNetwork:
    """The target network initialised by `init_rule` from `seed` (model.init_weights), then given its base
    shapes from a base and a delta network (built on the meta device: shapes only, no RNG drawn)."""
    model = MuTinyNetwork(cell, num_classes, width, cells_per_stage)
    init_weights(model, init_rule, seed)
    with torch.device("meta"):
        base = MuTinyNetwork(cell, num_classes, base_width, cells_per_stage)
        delta = MuTinyNetwork(cell, num_classes, delta_width, cells_per_stage)
    set_base_shapes(model, base, delta=delta)
    return model


def move(model: MuTinyNetwork, device: torch.device, memory_format: torch.memory_format) -> MuTinyNetwork:
    """`model.to(...)`, keeping every parameter's `infshape` (MuSGD reads it) whichever way torch converts."""
    infshapes = get_infshapes(model)
    model = model.to(device=device, memory_format=memory_format)
    apply_infshapes(model, infshapes)
    return model


def mu_sgd(model: MuTinyNetwork, cfg: TrainConfig, fused: bool = False) -> tuple[torch.optim.SGD, list[float]]:
    """MuSGD at `cfg.lr` with NB201's momentum, Nesterov and weight decay, and each param group's LR
    multiplier (its LR as MuSGD set it, over `cfg.lr`)."""
    optimizer = MuSGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        fused=fused,
    )
    return optimizer, [group["lr"] / cfg.lr for group in optimizer.param_groups]


def lr_multipliers(model: MuTinyNetwork, cfg: TrainConfig) -> dict[str, tuple[float, float]]:
    """Parameter name -> (LR multiplier, weight-decay multiplier) as MuSGD sets them (for tests and reports)."""
    optimizer, mults = mu_sgd(model, cfg)
    names = {id(p): name for name, p in model.named_parameters()}
    return {
        names[id(p)]: (mult, group["weight_decay"] / cfg.weight_decay if cfg.weight_decay else 1.0)
        for group, mult in zip(optimizer.param_groups, mults, strict=True)
        for p in group["params"]
    }
