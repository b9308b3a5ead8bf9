"""The report's numbers for one (dataset, metric): no sentences here (those are `analysis.verdicts`).

For each protocol: re-evaluated vs published (mean/median change, τ-b, ρ, τ@K, top-k overlap,
biggest movers) and, on the same cells, its yardsticks (`analysis.yardsticks`) with the paired
differences the verdicts read; between protocols (the paper's "scaled over nb201"): the gain, τ
between them and the paired difference of their τs against published; the init × LR 2×2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.ablation import ablation_table
from analysis.runs import COMPARED_METRICS, REFERENCE_EPOCHS, RunData, series
from analysis.settings import BASELINE, NB201_SCALE, VERDICT_KS, Settings
from analysis.verdicts import findings
from analysis.yardsticks import Yardsticks, bar_source, cost_columns, nb201_seed_source, run_shape
from benchmarks import Reference, ReferenceSourceError, column_name
from cells import cell_at, paths, sum_depth_cubed

PAPER_GAIN: dict[str, float] = {"cifar10": 0.44, "cifar100": 1.24, "imagenet16_120": 2.09}
"""Mean test-accuracy gain over NB201 the paper states (§4.3; digest §4.2); split not stated."""


@dataclass(frozen=True)
class SampleSpread:
    """Where the compared cells sit in the published ranking of the trainable cells."""

    n: int
    low: float
    high: float
    population: int
    population_low: float
    population_high: float
    bands_occupied: int
    random_fill: float
    """How many of n bands a uniform random sample of n cells fills on average."""


@dataclass
class MetricComparison:
    """Everything the report shows for one dataset and metric.

    `summary`: one row per protocol vs published, with its yardsticks on its own cells and the paired
    differences against them. `paper_comparison`: the gains (each protocol over published, each over
    another). `tau_at_k`: the τ@K table, long (`kind`, `curve`, `cells_of` = the protocol whose cells a
    yardstick was computed on). `versus`: long, the paired τ differences the sentences read.
    """

    dataset: str
    metric: str
    headline: bool
    protocols: list[str]
    published_column: str
    cells_by_protocol: dict[str, pd.Index]
    summary: pd.DataFrame
    paper_comparison: pd.DataFrame
    tau_at_k: pd.DataFrame
    versus: pd.DataFrame
    top_k_overlap: pd.DataFrame
    movers: pd.DataFrame
    noise_label: str
    noise_proxy: str
    """Empty, or the metric whose seed noise stands in (e.g. `cifar10-valid valid`) for this one."""
    bar_label: str
    scale: dict[str, list[int]]
    floor_shape: str = ""
    """The network shape the params/MACs floor was counted at."""
    ablation: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The init x LR 2x2 (`ablation_table`); empty unless the run has one protocol per quadrant."""
    chance: dict[str, int] = field(default_factory=dict)
    """Per protocol, diverged trials scored at chance accuracy."""
    sample: SampleSpread | None = None
    findings: list[str] = field(default_factory=list)


def protocol_order(protocols: Sequence[str]) -> list[str]:
    """Baseline first, then `scaled`, then the rest by name, so gains read as new minus old."""
    rank = {BASELINE: 0, "scaled": 1}
    return sorted(set(protocols), key=lambda p: (rank.get(p, 2), p))


def compare_run(
    run: RunData,
    reference: Reference,
    noise_reference: Reference | None = None,
    bar_reference: Reference | None = None,
    settings: Settings | None = None,
) -> list[MetricComparison]:
    """One comparison per (dataset, metric) the run and the reference both have; headline first."""
    settings = settings or Settings()
    out = []
    for dataset, metrics in COMPARED_METRICS.items():
        rows = run.cells[run.cells["dataset"] == dataset]
        present = [m for m in metrics if (rows["metric"] == m).any()]
        for i, metric in enumerate(present):
            comparison = compare_metric(
                run, dataset, metric, i == 0, [reference, noise_reference, bar_reference], settings
            )
            comparison.findings = findings(comparison)
            out.append(comparison)
    return out


