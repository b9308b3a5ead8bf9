"""The report's sentences: what the numbers of a `MetricComparison` support, and what they do not.

Every comparative word follows an interval: a protocol is "above" or "below" a yardstick (the params
floor, NB201's 12-epoch bar) or another protocol only when the paired bootstrap CI of the τ difference
on the same cells excludes 0; otherwise it is "not distinguishable". The fidelity gate passes only when
`nb201` is above the floor in that sense. Gains: "supported" only when their CI excludes 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from analysis import stats
from analysis.settings import BASELINE, MIN_FOR_VERDICT, NB201_SCALE
from analysis.yardsticks import AGAINST_BAR, AGAINST_FLOOR, FLOORS, SeedRange, curve_at
from core.datasets import DATASETS

if TYPE_CHECKING:
    from analysis.comparison import MetricComparison, SampleSpread

ABOVE, BELOW, LEVEL, UNKNOWN = "above", "below", "not distinguishable", "n/a"


def side(difference: stats.Estimate) -> str:
    """Where a paired difference's 95% CI lies: `above` 0, `below` 0, `not distinguishable` (it holds
    0), or `n/a` (no interval)."""
    if not (difference.ok and math.isfinite(difference.low) and math.isfinite(difference.high)):
        return UNKNOWN
    return ABOVE if difference.low > 0 else BELOW if difference.high < 0 else LEVEL


def difference_text(difference: stats.Estimate) -> str:
    return f"paired difference {difference.format(3, signed=True)}"


def versus(comparison: MetricComparison, protocol: str, k: float, against: str) -> stats.Estimate | None:
    rows = comparison.versus
    rows = rows[(rows["protocol"] == protocol) & (rows["k"] == k) & (rows["against"] == against)]
    return rows["difference"].iloc[0] if not rows.empty else None


def sample_sentence(spread: SampleSpread | None) -> str:
    """Where the compared cells sit in the published ranking, so a reader sees whether τ speaks for the
    whole range or a part of it."""
    if spread is None:
        return ""
    n = spread.n
    return (
        f"Cells: the {n} compared cells span published {spread.low:.1f}–{spread.high:.1f}% (all "
        f"{spread.population:,} trainable cells: {spread.population_low:.1f}–{spread.population_high:.1f}%) and "
        f"occupy {spread.bands_occupied} of {n} equal-count bands of the published ranking (a uniform random "
        f"sample of {n} fills about {spread.random_fill:.0f}); "
        + (
            "they span the ranking, so τ speaks for the whole range."
            if spread.bands_occupied == n
            else "τ speaks for the bands they occupy."
        )
    )


def _floor_clause(difference: stats.Estimate | None, floor_tau: float) -> str:
    if difference is None:
        return ""
    where = f"τ {floor_tau:.3f} on the same cells; {difference_text(difference)}"
    return {
        ABOVE: f"above the parameter-count floor ({where})",
        BELOW: f"below the parameter-count floor ({where}): counting parameters ranks better",
        LEVEL: f"not distinguishable from the parameter-count floor ({where})",
        UNKNOWN: f"not compared with the parameter-count floor ({difference.note or 'no interval'})",
    }[side(difference)]


def _bar_clause(difference: stats.Estimate | None, bar_tau: float) -> str:
    if difference is None:
        return ""
    where = f"τ {bar_tau:.3f} on the same cells; {difference_text(difference)}"
    return {
        ABOVE: f"above NB201's 12-epoch bar ({where})",
        BELOW: f"below the bar of NB201's own 12-epoch runs ({where}): as a proxy for the published ranking it "
        "does worse than simply training NB201's protocol for 12 epochs",
        LEVEL: f"not distinguishable from NB201's 12-epoch bar ({where})",
        UNKNOWN: f"not compared with NB201's 12-epoch bar ({difference.note or 'no interval'})",
    }[side(difference)]


def _noise_clause(est: pd.Series, noise: pd.DataFrame, proxy: str) -> str:
    if noise.empty:
        return ""
    seeds = f"NB201 seed vs seed τ {SeedRange(noise['tau'].min(), noise['tau'].max(), int(noise['n'].min())).format()}"
    if proxy:
        seeds += f", measured on {proxy}"
    if est["high"] < noise["tau"].min():
        return (
            f"below NB201's seed-noise ceiling ({seeds}): the ranking differs from the published one by more than "
            "NB201's own training noise"
        )
    if est["low"] > noise["tau"].max():
        return f"above NB201's seed-noise ceiling ({seeds}): it agrees as well as a re-run seed would"
    return f"within NB201's seed-noise range ({seeds}): a re-ranking beyond seed noise is not shown"


def tau_sentence(comparison: MetricComparison, protocol: str, est: pd.Series, k: float) -> str:
    """One protocol's τ@K against published, read against each yardstick on its own cells."""
    name = f"{protocol} vs published"
    where = "over its compared cells" if k == 100 else f"within the published top {k:g}%"
    if not math.isfinite(est["tau"]):
        return f"{name}: τ {where} is n/a ({est['note']})."
    text = f"{name}: τ {where} = {est['tau']:.3f} [{est['low']:.3f}, {est['high']:.3f}] (n={int(est['n'])})"
    if est["n"] < MIN_FOR_VERDICT:
        return text + f"; fewer than {MIN_FOR_VERDICT} cells, so no conclusion is drawn."
    curves = comparison.tau_at_k
    parts = [_noise_clause(est, curve_at(curves, "NB201 seeds", k, cells_of=protocol), comparison.noise_proxy)]
    floor = curve_at(curves, "floor", k, FLOORS["params"], cells_of=protocol)
    if not floor.empty:
        parts.append(_floor_clause(versus(comparison, protocol, k, AGAINST_FLOOR), floor["tau"].iloc[0]))
    bar = curve_at(curves, "12-epoch bar", k, cells_of=protocol)
    if not bar.empty:
        parts.append(_bar_clause(versus(comparison, protocol, k, AGAINST_BAR), bar["tau"].iloc[0]))
    parts = [p for p in parts if p]
    return text + ("; " + "; ".join(parts) if parts else "") + "."


