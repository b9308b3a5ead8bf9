"""TinyNetwork: NB201's parameter counts, the pruned forward equals NB201's all-edges forward, init rules."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from cells import CONV_KERNEL, Cell, all_cells, edge_init_degrees, live_graph, network_params, reduction_init_degrees
from cells.classes import INPUT
from core.shape import NetShape
from pipeline.train.model import InferCell, ReLUConvBN, TinyNetwork, build_model, n_params

CELL_A, CELL_B, CELL_C = (Cell.parse(c) for c in ("3_33_333", "3_03_101", "3_14_002"))


def special_cells() -> list[Cell]:
    """Cells covering every forward branch: zero output, identity, bias edges, aliases, dead edges."""
    picked: dict[str, Cell] = {}
    for cell in all_cells():
        g = live_graph(cell)
        kinds = []
        if g.output == INPUT:
            kinds.append("identity")
        elif not any(e.target == g.output for e in g.edges):
            kinds.append("zero")
        if any(e.op == "bias" for e in g.edges):
            kinds.append("bias" + ("-only-out" if all(e.op == "bias" for e in g.edges if e.target == g.output) else ""))
        if g.output not in (INPUT, 3):
            kinds.append("aliased-output")
        if len(g.edges) < sum(op != "none" for op in cell.ops):
            kinds.append("dead-edges")
        if sum(op in CONV_KERNEL for op in cell.ops) >= 5:
            kinds.append("dense")
        for kind in kinds:
            picked.setdefault(kind, cell)
    assert {"identity", "zero", "bias", "bias-only-out", "aliased-output", "dead-edges"} <= picked.keys()
    return list(picked.values())


def sample_cells(n: int, seed: int) -> list[Cell]:
    return random.Random(seed).sample(all_cells(), n)


# --- parameter counts ----------------------------------------------------------------------------


def test_param_count_equals_published(published_csv: Path) -> None:
    """Built on the meta device (no memory, no init): counts equal NB201's published params exactly.
    One build per cell; the 100/120-class counts differ only in the classifier (4C+1 per class)."""
    with published_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r["params_seed_inconsistent"] == "False"]
    rows = random.Random(0).sample(rows, 200)
    for row in rows:
        cell = Cell.parse(row["arch_str"])
        with torch.device("meta"):
            count10 = n_params(TinyNetwork(cell, 10, width=16, cells_per_stage=5))
        for classes, column in ((10, "params_m_cifar10"), (100, "params_m_cifar100"), (120, "params_m_imagenet16_120")):
            count = count10 + (classes - 10) * (4 * 16 + 1)
            assert count == network_params(cell, NetShape(16, 5, num_classes=classes)), cell
            assert count == round(float(row[column]) * 1e6), (cell, column)
    with torch.device("meta"):  # and the classifier really grows that way
        assert n_params(TinyNetwork(CELL_A, 120, 16, 5)) == network_params(CELL_A, NetShape(16, 5, num_classes=120))


@pytest.mark.parametrize(("width", "n"), [(4, 1), (8, 2), (6, 3)])
def test_param_count_other_sizes(width: int, n: int) -> None:
    for cell in [*special_cells(), *sample_cells(20, width)]:
        with torch.device("meta"):
            assert n_params(TinyNetwork(cell, 10, width, n)) == network_params(cell, NetShape(width, n, num_classes=10))


# --- the pruned forward is NB201's forward -------------------------------------------------------


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in model.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_pruned_forward_equals_all_edges(channels_last: bool) -> None:
    """Same weights → same logits and gradients in train mode, and same logits in eval mode
    after a few train-mode steps have moved the BN running stats."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cells = [*special_cells(), CELL_A, CELL_B, CELL_C, *sample_cells(40, 1)]
    gen = torch.Generator().manual_seed(0)
    for i, cell in enumerate(cells):
        pruned = build_model(cell, 10, width=4, cells_per_stage=2, init_rule="arch-source", seed=i).to(
            memory_format=fmt
        )
        full = TinyNetwork(cell, 10, width=4, cells_per_stage=2, prune=False).to(memory_format=fmt)
        full.load_state_dict(pruned.state_dict())
        for _ in range(3):  # train mode: outputs, gradients, running stats
            x = torch.randn(6, 3, 12, 12, generator=gen).to(memory_format=fmt)
            y = torch.randint(0, 10, (6,), generator=gen)
            for model in (pruned, full):
                model.zero_grad(set_to_none=True)
                model.train()
            a, b = pruned(x), full(x)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"train-mode logits differ for {cell}")
            nn.functional.cross_entropy(a, y).backward()
            nn.functional.cross_entropy(b, y).backward()
            ga, gb = _grads(pruned), _grads(full)
            for name in ga:
                torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-5, msg=f"{cell}: grad {name}")
        pruned.eval()
        full.eval()
        x = torch.randn(5, 3, 12, 12, generator=gen).to(memory_format=fmt)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), full(x), rtol=1e-5, atol=1e-5, msg=f"eval logits differ for {cell}")


