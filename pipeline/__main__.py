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

from cells import INIT_RULES, LR_RULES, Cell, CellError, scaled_lr
from pipeline.commands import add_commands, is_run_user_error

DATASETS = ("cifar10-valid", "cifar10", "cifar100", "imagenet16_120")
"""= pipeline.data.DATASETS (tested), repeated so that building the parser does not import torch."""


class UsageError(ValueError):
    """A request that cannot be served as given; the message says what to change."""


def _fmt_s(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# --- train ---------------------------------------------------------------------------------------


def add_train_command(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train one cell and print its record", description="Train one NB201 cell.")
    p.add_argument("--arch", required=True, help="the cell: NB201 string, 6-digit op code or official code d_dd_ddd")
    p.add_argument("--dataset", choices=DATASETS, default="cifar10")
    p.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py (etc.), or that folder")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10/100 into --data-dir first")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--width", type=int, default=16, help="channels C of the first stage (NB201: 16)")
    p.add_argument("--cells-per-stage", type=int, default=5, help="N (NB201: 5)")
    lr = p.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=float, help="peak learning rate (default 0.1, NB201's)")
    lr.add_argument("--base-lr", type=float, help="base LR, scaled for this cell by --lr-rule")
    p.add_argument("--lr-rule", choices=LR_RULES, default="official", help="scaling rule used with --base-lr")
    p.add_argument("--init", choices=INIT_RULES, default="kaiming")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast where native (CUDA, AVX512 CPUs), else fp32",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--max-train", type=int, help="train on a fixed seeded subset of this many images")
    p.add_argument("--max-eval", type=int, help="evaluate on fixed seeded subsets of this many images")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    cell = Cell.parse(args.arch)
    for name in ("epochs", "width", "cells_per_stage", "batch_size", "max_train", "max_eval", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.base_lr is not None:
        scaled = scaled_lr(cell, args.base_lr, args.lr_rule)
        if scaled.lr is None:
            raise UsageError(f"no scaled LR for {cell.official_code}: {scaled.reason}; pass --lr to train it anyway")
        lr, lr_note = scaled.lr, f"base {args.base_lr:g} × {scaled.factor:.4f} ({args.lr_rule} rule)"
    else:
        lr, lr_note = (args.lr if args.lr is not None else 0.1), "fixed"

    from pipeline.data import load_splits
    from pipeline.engine import EpochProgress, resolve_device, train

    try:
        resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from error
    data = load_splits(
        args.dataset, args.data_dir, download=args.download, max_train=args.max_train, max_eval=args.max_eval
    )
    print(f"{cell.official_code}: {data.describe()}; lr {lr:.5g}", file=sys.stderr)

    def progress(p: EpochProgress) -> None:
        print(
            f"epoch {p.epoch}/{p.epochs}  loss {p.train_loss:.4f}  train acc {p.train_acc:5.2f}%  "
            f"elapsed {_fmt_s(p.elapsed_s)}  eta {_fmt_s(p.eta_s)}",
            file=sys.stderr,
            flush=True,
        )

    record = train(
        cell,
        data,
        width=args.width,
        cells_per_stage=args.cells_per_stage,
        init_rule=args.init,
        lr=lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        progress=progress,
    )
    if args.json:
        print(json.dumps(record.to_dict(), indent=2, allow_nan=False))
        return 0
    lines = [
        f"cell      {record.arch}  ({cell.official_code})",
        f"dataset   {data.describe()}",
        f"model     C={record.width} N={record.cells_per_stage}, {record.n_params:,} params, init {record.init_rule}",
        f"lr        {record.lr:.6g} ({lr_note}); {record.epochs} epochs, batch {record.batch_size}, seed {record.seed}",
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


def is_user_error(error: BaseException) -> bool:
    """Errors that mean "change the request", not "the program is broken"."""
    data = sys.modules.get("pipeline.data")  # DataError exists only once the data module is loaded
    if isinstance(error, UsageError | CellError) or is_run_user_error(error):
        return True
    return data is not None and isinstance(error, data.DataError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, RuntimeError) as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
