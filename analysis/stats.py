"""Rank agreement and accuracy change between two per-cell accuracy columns, with bootstrap CIs.

Inputs are pandas Series indexed by `nb201_index`; every statistic uses the cells both columns
have (non-NaN in both). Kendall τ-b and Spearman ρ are scipy's. CIs are percentile intervals
over cells from a seeded resample written out here rather than `scipy.stats.bootstrap`, because
scipy returns an all-NaN interval as soon as one resample is degenerate (a constant column),
which is routine with the handful of cells a small run or a top-1% set has; here degenerate
resamples are dropped and counted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

TOP_K_PERCENT: tuple[int, ...] = (100, 50, 20, 10, 5, 1)
MIN_CELLS = 3
"""Fewest cells a rank statistic is reported for: over 2 cells τ and ρ are ±1 by construction."""
N_RESAMPLES = 1000
LEVEL = 0.95

Statistic = Callable[..., float]


@dataclass(frozen=True)
class Estimate:
    """A statistic over `n` cells with its CI; `note` says why it is missing when value is NaN."""

    value: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value)

    def excludes(self, x: float) -> bool:
        """Whether the CI lies strictly on one side of x (False when there is no CI)."""
        return math.isfinite(self.low) and math.isfinite(self.high) and (self.low > x or self.high < x)

    def format(self, digits: int = 3, signed: bool = False, with_n: bool = False) -> str:
        """`0.812 [0.790, 0.833]`, or `n/a (too few cells)`."""
        if not self.ok:
            return f"n/a ({self.note or 'no value'})"
        sign = "+" if signed else ""
        text = f"{self.value:{sign}.{digits}f}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            text += f" [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]"
        return f"{text} (n={self.n})" if with_n else text


def paired(x: pd.Series, y: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Values of the cells both series have, aligned on the index."""
    joined = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").dropna()
    return joined["x"].to_numpy(np.float64), joined["y"].to_numpy(np.float64), joined.index


