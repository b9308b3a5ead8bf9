"""`python -m cells export --out results/cells.parquet`: the search space as one table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cells.export import cells_table
from core.atomic import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cells", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write one row per cell (stats, classes, LR factors)")
    export.add_argument("--out", type=Path, default=Path("results/cells.parquet"), help=".parquet or .csv")
    args = parser.parse_args(argv)

    if args.out.suffix not in (".parquet", ".csv"):
        print(f"error: --out must end in .parquet or .csv, got {args.out}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    table = cells_table()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        if args.out.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {len(table):,} cells to {args.out} in {elapsed:.1f} s: "
        f"{table['class_id'].nunique():,} sound classes, {table['nb201_class_id'].nunique():,} NB201 symbolic "
        f"classes, {int((~table['has_path']).sum())} cells without a path"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
