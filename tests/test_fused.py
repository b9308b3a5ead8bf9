"""Horizontal fusion (pipeline/train/fused.py): K fused trainings equal K separate single-net trainings.

The reference is written here (build_model + torch.optim.SGD + TrainBatches + the same LR
schedule), so these tests do not depend on the engine's signature. Tiny sizes (C=4, N=1), random
16×16 uint8 images, one thread, 24 steps: deterministic, a few seconds each.

Why two precisions. Training these tiny nets at LR 0.05-0.3 is chaotic: a lone fp32 run whose
stem weights are perturbed by 1e-7 (relative) differs from itself by 1e-4-1e-2 in loss and
weights after 20 steps (measured). A grouped conv (and a batched classifier) sums in another
order than a plain one, so fused fp32 differs from single fp32 by exactly that much at those
LRs: no implementation can do better than the run's own conditioning. Hence:
- fp64 (`precision='fp64'`), LRs up to 0.3: losses at every step and final weights agree to
  ~1e-14 (checked at 1e-9): the fused computation *is* the K single ones.
- fp32 on the production path (oneDNN convs, channels_last), at LRs 0.005-0.02 where training
  is well conditioned: per-step losses within 1e-5 relative, weights within 1e-5 of each
  tensor's scale (floored at 0.1, because some entries are rounding noise around an exact 0:
  e.g. the BN bias of a conv feeding straight into another BN, whose true gradient is 0).
- With oneDNN off, the native grouped conv is bit-identical to the plain one in the forward.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from cells import Cell, cell_at
from core.config import TrainConfig
from pipeline.train.data import DatasetSplits, TrainBatches
from pipeline.train.fused import FusedResult, member_batches, train_fused
from pipeline.train.fused_model import FusedSGD, FusedTinyNetwork, build_fused
from pipeline.train.loop import lr_table
from pipeline.train.model import TinyNetwork, build_model

SHAPE = {"width": 4, "cells_per_stage": 1}
BATCH, EPOCHS, N_TRAIN = 16, 3, 120  # 8 steps per epoch (the last one partial: 8 images), 24 steps
TOL = {"fp64": 1e-9, "fp32": 1e-5}
DTYPE = {"fp64": torch.float64, "fp32": torch.float32}
WEIGHT_FLOOR = 0.1
"""Weights are compared relative to max(max |tensor|, this); see the module docstring."""


def member(init_rule: str, seed: int, lr: float) -> TrainConfig:
    """One fused member: the tests' shape and schedule, its own init rule, seed and LR."""
    return TrainConfig(init_rule=init_rule, seed=seed, lr=lr, epochs=EPOCHS, batch_size=BATCH, device="cpu", **SHAPE)