def test_identity_and_zero_cells_do_no_work() -> None:
    identity = next(c for c in special_cells() if live_graph(c).output == INPUT)
    zero = next(c for c in all_cells() if live_graph(c).output != INPUT and not live_graph(c).edges)
    x = torch.randn(2, 4, 5, 5)
    assert InferCell(identity, 4)(x) is x
    out = InferCell(zero, 4)(x)
    assert out.shape == x.shape and not out.any()


def test_bf16_autocast_matches_fp32() -> None:
    """Under CPU bf16 autocast the logits stay close to fp32 and backward runs (bias edges included)."""
    gen = torch.Generator().manual_seed(1)
    for i, cell in enumerate([*special_cells(), CELL_A]):
        model = build_model(cell, 10, width=8, cells_per_stage=1, seed=i)
        x = torch.randn(8, 3, 16, 16, generator=gen)
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        assert low.shape == ref.shape and torch.isfinite(low).all()
        torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1, msg=f"bf16 logits off for {cell}")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.int64))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- init ------------------------------------------------------------------------------------------


def _check_std(weight: torch.Tensor, expected: float, what: str) -> None:
    """Sample std within 6 standard errors (se of a normal sample's std ≈ σ/√(2n))."""
    n = weight.numel()
    assert abs(weight.float().std().item() - expected) < 6 * expected / math.sqrt(2 * n), (
        f"{what}: std {weight.std().item():.4f}, expected {expected:.4f} (n={n})"
    )
    assert abs(weight.float().mean().item()) < 6 * expected / math.sqrt(n), f"{what}: mean off"


@pytest.mark.parametrize("rule", ["kaiming", "arch-source", "arch-target"])
@pytest.mark.parametrize("cell", [CELL_A, CELL_B, CELL_C], ids=["A", "B", "C"])
def test_init_std_follows_rule(cell: Cell, rule: str) -> None:
    width = 32
    model = build_model(cell, 10, width=width, cells_per_stage=1, init_rule=rule, seed=3)
    degrees = edge_init_degrees(cell, rule)
    red = reduction_init_degrees(rule)
    _check_std(model.stem[0].weight, math.sqrt(2 / 27), "stem")
    for block in model.cells:
        if isinstance(block, InferCell):
            for k, layer in enumerate(block.layers):
                if isinstance(layer, ReLUConvBN):
                    w = layer.op[1].weight
                    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                    _check_std(w, math.sqrt(2 / (fan_in * degrees[k])), f"{cell} edge {k} ({rule})")
        else:
            for conv, d in (
                (block.conv_a.op[1], red.conv_a),
                (block.conv_b.op[1], red.conv_b),
                (block.downsample[1], red.downsample),
            ):
                fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
                _check_std(conv.weight, math.sqrt(2 / (fan_in * d)), f"reduction ({rule})")
    fc = model.classifier
    if rule == "kaiming":  # PyTorch's default: U(±1/√fan_in)
        bound = 1 / math.sqrt(4 * width)
        assert fc.weight.abs().max() <= bound and fc.bias.abs().max() <= bound
        _check_std(fc.weight, bound / math.sqrt(3), "classifier")
    else:
        _check_std(fc.weight, 2 / (4 * width), "classifier")
        assert not fc.bias.any()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert (module.weight == 1).all() and not module.bias.any()


TORCH_DEFAULT_STD_C16 = {
    # layer: (fan_in, std = 1/√(3·fan_in)) at C=16, N=1, 10 classes; weights U(±1/√fan_in)
    "stem 3x3, 3->16": (27, 0.11111),
    "cell conv3x3, 16->16": (144, 0.04811),
    "cell conv1x1, 16->16": (16, 0.14434),
    "reduction conv_a 3x3, 16->32": (144, 0.04811),
    "reduction conv_b 3x3, 32->32": (288, 0.03402),
    "reduction downsample 1x1, 16->32": (16, 0.14434),
    "classifier weight, 64->10": (64, 0.07217),
    "classifier bias": (64, 0.07217),
}


def test_torch_default_std_table_is_the_formula() -> None:
    for layer, (fan_in, std) in TORCH_DEFAULT_STD_C16.items():
        assert 1 / math.sqrt(3 * fan_in) == pytest.approx(std, abs=5e-6), layer
    # and the formula is what torch itself does to a fresh layer (kaiming_uniform_ a=√5; Linear bias ±1/√fan_in)
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(64, 64, 3, bias=False), nn.Linear(256, 512)
    assert conv.weight.abs().max() <= 1 / math.sqrt(64 * 9) and fc.bias.abs().max() <= 1 / math.sqrt(256)
    _check_std(conv.weight, 1 / math.sqrt(3 * 64 * 9), "torch's own Conv2d")
    _check_std(fc.bias, 1 / math.sqrt(3 * 256), "torch's own Linear bias")


