"""The training engine and the `train` command: it learns, it is reproducible, divergence is a status."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cells import Cell
from core.config import ConfigError, TrainConfig, cosine
from pipeline.__main__ import main
from pipeline.train.data import DatasetSplits, load_splits
from pipeline.train.engine import train
from pipeline.train.loop import EpochProgress, TrainRecord
from pipeline.train.numerics import DeviceError, native_bf16

TINY = TrainConfig(width=4, cells_per_stage=1, init_rule="kaiming", device="cpu")


@pytest.fixture(scope="module")
def small(cifar10_dir: Path) -> DatasetSplits:
    return load_splits("cifar10-valid", cifar10_dir, max_train=512, max_eval=256)


def test_cosine_schedule() -> None:
    assert cosine(0.2, 0, 100) == 0.2
    assert cosine(0.2, 50, 100) == pytest.approx(0.1)
    assert cosine(0.2, 100, 100) == pytest.approx(0.0)


def test_record_fields_and_json(small: DatasetSplits) -> None:
    seen: list[EpochProgress] = []
    record = train("3_14_002", small, TINY.with_(lr=0.05, epochs=2), seen.append)
    assert isinstance(record, TrainRecord) and record.status == "ok" and record.diverged_epoch is None
    assert [p.epoch for p in seen] == [1, 2] and seen[-1].eta_s == 0
    assert len(record.train_loss) == len(record.train_acc) == 2
    assert set(record.eval_acc) == {"valid", "test"} and record.n_eval == {"valid": 256, "test": 256}
    assert all(0 <= acc <= 100 for acc in record.eval_acc.values())
    assert record.steps == 2 * math.ceil(512 / 256) and record.n_train == 512
    assert record.images_per_s > 0 and record.device.startswith("cpu")
    assert record.precision == "fp32"  # the default, whatever the CPU (core.nb201: NB201's arithmetic)
    assert record.arch == Cell.parse("3_14_002").arch_str
    assert json.loads(json.dumps(record.to_dict(), allow_nan=False))["eval_acc"] == record.eval_acc


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_cpu_runs_are_reproducible(small: DatasetSplits, precision: str) -> None:
    """`auto` is bf16 autocast exactly where this CPU runs bf16 natively (AVX-512 BF16, AMX), else fp32."""
    cfg = TINY.with_(epochs=1, seed=7, precision=precision)
    a, b = train("3_33_333", small, cfg), train("3_33_333", small, cfg)
    c = train("3_33_333", small, cfg.with_(seed=8))
    assert (a.train_loss, a.eval_acc, a.eval_loss) == (b.train_loss, b.eval_acc, b.eval_loss)
    assert a.train_loss != c.train_loss
    native = "bf16 autocast" if native_bf16(torch.device("cpu")) else "fp32"
    assert a.precision == {"fp32": "fp32", "bf16": "bf16 autocast", "auto": native}[precision]


@pytest.mark.slow
def test_tiny_net_learns_real_cifar10(cifar10_dir: Path) -> None:
    """C=8, N=1, 3 epochs over the 4,000 real images (batch 64 for more steps): ~35-40% measured."""
    data = load_splits("cifar10", cifar10_dir)
    record = train("3_13_313", data, TINY.with_(epochs=3, batch_size=64, width=8))
    assert record.status == "ok"
    assert record.train_loss[-1] < record.train_loss[0]
    assert record.eval_acc["test"] > 25.0, record.eval_acc


@pytest.mark.slow
def test_absurd_lr_diverges_without_raising(small: DatasetSplits) -> None:
    record = train("3_33_333", small, TINY.with_(lr=1e6, epochs=3))
    assert record.status == "diverged" and record.diverged_epoch in (1, 2, 3)
    assert len(record.train_loss) == record.diverged_epoch and not math.isfinite(record.train_loss[-1])
    assert record.eval_acc == {"valid": None, "test": None}
    assert json.dumps(record.to_dict(), allow_nan=False)  # non-finite floats became None


def test_pathless_and_degenerate_cells_train(small: DatasetSplits) -> None:
    """No-path cells (zero output, bias-only) and the identity cell still run end to end."""
    for code in ("0_00_000", "0_03_003", "1_01_001"):
        record = train(code, small, TINY.with_(epochs=1))
        assert record.status == "ok", code


def test_bad_arguments_raise(small: DatasetSplits) -> None:
    with pytest.raises(ConfigError, match="learning rate"):
        TINY.with_(lr=float("nan"))
    with pytest.raises(ConfigError, match="precision"):
        TINY.with_(precision="fp8")
    with pytest.raises(ConfigError, match="schedule"):
        TINY.with_(schedule="linear")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            train("3_33_333", small, TINY.with_(epochs=1, device="cuda"))


# --- CLI -------------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_json(cifar10_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(
        capsys,
        *("train", "--arch", "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"),
        *("--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--epochs", "2", "--width", "4"),
        *("--cells-per-stage", "1", "--base-lr", "0.46", "--max-train", "256", "--max-eval", "128"),
        *("--device", "cpu", "--json"),
    )
    assert code == 0, err
    record = json.loads(out)
    # paths: skip (L=1), conv-conv-skip (L=3)
    assert record["config"]["lr"] == pytest.approx(0.46 / math.sqrt(1**3 + 3**3))
    assert "epoch 2/2" in err and "eta" in err


def test_cli_train_summary(cifar10_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(
        capsys,
        *("train", "--arch", "3_14_002", "--data-dir", str(cifar10_dir / "cifar-10-batches-py")),
        *("--epochs", "1", "--width", "4", "--cells-per-stage", "1", "--max-train", "256", "--max-eval", "64"),
        *("--device", "cpu", "--lr", "0.05", "--image-size", "16"),
    )
    assert code == 0
    assert "status    ok" in out and "test      acc" in out and "0.05 (fixed)" in out
    assert "10 classes, 16px" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "3_33_3x3"], "official code"),
        (["--arch", "0_00_003", "--base-lr", "0.46"], "no input->output path"),
        (["--arch", "3_33_333", "--epochs", "0"], "epochs must be a positive integer"),
        (["--arch", "3_33_333", "--lr", "nan"], "learning rate"),
        (["--arch", "99999"], "0..15624"),
        (["--arch", "3_33_333", "--data-dir", "/nonexistent/nb201"], "--download"),
        (["--arch", "3_33_333", "--image-size", "15"], "must divide"),
    ],
)
def test_cli_user_errors_are_one_line(
    args: list[str], message: str, cifar10_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data-dir", str(cifar10_dir), *args]
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


# --- the schedule, learning curves, the finder's end-of-epoch loss ---------------------------------


def test_default_schedule_is_nb201s_per_epoch_cosine(small: DatasetSplits, sgd_lrs: list[float]) -> None:
    """Audit defect 2: AutoDL's CosineAnnealingLR reads only the epoch: lr_e = η·(1 + cos(π·e/E))/2 for
    e = 0..E-1, constant within the epoch, warm-up 0, eta_min 0. The engine's actual per-step LRs by
    default (no schedule named), against that formula."""
    seen = sgd_lrs
    eta, epochs, steps = 0.1, 4, 512 // 128
    cfg = TrainConfig(width=4, cells_per_stage=1, epochs=epochs, batch_size=128, device="cpu")
    assert cfg.schedule == "epoch" and cfg.lr == 0.1
    train("3_14_002", small, cfg)
    expected = [eta * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs) for _ in range(steps)]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert seen[:steps] == [0.1] * steps and seen[-1] == pytest.approx(0.0146447, abs=1e-6)  # no warm-up

    seen.clear()
    train("3_14_002", small, cfg.with_(schedule="step"))  # the per-step option: a new LR every step
    total = epochs * steps
    assert seen == pytest.approx([eta * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)], abs=1e-15)
    seen.clear()
    train("3_14_002", small, cfg.with_(schedule="constant", epochs=1, lr=0.46))  # the finder's
    assert seen == [0.46] * steps


def test_learning_curves_and_end_of_training_loss(small: DatasetSplits) -> None:
    from pipeline.run.rows import record_columns

    cfg = TINY.with_(epochs=3, eval_every=2, end_train_pass=True)
    record = train("3_14_002", small, cfg)
    assert record.eval_epochs == (2, 3)  # every 2 epochs, and always the last
    assert set(record.eval_curve) == {"valid", "test"} and all(len(c) == 2 for c in record.eval_curve.values())
    assert record.eval_curve["test"][-1] == record.eval_acc["test"]
    assert record.end_train_loss is not None and 0 < record.end_train_loss < 10
    assert record.end_train_loss != record.train_loss[-1]  # the end weights, not the epoch's running mean
    columns = record_columns(record)
    assert columns["eval_epochs"] == [2, 3] and columns["test_acc_curve"] == list(record.eval_curve["test"])
    assert columns["precision"] == record.precision and columns["lr_schedule"] == "epoch"
    plain = train("3_14_002", small, TINY.with_(epochs=1))
    assert plain.eval_epochs == () and plain.eval_curve == {} and plain.end_train_loss is None
    assert record_columns(plain)["eval_epochs"] is None and record_columns(plain)["test_acc_curve"] is None
    with pytest.raises(ConfigError, match="eval_every"):
        TINY.with_(eval_every=-1)
