"""The init x LR 2x2 of an ablation run: which protocol sits in which quadrant, its gain over the
default-init fixed-LR protocol, and its τ with the yardsticks of its own cells."""

from __future__ import annotations

import pandas as pd

from analysis import stats
from analysis.settings import Settings

DEFAULT_INITS: tuple[str, ...] = ("torch-default",)
"""Init rules the ablation counts as "default init" (NB201's); `arch-*` are "arch init"."""


def _quadrant(protocol_rows: pd.DataFrame) -> tuple[str, str] | None:
    """(init, LR) quadrant of one protocol's trials: default/arch init x fixed/scaled LR; None for a μP
    protocol (`parametrization: mup`: another optimizer, outside the 2x2)."""
    if "parametrization" in protocol_rows and (protocol_rows["parametrization"] == "mup").any():
        return None
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
    by_protocol: dict[str, pd.Series], trials: pd.DataFrame, summary: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """The init x LR 2x2: per quadrant its protocol, the mean gain over the default-init fixed-LR
    protocol (the `nb201` cell), τ vs published and its yardsticks on the protocol's own cells (its
    summary row). Empty unless each quadrant has exactly one protocol."""
    if "init_rule" not in trials:
        return pd.DataFrame()
    quadrants: dict[tuple[str, str], list[str]] = {}
    for protocol in by_protocol:
        q = _quadrant(trials[trials["protocol"] == protocol])
        if q is not None:
            quadrants.setdefault(q, []).append(protocol)
    wanted = [(i, lr) for i in ("default init", "arch init") for lr in ("fixed LR", "scaled LR")]
    if any(len(quadrants.get(q, [])) != 1 for q in wanted):
        return pd.DataFrame()
    base = quadrants[("default init", "fixed LR")][0]
    by_name = summary.set_index("protocol")
    rows = []
    for init, lr in wanted:
        (protocol,) = quadrants[(init, lr)]
        own = by_name.loc[protocol]
        gain = stats.change(by_protocol[protocol], by_protocol[base], "mean", settings.n_resamples, settings.seed)
        rows.append(
            {
                "init": init,
                "lr": lr,
                "protocol": protocol,
                "baseline": base,
                "gain": gain,
                "tau": own["tau"],
                "floor_params": own["floor_params"],
                "bar": own["bar"],
                "nb201_seeds": own["nb201_seeds"],
                "ceiling": own["ceiling"],
            }
        )
    return pd.DataFrame(rows)
