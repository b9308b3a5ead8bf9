"""analysis/explore.ipynb runs top to bottom against a small results table, so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis.synthetic import synthetic_results, write_run
from benchmarks import open_reference

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "analysis" / "explore.ipynb"


def test_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "NB201_RUN_DIR" in code[0].source


def test_notebook_executes_on_a_small_run(tmp_path: Path, published_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = open_reference(f"csv:{published_csv}")
    results = synthetic_results(reference, "cifar100", list(range(500, 540)), seeds=(0, 1), epochs=3)
    run_dir = write_run(tmp_path / "run", results)
    monkeypatch.setenv("NB201_RUN_DIR", str(run_dir))
    monkeypatch.setenv("NB201_REFERENCE", f"csv:{published_csv}")
    monkeypatch.setenv("NB201_RESAMPLES", "50")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/plain", "") for o in outputs
    )
    assert "cifar100, test vs cifar100_test_acc_200ep" in text
    assert "Kendall τ-b" in text  # the report's main table
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the τ@K plot rendered


def test_notebook_on_an_empty_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = open_reference("published")
    run_dir = write_run(tmp_path / "run", synthetic_results(reference, "cifar10", [500], epochs=3).iloc[:0])
    monkeypatch.setenv("NB201_RUN_DIR", str(run_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    with pytest.raises(Exception, match="has no rows yet") as failure:
        client.execute()
    assert "IndexError" not in str(failure.value)
