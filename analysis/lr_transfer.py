"""The LR-transfer study's report (issue 18; paper §4.1-4.2, Fig. 3): does the LR rule predict each
cell's own maximal LR? Reads `<run>/lr_transfer.parquet` (written by the study's driver: per cell and
score, the empirical maximal LR, its interval and each reading's prediction) and writes report.md and
one predicted-vs-empirical plot per score.

Per reading: the Pearson r of the log LRs (the paper's statistic: 0.856 for CNNs, 0.838 for MLPs on
CIFAR-10), Kendall τ, the log-log slope (the rule says 1), the mean |log10 error| and the mean log10
ratio empirical/predicted (how far the base is off), each with a percentile bootstrap CI over cells.
The skip chain is plotted but left out of the statistics: its prediction is its own pick.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from analysis import stats
from analysis.settings import MIN_FOR_VERDICT, Settings
from analysis.tables import markdown_table
from core.atomic import atomic_write_text
from core.runfiles import LR_TRANSFER_TABLE, REPORT_FILE, RESULTS_TABLE, SPEC_FILE

PAPER_R = {"CNN topologies (Fig. 3)": 0.856, "MLP topologies (Fig. 2)": 0.838}
"""The paper's Pearson r of log predicted vs log empirical maximal LR on CIFAR-10 (digest §5)."""
READINGS: dict[str, str] = {"official": "Eq. 8 (official)", "kernel": "Eq. 9 (kernel)", "nb201": "NB201's 0.1"}


def is_study(run_dir: Path) -> bool:
    """Whether the run is an LR-transfer study (its spec.yaml sets `lr_transfer`)."""
    return _spec(run_dir).get("lr_transfer") is not None


