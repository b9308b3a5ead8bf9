"""Isomorphism classes are sound for training: members compute the same function once weights are mapped
across (`transfer_weights`), get the same scaled LR, and (under an arch rule) the same init degrees."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import torch

from cells import CONV_KERNEL, LR_RULES, Cell, all_cells, class_key, edge_correspondence, edge_init_degrees, scaled_lr
from cells.classes import live_graph
from pipeline.model import build_model, transfer_weights


def classes(init_rule: str = "kaiming") -> list[list[Cell]]:
    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in all_cells():
        groups[class_key(cell, init_rule)].append(cell)
    return list(groups.values())


def _kind(members: list[Cell]) -> str:
    g = live_graph(members[0])
    if any(e.op == "bias" for e in g.edges):
        return "bias"
    if g.output == 0:
        return "identity"
    if not g.edges:
        return "zero"
    return "other"


def sampled_classes(n: int, seed: int) -> list[list[Cell]]:
    """`n` random classes with ≥2 members, plus one of each special kind (bias edges, identity, zero)."""
    multi = [c for c in classes() if len(c) >= 2]
    rng = random.Random(seed)
    picked = rng.sample(multi, n)
    for kind in ("bias", "identity", "zero"):
        picked.append(next(c for c in multi if _kind(c) == kind))
    return picked


@pytest.mark.parametrize("init_rule", ["kaiming", "arch-source"])
def test_members_compute_the_same_function(init_rule: str) -> None:
    gen = torch.Generator().manual_seed(0)
    groups = sampled_classes(80, seed=1) if init_rule == "kaiming" else []
    if init_rule == "arch-source":  # classes under an arch rule, keyed with degrees
        multi = [c for c in classes(init_rule) if len(c) >= 2]
        groups = random.Random(2).sample(multi, 40)
    for members in groups:
        rep, other = random.Random(str(members[0])).sample(members, 2)
        source = build_model(rep, 10, width=4, cells_per_stage=1, init_rule=init_rule, seed=1)
        target = build_model(other, 10, width=4, cells_per_stage=1, init_rule=init_rule, seed=2)
        transfer_weights(source, target, init_rule)
        for _ in range(3):  # train mode; also moves the running stats identically
            x = torch.randn(6, 3, 12, 12, generator=gen)
            torch.testing.assert_close(source(x), target(x), rtol=1e-5, atol=1e-5, msg=f"{rep} vs {other}")
        source.eval()
        target.eval()
        x = torch.randn(6, 3, 12, 12, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(source(x), target(x), rtol=1e-5, atol=1e-5, msg=f"eval: {rep} vs {other}")


def test_transfer_refuses_other_classes() -> None:
    a = build_model(Cell.parse("3_33_333"), 10, width=4, cells_per_stage=1)
    b = build_model(Cell.parse("3_03_101"), 10, width=4, cells_per_stage=1)
    with pytest.raises(ValueError, match="same class"):
        transfer_weights(a, b)


@pytest.mark.parametrize("rule", LR_RULES)
def test_members_share_the_scaled_lr(rule: str) -> None:
    """Every class, every member (pure Python, all 15,625 cells)."""
    for members in classes():
        lrs = {scaled_lr(cell, 1.0, rule).lr for cell in members}
        assert len(lrs) == 1, (rule, members[:3], lrs)


def test_arch_source_members_share_init_degrees() -> None:
    """Under `class_key(cell, 'arch-source')`, matched live conv edges carry the same degree."""
    for members in classes("arch-source"):
        rep = members[0]
        rep_degrees = edge_init_degrees(rep, "arch-source")
        rep_ops = {e.edge: e.op for e in live_graph(rep).edges}
        for cell in members[1:]:
            degrees = edge_init_degrees(cell, "arch-source")
            for r, m in edge_correspondence(cell, rep, "arch-source").items():
                if rep_ops[r] in CONV_KERNEL:
                    assert cell.ops[m] == rep.ops[r]
                    assert degrees[m] == rep_degrees[r], (rep, cell, r, m)
