"""Issue 20, item 1: the code identity covers every source that can change a trained number or the unit
list. Each numeric source, edited in a temporary copy, gives another identity that resume refuses; the
modules left out (`NOT_NUMERIC`) are provably off the training path (the import graph says so); and the
issue's own edit (`seed=seed` -> `seed + 1` in `RunSpec.train_config`) is refused by a real resume.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import grimp
import pytest
from raytools import CELLS, REPO, write_config

from core.provenance import NOT_NUMERIC, ROOT, code_identity, code_identity_of, numeric_sources
from pipeline.run.identity import RunIdentity, RunIdentityError, check_resume
from pipeline.run.store import StoredIdentity, StoredRun

TRAINING_PATH = (
    "pipeline.sweep.worker",  # what a Ray task runs
    "pipeline.sweep.drain",  # sends the trainings to Ray and stores what comes back
    "pipeline.sweep.finder",  # the base-LR grid
    "pipeline.train.engine",
    "pipeline.train.fused",
    "pipeline.run.spec",  # spec -> TrainConfig
    "pipeline.run.units",  # what is left to train
    "pipeline.run.rows",
    "pipeline.run.base_lr",
    "pipeline.run.store",  # its statuses decide the unit list
)
"""Where a trained number or the unit list is decided."""
DRIVER_STEPS = ("_train_all",)
"""The functions of `pipeline.sweep.orchestrate` that build, send and store the trainings (the rest of that
work is `pipeline.sweep.drain`, on the training path)."""


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _copy(target: Path) -> Path:
    for package in ("cells", "core", "pipeline", "benchmarks"):
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _stored(code: str) -> StoredRun:
    meta = {"run_id": "r-1", "data_fingerprint": "d", "code_identity": code, "code_changes": "[]"}
    return StoredRun(meta, (StoredIdentity("r-1", "d", code, 3),))


def test_every_numeric_source_edited_changes_the_identity_and_resume_refuses(tmp_path):
    copy = _copy(tmp_path / "repo")
    base = code_identity_of(copy)
    assert base == code_identity()  # the copy is this checkout
    sources = numeric_sources(copy)
    names = {path.relative_to(copy).as_posix() for path in sources}
    for needed in (
        "pipeline/run/spec.py",
        "pipeline/sweep/worker.py",
        "pipeline/run/units.py",
        "pipeline/run/base_lr.py",
    ):
        assert needed in names  # the issue's four
    assert len(sources) >= 40
    stored = _stored(base)
    for path in sources:
        original = path.read_bytes()
        path.write_bytes(original + b"\n# one edit\n")
        try:
            edited = code_identity_of(copy)
        finally:
            path.write_bytes(original)
        assert edited != base, f"{path.relative_to(copy)} is not in the code identity"
        current = RunIdentity("r-1", {}, "d", "data", edited, "test")
        with pytest.raises(RunIdentityError, match="code differs"):
            check_resume(current, stored, "results.sqlite", allow_code_change=False)
    for name in NOT_NUMERIC:  # and the modules left out really are left out
        path = copy / name
        path.write_bytes(path.read_bytes() + b"\n# one edit\n")
    assert code_identity_of(copy) == base


def test_modules_left_out_of_the_identity_are_off_the_training_path():
    graph = grimp.build_graph("pipeline", "core", "cells", "benchmarks")
    left_out = {_module(name) for name in NOT_NUMERIC}
    assert left_out <= graph.modules, sorted(left_out - graph.modules)
    for importer in TRAINING_PATH:
        upstream = graph.find_upstream_modules(importer) | {importer}
        assert not upstream & left_out, f"{importer} imports {sorted(upstream & left_out)}"
    # The driver imports the refusing modules (identity, lock, preflight) but uses them only before any
    # training: no function that builds, sends or stores trainings names them.
    source = (ROOT / "pipeline/sweep/orchestrate.py").read_text()
    tree = ast.parse(source)
    from_left_out = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module in left_out
        for alias in node.names
    }
    assert from_left_out  # what it does import from them
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in DRIVER_STEPS:
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not used & from_left_out, f"orchestrate.{node.name} uses {sorted(used & from_left_out)}"


def test_the_issues_edit_of_train_config_is_refused_by_a_real_resume(tmp_path, cifar10_dir, monkeypatch, capsys):
    """`seed=seed` -> `seed=seed + 1` in `RunSpec.train_config` (issue 20): resume exited 0 with rows of
    other code under one identity; now it is one `code differs` line, exit 2, the store unchanged. The
    checkout is a temporary copy whose identity this process reads (`core.provenance.ROOT`)."""
    import core.provenance
    import pipeline.sweep.drain
    import pipeline.sweep.orchestrate
    from pipeline.__main__ import main
    from pipeline.run.rows import no_path_row
    from pipeline.run.spec_load import load_spec

    copy = _copy(tmp_path / "repo")
    monkeypatch.setattr(core.provenance, "ROOT", copy)
    code_identity.cache_clear()
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    try:
        spec = load_spec(config)
        data, store, lock = pipeline.sweep.orchestrate._prepare(spec, lambda _: None)
        row = no_path_row(spec, spec.protocols[0], 10, 0, None)
        store.write(pipeline.sweep.drain.stamped([row], data.fingerprint))
        store.close()
        lock.release()
        db = spec.run_dir / "results.sqlite"
        before = db.read_bytes()
        source = copy / "pipeline/run/spec.py"
        text = source.read_text()
        assert text.count("seed=seed,") == 1
        source.write_text(text.replace("seed=seed,", "seed=seed + 1,"))
        code_identity.cache_clear()

        def no_ray(*_: object, **__: object) -> None:
            raise AssertionError("reached Ray: the changed code was not refused")

        monkeypatch.setattr(pipeline.sweep.orchestrate, "connect", no_ray)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        code = main(["evaluate", "--config", str(config), "--no-report"])
    finally:
        code_identity.cache_clear()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "code differs" in lines[0] and "Traceback" not in err, err
    assert db.read_bytes() == before
    assert copy != REPO