@pytest.mark.parametrize("cell", [CELL_A, CELL_C], ids=["A", "C"])
def test_torch_default_init_is_nb201s(cell: Cell) -> None:
    """Audit defect 1: NB201's training never calls an init, so every layer has PyTorch's default:
    U(±1/√fan_in), std 1/√(3·fan_in), not He-normal's √(2/fan_in) (6x the variance). Checked per layer
    (stem, every cell conv, every reduction conv, classifier weight and bias), at C=16 and C=32; the
    bias is drawn for 100 classes so its 100 values give a usable std."""
    for width in (16, 32):
        model = build_model(cell, 100, width=width, cells_per_stage=1, init_rule="torch-default", seed=11)
        layers: list[tuple[str, torch.Tensor, int]] = [("stem", model.stem[0].weight, 27)]
        for i, block in enumerate(model.cells):
            if isinstance(block, InferCell):
                for k, layer in enumerate(block.layers):
                    if isinstance(layer, ReLUConvBN):
                        w = layer.op[1].weight
                        layers.append((f"block {i} edge {k}", w, w.shape[1] * w.shape[2] * w.shape[3]))
            else:
                for name, conv in (("conv_a", block.conv_a.op[1]), ("conv_b", block.conv_b.op[1])):
                    layers.append((f"block {i} {name}", conv.weight, conv.weight.shape[1] * 9))
                layers.append(
                    (f"block {i} downsample", block.downsample[1].weight, block.downsample[1].weight.shape[1])
                )
        fc = model.classifier
        layers += [("classifier weight", fc.weight, 4 * width), ("classifier bias", fc.bias, 4 * width)]
        assert sum(1 for name, *_ in layers if "edge" in name) == 3 * sum(op in CONV_KERNEL for op in cell.ops)
        for name, weight, fan_in in layers:
            bound = 1 / math.sqrt(fan_in)
            assert weight.abs().max() <= bound + 1e-7, f"{name}: outside U(±1/√fan_in)"
            assert weight.abs().max() > 0.8 * bound, f"{name}: does not fill U(±1/√fan_in)"
            _check_std(weight, 1 / math.sqrt(3 * fan_in), f"{name} (C={width})")
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert (module.weight == 1).all() and not module.bias.any()
    he = build_model(cell, 10, width=16, cells_per_stage=1, init_rule="kaiming", seed=11)
    _check_std(he.stem[0].weight, math.sqrt(2 / 27), "kaiming stays He-normal")


def test_torch_default_is_seeded_and_the_default_rule() -> None:
    a = build_model(CELL_A, 10, width=4, cells_per_stage=1, init_rule="torch-default", seed=5).state_dict()
    b = build_model(CELL_A, 10, width=4, cells_per_stage=1, seed=5).state_dict()  # the default rule
    c = build_model(CELL_A, 10, width=4, cells_per_stage=1, init_rule="torch-default", seed=6).state_dict()
    torch.manual_seed(123)  # torch's global RNG plays no part
    d = build_model(CELL_A, 10, width=4, cells_per_stage=1, init_rule="torch-default", seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], d[k]) for k in a)
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])
    with pytest.raises(ValueError, match="unknown init rule"):
        build_model(CELL_A, 10, width=4, cells_per_stage=1, init_rule="he")


def test_digest_degrees_visible_in_init() -> None:
    """Digest §2.3: under arch-source only A's 2→3 conv and C's 2→3 conv1x1 are shrunk (d=2)."""
    for cell, shrunk in ((CELL_A, {5}), (CELL_B, set()), (CELL_C, {5})):
        degrees = edge_init_degrees(cell, "arch-source")
        assert {k for k, d in enumerate(degrees) if d > 1 and cell.ops[k] in CONV_KERNEL} == shrunk


def test_init_is_seeded() -> None:
    a = build_model(CELL_A, 10, width=4, cells_per_stage=1, seed=5).state_dict()
    b = build_model(CELL_A, 10, width=4, cells_per_stage=1, seed=5).state_dict()
    c = build_model(CELL_A, 10, width=4, cells_per_stage=1, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])


def test_parameter_names_follow_nb201() -> None:
    names = set(TinyNetwork(CELL_A, 10, 4, 1).state_dict())
    for name in (
        "stem.0.weight",
        "cells.0.layers.5.op.1.weight",
        "cells.1.conv_a.op.1.weight",
        "cells.1.downsample.1.weight",
    ):
        assert name in names
    assert {"lastact.0.weight", "classifier.weight", "classifier.bias"} <= names
