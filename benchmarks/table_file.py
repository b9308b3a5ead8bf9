"""Source 3 and the export target: a CSV or Parquet table in the published-table layout.

Columns: `nb201_index` and/or `arch_str`, then accuracy columns named as in
`shared/data/nb201/README.md` (`cifar10_test_acc_200ep`, ...) and optionally per-seed
columns (`..._seed777`). The published CSV is such a table; so is every `export` output.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.errors import ReferenceSourceError
from benchmarks.reference import ARCH, INDEX, Reference
from core.atomic import atomic_path

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def format_of(path: Path) -> str:
    """`csv` or `parquet` from the file name; one clear error otherwise."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ReferenceSourceError(
            f"cannot tell the table format of {path}: name it .csv or .parquet (or say csv:/path, parquet:/path)"
        )
    return fmt


def read_table(path: Path, fmt: str | None = None) -> pd.DataFrame:
    """The raw table; `Reference` checks its columns and cells."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if not path.is_file():
        raise ReferenceSourceError(f"reference table {path} does not exist. Fix: check the path (or NB201_SHARED)")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ReferenceSourceError(
            f"{path} is not a readable {fmt.upper()} table ({type(err).__name__}: {err}). "
            f"Fix: check the file, or name its real format ({', '.join(sorted(set(FORMATS.values())))}:/path)"
        ) from None
    raise ReferenceSourceError(f"unknown table format {fmt!r}; use csv or parquet")


def write_table(reference: Reference, path: Path) -> Path:
    """Write a reference in the published-table layout (`nb201_index`, `arch_str`, accuracy columns)."""
    path = Path(path)
    fmt = format_of(path)
    frame = reference.frame.reset_index()[[INDEX, ARCH, *reference.frame.columns.drop(ARCH)]]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path
