"""The published NB201 table, shipped with the project: `benchmarks/nb201_published.parquet`.

The same 15,625 rows and 27 columns as `shared/data/nb201/nb201_published.csv`, value for value
(zstd Parquet, ~1.4 MB instead of 4.7 MB; `nb201_published.md` beside it gives the provenance and
what every column means). Opened by the reference spec `published`, the default of every shipped
config. Rebuild it from the CSV with `.venv/bin/python -m benchmarks.published /path/nb201_published.csv`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmarks.errors import ReferenceSourceError
from core.atomic import atomic_path

TABLE = Path(__file__).resolve().with_name("nb201_published.parquet")
ROWS, COLUMNS = 15_625, 27
ZSTD_LEVEL = 19


def read_published(path: Path = TABLE) -> pd.DataFrame:
    """The whole shipped table (every column, as the CSV has them)."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise ReferenceSourceError(
            f"the shipped published table {path} is missing or unreadable ({type(error).__name__}: {error}). "
            "Fix: restore it from the repository (git checkout benchmarks/nb201_published.parquet)"
        ) from None


def write_published(csv: Path, out: Path = TABLE) -> Path:
    """Convert the published CSV to the shipped Parquet file (every column, dtypes as pandas reads the CSV)."""
    frame = pd.read_csv(csv)
    if frame.shape != (ROWS, COLUMNS):
        raise ReferenceSourceError(f"{csv} has shape {frame.shape}, expected ({ROWS}, {COLUMNS})")
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd", compression_level=ZSTD_LEVEL)
    if not read_published(out).equals(frame):
        raise ReferenceSourceError(f"{out} does not read back equal to {csv}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.published /path/to/nb201_published.csv")
    path = write_published(Path(sys.argv[1]))
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
