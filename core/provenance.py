"""Where a number comes from: the code that computed it and the data it saw.

`code_identity()` hashes the source files that can change a training's numbers (everything under
`cells/`, `core/` and `pipeline/` but the few modules in `NOT_NUMERIC`), so such a change gives a
new identity even where no git repository exists (a Ray Job's working-dir copy). `code_version()` is the
human-readable label. `Fingerprint` hashes the bytes of the dataset files a reader actually read.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMERIC_SOURCES: tuple[str, ...] = ("cells/*.py", "core/*.py", "pipeline/**/*.py")
"""Every source that could change a trained number or the list of units: derived by folder, not listed,
so a new module is covered the day it appears."""
NOT_NUMERIC: frozenset[str] = frozenset(
    {
        "pipeline/__main__.py",  # argument parsing and printing
        "pipeline/commands.py",
        "pipeline/jobs.py",  # `ray job` wrapper
        "pipeline/plan.py",  # cost estimates; trains nothing that is kept
        "pipeline/run/lock.py",  # refuses a second driver
        "pipeline/run/identity.py",  # refuses a resume
        "pipeline/sweep/preflight.py",  # refuses or passes; changes nothing
    }
)
"""Modules that refuse runs or only print, and cannot change a trained number or the unit list: none of
them is imported by the training path (tests/test_code_identity.py checks this on the import graph).
`pipeline/run/store.py` is hashed: its statuses decide which units are left to train."""


def numeric_sources(root: Path = ROOT) -> list[Path]:
    """The files `code_identity` hashes, in a fixed order."""
    found = {path for pattern in NUMERIC_SOURCES for path in root.glob(pattern)}
    return sorted(path for path in found if path.relative_to(root).as_posix() not in NOT_NUMERIC)


def code_identity_of(root: Path) -> str:
    """sha256 (16 hex) over the numeric sources' paths and contents under `root` (a checkout)."""
    digest = hashlib.sha256()
    for path in numeric_sources(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def code_identity() -> str:
    """`code_identity_of` this checkout, computed once per process."""
    return code_identity_of(ROOT)


@cache
def code_version() -> str:
    """`<package version>+g<commit>[.dirty]`, or the version alone outside a git checkout."""
    try:
        version = metadata.version("nb201-rescale")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode != 0:
        return version
    return f"{version}+g{commit.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"


class Fingerprint:
    """Accumulates (file name, content hash) of every file read; order-independent.

    Only the file's own name counts (and a joined folder's position `<k>:`), not the folders above it:
    the same images copied under another folder name are the same data."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}

    def add(self, name: str, content: bytes) -> None:
        position, sep, path = name.rpartition(":")  # "<k>:<folder>/<file>" for joined folders
        self._files[f"{position}{sep}{path.rsplit('/', 1)[-1]}"] = hashlib.sha256(content).hexdigest()

    def hexdigest(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self._files):
            digest.update(f"{name}\0{self._files[name]}\n".encode())
        return digest.hexdigest()[:16]
