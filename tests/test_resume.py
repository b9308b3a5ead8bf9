"""Issue 20 on a resume, without Ray: an allowed code change recorded once, the same images under another
folder name, a run with failed units exits non-zero, the Ray token private, a failing results_uri
copy named as such."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from raytools import CELLS, write_config
from test_trust import Reached, evaluate, no_ray, one_error, seed_run  # noqa: F401 - no_ray is a fixture

from pipeline.__main__ import main


@pytest.mark.usefixtures("no_ray")
def test_an_allowed_code_change_is_recorded_once_and_needs_no_flag_later(tmp_path, cifar10_dir, capsys, monkeypatch):
    import json

    import pipeline.run.identity

    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    run_dir = seed_run(config)
    monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: "feedfacefeedface")
    for flags in (["--allow-code-change"], [], ["--allow-code-change"], []):
        with pytest.raises(Reached):  # accepted once: later resumes with this code pass without the flag
            evaluate(config, capsys, *flags)
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        meta = dict(connection.execute("SELECT key, value FROM run_meta"))
    changes = json.loads(meta["code_changes"])
    assert len(changes) == 1 and changes[0]["to"] == "feedfacefeedface"  # no no-op change recorded
    monkeypatch.setattr(pipeline.run.identity, "code_identity", lambda: "0123456789abcdef")
    code, err = evaluate(config, capsys)  # another change still needs the flag
    assert code == 2 and "code differs" in one_error(err)


@pytest.mark.usefixtures("no_ray")
def test_the_same_images_under_another_folder_name_resume(tmp_path, cifar10_dir, capsys):
    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:1], tmp_path / "results")
    seed_run(config)
    renamed = tmp_path / "my-copy-of-cifar"
    renamed.mkdir()
    for path in (Path(cifar10_dir) / "cifar-10-batches-py").iterdir():
        shutil.copy(path, renamed / path.name)  # the pickles directly under a folder of another name
    with pytest.raises(Reached):
        evaluate(config, capsys, "--data-dir", str(renamed))


def test_a_run_with_failed_units_exits_non_zero_and_counts_them(tmp_path, cifar10_dir, capsys, monkeypatch):
    import pipeline.sweep.orchestrate
    from pipeline.sweep.orchestrate import RunOutcome

    config = write_config(tmp_path / "c.yaml", cifar10_dir, CELLS[:4], tmp_path / "results")
    counts = {"units": 4, "trained": 3, "failed": 2, "skipped": 1, "gave_up": 1}
    outcome = RunOutcome(tmp_path / "results" / "r", tmp_path / "results" / "r" / "results.parquet", counts)
    monkeypatch.setattr(pipeline.sweep.orchestrate, "sweep", lambda *_, **__: outcome)
    code = main(["evaluate", "--config", str(config), "--no-report"])
    out, err = capsys.readouterr()
    assert code == 2 and "3 of 4 units failed" in one_error(err)
    assert "2 failed now, 1 failed 3x earlier" in out  # the summary counts them


def test_the_ray_token_folder_is_private(tmp_path, monkeypatch):
    from pipeline.sweep.cluster import _private_token_folder

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir(mode=0o755)
    token = tmp_path / ".ray" / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    _private_token_folder()
    assert (tmp_path / ".ray").stat().st_mode & 0o777 == 0o700 and token.stat().st_mode & 0o777 == 0o600


def test_a_failing_results_uri_copy_is_named_as_such(tmp_path, monkeypatch):
    from pipeline.run.store import MirrorError, ResultsStore
    from pipeline.sweep.orchestrate import _export_on_exit

    store = ResultsStore(tmp_path / "run-1", f"file://{tmp_path / 'mirror'}")

    class Broken:
        def __init__(self, real: object) -> None:
            self.real = real

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

        def move(self, *_: object) -> None:
            raise OSError("bucket gone")

    store.mirror._fs = Broken(store.mirror._fs)
    table, error = _export_on_exit(store, print)
    store.close()
    assert table is not None and table.is_file()  # the local table is whole
    assert isinstance(error, MirrorError) and "results_uri" in str(error) and "local files are whole" in str(error)
