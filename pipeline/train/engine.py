"""One training run of one cell: `train(cell, data, cfg) -> TrainRecord`.

Read top to bottom: pick the device, build the model (dead edges pruned, see model.py), put the
whole training split on the device, then a plain loop of SGD steps with a cosine LR, and
finally a top-1 evaluation over all classes on every eval split (also every `cfg.eval_every`
epochs, for learning curves).

Protocol (`core.TrainConfig`; defaults are NB201's 200-epoch config, digest §4.1b): SGD with
Nesterov momentum 0.9, weight decay 5e-4 on every parameter, one LR for all parameters (one param
group, as the official code), batch 256 with the last partial batch kept, cosine from the peak LR
to 0 updated once per epoch (NB201's; per step or constant via `cfg.schedule`), no warm-up,
cross-entropy, crop+flip augmentation; init `cfg.init_rule` (NB201's: `torch-default`).

Numerics: channels_last everywhere; bf16 autocast wherever the hardware runs it natively (CUDA;
CPUs with oneDNN bf16 support, where it measured 1.3-2x faster than fp32 with the same training
curves), else fp32; `precision='fp32'` forces plain fp32. cudnn.benchmark on CUDA. CPU runs are
bit-for-bit reproducible: same seed, machine and thread count → same record. A non-finite
training loss ends the run with status 'diverged'; no exception escapes for that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cells import Cell
from core.config import TrainConfig
from core.errors import UserError
from pipeline.train.data import DatasetSplits, Normalise, TrainBatches, eval_batches
from pipeline.train.model import TinyNetwork, build_model, n_params

DIVERGENCE_CHECK_EVERY = 25
"""Steps between finiteness checks on CUDA (each check syncs); on the CPU every step is checked."""


@dataclass(frozen=True)
class EpochProgress:
    """Handed to the `progress` callback after every epoch."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class TrainRecord:
    """What one run returns: its config, and what happened. Accuracies are top-1 in percent over
    all classes; losses are mean CE.

    `train_loss`/`train_acc` have one entry per epoch run (on augmented batches, as NB201 logs);
    `eval_acc`/`eval_loss` map each eval split ('valid', 'test') to its final value, None when
    the run diverged. `diverged_epoch` is the 1-based epoch whose loss became non-finite.
    `images_per_s` counts training images over the training loop alone (no eval, no setup).
    `eval_epochs` / `eval_curve` (split -> top-1 per listed epoch) hold the learning curve of
    `cfg.eval_every`, always ending with the final epoch; empty when it is 0.
    `end_train_loss`: with `cfg.end_train_pass`, the mean CE of the final weights over one more
    seeded, augmented pass of the training split in train mode, without updates (see
    `end_of_training_loss`); None otherwise or when the run diverged.
    """

    config: TrainConfig
    arch: str
    dataset: str
    status: str
    diverged_epoch: int | None
    train_loss: tuple[float, ...]
    train_acc: tuple[float, ...]
    eval_acc: dict[str, float | None]
    eval_loss: dict[str, float | None]
    n_train: int
    n_eval: dict[str, int]
    steps: int
    n_params: int
    device: str
    precision: str
    wall_s: float
    train_s: float
    eval_s: float
    images_per_s: float
    eval_epochs: tuple[int, ...] = ()
    eval_curve: dict[str, tuple[float, ...]] = field(default_factory=dict)
    end_train_loss: float | None = None
    torch_version: str = field(default_factory=lambda: torch.__version__)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types: lists for tuples, None for non-finite floats."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class DeviceError(UserError):
    """A device this machine does not have or torch does not know."""


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is a DeviceError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return resolved


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (fast) here: CUDA with bf16, or a CPU oneDNN supports in bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def prepare_device(cfg: TrainConfig) -> tuple[torch.device, bool]:
    """Set up this process for one training as `cfg` says: torch's CPU threads, the device (cudnn
    autotuning on CUDA), and whether to train under bf16 autocast (`cfg.precision`; 'auto' = where
    the device runs bf16 natively). Returns (device, bf16). The engine and the fused trainer share it."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev, cfg.precision == "bf16" or (cfg.precision == "auto" and native_bf16(dev))


@torch.inference_mode()
def evaluate(
    model: TinyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    normalise: Normalise,
    device: torch.device,
    channels_last: bool,
    autocast: Any,
) -> tuple[float, float]:
    """(top-1 % over all classes, mean cross-entropy) in eval mode, in large batches."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for xb, yb in eval_batches(
        x, y, batch_size=batch_size, normalise=normalise, device=device, channels_last=channels_last
    ):
        with autocast:
            logits = model(xb)
        correct += (logits.argmax(1) == yb).sum()
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
    n = len(y)
    return 100.0 * correct.item() / n, loss_sum.item() / n


