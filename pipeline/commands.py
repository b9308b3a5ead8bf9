"""The run-level subcommands of `python -m pipeline`: evaluate, find-base-lr, plan.

Each validates all user input (config, cells, reference, data dir, results folder and
results_uri, Ray address) before any work, and turns a user mistake into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks import ReferenceSourceError, open_covering
from benchmarks.published import read_published
from benchmarks.table_file import read_table
from core.errors import UserError
from core.runfiles import REPORT_FILE, RESULTS_DB
from pipeline.run.lr_transfer import trial_spec
from pipeline.run.spec import Download, RunSpec, SpecError
from pipeline.run.spec_load import load_spec
from pipeline.run.store import ResultsMirror, ResultsStore, StoreError, inspect_store

THROUGHPUT_TABLE = Path(__file__).resolve().parents[1] / "configs" / "throughput.yaml"


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML), e.g. configs/cpu.yaml")
    parser.add_argument(
        "--data-dir",
        help="read this folder (holding cifar-10-batches-py, ...; several joined by ':') instead of data_dir; "
        "it must hold the data unless --download is given too",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch CIFAR-10/100 (md5-checked) when data_dir does not hold it: into --data-dir when given, "
        "else into the config's download.cache ($NB201_DATA, else data/)",
    )
    parser.add_argument("--results-dir", help="override results_dir (default: results/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, YAML value, dotted for nesting: --set epochs=1 --set cells.count=8",
    )


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.results_dir:
        overrides["results_dir"] = args.results_dir
    return _data_flags(load_spec(args.config, overrides), args.data_dir, args.download)


def _data_flags(spec: RunSpec, data_dir: str | None, download: bool) -> RunSpec:
    """`--data-dir X` alone: X must hold the data (no fetching: a typo is an error, not a download).
    `--download`: fetch when data_dir does not hold it, into X when `--data-dir X` names one folder."""
    if not (data_dir or download):
        return spec
    if not isinstance(spec.download, Download):
        return replace(spec, download=download)
    one_folder = data_dir if data_dir and os.pathsep not in data_dir else None
    cache = one_folder if download and one_folder else spec.download.cache
    return replace(spec, download=replace(spec.download, enabled=download, cache=cache))


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="train the selected cells under every protocol through Ray; resumable",
        description="Train every (cell, protocol, seed) of a run config through Ray and write "
        "results/<run>/results.parquet and report.md. Rerunning the same command resumes.",
    )
    _spec_arguments(evaluate)
    evaluate.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    evaluate.add_argument("--no-report", action="store_true", help="skip `python -m analysis report` at the end")
    evaluate.add_argument(
        "--allow-code-change",
        action="store_true",
        help="resume a run whose finished rows were trained by other code: keep them (each row records its "
        "code_identity), train the rest with this code, record the change in the store",
    )
    evaluate.set_defaults(handler=interruptible(run_evaluate))

    export = commands.add_parser(
        "export",
        help="rewrite <run>/results.parquet from results.sqlite (e.g. after the driver was killed)",
    )
    export.add_argument("--run", required=True, type=Path, metavar="DIR", help="run folder holding results.sqlite")
    export.set_defaults(handler=run_export)

    finder = commands.add_parser(
        "find-base-lr",
        help="Ray Tune grid on the skip-chain base network; caches each scaled protocol's base LR",
    )
    _spec_arguments(finder)
    finder.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    finder.set_defaults(handler=interruptible(run_find_base_lr))

    plan = commands.add_parser("plan", help="trainings, GPU-hours and wall-clock a config means (no training)")
    _spec_arguments(plan)
    plan.add_argument("--gpus", type=int, default=8, help="devices to spread the run over (default 8)")
    plan.add_argument("--gpu-type", default="h200", help=f"row of {THROUGHPUT_TABLE.name} to use (default h200)")
    plan.add_argument("--calibrate", action="store_true", help="measure throughput on this machine's device instead")
    plan.add_argument(
        "--published",
        type=Path,
        help="published NB201 table (CSV or Parquet), for its recorded training times; default: the shipped one",
    )
    plan.set_defaults(handler=run_plan)


def check_reference(reference: str | None, dataset: str) -> None:
    """Open the report's reference source now and check that it has the number the report compares a
    `dataset` run with, so that a wrong path, format or source fails in seconds rather than after the
    sweep (raises benchmarks.ReferenceSourceError)."""
    try:
        open_covering(reference, dataset)
    except ReferenceSourceError as error:  # one line: a parser's message may carry newlines
        raise ReferenceSourceError(" ".join(str(error).split())) from None


def interruptible(handler: Any) -> Any:
    """SIGINT and SIGTERM (a scheduler, `ray job stop`, `kill`) at any point end the command through its
    cleanup (the Parquet table rewritten from what finished, Ray shut down): one "interrupted" line, exit
    130 or 143 (128 + the signal), no stack dump."""

    def run(args: argparse.Namespace) -> int:
        from pipeline.sweep.cluster import RECEIVED, honour_signals

        before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        honour_signals()
        RECEIVED.clear()
        try:
            return handler(args)
        except KeyboardInterrupt as stop:  # ours, or Ray's re-raise of ours (it drops the signal number)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the last line short
            signum = getattr(stop, "signum", None) or (RECEIVED[-1] if RECEIVED else signal.SIGINT)
            print(f"interrupted ({signal.Signals(signum).name}); rerun the same command to resume", file=sys.stderr)
            return 128 + signum
        finally:
            for signum, previous in before.items():
                signal.signal(signum, previous)

    return run


def run_evaluate(args: argparse.Namespace) -> int:
    # Ray and torch (~3 s to import) load only for the commands that train: `--help` and `plan` stay quick.
    from pipeline.sweep.cluster import stderr_log
    from pipeline.sweep.lr_transfer import train_study
    from pipeline.sweep.orchestrate import sweep

    spec = spec_from_args(args)
    if not args.no_report:
        check_reference(spec.reference, spec.dataset)
    study = train_study if spec.lr_transfer else None  # the LR-transfer study: the same driver, its own trainings
    outcome = sweep(spec, args.address, stderr_log, allow_code_change=args.allow_code_change, train=study)
    counts = outcome.counts
    print(
        f"done: {counts['units']} units ({counts['trained']} trained now, {counts['skipped']} already finished, "
        f"{counts['failed']} failed now, {counts.get('gave_up', 0)} failed {spec.max_attempts}x earlier)"
    )
    print(f"results table: {outcome.table}")
    if spec.results_uri:
        print(f"results table copied to: {spec.results_uri.rstrip('/')}/{spec.run_id}/{outcome.table.name}")
    if not args.no_report:
        command = [sys.executable, "-m", "analysis", "report", "--run", str(outcome.run_dir)]
        if spec.reference:
            command += ["--reference", spec.reference]
        if subprocess.run(command, check=False).returncode != 0:
            print(f"warning: the report failed; rerun: {' '.join(command)}", file=sys.stderr)
            return 1
        print(f"report: {outcome.run_dir / 'report.md'}")
        if spec.results_uri:
            mirror = ResultsMirror(spec.results_uri, spec.run_id)
            for path in [outcome.run_dir / REPORT_FILE, *sorted(outcome.run_dir.glob("*.png"))]:
                mirror.copy(path)
            print(f"report copied to: {mirror.uri}/report.md")
    failed = counts["failed"] + counts.get("gave_up", 0)
    if failed:  # the table and the report are written; the run is not complete
        raise UnitsFailedError(
            f"{failed} of {counts['units']} units failed (their rows say why, column error); rerun the same command "
            f"to retry them (up to max_attempts={spec.max_attempts})"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    """results.sqlite -> results.parquet of a run folder; the store is only read (a running driver may
    hold the folder's lock: its next export replaces this one)."""
    db = args.run / RESULTS_DB
    if inspect_store(db) is None:
        raise StoreError(f"no results.sqlite in {args.run}; pass a run folder (results/<run>)")
    with ResultsStore(args.run) as store:
        table = store.export_parquet()
    print(table)
    return 0


class UnitsFailedError(UserError):
    """Some units of the run failed: the run is not complete."""


def run_find_base_lr(args: argparse.Namespace) -> int:
    from pipeline.sweep.cluster import stderr_log
    from pipeline.sweep.orchestrate import find_base_lrs

    spec = spec_from_args(args)
    for name, base_lr in find_base_lrs(spec, args.address, stderr_log).items():
        print(f"{name}: {'fixed LR, no base' if base_lr is None else f'base LR {base_lr:g}'}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from pipeline.plan import calibrate, default_trials_per_gpu, load_throughput, make_plan, train_images

    spec = spec_from_args(args)
    if spec.lr_transfer:  # the study's trials as protocols x seeds; each adds an end-of-epoch pass under end-pass
        spec = trial_spec(spec)
        print(f"LR-transfer study: {len(spec.protocols)} grid LRs as protocols, plus the skip chain as one more cell")
    if args.gpus < 1:
        raise SpecError("--gpus must be at least 1")
    if args.calibrate:
        throughput = calibrate(spec)
    else:
        throughput = load_throughput(args.gpu_type, THROUGHPUT_TABLE)
    published = read_published() if args.published is None else read_table(args.published)
    plan = make_plan(spec, throughput, args.gpus, published, train_images(spec))
    print(plan.report(spec, args.gpus))
    print(f"  (packing rule for C={spec.width}, N={spec.cells_per_stage}: {default_trials_per_gpu(spec)} per GPU)")
    return 0
