"""The μP baseline (pipeline/train/muparam.py, issue 18 item 7): mup's per-layer multipliers on a tiny network,
μP at its base width is NB201's recipe, the fused trainer refuses it, and a spec carries it into the run
identity, the configs and the rows without touching the run ids of specs that do not use it."""

from __future__ import annotations

import math

import pytest
import torch
from mup import MuReadout

from cells import Cell
from core.config import ConfigError, TrainConfig
from pipeline.run.rows import config_columns
from pipeline.run.spec import SpecError
from pipeline.run.spec_load import spec_from_dict
from pipeline.run.units import fused_groups, plan_units
from pipeline.train.data import DatasetSplits
from pipeline.train.engine import train
from pipeline.train.fused import can_fuse, fuse_refusal, train_group
from pipeline.train.model import build_model
from pipeline.train.muparam import build_mup_model, lr_multipliers, move

CELL = Cell.parse("3_14_002")  # conv3x3, skip, avg-pool, conv1x1: every kind of edge
TINY = TrainConfig(width=4, cells_per_stage=1, device="cpu", threads=1)


def mup_cfg(base: int, delta: int, **changes) -> TrainConfig:
    return TINY.with_(parametrization="mup", mup_base_width=base, mup_delta_width=delta, **changes)


def tiny_mup(base: int, delta: int, width: int = 4):
    return build_mup_model(
        CELL, 10, width=width, cells_per_stage=1, init_rule="torch-default", seed=0, base_width=base, delta_width=delta
    )


def one_width_dim(name: str) -> bool:
    """Parameters with exactly one width dimension: the stem conv (C, 3, k, k), every BatchNorm, the readout weight."""
    return (
        name == "stem.0.weight"
        or name == "classifier.weight"
        or ".op.2." in name
        or name.startswith(("stem.1", "lastact.0"))
    )


@pytest.mark.parametrize(("base", "m"), [(16, 0.25), (1, 4.0), (2, 2.0)])
def test_musgd_multipliers_per_layer(base: int, m: float) -> None:
    """MuSGD (m = C / base width): one width dimension -> LR x m, weight decay / m; two (hidden convs) -> x1;
    none (the readout bias) -> x1. Checked on every parameter of a C=4, N=1 network."""
    model = tiny_mup(base, base * 2)
    mults = lr_multipliers(model, mup_cfg(base, base * 2))
    assert set(mults) == {name for name, _ in model.named_parameters()}
    for name, (lr_mult, wd_mult) in mults.items():
        expected = (m, 1 / m) if one_width_dim(name) else (1.0, 1.0)
        assert (lr_mult, wd_mult) == pytest.approx(expected, rel=1e-12), name
    assert mults["classifier.bias"] == (1.0, 1.0)
    assert mults["cells.0.layers.0.op.1.weight"] == (1.0, 1.0)  # a hidden conv (fan-in and fan-out both widths)


