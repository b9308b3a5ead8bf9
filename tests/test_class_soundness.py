"""Isomorphism classes are sound for training: members compute the same function once weights are mapped
across (`transfer_weights`), get the same scaled LR, and (under an arch rule) the same init degrees."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import pipeline.train.model as model_module
from cells import CONV_KERNEL, LR_RULES, Cell, all_cells, class_key, edge_correspondence, edge_init_degrees, scaled_lr
from cells.classes import live_graph
from pipeline.train.model import InferCell, TinyNetwork, build_model, transfer_weights


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only contend (≈10× slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --- Independent check: NB201's unpruned forward is the ground truth -------------------------------

_GEN = torch.Generator().manual_seed(10)
_X = torch.randn(4, 3, 8, 8, generator=_GEN, dtype=torch.float64)
_Y = torch.randint(0, 10, (4,), generator=_GEN)
_PHASES = ("train", "train after one SGD step", "eval after one SGD step")


def _unpruned(cell: Cell, init_rule: str, seed: int) -> TinyNetwork:
    """Tiny float64 network on NB201's all-edges forward, BN γ/β randomised (else β = 0 hides `bias` edges)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # built in float64: cheaper than `.double()` afterwards
    try:
        model = build_model(cell, 10, width=2, cells_per_stage=1, init_rule=init_rule, seed=seed, prune=False)
    finally:
        torch.set_default_dtype(default)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.5, generator=gen)
    return model


def _trajectory(model: nn.Module) -> list[torch.Tensor]:
    """Train-mode logits (built in train mode); one NB201 SGD step on them; train- and eval-mode logits again."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    first = model(_X)
    nn.functional.cross_entropy(first, _Y).backward()
    opt.step()
    with torch.no_grad():
        second = model(_X)
        model.eval()
        third = model(_X)
    return [first.detach(), second, third]


Transfer = Callable[[TinyNetwork, TinyNetwork, str], None]


def unpruned_mismatch(rep: Cell, other: Cell, init_rule: str, transfer: Transfer = transfer_weights) -> str | None:
    """None if `other`, given `rep`'s weights by `transfer`, follows the same unpruned trajectory; else where it
    first departs. Target gets its own seed, so an edge wrongly left unmapped keeps foreign weights and shows."""
    source = _unpruned(rep, init_rule, seed=1)
    target = _unpruned(other, init_rule, seed=2)
    transfer(source, target, init_rule)
    for phase, a, b in zip(_PHASES, _trajectory(source), _trajectory(target), strict=True):
        if not torch.allclose(a, b, rtol=1e-9, atol=1e-9):
            return f"{phase}: max |Δlogit| = {(a - b).abs().max().item():.3g}"
    return None


def _pairs(init_rule: str) -> list[tuple[Cell, Cell]]:
    """(representative, other member) for every class with ≥2 members under `init_rule`; the other is drawn
    from the representative's name, so a class the two rules share gets the same pair under both."""
    return [(m[0], random.Random(str(m[0])).choice(m[1:])) for m in classes(init_rule) if len(m) >= 2]


def _unchecked_pairs(init_rule: str) -> list[tuple[Cell, Cell]]:
    """Pairs of `init_rule` not already run under kaiming with the same edge mapping (same check then)."""
    if init_rule == "kaiming":
        return _pairs(init_rule)

    def run(r: Cell, o: Cell, rule: str) -> tuple[Cell, Cell, tuple[tuple[int, int], ...]]:
        return r, o, tuple(edge_correspondence(o, r, rule).items())

    done = {run(r, o, "kaiming") for r, o in _pairs("kaiming")}
    return [(r, o) for r, o in _pairs(init_rule) if run(r, o, init_rule) not in done]


@pytest.mark.parametrize("init_rule", ["kaiming", "arch-source"])
def test_members_match_under_nb201_unpruned_forward(init_rule: str) -> None:
    """Every class with ≥2 members: representative vs one other member, both on NB201's own all-edges
    forward, which never looks at the class key, so a wrong key or mapping shows (~1,400 + ~150 runs)."""
    pairs = _unchecked_pairs(init_rule)
    bad = [f"{r} -> {o}: {problem}" for r, o in pairs if (problem := unpruned_mismatch(r, o, init_rule))]
    assert not bad, f"{len(bad)} of {len(pairs)} pairs differ under {init_rule}:\n" + "\n".join(bad[:20])


def _wrongly_merged(mapping: dict[int, int]) -> Transfer:
    """`transfer_weights` as if a wrong key had put both cells in one class with this edge mapping."""

    def transfer(source: TinyNetwork, target: TinyNetwork, init_rule: str) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(model_module, "edge_correspondence", lambda *_: mapping)
            transfer_weights(source, target, init_rule)

    return transfer


def _one_conv_into_two(source: TinyNetwork, target: TinyNetwork, init_rule: str) -> None:
    """Source edge 0's conv into target edges 0 and 3, everything else as is."""
    target.load_state_dict(source.state_dict(), strict=False)  # the target only adds the edges 3
    for src_block, dst_block in zip(source.cells, target.cells, strict=True):
        if isinstance(src_block, InferCell):
            dst_block.layers[3].load_state_dict(src_block.layers[0].state_dict())


@pytest.mark.parametrize(
    ("rep", "other", "transfer", "phase"),
    [
        # conv on 3<-0 plus a `bias` edge (conv fed by the all-zero node 1) vs the conv alone: a key
        # that forgot bias edges; their β differs from 0 at once (randomised)
        ("0_00_330", "0_00_300", _wrongly_merged({3: 3}), "train"),
        # 2·f(x) (one conv read twice through skips) vs f1(x) + f2(x) given f's weights twice, NB201's
        # own string conflates them: same logits, but f's gradient is doubled, so one SGD step departs
        ("3_01_011", "3_00_310", _one_conv_into_two, "train after one SGD step"),
    ],
)
def test_unpruned_check_catches_a_wrong_class(rep: str, other: str, transfer: Transfer, phase: str) -> None:
    """The check is not vacuous: non-equivalent cells, force-mapped, are reported at the expected phase."""
    a, b = Cell.parse(rep), Cell.parse(other)
    assert class_key(a) != class_key(b)
    problem = unpruned_mismatch(a, b, "kaiming", transfer)
    assert problem is not None and problem.startswith(phase + ":"), problem