def sample_spread(reference: Reference, dataset: str, metric: str, compared: pd.Index) -> SampleSpread | None:
    """Where the compared cells sit among the trainable cells (those with an input->output path)."""
    try:
        population = reference.table(dataset, metric, REFERENCE_EPOCHS)["value"]
    except ReferenceSourceError:
        return None
    population = population[[bool(paths(cell_at(int(i)))) for i in population.index]]
    chosen = compared.intersection(population.index)
    n = len(chosen)
    if n < 2:
        return None
    values = population.reindex(chosen)
    return SampleSpread(
        n,
        values.min(),
        values.max(),
        len(population),
        population.min(),
        population.max(),
        stats.strata_occupied(population, chosen, n),
        n * (1 - (1 - 1 / n) ** n),
    )


def compare_metric(
    run: RunData,
    dataset: str,
    metric: str,
    headline: bool,
    references: list[Reference | None],
    settings: Settings,
) -> MetricComparison:
    """The numbers of one (dataset, metric); `references` = [reference, noise source, bar source]."""
    cells = run.cells[(run.cells["dataset"] == dataset) & (run.cells["metric"] == metric)]
    protocols = protocol_order(cells["protocol"])
    published = cells.groupby("nb201_index")["published"].first()
    by_protocol = {p: series(cells, dataset, metric, p) for p in protocols}
    union = pd.Index(sorted(set().union(*[s.dropna().index for s in by_protocol.values()])))
    compared = published.dropna().index.intersection(union)

    shape = run_shape(run.trials, dataset)
    nb201_seeds, noise_label, noise_proxy = nb201_seed_source(dataset, metric, references[:2])
    bar_columns, bar_label = bar_source(dataset, metric, [references[0], references[2]])
    mine = run.seeds[(run.seeds["dataset"] == dataset) & (run.seeds["metric"] == metric)]
    yardsticks = Yardsticks(
        published=published,
        costs=cost_columns(compared, shape),
        settings=settings,
        bar_columns=bar_columns,
        nb201_seeds=nb201_seeds,
        our_seeds={str(p): g.set_index("nb201_index")[["seed", "value"]] for p, g in mine.groupby("protocol")},
    )
    cells_by_protocol = {p: yardsticks.cells_of(v) for p, v in by_protocol.items()}
    protocol_curves = _protocol_curves(by_protocol, published, settings)
    tau_at_k = [protocol_curves]
    for p, own in cells_by_protocol.items():
        tau_at_k += [yardsticks.curves_on(own, p), yardsticks.our_curves(p, own)]
    summary = _summary(by_protocol, cells, protocol_curves, yardsticks, settings)
    comparison = MetricComparison(
        dataset=dataset,
        metric=metric,
        headline=headline,
        protocols=protocols,
        published_column=column_name(dataset, metric, REFERENCE_EPOCHS),
        cells_by_protocol=cells_by_protocol,
        summary=summary,
        paper_comparison=_paper_comparison(
            by_protocol, published, (dataset, metric, headline), protocol_curves, yardsticks, settings
        ),
        tau_at_k=pd.concat([c for c in tau_at_k if not c.empty], ignore_index=True),
        versus=_versus(by_protocol, yardsticks),
        top_k_overlap=pd.concat(
            [stats.top_k_overlap(published, s, settings.ks).assign(protocol=p) for p, s in by_protocol.items()],
            ignore_index=True,
        ),
        movers=_movers(cells, protocols, settings.movers),
        noise_label=noise_label,
        noise_proxy=noise_proxy,
        bar_label=bar_label,
        scale=_scale(run.trials, dataset),
        floor_shape=shape.describe(),
        ablation=ablation_table(by_protocol, run.trials[run.trials["dataset"] == dataset], summary, settings),
        chance=_chance_counts(run.trials, dataset),
        sample=sample_spread(references[0], dataset, metric, compared),  # type: ignore[arg-type]
    )
    return comparison