def _spec(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SPEC_FILE
    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return spec if isinstance(spec, dict) else {}


def _logs(frame: pd.DataFrame, reading: str) -> tuple[np.ndarray, np.ndarray]:
    usable = frame[~frame["is_base"] & np.isfinite(frame["empirical_lr"]) & np.isfinite(frame[f"pred_{reading}"])]
    return np.log10(usable[f"pred_{reading}"].to_numpy(float)), np.log10(usable["empirical_lr"].to_numpy(float))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log empirical on log predicted (1 if the per-cell ratios are right)."""
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 and np.ptp(x) > 0 else math.nan


def mean_abs_error(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(y - x))) if len(x) else math.nan


def mean_log_ratio(x: np.ndarray, y: np.ndarray) -> float:
    """Mean log10(empirical / predicted): 0 if the base is right; 10^this is the base's best correction."""
    return float(np.mean(y - x)) if len(x) else math.nan


def reading_table(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per reading: n, r, τ, slope, mean |log10 error| and mean log10 ratio, each with its CI."""
    rows = []
    for reading in READINGS:
        x, y = _logs(frame, reading)

        def estimate(statistic: stats.Statistic, x: np.ndarray = x, y: np.ndarray = y) -> stats.Estimate:
            return stats.paired_bootstrap(statistic, [x, y], settings.n_resamples, settings.seed)

        rows.append(
            {
                "reading": READINGS[reading],
                "n": len(x),
                "Pearson r (logs)": estimate(pearson),
                "Kendall τ": estimate(stats.kendall_tau),
                "slope": estimate(slope),
                "mean |log10 error|": estimate(mean_abs_error),
                "mean log10 (empirical/predicted)": estimate(mean_log_ratio),
            }
        )
    return pd.DataFrame(rows)


def error_difference(frame: pd.DataFrame, a: str, b: str, settings: Settings) -> stats.Estimate:
    """Paired bootstrap of mean |log10 error| of reading `a` minus that of `b` (negative: `a` is better)."""
    x_a, y = _logs(frame, a)
    x_b, _ = _logs(frame, b)
    if len(x_a) != len(x_b):
        return stats.Estimate(math.nan, note="the readings cover different cells")

    def difference(p: np.ndarray, q: np.ndarray, e: np.ndarray) -> float:
        return mean_abs_error(p, e) - mean_abs_error(q, e)

    return stats.paired_bootstrap(difference, [x_a, x_b, y], settings.n_resamples, settings.seed)


def findings(frame: pd.DataFrame, table: pd.DataFrame, settings: Settings) -> list[str]:
    """The sentences the numbers support (none below MIN_FOR_VERDICT cells)."""
    n = int(table["n"].max()) if not table.empty else 0
    if n < MIN_FOR_VERDICT:
        return [f"Only {n} cells with a pick and a prediction: numbers are shown, no conclusion is drawn."]
    by = table.set_index("reading")
    out = []
    ranked = sorted(READINGS, key=lambda r: by.loc[READINGS[r], "mean |log10 error|"].value)
    best, runner = ranked[0], ranked[1]
    diff = error_difference(frame, best, runner, settings)
    sure = diff.ok and diff.high < 0
    out.append(
        f"{READINGS[best]} predicts best (smallest mean |log10 error|, "
        f"{by.loc[READINGS[best], 'mean |log10 error|'].format()}); "
        + (
            f"ahead of {READINGS[runner]} by a margin the bootstrap resolves ({diff.format()})."
            if sure
            else f"not distinguishable from {READINGS[runner]} (difference {diff.format()})."
        )
    )
    official = by.loc[READINGS["official"]]
    r = official["Pearson r (logs)"]
    out.append(
        f"Eq. 8's Pearson r of the logs is {r.format()} against the paper's 0.856 for CNN topologies: "
        + ("within its CI." if r.ok and r.low <= 0.856 <= r.high else "outside its CI." if r.ok else "undefined.")
    )
    out.append(_ratios_or_base(official["slope"], official["mean log10 (empirical/predicted)"]))
    edges = int((frame["at_edge"] != "").sum())
    if edges:
        out.append(
            f"{edges} cell(s) picked at an edge of the grid or with every LR diverged: their maxima are censored."
        )
    return out


def _ratios_or_base(fit: stats.Estimate, offset: stats.Estimate) -> str:
    """Per-cell ratios (slope 1) or the base (offset 0): which part of Eq. 8 the one-epoch maxima contradict."""
    if not (fit.ok and offset.ok):
        return "Whether the per-cell ratios or the base are off is undetermined (a statistic is undefined)."
    ratios = fit.low <= 1 <= fit.high
    base = offset.low <= 0 <= offset.high
    factor = 10**offset.value
    ratio_words = (
        f"the per-cell ratios hold (log-log slope {fit.format()}, 1 inside its CI)"
        if ratios
        else f"the per-cell ratios do not hold (log-log slope {fit.format()}, 1 outside its CI: the rule spreads the "
        f"cells' LRs {'more' if fit.value < 1 else 'less'} than their one-epoch maxima differ)"
    )
    if not ratios:  # a wrong slope moves the mean ratio too: it no longer isolates the base
        base_words = (
            f"on average the cells' maxima are x{factor:.2g} the predictions ({offset.format()}), an average "
            "that mixes the base with the wrong ratios (the base itself is the skip chain's pick)"
        )
    elif base:
        base_words = f"the base fits (mean log10 ratio empirical/predicted {offset.format()}, 0 inside its CI)"
    else:
        base_words = (
            f"the base is off: the cells' maxima are x{factor:.2g} the predictions on average ({offset.format()})"
        )
    return (
        f"For Eq. 8 (the `scaled` protocol's rule), {ratio_words}, and {base_words}. This is the paper's one-epoch "
        "criterion at this run's shape and data, not the sweep's accuracy after its full budget."
    )


def figure(frame: pd.DataFrame, score: str) -> Figure:
    """Predicted vs empirical maximal LR on log axes, y = x, the interval as error bars (paper's Fig. 3)."""
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    grid = (float(frame["grid_low"].iloc[0]), float(frame["grid_high"].iloc[0]))
    for k, reading in enumerate(("official", "kernel")):
        ax = fig.add_subplot(1, 2, k + 1)
        x, y = _logs(frame, reading)
        rows = frame[np.isfinite(frame["empirical_lr"]) & np.isfinite(frame[f"pred_{reading}"])]
        lower = (rows["empirical_lr"] - rows["lr_low"]).clip(lower=0)
        edge = rows["at_edge"] != ""
        for mask, face in ((~edge, "tab:blue"), (edge, "none")):
            part = rows[mask]
            ax.errorbar(
                part[f"pred_{reading}"], part["empirical_lr"], yerr=[lower[mask], np.zeros(len(part))], fmt="o",
                mfc=face, color="tab:blue", capsize=3, label="cell (open: at a grid edge)" if face == "none" else "cell"
            )  # fmt: skip
        base = rows[rows["is_base"]]
        ax.scatter(base[f"pred_{reading}"], base["empirical_lr"], marker="*", s=160, color="tab:red", zorder=3,
                   label="skip chain (the base)")  # fmt: skip
        ax.plot(grid, grid, color="0.4", ls="--", lw=1, label="y = x")
        for bound in grid:
            ax.axhline(bound, color="0.7", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"predicted LR, {READINGS[reading]}")
        ax.set_ylabel("empirical maximal LR (one epoch)")
        ax.set_title(f"{READINGS[reading]}: r = {pearson(x, y):.3f} over {len(x)} cells ({score})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


def _cells_table(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.sort_values("sum_l3")
    return pd.DataFrame(
        {
            "cell": shown["arch_str"],
            "Σ L_p³": shown["sum_l3"],
            "empirical max LR [within 1 SE]": [
                "all diverged"
                if not math.isfinite(e)
                else f"{e:.3g} [{lo:.3g}, {e:.3g}]" + (f" ({g} edge)" if g else "")
                for e, lo, g in zip(shown["empirical_lr"], shown["lr_low"], shown["at_edge"], strict=True)
            ],
            "Eq. 8": shown["pred_official"].map("{:.3g}".format),
            "Eq. 9": shown["pred_kernel"].map("{:.3g}".format),
        }
    )


def write_study_report(run_dir: Path | str, settings: Settings | None = None) -> Path:
    """report.md and `lr_transfer_<score>.png` of an LR-transfer study; returns the report's path."""
    run_dir = Path(run_dir)
    settings = settings or Settings()
    path = run_dir / LR_TRANSFER_TABLE
    if not path.is_file():
        raise OSError(f"no {LR_TRANSFER_TABLE} in {run_dir}: rerun the study's `make evaluate` to write it")
    table = pd.read_parquet(path)
    spec = _spec(run_dir)
    search = spec.get("base_lr_search", {})
    out = [f"# LR-transfer report: {run_dir.name}", ""]
    out.append(
        f"Each cell's own maximal LR, found by the base-LR finder's grid and rule on that cell "
        f"({search.get('points')} LRs {search.get('low')}..{search.get('high')}, {len(search.get('seeds', []))} seeds, "
        f"{search.get('epochs')} epoch(s) at constant LR, init `{spec.get('lr_transfer', {}).get('init')}`), against "
        f"what the LR rule predicts from the skip chain's pick in the same run. Trials: `{RESULTS_TABLE}` (one row "
        f"per cell, LR and seed); picks and predictions: `{LR_TRANSFER_TABLE}`."
    )
    out.append("")
    for score, frame in table.groupby("score", sort=False):
        primary = bool(frame["primary"].iloc[0])
        base = float(frame["base_lr"].iloc[0])
        name = f"lr_transfer_{score}.png"
        figure(frame, str(score)).savefig(run_dir / name, dpi=120)
        readings = reading_table(frame, settings)
        title = f"## Score `{score}`" + (" (the run's score)" if primary else " (from the same trials)")
        out += [title, "", f"Base LR (the skip chain's pick under this score): **{base:.4g}**.", ""]
        out += [f"- {line}" for line in findings(frame, readings, settings)]
        out += ["", markdown_table(readings), "", f"![{name}]({name})", ""]
        if primary:
            out += ["Per cell:", "", markdown_table(_cells_table(frame)), ""]
    paper = "; ".join(f"{k}: r = {v}" for k, v in PAPER_R.items())
    out += [
        "## Method",
        "",
        f"- The paper's numbers (CIFAR-10): {paper}.",
        "- A cell's empirical maximal LR: the largest grid LR whose mean loss over seeds is within one SE of the "
        "minimum mean, below any LR that diverged for every seed; its interval is the range of grid LRs within "
        "that threshold (the pick is its top). A pick at an edge of the grid is censored.",
        "- Statistics over the cells with a pick and a prediction, the skip chain left out (its prediction is its "
        f"own pick); 95% percentile bootstrap over cells, {settings.n_resamples} resamples, seed {settings.seed}.",
        "- NB201's constant 0.1 has no r, τ or slope (a constant); its mean |log10 error| is the null model's.",
        "",
    ]
    return atomic_write_text(run_dir / REPORT_FILE, "\n".join(out))
