"""The report's tables: a `MetricComparison` (and a run's exclusions) as small frames of strings.

Every table that shows a τ shows its yardsticks beside it, computed on the same cells: the params and
MACs floor, NB201's 12-epoch bar, NB201's 200-epoch seed-vs-seed τ and this budget's own seed ceiling.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from analysis.comparison import MetricComparison
from analysis.runs import RunData
from analysis.yardsticks import SeedRange, curve_at

FLOOR_COLUMN = "params floor τ"
MACS_COLUMN = "MACs floor τ"
BAR_COLUMN = "12-epoch bar τ"
NB201_SEEDS_COLUMN = "NB201 seed vs seed τ"
CEILING_COLUMN = "this budget's seed ceiling τ"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub pipe table of a small frame (cells already formatted as strings)."""
    if frame.empty:
        return "_(none)_"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _cell(value: object) -> str:
    if isinstance(value, stats.Estimate):
        return value.format()
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def _tau_cell(row: pd.Series) -> str:
    if not math.isfinite(row["tau"]):
        return f"n/a ({row['note']})" if row["note"] else "n/a"
    if math.isfinite(row["low"]) and math.isfinite(row["high"]):
        return f"{row['tau']:.3f} [{row['low']:.3f}, {row['high']:.3f}] (n={int(row['n'])})"
    return f"{row['tau']:.3f} (n={int(row['n'])})"


def _seeds(value: SeedRange | None) -> str:
    return "n/a (no per-seed source)" if value is None else value.format()


def _ceiling(value: stats.Estimate) -> str:
    return value.format(with_n=True) if value.ok else f"not measured ({value.note})"


def _signed(value: stats.Estimate | None) -> str:
    return "" if value is None else value.format(3, signed=True)