def ceiling_sentence(row: pd.Series) -> str:
    """This budget's own seed ceiling for one protocol, beside NB201's 200-epoch one."""
    ceiling: stats.Estimate = row["ceiling"]
    nb201: SeedRange | None = row["nb201_seeds"]
    beside = f"; NB201's 200-epoch seed vs seed τ on the same cells: {nb201.format()}" if nb201 is not None else ""
    if not ceiling.ok:
        return (
            f"`{row['protocol']}`: this budget's seed ceiling is not measured ({ceiling.note}; it needs 2 or more "
            f"seeds){beside}."
        )
    return (
        f"`{row['protocol']}`: this budget's seed ceiling (τ between two of its own seeds, mean over seed pairs) = "
        f"{ceiling.format(with_n=True)}{beside}: how well one training at this budget reproduces another's ranking, "
        "so a τ against published near it is limited by this budget's own noise."
    )


def fidelity_gate(comparison: MetricComparison) -> str:
    """Whether the proxy ranks architectures at all: NB201's own protocol against the parameter count, on
    `nb201`'s own cells, by the paired CI of the τ difference."""
    rows = comparison.summary[comparison.summary["protocol"] == BASELINE]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    tau: stats.Estimate = row["tau"]
    floor: stats.Estimate = row["floor_params"]
    difference: stats.Estimate = row["vs_floor"]
    if not (tau.ok and floor.ok):
        return ""
    if row["cells"] < MIN_FOR_VERDICT:
        return f"Fidelity gate: not judged (fewer than {MIN_FOR_VERDICT} cells)."
    said = (
        f"`{BASELINE}` (NB201's own recipe) reaches τ {tau.format()} against the published ranking on its "
        f"{row['cells']} cells; counting parameters on the same cells gives τ {floor.value:.3f}; "
        f"{difference_text(difference)}"
    )
    verdict = side(difference)
    if verdict == ABOVE:
        return f"Fidelity gate: passed. {said}, which excludes 0: this proxy ranks architectures beyond their size."
    if verdict == BELOW:
        return (
            f"Fidelity gate: not passed: below the floor. {said}: this proxy does not rank architectures, so "
            "differences between protocols at this budget are about the proxy, not about NB201's ranking."
        )
    return (
        f"Fidelity gate: not passed: not distinguishable from the floor. {said}, which includes 0: this budget is "
        "not shown to rank architectures better than counting parameters, so differences between protocols at "
        "this budget may be about the proxy rather than NB201's ranking."
    )


def headline_sentence(comparison: MetricComparison) -> str:
    """The one line a reader takes away: the gate, the bar, and (with a `scaled` protocol) the paper's
    comparison, each worded as its interval allows."""
    rows = comparison.summary.set_index("protocol")
    if BASELINE not in rows.index or rows.loc[BASELINE, "cells"] < MIN_FOR_VERDICT:
        return ""
    row = rows.loc[BASELINE]
    words = {ABOVE: "above", BELOW: "below", LEVEL: "not distinguishable from", UNKNOWN: "not compared with"}
    text = (
        f"Headline: at this budget `{BASELINE}`'s τ against the published ranking is "
        f"{words[side(row['vs_floor'])]} the parameter-count floor's (fidelity gate "
        f"{'passed' if side(row['vs_floor']) == ABOVE else 'not passed'})"
    )
    if row["bar"].ok:
        text += f" and {words[side(row['vs_bar'])]} NB201's 12-epoch bar"
    pairs = comparison.paper_comparison
    pair = pairs[(pairs["new"] == "scaled") & (pairs["old"] == BASELINE)]
    if not pair.empty:
        p = pair.iloc[0]
        gain: stats.Estimate = p["gain"]
        gain_word = (
            "a supported gain"
            if gain.excludes(0) and gain.value > 0
            else ("a supported loss" if gain.excludes(0) else "no change shown")
        )
        rank = {
            ABOVE: "closer to",
            BELOW: "farther from",
            LEVEL: "not distinguishably closer to or farther from",
            UNKNOWN: "not compared with",
        }[side(p["tau_difference"])]
        text += (
            f"; `scaled` vs `{BASELINE}`: mean change {gain.format(2, signed=True)} points ({gain_word}), and its "
            f"ranking is {rank} the published one"
        )
    return text + "."


