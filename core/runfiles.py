"""The names of the files a run writes, declared once for the writers (`pipeline`) and the readers
(`analysis`, the notebook). A run folder is `<results_dir>/<name>-<hash>/`; `results_dir` itself
holds the base-LR cache shared by runs and the `latest` link.
"""

from __future__ import annotations

RESULTS_DB = "results.sqlite"
"""The run's store: one row per (protocol, cell, seed), written by the driver only."""
RESULTS_TABLE = "results.parquet"
"""The store exported for pandas (`pd.read_parquet`), rewritten at every exit."""
SPEC_FILE = "spec.yaml"
"""The resolved run config, every default filled in."""
SEARCH_FILE = "base_lr_search.json"
"""Per run: protocol -> its base-LR finder record (every trial, the per-LR summary, the pick)."""
LR_TRANSFER_TABLE = "lr_transfer.parquet"
"""An LR-transfer study's per-cell picks and predictions (pipeline.run.lr_transfer), for its report."""
REPORT_FILE = "report.md"
"""The report (`python -m analysis report`); its plots are PNGs beside it."""
LOCK_FILE = ".lock"
"""Held by the one driver writing the run."""
TUNE_DIR = "tune"
"""Ray Tune's experiment folders of the run's base-LR searches."""

BASE_LR_CACHE = "base_lr_cache.json"
"""In `results_dir`: found base LRs, keyed by everything that determines them, shared by runs."""
LATEST = "latest"
"""In `results_dir`: a symlink to the newest run folder."""