MEMBERS = (  # different init rules, seeds and LRs; fp64 tests
    member("kaiming", seed=0, lr=0.1),
    member("arch-source", seed=1, lr=0.05),
    member("kaiming", seed=2, lr=0.2),
    member("arch-target", seed=3, lr=0.02),
    member("arch-source", seed=4, lr=0.3),
    member("kaiming", seed=5, lr=0.07),
)
CALM = (  # LRs at which fp32 training is well conditioned; fp32 tests
    member("kaiming", seed=0, lr=0.02),
    member("arch-source", seed=1, lr=0.01),
    member("kaiming", seed=2, lr=0.005),
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def mkldnn(enabled: bool) -> Iterator[None]:
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    g = torch.Generator().manual_seed(12)
    x = torch.randint(0, 256, (N_TRAIN + 64, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (N_TRAIN + 64,), generator=g)
    # Labels that depend on the images a little, so the nets learn something and accuracies differ.
    y[: N_TRAIN // 2] = (x[: N_TRAIN // 2, 0].float().mean((1, 2)) / 25.6).long().clamp(0, 9)
    return DatasetSplits(
        name="random16",
        train_x=x[:N_TRAIN],
        train_y=y[:N_TRAIN],
        eval={
            "valid": (x[N_TRAIN : N_TRAIN + 32], y[N_TRAIN : N_TRAIN + 32]),
            "test": (x[N_TRAIN + 32 :], y[N_TRAIN + 32 :]),
        },
        num_classes=10,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        image_size=16,
        pad=2,
    )


def reference_run(
    cell: Cell,
    data: DatasetSplits,
    member: TrainConfig,
    *,
    channels_last: bool,
    schedule: str = "epoch",
    dtype: torch.dtype = torch.float64,
) -> tuple[list[float], TinyNetwork, dict[str, float], bool]:
    """One member trained alone: per-step losses, final model, eval top-1 %, diverged?"""
    model = build_model(cell, data.num_classes, init_rule=member.init_rule, seed=member.seed, **SHAPE)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dtype=dtype, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=member.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    batches = TrainBatches(
        data.train_x,
        data.train_y,
        batch_size=BATCH,
        mean=data.mean,
        std=data.std,
        pad=data.pad,
        seed=member.seed,
        channels_last=channels_last,
    )
    total = EPOCHS * len(batches)
    losses: list[float] = []
    for epoch in range(EPOCHS):
        model.train()
        for x, y in batches.epoch():
            step = len(losses)
            t = epoch / EPOCHS if schedule == "epoch" else step / total
            for group in opt.param_groups:
                group["lr"] = 0.5 * member.lr * (1 + math.cos(math.pi * t))
            loss = F.cross_entropy(model(x.to(dtype)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                return losses, model, {}, True
    model.eval()
    accs = {}
    with torch.no_grad():
        for name, (x, y) in data.eval.items():
            xb = batches.normalise(x).to(dtype)
            accs[name] = 100.0 * (model(xb.contiguous(memory_format=fmt)).argmax(1) == y).float().mean().item()
    return losses, model, accs, False


def assert_member_matches(result: FusedResult, ref: tuple, precision: str) -> None:
    losses, model, accs, diverged = ref
    tol = TOL[precision]
    assert not diverged and result.record.status == "ok"
    assert len(result.step_loss) == len(losses) == EPOCHS * math.ceil(N_TRAIN / BATCH)
    for step, (a, b) in enumerate(zip(result.step_loss, losses, strict=True)):
        assert a == pytest.approx(b, rel=tol), f"step {step}: fused {a} vs single {b}"
    assert result.model is not None
    ref_state = model.state_dict()
    for name, tensor in result.model.state_dict().items():
        expected = ref_state[name]
        assert tensor.dtype == expected.dtype, name
        if tensor.is_floating_point():
            err = (tensor - expected).abs().max() / expected.abs().max().clamp_min(WEIGHT_FLOOR)
            assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
        else:
            assert torch.equal(tensor, expected), name
    assert result.record.eval_acc == pytest.approx(accs, abs=1e-9)


def fused_vs_separate(
    code: str, data: DatasetSplits, members: tuple[TrainConfig, ...], precision: str, **kwargs: object
) -> list[FusedResult]:
    cell = Cell.parse(code)
    channels_last = bool(kwargs.pop("channels_last", True))
    schedule = str(kwargs.pop("schedule", "epoch"))
    group = [
        m.with_(channels_last=channels_last, schedule=schedule, precision="fp32" if precision == "fp64" else precision)
        for m in members
    ]
    results = train_fused(cell, data, group, float64=precision == "fp64", step_losses=True, keep_models=True)
    assert [r.record.config for r in results] == group
    for result, cfg in zip(results, group, strict=True):
        ref = reference_run(cell, data, cfg, channels_last=channels_last, schedule=schedule, dtype=DTYPE[precision])
        assert_member_matches(result, ref, precision)
        record = result.record
        assert record.steps == EPOCHS * 8 and result.k == len(members) and record.diverged_epoch is None
        assert len(record.train_loss) == EPOCHS and record.precision == precision
        assert result.images_per_s_total == pytest.approx(len(members) * record.images_per_s)
    return results


@pytest.mark.parametrize(
    ("code", "k", "channels_last"),
    [
        ("3_33_333", 2, True),  # all conv: nothing pruned
        ("0_00_034", 3, False),  # four `none` edges: most of the cell dead
        ("2_00_012", 6, True),  # a conv fed by zeros becomes its BN bias
        (cell_at(6111).arch_str, 3, True),  # NB201's best cell
    ],
    ids=["3_33_333", "0_00_034", "2_00_012", "best-6111"],
)
def test_fused_equals_separate_runs_fp64(data: DatasetSplits, code: str, k: int, channels_last: bool) -> None:
    fused_vs_separate(code, data, MEMBERS[:k], "fp64", channels_last=channels_last)


@pytest.mark.parametrize("code", ["3_33_333", "2_00_012"])
def test_fused_equals_separate_runs_fp32(data: DatasetSplits, code: str) -> None:
    """The production path: fp32, oneDNN convs, channels_last, at well-conditioned LRs."""
    fused_vs_separate(code, data, CALM, "fp32")


def test_per_step_schedule_matches(data: DatasetSplits) -> None:
    fused_vs_separate("3_13_313", data, MEMBERS[:2], "fp64", schedule="step")


def test_without_mkldnn_forward_is_bit_exact(data: DatasetSplits) -> None:
    """Native convs: the fused forward of each member equals the single net's bit for bit."""
    cell = Cell.parse("3_33_333")
    nets = [build_model(cell, 10, init_rule=m.init_rule, seed=m.seed, **SHAPE) for m in MEMBERS[:3]]
    fused = FusedTinyNetwork.from_members(nets)
    x = torch.randn(8, 9, 16, 16, generator=torch.Generator().manual_seed(0))
    with mkldnn(False):
        out = fused(x)
        for k, net in enumerate(nets):
            assert torch.equal(out[k], net(x[:, 3 * k : 3 * k + 3]))


def test_a_diverging_member_leaves_the_others_alone(data: DatasetSplits) -> None:
    cell = Cell.parse("3_33_333")
    members = tuple(m.with_(precision="fp32") for m in (CALM[0], member("kaiming", seed=9, lr=1e6), CALM[1]))
    results = train_fused(cell, data, members, step_losses=True, keep_models=True)
    bad = results[1].record
    assert bad.status == "diverged" and bad.diverged_epoch in (1, 2, 3)
    assert len(bad.train_loss) == bad.diverged_epoch and not math.isfinite(bad.train_loss[-1])
    assert bad.eval_acc == {"valid": None, "test": None} and bad.eval_loss == {"valid": None, "test": None}
    ref_losses, _, _, ref_diverged = reference_run(cell, data, members[1], channels_last=True, dtype=torch.float32)
    assert ref_diverged and bad.steps == len(ref_losses)  # frozen on the step the lone run diverges
    for i in (0, 2):
        ref = reference_run(cell, data, members[i], channels_last=True, dtype=torch.float32)
        assert_member_matches(results[i], ref, "fp32")
    assert all(v is None for v in bad.to_dict()["eval_acc"].values())
    with pytest.raises(ValueError, match="differ only in"):  # members must share everything but rule, seed, LR
        train_fused(cell, data, [CALM[0], CALM[1].with_(batch_size=8)])


def test_curves_and_end_pass_equal_the_lone_engine(data: DatasetSplits) -> None:
    """`eval_every` and the finder's end-of-training pass fuse (the LR-transfer study's trials): each
    member's learning curve, final evaluation and `end_train_loss` are the lone `engine.train`'s, on the
    production fp32 path at well-conditioned LRs; a member that diverges gets no end pass."""
    from pipeline.train.engine import train

    cell = Cell.parse("3_33_333")
    extras = {"eval_every": 1, "end_train_pass": True, "precision": "fp32"}
    group = [m.with_(**extras) for m in (*CALM, member("kaiming", seed=9, lr=1e6))]
    records = [result.record for result in train_fused(cell, data, group)]
    for cfg, record in zip(group[:3], records[:3], strict=True):
        lone = train(cell, data, cfg)
        assert record.status == lone.status == "ok" and record.eval_epochs == lone.eval_epochs == (1, 2, 3)
        for split, curve in lone.eval_curve.items():
            assert record.eval_curve[split] == pytest.approx(curve, abs=1e-9), split
        assert record.eval_loss == pytest.approx(lone.eval_loss, rel=1e-5)
        assert lone.end_train_loss is not None and record.end_train_loss == pytest.approx(lone.end_train_loss, rel=1e-5)
        assert record.end_train_loss != record.train_loss[-1]
    assert records[3].status == "diverged" and records[3].end_train_loss is None


def test_end_pass_equals_a_hand_written_pass_fp64(data: DatasetSplits) -> None:
    """In float64 the fused end pass is each member's own pass (its next seeded epoch, train mode) to 1e-9."""
    cell = Cell.parse("2_00_012")
    group = [m.with_(end_train_pass=True, channels_last=False, epochs=1) for m in MEMBERS[:3]]
    results = train_fused(cell, data, group, float64=True, keep_models=True)
    for cfg, result in zip(group, results, strict=True):
        batches = member_batches(data, [cfg.seed], batch_size=BATCH)[0]
        for _ in batches.epoch():  # the training epoch's draws
            pass
        model = result.model
        assert model is not None
        fresh = build_model(cell, data.num_classes, init_rule=cfg.init_rule, seed=cfg.seed, **SHAPE).double()
        fresh.load_state_dict(model.state_dict())  # the trained weights and the BN statistics before the pass
        # `unpack` returns the state after the pass; the pass changes only BN running statistics, which
        # a train-mode forward does not read, so its losses are reproduced from the final weights.
        fresh.train()
        total, seen = 0.0, 0
        with torch.no_grad():
            for x, y in batches.epoch():
                total += F.cross_entropy(fresh(x.double()), y, reduction="sum").item()
                seen += len(y)
        assert result.record.end_train_loss == pytest.approx(total / seen, rel=1e-9)


def test_pack_unpack_round_trip() -> None:
    cell = Cell.parse("2_00_012")
    nets = [build_model(cell, 10, init_rule=m.init_rule, seed=m.seed, **SHAPE) for m in MEMBERS[:4]]
    for i, net in enumerate(nets):  # non-trivial BN statistics too
        for buf in net.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(i))
    fused = FusedTinyNetwork.from_members(nets)
    assert sum(p.numel() for p in fused.parameters()) == 4 * sum(p.numel() for p in nets[0].parameters())
    for k, net in enumerate(nets):
        back = fused.unpack(k)
        assert list(back.state_dict()) == list(net.state_dict())
        assert all(
            torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values(), strict=True)
        )
    again = FusedTinyNetwork.from_members([fused.unpack(k) for k in range(4)])
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), fused.state_dict().values(), strict=True))
    built = build_fused(cell, 10, MEMBERS[:2])  # init = build_model's, by construction
    single = build_model(cell, 10, init_rule=MEMBERS[1].init_rule, seed=MEMBERS[1].seed, **SHAPE)
    pairs = zip(built.unpack(1).state_dict().values(), single.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="share"):
        FusedTinyNetwork.from_members([nets[0], build_model(cell, 10, width=8, cells_per_stage=1)])


