"""Command line: `python -m pipeline COMMAND ...`.

Each command is one `add_<name>_command(subparsers)` function that registers its options and
sets `handler`; `main` builds the parser, dispatches, and turns user errors (bad cell, missing
data, impossible request) into one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cells import INIT_RULES, LR_RULES, Cell, cell_at, scaled_lr
from core.config import PRECISIONS, SCHEDULES, TrainConfig
from core.datasets import DATASET_NAMES
from core.errors import UserError
from pipeline.commands import add_commands

NB201 = TrainConfig()
"""The defaults of `pipeline train`: NB201's recipe (`core.nb201`), as TrainConfig holds them."""


class UsageError(UserError):
    """A request that cannot be served as given; the message says what to change."""


def _fmt_s(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# --- train ---------------------------------------------------------------------------------------


def add_train_command(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train one cell and print its record", description="Train one NB201 cell.")
    p.add_argument(
        "--arch", required=True, help="the cell: NB201 index, NB201 string, 6-digit op code or official code d_dd_ddd"
    )
    p.add_argument("--dataset", choices=DATASET_NAMES, default="cifar10")
    p.add_argument(
        "--data-dir",
        required=True,
        help="folder holding cifar-10-batches-py (etc.), or that folder; several joined by ':' are concatenated "
        "(e.g. ../shared/data/cifar10:../shared/data/cifar10/jpeg_q75, cpu.yaml's 14,000 images)",
    )
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10/100 into --data-dir first")
    p.add_argument("--epochs", type=int, default=NB201.epochs, help=f"(NB201: {NB201.epochs})")
    p.add_argument(
        "--width", type=int, default=NB201.width, help=f"channels C of the first stage (NB201: {NB201.width})"
    )
    p.add_argument(
        "--cells-per-stage", type=int, default=NB201.cells_per_stage, help=f"N (NB201: {NB201.cells_per_stage})"
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="downsample inputs to this side by block averaging at load (must divide the dataset's; cpu.yaml: 16)",
    )
    lr = p.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=float, default=NB201.lr, help=f"peak learning rate (NB201's: {NB201.lr:g})")
    lr.add_argument("--base-lr", type=float, help="base LR, scaled for this cell by --lr-rule")
    p.add_argument("--lr-rule", choices=LR_RULES, default="official", help="scaling rule used with --base-lr")
    p.add_argument(
        "--init", choices=INIT_RULES, default=NB201.init_rule, help=f"init rule (NB201's: {NB201.init_rule})"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=NB201.batch_size)
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="epoch",
        help="cosine updated per epoch (NB201's), per step, or constant",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=NB201.precision,
        help="fp32 (NB201's), bf16 autocast, or auto: bf16 where native (CUDA, AVX512 CPUs), else fp32",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-train", type=int, help="train on a fixed seeded subset of this many images")
    p.add_argument("--max-eval", type=int, help="evaluate on fixed seeded subsets of this many images")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(handler=run_train)


def parse_arch(text: str) -> Cell:
    """An NB201 index (up to 5 digits) or any cell string form."""
    if text.isdigit() and len(text) <= 5:
        try:
            return cell_at(int(text))
        except IndexError as error:
            raise UsageError(f"--arch {text}: {error}") from None
    return Cell.parse(text)


def run_train(args: argparse.Namespace) -> int:
    cell = parse_arch(args.arch)
    for name in ("max_train", "max_eval"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.base_lr is not None:
        scaled = scaled_lr(cell, args.base_lr, args.lr_rule)
        if scaled.lr is None:
            raise UsageError(f"no scaled LR for {cell.official_code}: {scaled.reason}; pass --lr to train it anyway")
        lr, lr_note = scaled.lr, f"base {args.base_lr:g} × {scaled.factor:.4f} ({args.lr_rule} rule)"
    else:
        lr, lr_note = args.lr, "fixed"
    cfg = TrainConfig(
        width=args.width,
        cells_per_stage=args.cells_per_stage,
        init_rule=args.init,
        lr=lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        schedule=args.schedule,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
    )

    from pipeline.train.data import load_splits
    from pipeline.train.engine import train
    from pipeline.train.loop import EpochProgress
    from pipeline.train.numerics import resolve_device

    resolve_device(cfg.device)
    data = load_splits(
        args.dataset,
        args.data_dir,
        download=args.download,
        max_train=args.max_train,
        max_eval=args.max_eval,
        image_size=args.image_size,
    )
    print(f"{cell.official_code}: {data.describe()}; lr {lr:.5g}", file=sys.stderr)

    def progress(p: EpochProgress) -> None:
        print(
            f"epoch {p.epoch}/{p.epochs}  loss {p.train_loss:.4f}  train acc {p.train_acc:5.2f}%  "
            f"elapsed {_fmt_s(p.elapsed_s)}  eta {_fmt_s(p.eta_s)}",
            file=sys.stderr,
            flush=True,
        )

    record = train(cell, data, cfg, progress)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2, allow_nan=False))
        return 0
    lines = [
        f"cell      {record.arch}  ({cell.official_code})",
        f"dataset   {data.describe()}",
        f"model     C={cfg.width} N={cfg.cells_per_stage}, {record.n_params:,} params, init {cfg.init_rule}",
        f"lr        {cfg.lr:.6g} ({lr_note}), cosine per {cfg.schedule}; {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"seed {cfg.seed}",
        f"status    {record.status}" + (f" in epoch {record.diverged_epoch}" if record.diverged_epoch else ""),
    ]
    if record.train_loss:
        lines.append(f"train     loss {record.train_loss[-1]:.4f}, acc {record.train_acc[-1]:.2f}% (last epoch)")
    for name, acc in record.eval_acc.items():
        loss = record.eval_loss[name]
        lines.append(f"{name:<9} acc {acc:.2f}%, loss {loss:.4f}" if acc is not None else f"{name:<9} -")
    lines.append(
        f"time      {record.wall_s:.1f} s wall; {record.images_per_s:,.0f} train img/s on {record.device}, "
        f"{record.precision}"
    )
    print("\n".join(lines))
    return 0


# --- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_command(subparsers)
    add_commands(subparsers)  # evaluate, find-base-lr, plan (pipeline/commands.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:  # a mistake the user can fix: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