def _off_scale(comparison: MetricComparison) -> dict[str, list[int]]:
    """Settings where our runs differ from NB201's 200-epoch, C=16, N=5 networks."""
    return {k: v for k, v in comparison.scale.items() if v and v != [NB201_SCALE[k]]}


def findings(comparison: MetricComparison) -> list[str]:
    """What the numbers support and what they do not, one sentence each; the headline first."""
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
    if comparison.sample is not None:
        out.append(sample_sentence(comparison.sample))
    if comparison.chance:
        counts = ", ".join(f"{p} {n}" for p, n in sorted(comparison.chance.items()))
        out.append(
            f"Diverged trials are scored at chance ({100 / DATASETS[comparison.dataset].num_classes:.3g}%) in every "
            f"statistic below: {counts} (`--diverged drop` leaves them out instead)."
        )
    summary = comparison.summary
    if summary.empty or summary["cells"].max() == 0:
        return [*out, "No cell has both a kept result and a published value, so nothing can be compared."]
    out = [s for s in (headline_sentence(comparison), fidelity_gate(comparison)) if s] + out
    for _, row in summary.iterrows():
        protocol = row["protocol"]
        for k in (100, 10):
            rows = curve_at(comparison.tau_at_k, "protocol", k, f"{protocol} vs published")
            if rows.empty:
                if k == 100:
                    out.append(f"{protocol} vs published: τ is n/a ({row['tau'].note}).")
                continue
            out.append(tau_sentence(comparison, protocol, rows.iloc[0], k))
        out.append(ceiling_sentence(row))
    for _, pair in comparison.paper_comparison.iterrows():
        out.append(gain_sentence(pair, comparison))
    return out


def _between_clause(pair: pd.Series) -> str:
    """τ(new vs published) − τ(old vs published), paired, and τ between the two against this budget's ceiling."""
    new, old = pair["new"], pair["old"]
    difference: stats.Estimate = pair["tau_difference"]
    text = {
        ABOVE: f"`{new}` ranks the cells closer to the published ranking than `{old}`",
        BELOW: f"`{new}` ranks the cells farther from the published ranking than `{old}`",
        LEVEL: "neither ranks closer to the published ranking (not distinguishable)",
        UNKNOWN: "their τs against published are not compared",
    }[side(difference)]
    text = f". τ vs published, {new} − {old}: {difference.format(3, signed=True, with_n=True)} (paired): {text}"
    tau_est: stats.Estimate = pair["tau"]
    if not tau_est.ok:
        return text
    text += f"; τ between the two protocols = {tau_est.format()} (n={tau_est.n})"
    ceilings = {p: c for p, c in pair["ceiling"].items() if c.ok and math.isfinite(c.low)}
    if not ceilings:
        return (
            text + "; this budget's seed ceiling is not measured (one seed per cell), so a re-ranking beyond "
            "seed noise can be neither shown nor ruled out"
        )
    shown = ", ".join(f"{p} {c.format()}" for p, c in ceilings.items())
    if tau_est.high < min(c.low for c in ceilings.values()):
        return text + f"; below this budget's seed ceiling ({shown}): they rank cells differently beyond seed noise"
    return text + f"; not below this budget's seed ceiling ({shown}): a re-ranking beyond seed noise is not shown"


def gain_sentence(pair: pd.Series, comparison: MetricComparison) -> str:
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
    if pair["old"] != "published" and gain.n >= MIN_FOR_VERDICT:
        text += _between_clause(pair) + _depth_clause(pair)
    return text + "."


def _depth_clause(pair: pd.Series) -> str:
    """Whether the per-cell gain follows the LR rule's depth factor Σ L_p³ (τ with CI): where a protocol's
    loss or gain sits, deep cells or shallow ones."""
    depth: stats.Estimate = pair["depth_tau"]
    if not depth.ok or depth.n < MIN_FOR_VERDICT:
        return ""
    text = f"; τ between Σ L_p³ and the per-cell gain = {depth.format()}"
    if not depth.excludes(0.0):
        return text + " (the gain does not follow depth)"
    return text + (
        " (the deeper the cell, the larger the gain)"
        if depth.value > 0
        else " (the deeper the cell, the larger the loss)"
    )