SMALL_N = 600
"""Up to this many cells τ-b is computed from the pair-sign matrices (exact, ~100x faster than
scipy's call overhead on the few dozen cells a bootstrap resample of a small run holds)."""


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall τ-b (ties handled, as scipy's `variant="b"`); NaN when either side is constant or has
    < 2 values. τ-b = Σ sx·sy / √(Σ|sx| · Σ|sy|) over cell pairs, s = sign of the pair's difference."""
    n = len(x)
    if n < 2:
        return math.nan
    if n <= SMALL_N:
        sx = np.sign(np.subtract.outer(x, x))
        sy = np.sign(np.subtract.outer(y, y))
        untied = float(np.abs(sx).sum()) * float(np.abs(sy).sum())
        return float((sx * sy).sum() / math.sqrt(untied)) if untied > 0 else math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y, variant="b").statistic)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ; NaN when either side is constant or has < 2 values."""
    if len(x) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def bootstrap_ci(
    statistic: Statistic,
    arrays: Sequence[np.ndarray],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile CI of `statistic(*arrays)` over cells resampled with replacement (paired).

    Resamples where the statistic is undefined (NaN) are dropped; with fewer than half left
    the CI is NaN rather than a misleading interval.
    """
    n = len(arrays[0])
    if n < 2 or n_resamples < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        pick = rng.integers(0, n, size=n)
        values[r] = statistic(*(a[pick] for a in arrays))
    values = values[np.isfinite(values)]
    if len(values) < n_resamples / 2:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(
    statistic: Statistic, arrays: Sequence[np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Estimate:
    """`statistic(*arrays)` with its percentile CI, every array resampled with the SAME cells (paired,
    seeded: the same inputs give the same interval). The one bootstrap every rank verdict uses: a τ, a
    difference of two τs on the same cells, a mean over seed pairs. NaN below `MIN_CELLS` cells."""
    n = len(arrays[0])
    if n < MIN_CELLS:
        return Estimate(math.nan, n=n, note=f"too few cells, n={n}")
    value = statistic(*arrays)
    if not math.isfinite(value):
        return Estimate(math.nan, n=n, note="a column is constant")
    low, high = bootstrap_ci(statistic, arrays, n_resamples, seed)
    return Estimate(value, low, high, n)


def _rank_estimate(statistic: Statistic, x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> Estimate:
    return paired_bootstrap(statistic, (x, y), n_resamples, seed)


def aligned(*columns: pd.Series) -> pd.DataFrame:
    """The cells every column has (non-NaN in all), columns 0..k-1 aligned on the index."""
    return pd.concat([c.rename(i) for i, c in enumerate(columns)], axis=1, join="inner").dropna()


def tau_difference(
    a: pd.Series,
    a_target: pd.Series,
    b: pd.Series,
    b_target: pd.Series,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """τ(a, a_target) − τ(b, b_target) over the cells all four columns have, with a paired bootstrap CI:
    each resample of cells feeds both τs, so what the two share (the cells, the target) cancels.

    E.g. a protocol against the params floor: `tau_difference(ours, published, params, published)`;
    against NB201's 12-epoch bar: `(ours, published_200, published_12, published_200)`.
    """
    frame = aligned(a, a_target, b, b_target)
    arrays = [frame[i].to_numpy(np.float64) for i in range(4)]

    def difference(x: np.ndarray, xt: np.ndarray, y: np.ndarray, yt: np.ndarray) -> float:
        return kendall_tau(x, xt) - kendall_tau(y, yt)

    return paired_bootstrap(difference, arrays, n_resamples, seed)


def seed_ceiling(per_seed: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """The mean τ-b over every pair of seeds, on the cells having every seed, with a paired bootstrap CI
    over cells: how well one training of this budget reproduces another's ranking. `per_seed` is long
    (index `nb201_index`, columns `seed`, `value`). NaN with a note when there are fewer than 2 seeds."""
    wide = per_seed.pivot_table(index=per_seed.index, columns="seed", values="value", aggfunc="mean").dropna()
    if wide.shape[1] < 2:
        return Estimate(math.nan, n=len(wide), note="one seed per cell")
    arrays = [wide[s].to_numpy(np.float64) for s in sorted(wide.columns)]
    pairs = [(i, j) for i in range(len(arrays)) for j in range(i + 1, len(arrays))]

    def mean_pair_tau(*columns: np.ndarray) -> float:
        return float(np.mean([kendall_tau(columns[i], columns[j]) for i, j in pairs]))

    return paired_bootstrap(mean_pair_tau, arrays, n_resamples, seed)


def tau(x: pd.Series, y: pd.Series, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """Kendall τ-b between two columns over the cells both have, with CI."""
    a, b, _ = paired(x, y)
    return _rank_estimate(kendall_tau, a, b, n_resamples, seed)


def rho(x: pd.Series, y: pd.Series, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """Spearman ρ between two columns over the cells both have, with CI."""
    a, b, _ = paired(x, y)
    return _rank_estimate(spearman_rho, a, b, n_resamples, seed)


def top_k_size(n: int, k_percent: float) -> int:
    """Cells in the top-K% of n: ceil(K·n/100), so a small set keeps at least one cell."""
    return min(n, math.ceil(k_percent * n / 100 - 1e-9)) if n else 0


def top_cells(select_by: pd.Series, k_percent: float) -> pd.Index:
    """The top-K% cells by `select_by` (highest first; ties broken by NB201 index)."""
    ranked = select_by.dropna().sort_index().sort_values(ascending=False, kind="stable")
    return ranked.index[: top_k_size(len(ranked), k_percent)]


def strata_occupied(population: pd.Series, chosen: pd.Index, strata: int) -> int:
    """How many of `strata` equal-count bands of `population`'s ranking hold a `chosen` cell.

    Says whether a sample spans the ranking (all bands) or sits in part of it, which bounds what
    its τ can say. Bands follow `np.array_split` of the values sorted low to high (ties by index).
    """
    ranked = population.dropna().sort_index().sort_values(kind="stable").index.to_numpy()
    if strata < 1 or len(ranked) == 0:
        return 0
    wanted = set(chosen)
    return sum(any(i in wanted for i in band) for band in np.array_split(ranked, min(strata, len(ranked))))


def tau_at_k(
    x: pd.Series,
    y: pd.Series,
    select_by: pd.Series | None = None,
    ks: Sequence[float] = TOP_K_PERCENT,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """τ-b within the top-K% cells for each K; the top set is chosen by `select_by` (default x).

    Only cells both columns have count; the top set is taken among them. Columns:
    `k`, `n`, `tau`, `low`, `high`, `note`.
    """
    _, _, common = paired(x, y)
    chooser = (x if select_by is None else select_by).reindex(common)
    rows = []
    for k in ks:
        cells = top_cells(chooser, k)
        est = tau(x.reindex(cells), y.reindex(cells), n_resamples, seed)
        rows.append({"k": k, "n": est.n, "tau": est.value, "low": est.low, "high": est.high, "note": est.note})
    return pd.DataFrame(rows)


def top_k_overlap(x: pd.Series, y: pd.Series, ks: Sequence[float] = TOP_K_PERCENT) -> pd.DataFrame:
    """How many of x's top-K% cells are also in y's top-K% (same cells, same set size)."""
    _, _, common = paired(x, y)
    rows = []
    for k in ks:
        top_x = top_cells(x.reindex(common), k)
        top_y = top_cells(y.reindex(common), k)
        shared = len(top_x.intersection(top_y))
        rows.append(
            {"k": k, "n_top": len(top_x), "shared": shared, "fraction": shared / len(top_x) if len(top_x) else math.nan}
        )
    return pd.DataFrame(rows)


def change(
    new: pd.Series, old: pd.Series, how: str = "mean", n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Estimate:
    """Mean or median of `new - old` over the cells both have, with CI (accuracy points)."""
    a, b, _ = paired(new, old)
    diff = a - b
    if len(diff) == 0:
        return Estimate(math.nan, note="no common cells")
    func = {"mean": np.mean, "median": np.median}[how]
    value = float(func(diff))
    if len(diff) < 2:
        return Estimate(value, n=1)
    low, high = bootstrap_ci(lambda d: float(func(d)), (diff,), n_resamples, seed)
    return Estimate(value, low, high, len(diff))


def seed_pair_taus(
    per_seed: pd.DataFrame,
    select_by: pd.Series | None = None,
    cells: pd.Index | None = None,
    ks: Sequence[float] = TOP_K_PERCENT,
) -> pd.DataFrame:
    """τ@K between every pair of seeds: how much ranks move from training noise alone.

    `per_seed` is long (index `nb201_index`, columns `seed`, `value`), as `Reference.table(...,
    per_seed=True)` and our results give it. Each pair uses the cells having both seeds
    (restricted to `cells` when given); the top set is chosen by `select_by` (e.g. the published
    mean), else by the pair's mean. No CI: the spread across pairs is the band.
    Columns: `seed_a`, `seed_b`, `k`, `n`, `tau`, `note`.
    """
    wide = per_seed.pivot_table(index=per_seed.index, columns="seed", values="value", aggfunc="mean")
    if cells is not None:
        wide = wide.reindex(wide.index.intersection(cells))
    seeds = sorted(wide.columns)
    rows = []
    for i, seed_a in enumerate(seeds):
        for seed_b in seeds[i + 1 :]:
            both = wide[[seed_a, seed_b]].dropna()
            chooser = both.mean(axis=1) if select_by is None else select_by.reindex(both.index)
            curve = tau_at_k(both[seed_a], both[seed_b], chooser, ks, n_resamples=0)
            rows.append(curve.assign(seed_a=seed_a, seed_b=seed_b))
    columns = ["seed_a", "seed_b", "k", "n", "tau", "note"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)