def test_per_slice_sgd_equals_torch_sgd() -> None:
    """K parameters with K optimizers, one LR each, against FusedSGD on their concatenation."""
    k, steps = 3, 6
    gen = torch.Generator().manual_seed(0)
    singles = [torch.nn.Parameter(torch.randn(4, 2, 3, 3, generator=gen)) for _ in range(k)]
    opts = [torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True) for p in singles]
    fused = torch.nn.Parameter(torch.cat([p.detach() for p in singles]).contiguous(memory_format=torch.channels_last))
    fused_opt = FusedSGD([fused], k)
    for step in range(steps):
        lrs = [0.1 * (i + 1) / (step + 1) for i in range(k)]
        grads = [torch.randn(4, 2, 3, 3, generator=gen) for _ in range(k)]
        for p, opt, lr, g in zip(singles, opts, lrs, grads, strict=True):
            opt.param_groups[0]["lr"] = lr
            p.grad = g.clone()
            opt.step()
        fused.grad = torch.cat(grads)
        fused_opt.step(torch.tensor(lrs))
        torch.testing.assert_close(fused.detach(), torch.cat([p.detach() for p in singles]), rtol=1e-6, atol=1e-7)
    # An inactive member's slice stays put even when its gradient is NaN.
    before = fused.detach().clone()
    fused.grad = torch.cat([torch.randn(4, 2, 3, 3, generator=gen), torch.full((4, 2, 3, 3), math.nan), grads[2]])
    fused_opt.step(torch.tensor([0.1, 0.1, 0.1]), torch.tensor([True, False, True]))
    assert torch.equal(fused.detach()[4:8], before[4:8]) and torch.isfinite(fused).all()


