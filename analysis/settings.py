"""The analysis's knobs and the names every part of it shares (no computation here)."""

from __future__ import annotations

from dataclasses import dataclass

from analysis import stats
from core import nb201

BASELINE = "nb201"
"""The protocol NB201 itself used (PyTorch's default init, LR 0.1); gains are measured over it."""
MIN_FOR_VERDICT = 10
"""Below this many cells the report states numbers but draws no conclusion from them."""
NB201_SCALE = {"epochs": nb201.EPOCHS, "width": nb201.WIDTH, "cells_per_stage": nb201.CELLS_PER_STAGE}
"""NB201's own training budget and network; a run that differs is a proxy."""
VERDICT_KS: tuple[float, ...] = (100, 10)
"""The top-K% sets the report's sentences read (all cells, the published top 10%)."""


@dataclass(frozen=True)
class Settings:
    """Knobs of the analysis; the defaults are what the pipeline's report uses."""

    n_resamples: int = stats.N_RESAMPLES
    seed: int = 0
    ks: tuple[float, ...] = stats.TOP_K_PERCENT
    movers: int = 10
    top_cells_plotted: int = 20

    def __post_init__(self) -> None:
        if 100 not in self.ks:
            raise ValueError("Settings.ks must include 100: the overall τ is read off the K=100 point")
