"""Ranking statistics and reports: how a re-evaluated run compares with the published NB201 numbers.

    run = load_run("results/<run>", open_reference("csv:.../nb201_published.csv"))
    write_report("results/<run>", reference="csv:.../nb201_published.csv")

Imports `benchmarks` and reads results tables; nothing imports this package.
"""

from analysis.comparison import MetricComparison, compare_run
from analysis.report import REPORT_FILE, write_report
from analysis.runs import COMPARED_METRICS, RESULT_COLUMN, RunData, RunTableError, load_run, read_results
from analysis.settings import Settings
from analysis.stats import TOP_K_PERCENT, Estimate, kendall_tau, rho, spearman_rho, tau, tau_at_k

__all__ = [
    "COMPARED_METRICS",
    "REPORT_FILE",
    "RESULT_COLUMN",
    "TOP_K_PERCENT",
    "Estimate",
    "MetricComparison",
    "RunData",
    "RunTableError",
    "Settings",
    "compare_run",
    "kendall_tau",
    "load_run",
    "read_results",
    "rho",
    "spearman_rho",
    "tau",
    "tau_at_k",
    "write_report",
]