def yardstick_columns(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The yardstick columns of a summary-like frame (`floor_params`, `floor_macs`, `bar`, `nb201_seeds`)."""
    return {
        FLOOR_COLUMN: [e.format() for e in frame["floor_params"]],
        MACS_COLUMN: [e.format() for e in frame["floor_macs"]],
        BAR_COLUMN: [e.format() for e in frame["bar"]],
        NB201_SEEDS_COLUMN: [_seeds(v) for v in frame["nb201_seeds"]],
    }


def summary_table(c: MetricComparison) -> pd.DataFrame:
    """The report's main table: each protocol vs published, its yardsticks on its own cells, and the
    paired differences the verdicts read."""
    s = c.summary
    return pd.DataFrame(
        {
            "protocol": s["protocol"],
            "cells": s["cells"],
            "seeds/cell": s["seeds_per_cell"].map(lambda v: "n/a" if math.isnan(v) else f"{v:.1f}"),
            "mean ours (%)": s["mean_ours"],
            "mean published (%)": s["mean_published"],
            "mean Δ [95% CI]": s["mean_change"].map(lambda e: e.format(2, signed=True)),
            "median Δ [95% CI]": s["median_change"].map(lambda e: e.format(2, signed=True)),
            "Kendall τ-b [95% CI]": s["tau"].map(lambda e: e.format()),
            "Spearman ρ [95% CI]": s["rho"].map(lambda e: e.format()),
            **yardstick_columns(s),
            CEILING_COLUMN: s["ceiling"].map(_ceiling),
            "τ − params floor (paired)": s["vs_floor"].map(_signed),
            "τ − 12-epoch bar (paired)": s["vs_bar"].map(_signed),
        }
    )


def paper_table(c: MetricComparison) -> pd.DataFrame:
    """The paper's comparison, each row with the yardsticks of its cells."""
    p = c.paper_comparison
    ceilings = [
        "; ".join(f"{name} {_ceiling(e)}" for name, e in row.items())
        if any(e.ok for e in row.values())
        else "not measured (one seed)"
        for row in p["ceiling"]
    ]
    return pd.DataFrame(
        {
            "comparison": p["comparison"],
            "cells": p["gain"].map(lambda e: e.n),
            "mean gain, points [95% CI]": p["gain"].map(lambda e: e.format(2, signed=True)),
            "Kendall τ-b [95% CI]": p["tau"].map(lambda e: e.format()),
            "τ vs published, new − old (paired)": p["tau_difference"].map(_signed),
            "τ(Σ L_p³, per-cell gain)": p["depth_tau"].map(lambda e: e.format()),
            **yardstick_columns(p),
            CEILING_COLUMN: ceilings,
            "paper": p["paper"].map(lambda v: "" if v is None or v != v else f"+{v:.2f}"),
        }
    )


def cell_groups(c: MetricComparison) -> list[list[str]]:
    """Protocols grouped by identical cell sets (usually one group: every protocol has every cell)."""
    groups: list[list[str]] = []
    for protocol in c.protocols:
        cells = c.cells_by_protocol.get(protocol, pd.Index([]))
        for group in groups:
            if c.cells_by_protocol[group[0]].equals(cells):
                group.append(protocol)
                break
        else:
            groups.append([protocol])
    return groups


def tau_table(c: MetricComparison, group: list[str] | None = None) -> pd.DataFrame:
    """τ@K for a group of protocols sharing their cells, beside the yardsticks on those cells; seed pairs
    collapsed to their range. Default group: the first protocol's."""
    curves = c.tau_at_k
    if curves.empty:
        return pd.DataFrame()
    group = group or cell_groups(c)[0]
    ks = sorted(set(curves["k"]), reverse=True)
    columns: dict[str, list[str]] = {"top K%": [f"{k:g}" for k in ks]}
    shown = [("protocol", p) for p in group]
    shown += [("between protocols", f"{a} ∩ {b}") for i, a in enumerate(group) for b in group[i + 1 :]]
    shown += [("floor", group[0]), ("12-epoch bar", group[0])]
    for kind, cells_of in shown:
        picked = curves[(curves["kind"] == kind) & (curves["cells_of"] == cells_of)]
        for curve, rows in picked.groupby("curve", sort=False):
            rows = rows.set_index("k")
            columns[str(curve)] = [_tau_cell(rows.loc[k]) for k in ks]
    for kind, label, cells_of in (
        ("NB201 seeds", "NB201 seed vs seed (range)", [group[0]]),
        ("our seeds", "this budget's seed vs seed (range)", group),
    ):
        if kind == "our seeds" or (curves["kind"] == kind).any():
            columns[label] = [_range(curves, kind, k, cells_of) for k in ks]
    return pd.DataFrame(columns)


def _range(curves: pd.DataFrame, kind: str, k: float, cells_of: list[str]) -> str:
    rows = curve_at(curves, kind, k)
    rows = rows[rows["cells_of"].isin(cells_of)]
    if rows.empty:
        measured = (curves["kind"] == kind) & curves["cells_of"].isin(cells_of)
        return "n/a (too few cells)" if measured.any() else "n/a (one seed)"
    lo, hi, n = f"{rows['tau'].min():.3f}", f"{rows['tau'].max():.3f}", int(rows["n"].min())
    return (lo if lo == hi else f"{lo} – {hi}") + f" (n≥{n})"


def tau_tables(c: MetricComparison) -> list[tuple[str, pd.DataFrame]]:
    """One τ@K table per cell set (caption, table); τ between protocols of different cell sets last."""
    groups = cell_groups(c)
    out = []
    for group in groups:
        n = len(c.cells_by_protocol[group[0]])
        caption = ", ".join(f"`{p}`" for p in group) + f": {n} cells" + (", each yardstick on these cells")
        out.append((caption, tau_table(c, group)))
    if len(groups) > 1:
        curves = c.tau_at_k[c.tau_at_k["kind"] == "between protocols"]
        if not curves.empty:
            ks = sorted(set(c.tau_at_k["k"]), reverse=True)
            table = {"top K%": [f"{k:g}" for k in ks]}
            for curve, rows in curves.groupby("curve", sort=False):
                rows = rows.set_index("k")
                table[str(curve)] = [_tau_cell(rows.loc[k]) for k in ks]
            out.append(("between protocols, on the cells both have", pd.DataFrame(table)))
    return out


def ablation_grid(c: MetricComparison) -> pd.DataFrame:
    """The 2x2 as rows (init) by columns (LR); each cell with its yardsticks on its own cells."""
    a = c.ablation
    grid: dict[str, list[str]] = {"init \\ LR": ["default init", "arch init"]}
    for lr in ("fixed LR", "scaled LR"):
        column = []
        for init in grid["init \\ LR"]:
            r = a[(a["init"] == init) & (a["lr"] == lr)].iloc[0]
            gain = "baseline" if r["protocol"] == r["baseline"] else f"gain {r['gain'].format(2, signed=True)}"
            column.append(
                f"`{r['protocol']}`: {gain}; τ {r['tau'].format()}; on its cells: params floor "
                f"{r['floor_params'].format()}, 12-epoch bar {r['bar'].format()}, NB201 seeds "
                f"{_seeds(r['nb201_seeds'])}, this budget's ceiling {_ceiling(r['ceiling'])}"
            )
        grid[lr] = column
    return pd.DataFrame(grid)


def overlap_table(c: MetricComparison) -> pd.DataFrame:
    o = c.top_k_overlap
    if o.empty:
        return o
    wide = o.assign(text=o.apply(lambda r: f"{int(r['shared'])}/{int(r['n_top'])}", axis=1))
    table = wide.pivot(index="k", columns="protocol", values="text").sort_index(ascending=False)
    table = table[[p for p in c.protocols if p in table.columns]]
    return (
        table.reset_index()
        .rename(columns={"k": "top K%"})
        .assign(**{"top K%": lambda t: t["top K%"].map("{:g}".format)})
    )


def movers_table(c: MetricComparison) -> pd.DataFrame:
    m = c.movers
    if m.empty:
        return m
    return pd.DataFrame(
        {
            "protocol": m["protocol"],
            "index": m["nb201_index"],
            "cell": m["arch_str"].map(lambda s: f"`{s}`"),
            "published (%)": m["published"],
            "ours (%)": m["ours"],
            "rank published → ours": [f"{a} → {b}" for a, b in zip(m["rank_published"], m["rank_ours"], strict=True)],
            "moved": m["rank_change"].map(lambda v: f"{v:+d}"),
        }
    )


def exclusions_table(run: RunData) -> pd.DataFrame:
    e = run.excluded
    if e.empty:
        return e
    statuses = [
        c
        for c in e.columns
        if c not in {"dataset", "protocol", "trials", "cells", "cells_kept", "cells_excluded", "shared_trials"}
    ]
    statuses = [c for c in statuses if c != "at_chance"]
    chance = ["at_chance"] if "at_chance" in e else []
    out = e[["dataset", "protocol", "trials", *statuses, *chance, "shared_trials", "cells", "cells_excluded"]].copy()
    return out.rename(
        columns={
            "shared_trials": "shared (copied)",
            "cells_excluded": "cells left out",
            "at_chance": "scored at chance",
        }
    )