def test_member_batches_equal_separate_streams(data: DatasetSplits) -> None:
    kwargs = {"batch_size": BATCH, "channels_last": True}
    shared = member_batches(data, [3, 4], **kwargs)
    for seed, stream in zip([3, 4], shared, strict=True):
        alone = TrainBatches(
            data.train_x, data.train_y, mean=data.mean, std=data.std, pad=data.pad, seed=seed, **kwargs
        )
        for _ in range(2):
            for (xa, ya), (xb, yb) in zip(stream.epoch(), alone.epoch(), strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_lr_tables() -> None:
    """The fused LRs are the single-net engine's (`TrainConfig.lr_at`), per member."""
    table = lr_table([TrainConfig(lr=0.1, epochs=4), TrainConfig(lr=0.4, epochs=4)], steps_per_epoch=3)
    assert table.shape == (12, 2)
    assert table[:3, 0].tolist() == [0.1] * 3 and table[3, 1] == pytest.approx(0.4 * (1 + math.cos(math.pi / 4)) / 2)
    step = lr_table([TrainConfig(lr=0.2, epochs=2, schedule="step")], steps_per_epoch=5)
    assert step[5, 0] == pytest.approx(0.1) and step[0, 0] == 0.2
    constant = lr_table([TrainConfig(lr=0.3, epochs=2, schedule="constant")], steps_per_epoch=2)
    assert constant.flatten().tolist() == [0.3] * 4