# --- the pieces -----------------------------------------------------------------------------


def _scale(trials: pd.DataFrame, dataset: str) -> dict[str, list[int]]:
    rows = trials[trials["dataset"] == dataset]
    return {k: sorted(int(v) for v in rows[k].dropna().unique()) for k in NB201_SCALE if k in rows}


def _chance_counts(trials: pd.DataFrame, dataset: str) -> dict[str, int]:
    if "at_chance" not in trials:
        return {}
    rows = trials[(trials["dataset"] == dataset) & trials["at_chance"]]
    return {str(p): int(n) for p, n in rows.groupby("protocol").size().items()}


def _curve(frame: pd.DataFrame, curve: str, kind: str, cells_of: str) -> pd.DataFrame:
    return frame.assign(curve=curve, kind=kind, cells_of=cells_of)


def _protocol_curves(by_protocol: dict[str, pd.Series], published: pd.Series, settings: Settings) -> pd.DataFrame:
    """τ@K of each protocol vs published (its own cells), and between each pair (the cells both have)."""
    s = settings
    parts = [
        _curve(
            stats.tau_at_k(published, values, published, s.ks, s.n_resamples, s.seed),
            f"{protocol} vs published",
            "protocol",
            protocol,
        )
        for protocol, values in by_protocol.items()
    ]
    names = list(by_protocol)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            curve = stats.tau_at_k(by_protocol[a], by_protocol[b], published, s.ks, s.n_resamples, s.seed)
            parts.append(_curve(curve, f"{b} vs {a}", "between protocols", f"{a} ∩ {b}"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def overall(curves: pd.DataFrame, curve: str) -> stats.Estimate:
    """The K=100 point of a τ@K curve as an Estimate (the same numbers, computed once)."""
    rows = curves[(curves["curve"] == curve) & (curves["k"] == 100)]
    if rows.empty:
        return stats.Estimate(math.nan, note="not computed")
    row = rows.iloc[0]
    return stats.Estimate(row["tau"], row["low"], row["high"], int(row["n"]), row["note"])


def _summary(
    by_protocol: dict[str, pd.Series],
    cells: pd.DataFrame,
    curves: pd.DataFrame,
    yardsticks: Yardsticks,
    settings: Settings,
) -> pd.DataFrame:
    """Per protocol vs published, and its yardsticks and paired differences on its own cells."""
    s, published = settings, yardsticks.published
    rows = []
    for protocol, values in by_protocol.items():
        x, y, common = stats.paired(values, published)
        seeds = cells[cells["protocol"] == protocol].set_index("nb201_index")["n_seeds"].reindex(common)
        against = yardsticks.versus(values, 100)
        rows.append(
            {
                "protocol": protocol,
                "cells": len(common),
                "seeds_per_cell": float(seeds.mean()) if len(seeds) else math.nan,
                "mean_ours": float(np.mean(x)) if len(x) else math.nan,
                "mean_published": float(np.mean(y)) if len(y) else math.nan,
                "mean_change": stats.change(values, published, "mean", s.n_resamples, s.seed),
                "median_change": stats.change(values, published, "median", s.n_resamples, s.seed),
                "tau": overall(curves, f"{protocol} vs published"),
                "rho": stats.rho(published, values, s.n_resamples, s.seed),
                **yardsticks.at_100(common),
                "ceiling": yardsticks.ceiling(protocol, common),
                "vs_floor": against.get("params floor", stats.Estimate(math.nan, note="no floor")),
                "vs_bar": against.get("12-epoch bar", stats.Estimate(math.nan, note="no 12-epoch source")),
            }
        )
    return pd.DataFrame(rows)


def _paper_comparison(
    by_protocol: dict[str, pd.Series],
    published: pd.Series,
    where: tuple[str, str, bool],
    curves: pd.DataFrame,
    yardsticks: Yardsticks,
    settings: Settings,
) -> pd.DataFrame:
    """The paper's comparison: each protocol over published, and each protocol over another, each row
    with the yardsticks of its own cells (a pair: the cells both protocols have)."""
    dataset, metric, headline = where
    s = settings
    rows = []
    depth = depth_factor(published.index)  # every cell of the run
    for protocol, values in by_protocol.items():
        paper = PAPER_GAIN.get(dataset) if headline and protocol == "scaled" and metric == "test" else None
        common = yardsticks.cells_of(values)
        rows.append(
            {
                "comparison": f"{protocol} − published",
                "new": protocol,
                "old": "published",
                "gain": stats.change(values, published, "mean", s.n_resamples, s.seed),
                "tau": overall(curves, f"{protocol} vs published"),
                "tau_difference": None,
                "depth_tau": stats.tau(depth, values - published, s.n_resamples, s.seed),
                **yardsticks.at_100(common),
                "ceiling": {protocol: yardsticks.ceiling(protocol, common)},
                "paper": paper,
            }
        )
    names = list(by_protocol)
    for i, old in enumerate(names):
        for new in names[i + 1 :]:
            _, _, both = stats.paired(by_protocol[new], by_protocol[old])
            common = both.intersection(published.dropna().index)
            rows.append(
                {
                    "comparison": f"{new} − {old}",
                    "new": new,
                    "old": old,
                    "gain": stats.change(by_protocol[new], by_protocol[old], "mean", s.n_resamples, s.seed),
                    "tau": overall(curves, f"{new} vs {old}"),
                    "tau_difference": yardsticks.between(by_protocol[new], by_protocol[old], 100),
                    "depth_tau": stats.tau(depth, by_protocol[new] - by_protocol[old], s.n_resamples, s.seed),
                    **yardsticks.at_100(common),
                    "ceiling": {p: yardsticks.ceiling(p, common) for p in (old, new)},
                    "paper": None,
                }
            )
    return pd.DataFrame(rows)


def depth_factor(cells: pd.Index) -> pd.Series:
    """Σ over input→output paths of L_p³ per NB201 index: what the LR rule (Eq. 8) divides a cell's LR by
    the square root of. τ between it and a per-cell gain says whether a protocol's gain follows depth."""
    return pd.Series([float(sum_depth_cubed(cell_at(int(i)))) for i in cells], index=cells, dtype=float)


def _versus(by_protocol: dict[str, pd.Series], yardsticks: Yardsticks) -> pd.DataFrame:
    """Long: per protocol and verdict K, τ minus each yardstick (and minus each other protocol), paired."""
    rows = []
    names = list(by_protocol)
    for k in VERDICT_KS:
        for protocol, values in by_protocol.items():
            for against, est in yardsticks.versus(values, k).items():
                rows.append({"protocol": protocol, "k": k, "against": against, "difference": est})
        for i, old in enumerate(names):
            for new in names[i + 1 :]:
                est = yardsticks.between(by_protocol[new], by_protocol[old], k)
                rows.append({"protocol": new, "k": k, "against": old, "difference": est})
    return pd.DataFrame(rows, columns=["protocol", "k", "against", "difference"])


def _movers(cells: pd.DataFrame, protocols: list[str], top: int) -> pd.DataFrame:
    """Per protocol, the cells whose rank moved most (rank 1 = best, among that protocol's compared cells)."""
    parts = []
    for protocol in protocols:
        rows = cells[(cells["protocol"] == protocol)].dropna(subset=["ours", "published"]).copy()
        if rows.empty:
            continue
        rows["rank_published"] = rows["published"].rank(ascending=False, method="min").astype(int)
        rows["rank_ours"] = rows["ours"].rank(ascending=False, method="min").astype(int)
        rows["rank_change"] = rows["rank_published"] - rows["rank_ours"]
        order = rows["rank_change"].abs().sort_values(ascending=False, kind="stable").index
        parts.append(rows.loc[order[:top]])
    columns = ["protocol", "nb201_index", "arch_str", "published", "ours", "rank_published", "rank_ours", "rank_change"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
