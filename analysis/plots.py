"""The report's figures. Built on `matplotlib.figure.Figure` (rendered by Agg), never pyplot,
so nothing depends on a display or on pyplot's global state; each function returns a Figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis import stats
from analysis.comparison import MetricComparison

_PROTOCOL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def _colors(protocols: list[str]) -> dict[str, str]:
    return {p: _PROTOCOL_COLORS[i % len(_PROTOCOL_COLORS)] for i, p in enumerate(protocols)}


def _message(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, wrap=True)
    return fig


def scatter(comparison: MetricComparison, cells: pd.DataFrame) -> Figure:
    """Published (x) vs re-evaluated (y) accuracy per cell, one panel per protocol, with y = x."""
    rows = cells[(cells["dataset"] == comparison.dataset) & (cells["metric"] == comparison.metric)]
    rows = rows.dropna(subset=["ours", "published"])
    protocols = comparison.protocols
    fig = Figure(figsize=(4.6 * max(1, len(protocols)), 4.6), layout="constrained")
    if rows.empty:
        return _message(fig, "no cell has both a re-evaluated and a published value")
    lo = float(min(rows["ours"].min(), rows["published"].min()))
    hi = float(max(rows["ours"].max(), rows["published"].max()))
    pad = max(0.5, 0.04 * (hi - lo))
    limits = (lo - pad, hi + pad)
    axes = fig.subplots(1, len(protocols), squeeze=False)[0]
    colors = _colors(protocols)
    for ax, protocol in zip(axes, protocols, strict=True):
        mine = rows[rows["protocol"] == protocol]
        ax.plot(limits, limits, color="0.4", lw=1, ls="--", label="y = x")
        crowded = len(mine) > 1000  # thousands of cells: small, faint points so density shows
        ax.scatter(
            mine["published"],
            mine["ours"],
            s=3 if crowded else 14,
            alpha=0.25 if crowded else 0.7,
            color=colors[protocol],
            edgecolors="none",
        )
        summary = comparison.summary.set_index("protocol").loc[protocol]
        ax.text(
            0.03,
            0.97,
            f"n = {len(mine)}\nτ = {summary['tau'].format()}\nmean Δ = {summary['mean_change'].format(2, signed=True)}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )
        ax.set(xlim=limits, ylim=limits, aspect="equal", title=protocol)
        ax.set_xlabel(f"published {comparison.published_column} (%)")
        ax.set_ylabel(f"re-evaluated {comparison.metric} accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{comparison.dataset}: re-evaluated vs published ({comparison.metric})")
    return fig


def tau_curves(comparison: MetricComparison) -> Figure:
    """τ@K for each protocol vs published (95% CI), against the seed-noise band, the 12-epoch bar and
    the floor (parameter count and MACs alone)."""
    curves = comparison.tau_at_k
    fig = Figure(figsize=(10.0, 5.0), layout="constrained")
    if not curves.empty and comparison.protocols:  # yardsticks on the first protocol's cells (usually everyone's)
        first = comparison.protocols[0]
        yardstick = curves["kind"].isin(["floor", "12-epoch bar", "NB201 seeds"])
        curves = curves[~yardstick | (curves["cells_of"] == first)]
    if curves.empty or curves["tau"].notna().sum() == 0:
        return _message(fig, "τ is n/a at every K (too few cells)")
    ax = fig.add_subplot()
    colors = _colors(comparison.protocols)

    noise = curves[curves["kind"] == "NB201 seeds"]
    if not noise.empty:
        band = noise.groupby("k")["tau"].agg(["min", "max"]).dropna().sort_index(ascending=False)
        ax.fill_between(band.index, band["min"], band["max"], color="0.6", alpha=0.35, label="NB201 seed vs seed")
    for curve, rows in curves[curves["kind"] == "our seeds"].groupby("curve"):
        rows = rows.dropna(subset=["tau"])
        color = colors.get(str(curve).split(" seeds ")[0], "0.3")
        ax.plot(rows["k"], rows["tau"], color=color, alpha=0.6, lw=1, ls=":", marker=".", label=f"ours: {curve}")
    for (curve, rows), style in zip(curves[curves["kind"] == "floor"].groupby("curve"), ("-", ":"), strict=False):
        rows = rows.dropna(subset=["tau"])
        label = f"floor: {str(curve).replace(' vs published', '')} (no training)"
        ax.plot(rows["k"], rows["tau"], color="tab:red", lw=1.2, ls=style, marker="v", ms=4, alpha=0.8, label=label)
    bar = curves[curves["kind"] == "12-epoch bar"].dropna(subset=["tau"])
    if not bar.empty:
        ax.plot(bar["k"], bar["tau"], color="black", lw=1.5, ls="--", marker="s", ms=4, label="NB201 12 vs 200 epochs")
    for curve, rows in curves[curves["kind"] == "between protocols"].groupby("curve"):
        rows = rows.dropna(subset=["tau"])
        ax.plot(rows["k"], rows["tau"], color="tab:gray", lw=1.2, ls="-.", marker="^", ms=4, label=curve)
    shown = [p for p in comparison.protocols if f"{p} vs published" in set(curves["curve"])]
    lows = [float(np.nanmin(curves["tau"]))]
    for i, protocol in enumerate(shown):
        rows = curves[(curves["kind"] == "protocol") & (curves["curve"] == f"{protocol} vs published")]
        rows = rows.dropna(subset=["tau"])
        if rows.empty:
            continue
        low = rows["low"].where(np.isfinite(rows["low"]), rows["tau"])
        high = rows["high"].where(np.isfinite(rows["high"]), rows["tau"])
        lows.append(float(low.min()))
        dodge = 1.06 ** (i - (len(shown) - 1) / 2)  # side by side on the log axis, so CIs do not hide each other
        ax.errorbar(
            rows["k"] * dodge,
            rows["tau"],
            yerr=np.vstack([rows["tau"] - low, high - rows["tau"]]),
            color=colors[protocol],
            marker="o",
            capsize=3,
            lw=2,
            label=f"{protocol} vs published (95% CI)",
        )
    ks = sorted(set(curves["k"]), reverse=True)
    bottom = max(-1.05, min(-0.05, min(lows) - 0.05))
    for k in ks:
        if curves[(curves["kind"] == "protocol") & (curves["k"] == k)]["tau"].notna().sum() == 0:
            ax.text(k, bottom + 0.03, "n/a\n(too few\ncells)", ha="center", va="bottom", fontsize=8, color="0.3")
    ax.set_xscale("log")
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.minorticks_off()
    ax.set_xlim(max(ks) * 1.3, min(ks) / 1.3)
    ax.set_ylim(bottom, 1.02)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_xlabel("top-K% of cells (chosen by published accuracy)")
    ax.set_ylabel("Kendall τ-b")
    ax.set_title(f"{comparison.dataset} ({comparison.metric}): rank agreement within the top-K%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def rank_changes(comparison: MetricComparison, cells: pd.DataFrame, top: int = 20) -> Figure:
    """Ranks of the published top cells, published vs each protocol (1 = best among compared cells)."""
    rows = cells[(cells["dataset"] == comparison.dataset) & (cells["metric"] == comparison.metric)]
    wide = rows.pivot_table(index="nb201_index", columns="protocol", values="ours", aggfunc="mean")
    wide = wide[[p for p in comparison.protocols if p in wide.columns]].dropna()
    published = rows.groupby("nb201_index")["published"].first().reindex(wide.index).dropna()
    wide = wide.reindex(published.index)
    fig = Figure(figsize=(2.2 + 2.2 * (1 + len(wide.columns)), 6.0), layout="constrained")
    if len(wide) < 2:
        return _message(fig, "fewer than 2 cells have every protocol and a published value")
    ranks = pd.DataFrame({"published": published.sort_index().rank(ascending=False, method="first")})
    for protocol in wide.columns:
        ranks[protocol] = wide[protocol].rank(ascending=False, method="min")
    chosen = stats.top_cells(published, 100 * min(top, len(published)) / len(published))
    ranks = ranks.loc[chosen]
    ax = fig.add_subplot()
    xs = np.arange(len(ranks.columns))
    cmap = colormaps["viridis"]
    for i, (index, r) in enumerate(ranks.iterrows()):
        color = cmap(0.85 * i / max(1, len(ranks) - 1))  # viridis past 0.85 is too pale on white
        ax.plot(xs, r.to_numpy(), color=color, marker="o", lw=1.5, alpha=0.85)
        ax.annotate(f"#{index}", (0, r.iloc[0]), xytext=(-8, 0), textcoords="offset points", ha="right",
                    va="center", fontsize=7, color=color)  # fmt: skip
        ax.annotate(f"{int(r.iloc[-1])}", (xs[-1], r.iloc[-1]), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=7, color=color)  # fmt: skip
    ax.set_xticks(xs, ["published", *ranks.columns[1:]])
    ax.set_xlim(-0.6, len(xs) - 0.4)
    worst = float(ranks.to_numpy().max())
    ax.set_ylim(worst + 0.5 + 0.03 * worst, 0.5)
    ax.set_ylabel(f"rank among {len(published)} compared cells (1 = best)")
    ax.set_title(
        f"{comparison.dataset} ({comparison.metric}): rank of the published top {len(ranks)} cells",
        fontsize=11,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if math.isfinite(worst) and worst > 50:
        # Linear over the top ranks the cells start from, logarithmic for the long fall below them.
        ax.set_yscale("symlog", linthresh=len(ranks), linscale=2.0)
        ticks = [t for t in (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if t <= worst * 1.2]
        ax.set_yticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(worst * 1.2, 0.5)
    return fig


def base_lr_curve(record: dict) -> Figure:
    """The finder's grid: mean end-of-epoch training loss ± SE per LR (seeds as dots), diverged points
    marked at the top, the threshold (minimum + its SE) and the picked LR."""
    points = pd.DataFrame(record.get("points", []))
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    if points.empty:
        return _message(fig, "no base-LR trials recorded")
    ax = fig.add_subplot()
    ok = points[points["mean"].notna()]
    for _, p in points.iterrows():
        seeds = [v for v in p["losses"] if v is not None]
        ax.scatter([p["lr"]] * len(seeds), seeds, s=10, color="tab:blue", alpha=0.35, edgecolors="none")
    ax.errorbar(
        ok["lr"], ok["mean"], yerr=ok["se"].fillna(0.0), color="tab:blue", marker="o", capsize=3, lw=1.5,
        label="mean over seeds ± SE",
    )  # fmt: skip
    top = float(ok["mean"].max()) if not ok.empty else 1.0
    bad = points[points["mean"].isna()]
    if not bad.empty:
        ax.scatter(bad["lr"], [top * 1.05] * len(bad), marker="x", color="tab:red", label="diverged (+∞)")
    threshold = record.get("threshold")
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, color="0.4", ls="--", lw=1, label="minimum + its SE")
    ax.axvline(record["base_lr"], color="tab:green", lw=2, label=f"picked {record['base_lr']:g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (constant for the epoch)")
    ax.set_ylabel(f"training loss ({record.get('score_name', 'end-pass')} score)")
    ax.set_title(f"base-LR finder, {record.get('protocol', '')} (init {record.get('init', '')}) on the skip chain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
