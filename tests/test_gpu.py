"""The CUDA path: bf16 autocast + channels_last. Skipped where torch sees no GPU (CI, laptops);
run on a GPU box with `python -m pytest tests/test_gpu.py` (no Ray needed)."""

from __future__ import annotations

import pytest
import torch

from cells import Cell
from core.config import TrainConfig
from pipeline.train.data import load_splits
from pipeline.train.engine import train
from pipeline.train.model import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)")
BEST = Cell.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")


def test_bf16_channels_last_forward_matches_fp32():
    model = build_model(BEST, 10, width=16, cells_per_stage=5, init_rule="arch-source", seed=0).cuda().eval()
    x = torch.randn(64, 3, 32, 32, device="cuda")
    with torch.no_grad():
        reference = model(x).float()
        fast_model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = fast_model(x.to(memory_format=torch.channels_last)).float()
    error = (fast - reference).norm() / reference.norm()
    assert error < 0.05, f"relative error {error:.4f}"


def test_training_on_cuda_learns_and_reports_the_device(cifar10_dir):
    data = load_splits("cifar10", cifar10_dir)
    record = train(BEST, data, TrainConfig(width=8, cells_per_stage=1, epochs=4, device="cuda"))
    assert record.status == "ok"
    assert record.device.startswith("cuda") and "bf16" in record.precision
    assert record.eval_acc["test"] > 25.0, record.eval_acc
