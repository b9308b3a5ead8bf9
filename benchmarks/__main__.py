"""`python -m benchmarks export|info`: convert any reference source to the table form, or describe it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.errors import ReferenceSourceError
from benchmarks.sources import SPEC_HELP, open_reference
from benchmarks.table_file import write_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Published NAS-Bench-201 accuracies per cell, from one of several sources.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = sub.add_parser(
        "export",
        help="write a source as a CSV/Parquet table (e.g. convert the multi-GB official file once)",
        description="Write every accuracy a source holds (means and per-seed values) in the published-table "
        "layout; the result is itself a valid csv:/parquet: source.",
    )
    export.add_argument("--source", default=None, metavar="SPEC", help=f"the source to read: {SPEC_HELP}")
    export.add_argument("--out", required=True, type=Path, metavar="FILE", help="output file, .csv or .parquet")
    info = sub.add_parser("info", help="list the datasets, metrics, epochs and seeds a source has")
    info.add_argument("--source", default=None, metavar="SPEC", help=f"the source to read: {SPEC_HELP}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        reference = open_reference(args.source)
        if args.command == "export":
            path = write_table(reference, args.out)
            print(f"wrote {len(reference.frame)} cells, {len(reference.frame.columns) - 1} columns to {path}")
        else:
            print(f"{reference.name}: {len(reference.frame)} cells")
            for key in reference.available():
                seeds = reference.seeds(key.dataset, key.metric, key.epochs)
                shown = ", ".join(map(str, seeds)) if seeds else "means only"
                print(f"  {key.dataset:15s} {key.metric:8s} {key.epochs:4d} epochs  seeds: {shown}")
    except ReferenceSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