@torch.no_grad()
def end_of_training_loss(model: TinyNetwork, batches: TrainBatches, autocast: Any) -> float:
    """Mean cross-entropy of the final weights over one full pass of the training split.

    "The training loss at the end of one epoch" (paper §4) read literally: the loss of the weights
    the epoch ends with, on the whole training set, not the running mean over the epoch (that mean
    rewards fast early progress and mixes in every LR the epoch went through). Train mode, so BN
    normalises with batch statistics exactly as during training, and the same seeded augmentation
    as a training epoch; no gradient, no update (BN running stats move, but the network is thrown
    away). Costs one forward pass over the split (about a third of a training epoch).
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    seen = 0
    for x, y in batches.epoch():
        with autocast:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        seen += len(y)
    return loss_sum.item() / max(1, seen)


def train(
    cell: Cell | str,
    data: DatasetSplits,
    cfg: TrainConfig,
    progress: Callable[[EpochProgress], None] | None = None,
) -> TrainRecord:
    """Train `cell` on `data.train_*` as `cfg` says, then evaluate on every split of `data.eval`.

    `cfg.lr` is the peak LR, already scaled by the caller if it wants a scaled LR. `cfg.threads`
    sets torch's intra-op threads for this process. `cfg.channels_last` is faster on both CUDA and
    the CPU (measured). `cfg.precision`: 'auto' = bf16 autocast where the device runs bf16 natively
    (`native_bf16`), else fp32; 'bf16' or 'fp32' force one.
    """
    cell = Cell.parse(cell) if isinstance(cell, str) else cell
    wall_start = time.perf_counter()

    # --- device and numerics ---
    dev, bf16 = prepare_device(cfg)
    on_cuda = dev.type == "cuda"
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    # --- model: seeded init on the CPU, then moved ---
    model = build_model(
        cell,
        data.num_classes,
        width=cfg.width,
        cells_per_stage=cfg.cells_per_stage,
        init_rule=cfg.init_rule,
        seed=cfg.seed,
    )
    model = model.to(device=dev, memory_format=memory_format)

    # --- data: the whole split on the device ---
    batches = TrainBatches(
        data.train_x,
        data.train_y,
        batch_size=cfg.batch_size,
        mean=data.mean,
        std=data.std,
        pad=data.pad,
        seed=cfg.seed,
        device=dev,
        channels_last=cfg.channels_last,
    )
    eval_sets = {name: (x.to(dev), y.to(dev)) for name, (x, y) in data.eval.items()}

    # --- optimizer: one group, one LR for every parameter (the official code); fused kernels on CUDA ---
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        fused=on_cuda,
    )
    check_every = DIVERGENCE_CHECK_EVERY if on_cuda else 1

    def evaluate_all() -> tuple[dict[str, float], dict[str, float]]:
        accs, losses = {}, {}
        for name, (x, y) in eval_sets.items():
            accs[name], losses[name] = evaluate(
                model,
                x,
                y,
                batch_size=cfg.eval_batch_size,
                normalise=batches.normalise,
                device=dev,
                channels_last=cfg.channels_last,
                autocast=autocast,
            )
        return accs, losses

    eval_epochs: list[int] = []
    eval_curve: dict[str, list[float]] = {name: [] for name in eval_sets}
    eval_time = 0.0

    # --- training loop ---
    train_loss: list[float] = []
    train_acc: list[float] = []
    diverged_epoch: int | None = None
    step = images = 0
    train_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for x, y in batches.epoch():
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(epoch, step, len(batches))
            with autocast:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            step += 1
            if step % check_every == 0 and not torch.isfinite(loss_sum):
                break
        images += seen
        train_loss.append(loss_sum.item() / seen)
        train_acc.append(100.0 * correct.item() / seen)
        if progress is not None:
            elapsed = time.perf_counter() - train_start
            eta = elapsed / (epoch + 1) * (cfg.epochs - epoch - 1)
            progress(EpochProgress(epoch + 1, cfg.epochs, train_loss[-1], train_acc[-1], elapsed, eta))
        if not math.isfinite(train_loss[-1]):
            diverged_epoch = epoch + 1
            break
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            start = time.perf_counter()
            accs, _ = evaluate_all()
            eval_time += time.perf_counter() - start
            eval_epochs.append(epoch + 1)
            for name, acc in accs.items():
                eval_curve[name].append(acc)
    train_s = time.perf_counter() - train_start - eval_time

    # --- evaluation: top-1 over all classes, every eval split; the finder's end-of-training loss ---
    eval_start = time.perf_counter()
    eval_acc: dict[str, float | None] = dict.fromkeys(eval_sets)
    eval_loss: dict[str, float | None] = dict.fromkeys(eval_sets)
    end_train_loss: float | None = None
    if diverged_epoch is None:
        eval_acc, eval_loss = evaluate_all()  # type: ignore[assignment]
        if cfg.eval_every:
            eval_epochs.append(cfg.epochs)
            for name, acc in eval_acc.items():
                eval_curve[name].append(acc)  # type: ignore[arg-type]
        if cfg.end_train_pass:
            end_train_loss = end_of_training_loss(model, batches, autocast)
    eval_s = time.perf_counter() - eval_start + eval_time

    return TrainRecord(
        config=cfg,
        arch=cell.arch_str,
        dataset=data.name,
        status="ok" if diverged_epoch is None else "diverged",
        diverged_epoch=diverged_epoch,
        train_loss=tuple(train_loss),
        train_acc=tuple(train_acc),
        eval_acc=eval_acc,
        eval_loss=eval_loss,
        n_train=batches.n,
        n_eval={name: len(y) for name, (_, y) in eval_sets.items()},
        steps=step,
        n_params=n_params(model),
        device=describe_device(dev),
        precision="bf16 autocast" if bf16 else "fp32",
        wall_s=time.perf_counter() - wall_start,
        train_s=train_s,
        eval_s=eval_s,
        images_per_s=images / train_s if train_s > 0 else 0.0,
        eval_epochs=tuple(eval_epochs),
        eval_curve={name: tuple(values) for name, values in eval_curve.items()} if cfg.eval_every else {},
        end_train_loss=end_train_loss,
    )