def test_delta_width_only_marks_the_width_dimensions() -> None:
    a, b = tiny_mup(16, 8), tiny_mup(16, 32)
    assert lr_multipliers(a, mup_cfg(16, 8)) == lr_multipliers(b, mup_cfg(16, 32))
    assert all(pa.infshape == pb.infshape for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def test_readout_is_rescaled_and_divides_by_the_width_multiplier() -> None:
    """set_base_shapes rescales MuReadout's weight and bias by √m; its forward divides the input by m."""
    sp = build_model(CELL, 10, width=4, cells_per_stage=1, init_rule="torch-default", seed=0)
    mu = tiny_mup(16, 8)
    assert isinstance(mu.classifier, MuReadout) and mu.classifier.width_mult() == 0.25
    assert torch.equal(mu.classifier.weight, sp.classifier.weight * 0.5)
    assert torch.equal(mu.classifier.bias, sp.classifier.bias * 0.5)
    assert torch.equal(mu.stem[0].weight, sp.stem[0].weight)  # no other layer is re-initialised
    x = torch.randn(3, mu.shape.final_channels)
    assert torch.allclose(
        mu.classifier(x), torch.nn.functional.linear(x / 0.25, mu.classifier.weight, mu.classifier.bias)
    )
    moved = move(mu, torch.device("cpu"), torch.channels_last)
    assert all(hasattr(p, "infshape") for p in moved.parameters())


def random_splits(n: int = 96) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + 32, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = (x[:, 0].float().mean((1, 2)) / 25.6).long().clamp(0, 9)
    return DatasetSplits(
        name="random16",
        train_x=x[:n],
        train_y=y[:n],
        eval={"test": (x[n:], y[n:])},
        num_classes=10,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        image_size=16,
        pad=2,
    )


def test_mup_at_its_base_width_is_nb201s_recipe_exactly() -> None:
    """m = 1: every multiplier is 1 and the readout an ordinary Linear, so the training is bit for bit NB201's;
    another base width trains another network."""
    data = random_splits()
    cfg = TINY.with_(epochs=2, batch_size=32, seed=3)
    sp = train(CELL, data, cfg)
    same = train(CELL, data, mup_cfg(4, 8, epochs=2, batch_size=32, seed=3))
    other = train(CELL, data, mup_cfg(16, 8, epochs=2, batch_size=32, seed=3))
    assert same.status == sp.status == other.status == "ok"
    assert (same.train_loss, same.eval_loss) == (sp.train_loss, sp.eval_loss)
    assert other.train_loss != sp.train_loss and all(math.isfinite(v) for v in other.train_loss)


def test_fused_trainer_refuses_mup_with_a_reason() -> None:
    cfgs = [mup_cfg(16, 8), mup_cfg(16, 8, seed=1)]
    assert not can_fuse(cfgs) and not can_fuse([TINY, mup_cfg(16, 8)])
    assert "MuSGD" in (fuse_refusal(cfgs) or "")
    assert can_fuse([TINY, TINY.with_(seed=1, lr=0.2)])
    with pytest.raises(ValueError, match="cannot fuse: parametrization mup"):
        train_group(CELL, random_splits(), cfgs)


def test_config_checks_mup_settings() -> None:
    with pytest.raises(ConfigError, match="positive integer mup_base_width"):
        TINY.with_(parametrization="mup")
    with pytest.raises(ConfigError, match="must differ"):
        mup_cfg(8, 8)
    with pytest.raises(ConfigError, match="only apply"):
        TINY.with_(mup_base_width=16)
    assert config_columns(mup_cfg(16, 8))["parametrization"] == "mup"


def spec(*mup_protocols: dict, **changes):
    protocols = [{"name": "nb201", "init": "torch-default", "lr": 0.1}, *mup_protocols]
    return spec_from_dict(
        {"name": "t", "width": 4, "cells_per_stage": 1, "epochs": 1, "protocols": protocols, **changes}
    )


MUP = {"name": "mup", "lr": 0.1, "parametrization": "mup", "mup_base_width": 16, "mup_delta_width": 8}


def test_spec_identity_config_and_fusing() -> None:
    plain, with_mup = spec(), spec(MUP)
    assert all("parametrization" not in p for p in plain.identity()["protocols"])  # run ids from before stay
    assert with_mup.identity()["protocols"][1]["mup_base_width"] == 16
    assert spec(dict(MUP, mup_base_width=1, mup_delta_width=2)).run_id != with_mup.run_id
    cfg = with_mup.train_config(with_mup.protocols[1], seed=0, lr=0.1)
    assert (cfg.parametrization, cfg.mup_base_width, cfg.mup_delta_width) == ("mup", 16, 8)
    two = spec(
        MUP,
        {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.2},
        cells={"select": "list", "cells": [CELL.arch_str]},
    )
    units, _ = plan_units(two, two.cells.resolve())
    groups = fused_groups(tuple((u, 0) for u in units), 3)
    assert sorted(sorted(u.protocol.name for u, _ in g) for g in groups) == [["mup"], ["nb201", "scaled"]]


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        (dict(MUP, parametrization="ntk"), "parametrization 'ntk' is unknown"),
        (dict(MUP, mup_delta_width=None), "needs mup_base_width and mup_delta_width"),
        (dict(MUP, mup_delta_width=16), "must differ"),
        ({"name": "x", "lr": 0.1, "mup_base_width": 16}, "only apply with parametrization: mup"),
        ({k: v for k, v in MUP.items() if k != "lr"} | {"lr_rule": "official", "base_lr": 0.2}, "takes a fixed lr"),
    ],
)
def test_bad_mup_protocols_name_the_problem(protocol: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(protocol)


def test_mup_protocols_stay_out_of_the_init_x_lr_ablation() -> None:
    import pandas as pd

    from analysis.ablation import _quadrant

    rows = pd.DataFrame({"init_rule": ["torch-default"], "lr_rule": [None], "parametrization": ["mup"]})
    assert _quadrant(rows) is None
    assert _quadrant(rows.assign(parametrization="sp")) == ("default init", "fixed LR")
    assert _quadrant(rows.drop(columns="parametrization")) == ("default init", "fixed LR")  # stores from before
