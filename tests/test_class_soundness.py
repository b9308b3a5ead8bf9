"""Isomorphism classes are sound for training: members compute the same function once weights are mapped
across (`transfer_weights`), get the same scaled LR, and (under an arch rule) the same init degrees.

The thorough check runs NB201's own unpruned forward and one SGD step, member against class representative,
under every init rule (`arch-target` included), on a random half of all such checks per run (the seed is in
the failure message; `CLASS_SOUNDNESS_SEED` replays a run, `CLASS_SOUNDNESS_FRACTION=1` runs them all)."""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import cache

import pytest
import torch
from torch import nn

import pipeline.train.model as model_module
from cells import (
    CONV_KERNEL,
    INIT_RULES,
    LR_RULES,
    Cell,
    all_cells,
    class_key,
    edge_correspondence,
    edge_init_degrees,
    scaled_lr,
)
from cells.classes import live_graph
from pipeline.train.model import InferCell, TinyNetwork, build_model, transfer_weights


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only contend (≈10× slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def classes(init_rule: str = "kaiming") -> list[list[Cell]]:
    """Classes in order of their first cell by NB201 index, each's cells in index order (as `cells.export`)."""
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


@pytest.mark.parametrize("init_rule", ["kaiming", "arch-source", "arch-target"])
def test_members_compute_the_same_function(init_rule: str) -> None:
    """The pruned forward (what trains) on a sample; the unpruned check below is the thorough one."""
    gen = torch.Generator().manual_seed(0)
    groups = sampled_classes(80, seed=1) if init_rule == "kaiming" else []
    if init_rule != "kaiming":  # classes under an arch rule, keyed with degrees
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


@pytest.mark.parametrize("init_rule", ["arch-source", "arch-target"])
def test_arch_members_share_init_degrees(init_rule: str) -> None:
    """Under `class_key(cell, init_rule)`, every member's matched live conv edges carry the representative's
    degree (pure Python, every member of every class)."""
    for members in classes(init_rule):
        rep = members[0]
        rep_degrees = edge_init_degrees(rep, init_rule)
        rep_ops = {e.edge: e.op for e in live_graph(rep).edges}
        for cell in members[1:]:
            degrees = edge_init_degrees(cell, init_rule)
            for r, m in edge_correspondence(cell, rep, init_rule).items():
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


def _rescale_to_target_init(source: TinyNetwork, target: TinyNetwork, init_rule: str, mapping: dict[int, int]) -> None:
    """Scale each mapped live conv of `target` by σ_target / σ_source, the two edges' init std under `init_rule`
    (He-normal over the Eq. 4 degree; fan-in is equal, the op being equal): a draw from the source edge's init
    becomes a draw from the target edge's. The identity exactly when matched edges share their degree, which
    is what an arch rule's class key claims; without it a key that forgot the degrees would pass unseen."""
    d_source, d_target = edge_init_degrees(source.cell, init_rule), edge_init_degrees(target.cell, init_rule)
    live_op = {e.edge: e.op for e in live_graph(source.cell).edges}
    with torch.no_grad():
        for r, m in mapping.items():
            if live_op[r] in CONV_KERNEL and d_source[r] != d_target[m]:
                for block in target.cells:
                    if isinstance(block, InferCell):
                        block.layers[m].op[1].weight.mul_(math.sqrt(d_source[r] / d_target[m]))


def transfer_init_mapped(source: TinyNetwork, target: TinyNetwork, init_rule: str) -> None:
    """`transfer_weights`, then the representative's init mapped onto the member's own init rule
    (`_rescale_to_target_init`); under the degree-free rules the same as `transfer_weights`."""
    transfer_weights(source, target, init_rule)
    _rescale_to_target_init(source, target, init_rule, edge_correspondence(target.cell, source.cell, init_rule))


def group_mismatches(
    rep: Cell, members: list[Cell], init_rule: str, transfer: Transfer = transfer_init_mapped
) -> dict[Cell, str]:
    """Members that, given `rep`'s weights by `transfer`, leave `rep`'s unpruned trajectory, with where they
    first depart. `rep` is built and run once; each member gets its own seed (an edge wrongly left unmapped
    keeps foreign weights and shows) and is given the weights before `rep`'s own step changes them."""
    source = _unpruned(rep, init_rule, seed=1)
    runs = []
    for other in members:
        target = _unpruned(other, init_rule, seed=2)
        transfer(source, target, init_rule)
        runs.append((other, _trajectory(target)))
    reference = _trajectory(source)
    found: dict[Cell, str] = {}
    for other, trajectory in runs:
        for phase, a, b in zip(_PHASES, reference, trajectory, strict=True):
            if not torch.allclose(a, b, rtol=1e-9, atol=1e-9):
                found[other] = f"{phase}: max |Δlogit| = {(a - b).abs().max().item():.3g}"
                break
    return found


def unpruned_mismatch(rep: Cell, other: Cell, init_rule: str, transfer: Transfer = transfer_init_mapped) -> str | None:
    """None if `other` follows `rep`'s unpruned trajectory (`group_mismatches`); else where it first departs."""
    return group_mismatches(rep, [other], init_rule, transfer).get(other)


# Which (representative, member) checks a run makes: all ~10,000 would take about twice the ~2 minutes a
# quiet 2-core machine takes for half, so each run draws a fresh random half and names its seed on failure.
FRACTION = float(os.environ.get("CLASS_SOUNDNESS_FRACTION") or 0.5)
SEED = int(os.environ.get("CLASS_SOUNDNESS_SEED") or random.SystemRandom().randrange(2**32))
Check = tuple[Cell, Cell, tuple[tuple[int, int], ...]]


@cache
def all_checks() -> dict[Check, frozenset[str]]:
    """Every (representative, member, edge mapping) of every class with ≥2 members under every init rule,
    with the rules that have it. The representative is the class's first cell by NB201 index, as
    `cells.export`'s `representative` columns. Member vs representative covers every member pair: the
    trajectory equality is transitive (m₁ = rep = m₂ through the composed mapping). The same check under
    several rules (same cells, same mapping) is run once: given the weights by the mapping, the unpruned
    trajectory cannot tell the rules apart, except through the init degrees, which `_rescale_to_target_init`
    brings in and `test_arch_members_share_init_degrees` checks on every member."""
    checks: dict[Check, set[str]] = defaultdict(set)
    for rule in INIT_RULES:
        for members in classes(rule):
            rep = members[0]
            for other in members[1:]:
                checks[rep, other, tuple(edge_correspondence(other, rep, rule).items())].add(rule)
    return {check: frozenset(rules) for check, rules in checks.items()}


@cache
def sampled_plan() -> dict[str, list[tuple[Cell, list[Cell]]]]:
    """Per init rule, (representative, members) to run: a random `FRACTION` of `all_checks` (seed `SEED`),
    drawn within each set of rules sharing checks, so that every rule gets at least `FRACTION` of its own.
    Each representative's checks run under one of the rules that have them, drawn at random, so that every
    rule, the degree-free ones included, gets real runs."""
    rng = random.Random(SEED)
    checks = all_checks()
    strata: dict[frozenset[str], list[Check]] = defaultdict(list)
    for check, rules in checks.items():
        strata[rules].append(check)
    picked = {c for _, group in sorted(strata.items(), key=lambda s: sorted(s[0])) for c in _sample(rng, group)}
    groups: dict[tuple[Cell, frozenset[str]], list[Cell]] = defaultdict(list)
    for check in checks:  # NB201 order
        if check in picked:
            rep, other, _ = check
            groups[rep, checks[check]].append(other)
    plan: dict[str, list[tuple[Cell, list[Cell]]]] = {rule: [] for rule in INIT_RULES}
    for (rep, rules), members in groups.items():
        plan[rng.choice(sorted(rules))].append((rep, members))
    return plan


def _sample(rng: random.Random, checks: list[Check]) -> list[Check]:
    return rng.sample(checks, math.ceil(FRACTION * len(checks)))


def test_sampled_plan_covers_the_fraction() -> None:
    """At least `FRACTION` of the distinct checks and of each rule's, each once and under a rule that has it,
    every rule with runs of its own, and the kinds the key treats specially (bias edges, identity, zero output)
    all present."""
    plan = sampled_plan()
    checks = all_checks()
    runs = [
        (rule, (rep, other, tuple(edge_correspondence(other, rep, rule).items())))
        for rule, groups in plan.items()
        for rep, members in groups
        for other in members
    ]
    assert len(checks) >= 15_625 - 7_260  # kaiming's member checks alone
    assert len({check for _, check in runs}) == len(runs) >= FRACTION * len(checks)
    assert all(rule in checks[check] for rule, check in runs)
    assert all(plan[rule] for rule in INIT_RULES)
    covered = {check for _, check in runs}
    for rule in INIT_RULES:  # each rule's own checks, whichever rule runs them
        own = [check for check, rules in checks.items() if rule in rules]
        share = sum(check in covered for check in own) / len(own)
        print(f"{rule}: {share:.2%} of its {len(own)} member checks (seed {SEED})")
        assert share >= FRACTION, (rule, share, SEED)
    kinds = {_kind([rep]) for groups in plan.values() for rep, _ in groups}
    assert kinds == {"bias", "identity", "zero", "other"}, kinds


@pytest.mark.parametrize("init_rule", INIT_RULES)
def test_members_match_under_nb201_unpruned_forward(init_rule: str) -> None:
    """Every sampled member against its class representative, both on NB201's own all-edges forward, which
    never looks at the class key, with the representative's init mapped onto the member's own init rule;
    a wrong key, mapping or init degree shows."""
    groups = sampled_plan()[init_rule]
    n = sum(len(members) for _, members in groups)
    rerun = f"CLASS_SOUNDNESS_SEED={SEED} CLASS_SOUNDNESS_FRACTION={FRACTION}"
    print(f"{init_rule}: {n} members against {len(groups)} representatives ({rerun})")
    bad = [
        f"{rep} -> {other}: {problem}"
        for rep, members in groups
        for other, problem in group_mismatches(rep, members, init_rule).items()
    ]
    assert not bad, f"{len(bad)} of {n} members differ under {init_rule} (rerun: {rerun}):\n" + "\n".join(bad[:20])


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


def _degree_blind(source: TinyNetwork, target: TinyNetwork, init_rule: str) -> None:
    """`transfer_init_mapped` as if the arch rule's key had forgotten the degrees (the degree-free class and
    mapping): the member still gets the representative's init mapped onto its own, now differently scaled."""
    mapping = edge_correspondence(target.cell, source.cell, "kaiming")
    _wrongly_merged(mapping)(source, target, init_rule)
    _rescale_to_target_init(source, target, init_rule, mapping)


@pytest.mark.parametrize(
    ("init_rule", "rep", "good", "bad", "phase"),
    [
        # the same function, degree 1 vs 2: train-mode BN hides a conv's scale up to its ε (Δlogit ~1e-5, seen
        # at once in float64); the SGD step (Δ ~0.2) and the running statistics do not hide it at all.
        # One conv 3<-0; `bad` adds a dead skip into node 3 (out of the all-zero node 1): target in-degree 2
        ("arch-target", "0_00_300", "1_00_300", "0_00_310", "train"),
        # one conv 3<-2, node 2 a skip copy of the input; `bad` adds a dead skip into node 2: source in-degree 2
        ("arch-source", "0_10_003", "1_10_003", "0_11_003", "train"),
    ],
)
def test_unpruned_check_catches_a_key_without_degrees(
    init_rule: str, rep: str, good: str, bad: str, phase: str
) -> None:
    """A key that forgot an arch rule's degrees merges cells that compute the same function from different
    init scales. Through the harness the sweep uses, the init-mapped comparison reports exactly that member;
    the plain weight copy (the comparison before) cannot see it."""
    r, g, b = (Cell.parse(c) for c in (rep, good, bad))
    assert class_key(r) == class_key(g) == class_key(b)
    assert class_key(r, init_rule) == class_key(g, init_rule) != class_key(b, init_rule)
    found = group_mismatches(r, [g, b], init_rule, _degree_blind)
    assert list(found) == [b] and found[b].startswith(phase + ":"), found
    assert unpruned_mismatch(r, b, init_rule, _wrongly_merged(edge_correspondence(b, r, "kaiming"))) is None
