"""NB201's recipe is the baseline: the defaults, the shipped configs, and dedup under torch-default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cells import all_cells, class_key
from cells.export import class_column
from core.config import TrainConfig
from pipeline.run.spec import Protocol, SpecError
from pipeline.run.spec_load import load_spec, spec_from_dict
from pipeline.run.units import plan_units

REPO = Path(__file__).resolve().parents[1]
MINE = ("cifar10-full", "cifar100-full", "imagenet16-full", "ablation")
"""Configs this test holds to NB201's recipe (cpu.yaml has its own owner; its nb201 should say the same)."""


def test_defaults_are_nb201s_recipe() -> None:
    """Audit defects 1 and 2: He-normal init and a per-step cosine were the defaults."""
    cfg = TrainConfig()
    assert (cfg.init_rule, cfg.schedule, cfg.lr, cfg.momentum, cfg.nesterov) == (
        "torch-default",
        "epoch",
        0.1,
        0.9,
        True,
    )
    assert (cfg.weight_decay, cfg.batch_size, cfg.epochs) == (5e-4, 256, 200)
    assert Protocol(name="nb201", lr=0.1).init == "torch-default"
    spec = spec_from_dict({"name": "x", "protocols": [{"name": "nb201", "lr": 0.1}]})
    train = spec.train_config(spec.protocols[0], seed=0, lr=0.1)
    assert (train.init_rule, train.schedule, train.eval_every) == ("torch-default", "epoch", 0)


@pytest.mark.parametrize("name", MINE)
def test_shipped_configs_train_nb201_as_nb201_did(name: str) -> None:
    spec = load_spec(REPO / "configs" / f"{name}.yaml")
    nb201 = next(p for p in spec.protocols if p.name == "nb201")
    assert (nb201.init, nb201.lr, nb201.lr_rule) == ("torch-default", 0.1, None)
    assert spec.schedule == "epoch"
    if name.endswith("-full"):  # paper scale: NB201's whole recipe (CPU proxies follow cpu.yaml's batch)
        assert (spec.batch_size, spec.epochs, spec.width, spec.cells_per_stage) == (256, 200, 16, 5)
    search = spec.base_lr_search
    assert len(search.grid()) >= 12 and search.low <= 0.01 and search.high >= 4 and len(search.seeds) >= 3
    scaled = [p for p in spec.protocols if p.scaled and p.init.startswith("arch")]
    assert scaled, "the paper's protocol is in every shipped config"
    published = 0.46 if spec.dataset == "cifar10" and spec.width == 16 else "auto"
    assert all(p.base_lr == published for p in scaled), (name, [p.base_lr for p in scaled])


def test_ablation_is_the_2x2_on_cpu_yaml_data_and_shape() -> None:
    spec = load_spec(REPO / "configs" / "ablation.yaml")
    quadrants = {(p.init, p.scaled) for p in spec.protocols}
    assert quadrants == {
        ("torch-default", False),
        ("torch-default", True),
        ("arch-source", False),
        ("arch-source", True),
    }
    assert all(p.lr == 0.1 for p in spec.protocols if not p.scaled)
    cpu = yaml.safe_load((REPO / "configs" / "cpu.yaml").read_text())
    ablation = yaml.safe_load((REPO / "configs" / "ablation.yaml").read_text())
    keys = ("dataset", "data_dir", "image_size", "width", "cells_per_stage", "epochs", "batch_size", "schedule")
    for key in (*keys, "precision", "max_train", "max_eval", "cells", "base_lr_search"):
        assert ablation.get(key) == cpu.get(key), key
    # One seed of cpu.yaml's (four protocols x two seeds would double its 18 minutes).
    assert set(ablation["seeds"]) <= set(cpu["seeds"]) and len(ablation["seeds"]) == 1


def test_spec_schedule_and_eval_every_are_checked() -> None:
    base = {"name": "x", "protocols": [{"name": "nb201", "lr": 0.1}]}
    spec = spec_from_dict({**base, "schedule": "step", "eval_every": 5})
    cfg = spec.train_config(spec.protocols[0], seed=0, lr=0.1)
    assert (cfg.schedule, cfg.eval_every) == ("step", 5)
    with pytest.raises(SpecError, match="schedule 'constant'"):
        spec_from_dict({**base, "schedule": "constant"})  # the finder's alone
    with pytest.raises(SpecError, match="eval_every"):
        spec_from_dict({**base, "eval_every": -2})
    with pytest.raises(SpecError, match=r"unknown key base_lr_search\.tolerance"):
        spec_from_dict({**base, "base_lr_search": {"tolerance": 0.1}})


def test_torch_default_classes_are_kaimings_and_dedup_uses_them() -> None:
    """Both rules are degree-free: the same isomorphism classes, so dedup trains as few units."""
    assert class_column("torch-default") == "class_id_torch_default" and class_column("kaiming") == "class_id"
    for cell in all_cells()[::97]:
        assert class_key(cell, "torch-default") == class_key(cell, "kaiming")
    protocols = [{"name": "default", "init": "torch-default", "lr": 0.1}, {"name": "he", "init": "kaiming", "lr": 0.1}]
    spec = spec_from_dict({"name": "x", "protocols": protocols, "cells": {"select": "sample", "count": 400}})
    units, _ = plan_units(spec, spec.cells.resolve())
    default = sorted(u.members for u in units if u.protocol.name == "default")
    he = sorted(u.members for u in units if u.protocol.name == "he")
    assert default == he and len(default) < 400 - 9
