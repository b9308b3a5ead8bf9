"""The proxy ladder: how well does a CPU-sized run rank architectures, against its budget?

Ladder (default): per budget (images, px, width C, cells per stage N, epochs, batch) the SAME cells
train as `nb201` (PyTorch-default init, LR 0.1, per-epoch cosine, one seed): Kendall τ-b of our test
accuracy vs published `cifar10_test_acc_200ep` over all cells and the top half (bootstrap 95% CIs);
the floors on those cells (τ of params, of MACs, of NB201's `cifar10_test_acc_12ep`); the spread over
cells vs the test set's sampling error. `--out`: JSON lines, one per training; a rerun skips those.

    .venv/bin/python perf/proxy_ladder.py --budgets j16e4,l16e4c4,j16e8c4,j16e4c4,base4k --cells 24

Trend (`--trend`, issue 18 item 6): at cpu.yaml's shape (14,000/3,000 images, 16 px, C=4, N=1, batch
64, fp32, seed 0) and each of `--epochs`, `nb201` and `scaled` (arch-source init, LR
`cells.scaled_lr(cell, --base-lr, "official").lr`) of a cell as one fused pair, on `--cells` (8):
both τs, Δτ, the mean gain `scaled − nb201` (points; paired bootstrap over cells), τ(params), wall;
then longest minus shortest budget. `--out-dir`: budget_trend.json (rewritten atomically after each
pair; a rerun skips the pairs it has), .md, .png. `--max-train/--max-eval` cap images (smoke runs).

    .venv/bin/python perf/proxy_ladder.py --trend --epochs 3,6,12,24 --cells 8 --out-dir results/budget_trend

Cells: one per equal-count stratum of PUBLISHED accuracy (cells with an input→output path; seeded),
never by our results. No Ray: `--workers` spawned processes (2), one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("NB201_SHARED", ROOT.parent / "shared"))
LOSSLESS = SHARED / "data" / "cifar10"
JPEG = SHARED / "data" / "cifar10" / "jpeg_q75"
TARGET = "cifar10_test_acc_200ep"
EP12 = "cifar10_test_acc_12ep"
BASE_LR = 0.152319  # `scaled`'s base LR: cpu.yaml's finder pick at its shape on its data (--base-lr)
PROTOCOLS = ("nb201", "scaled")
CHANCE = 10.0  # a diverged training counts as chance accuracy


@dataclass(frozen=True)
class Budget:
    name: str
    joined: bool  # lossless + JPEG (14,000 / 3,000) or lossless only (4,000 / 1,000)
    px: int
    width: int
    cells_per_stage: int
    epochs: int
    batch: int
    lr: float = 0.1
    max_train: int | None = None
    max_eval: int | None = None

    @property
    def dirs(self) -> list[str]:
        return [str(LOSSLESS), str(JPEG)] if self.joined else [str(LOSSLESS)]

    def label(self) -> str:
        images = "14k/3k" if self.joined else "4k/1k"
        return f"{images} {self.px}px C{self.width} N{self.cells_per_stage} {self.epochs}ep b{self.batch}"


BUDGETS = {
    b.name: b
    for b in (
        Budget("base4k", False, 32, 8, 1, 4, 256),  # today's cpu.yaml (per-epoch cosine)
        Budget("l16e4c4", False, 16, 4, 1, 4, 64),  # lossless images only, 16 px, C=4
        Budget("j32", True, 32, 8, 1, 4, 256),  # + all real images
        Budget("j16e4c4", True, 16, 4, 1, 4, 64),  # + 16 px, half the width, 4x the steps
        Budget("j16e4", True, 16, 8, 1, 4, 128),  # + 16 px, more steps
        Budget("j16e8", True, 16, 8, 1, 8, 128),
        Budget("j16e8c4", True, 16, 4, 1, 8, 64),  # width traded for steps
        Budget("j16e5c4", True, 16, 4, 1, 5, 64),
        Budget("j16e5", True, 16, 8, 1, 5, 128),
        Budget("j16e12c4", True, 16, 4, 1, 12, 64),
        Budget("j16e12", True, 16, 8, 1, 12, 128),
        Budget("j16e6", True, 16, 8, 1, 6, 128),
        Budget("j16e6b64", True, 16, 8, 1, 6, 64),
    )
}
CPU_SHAPE = Budget("cpu", True, 16, 4, 1, 6, 64)  # cpu.yaml's; the trend varies its epochs


def published() -> pd.DataFrame:
    """NB201's published table as shipped (`benchmarks/nb201_published.parquet`), indexed by `nb201_index`."""
    from benchmarks.published import read_published

    return read_published().set_index("nb201_index")


def stratified_cells(count: int, seed: int = 0) -> list[int]:
    """One cell per equal-count stratum of published CIFAR-10 test accuracy (paths only)."""
    from cells import cell_at, paths

    table = published()[[TARGET]].reset_index()
    table = table[[len(paths(cell_at(int(i)))) > 0 for i in table["nb201_index"]]]
    ranked = table.sort_values([TARGET, "nb201_index"])["nb201_index"].to_numpy()
    rng = random.Random(seed)
    return sorted(int(rng.choice(list(s))) for s in np.array_split(ranked, count))


def protocol_configs(b: Budget, index: int, protocols: Iterable[str], base_lr: float = BASE_LR) -> list:
    """One TrainConfig per protocol: `nb201` (torch-default, LR b.lr) or `scaled` (arch-source, the
    `official` scaled LR); otherwise equal, so a cell's protocols fuse."""
    from cells import cell_at, scaled_lr
    from core.config import TrainConfig

    shape = dict(width=b.width, cells_per_stage=b.cells_per_stage, epochs=b.epochs, batch_size=b.batch)
    common = TrainConfig(**shape, schedule="epoch", precision="fp32", seed=0, device="cpu", threads=1)
    lr = scaled_lr(cell_at(index), base_lr, "official").lr
    inits = {"nb201": ("torch-default", b.lr), "scaled": ("arch-source", lr)}
    return [common.with_(init_rule=init, lr=lr) for init, lr in map(inits.get, protocols)]


_DATA: dict[tuple, object] = {}


def _train(task: tuple[Budget, int, tuple[str, ...], float]) -> list[dict]:
    """One cell under one budget, its protocols fused when more than one; one row per protocol."""
    import torch

    from cells import cell_at
    from pipeline.train.data import load_splits
    from pipeline.train.engine import train
    from pipeline.train.fused import train_group

    torch.set_num_threads(1)
    b, index, protocols, base_lr = task
    if (key := (b.joined, b.px, b.max_train, b.max_eval)) not in _DATA:
        _DATA[key] = load_splits("cifar10", b.dirs, max_train=b.max_train, max_eval=b.max_eval, image_size=b.px)
    data = _DATA[key]
    cfgs = protocol_configs(b, index, protocols, base_lr)
    start, cpu = time.perf_counter(), time.process_time()
    records = train_group(cell_at(index), data, cfgs) if len(cfgs) > 1 else [train(cell_at(index), data, cfgs[0])]
    wall, cpu_s, load = time.perf_counter() - start, time.process_time() - cpu, os.getloadavg()[0]
    return [
        dict(budget=b.name, epochs=b.epochs, index=index, protocol=p, init=r.config.init_rule, lr=r.config.lr)
        | dict(status=r.status, test_acc=r.eval_acc.get("test"), n_test=r.n_eval["test"], n_train=r.n_train)
        | dict(wall_s=wall, cpu_s=cpu_s, images_per_s=r.images_per_s, precision=r.precision, load=load)
        | dict(fingerprint=data.fingerprint)  # wall_s, cpu_s (one thread: an idle core's wall): the group's
        for p, r in zip(protocols, records, strict=True)
    ]


def run_pool(tasks: list, workers: int, on_rows: Callable[[list[dict]], None]) -> None:
    """Train `tasks` on `workers` spawned processes (one torch thread each); `on_rows` as each ends."""
    print(f"{len(tasks)} tasks on {workers} workers; load {os.getloadavg()}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` as Ctrl-C: the pool stops its workers
    with mp.get_context("spawn").Pool(workers) as pool:
        for k, rows in enumerate(pool.imap_unordered(_train, tasks), 1):
            on_rows(rows)
            accs, r = ", ".join(f"{r['protocol']} {r['test_acc']}" for r in rows), rows[0]
            print(f"[{k}/{len(tasks)}] {r['budget']} cell {r['index']}: {accs} ({r['wall_s']:.0f} s)", flush=True)


def _tau(x: pd.Series, y: pd.Series) -> str:
    from analysis.stats import tau

    return tau(x, y, n_resamples=1000).format(2)


def table(rows: pd.DataFrame, cell_ids: list[int], budgets: list[str], workers: int) -> str:
    from cells import cell_at
    from cells.cost import network_macs
    from core.shape import NetShape

    pub = published().loc[cell_ids]
    target = pub[TARGET]
    top = target.sort_values(ascending=False).index[: len(cell_ids) // 2]
    lines = [
        f"cells: {len(cell_ids)} (stratified by published {TARGET}; no-path excluded), "
        f"published range {target.min():.1f}-{target.max():.1f}; top half = {len(top)} best by published",
        f"floors on these cells: τ(params) {_tau(pub['params_m_cifar10'], target)}, "
        f"τ(NB201 12 ep) {_tau(pub[EP12], target)}; top half: τ(params) "
        f"{_tau(pub.loc[top, 'params_m_cifar10'], target[top])}, τ(12 ep) {_tau(pub.loc[top, EP12], target[top])}",
        "",
        "| budget | init | cells | wall here (2 workers) | idle est. | img/s/worker | τ nb201 vs published [95% CI] "
        "| top-half τ | τ(MACs) | mean acc | spread (std) | test SE | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in budgets:
        b = BUDGETS[name]
        got = rows[rows["budget"] == name].drop_duplicates("index", keep="last").set_index("index")
        got = got.reindex([i for i in cell_ids if i in got.index])
        if got.empty:
            continue
        acc = got["test_acc"].astype(float).fillna(CHANCE)
        macs = pd.Series(
            {i: network_macs(cell_at(i), NetShape(b.width, b.cells_per_stage, b.px, 10)) for i in got.index}
        )
        p = acc.mean() / 100
        se = 100 * math.sqrt(p * (1 - p) / got["n_test"].iloc[0])
        wall = got["wall_s"].sum() / workers
        idle = got["cpu_s"].sum() / workers if "cpu_s" in got else math.nan  # CPU time: an idle machine's wall
        lines.append(
            f"| {b.label()} | {got['init'].iloc[0]} | {len(got)} | {wall / 60:.1f} min | {idle / 60:.1f} min | "
            f"{got['images_per_s'].median():,.0f} | {_tau(acc, target)} | "
            f"{_tau(acc.reindex(top).dropna(), target[top])} | {_tau(macs, target)} | {acc.mean():.1f} | "
            f"{acc.std():.2f} | {se:.2f} | {got['load'].mean():.1f} |"
        )
    return "\n".join(lines)


def load_trend(path: Path, setup: dict) -> dict:
    """The trend document at `path` ({setup, rows, wall_s}), or a new one; another setup is an error."""
    doc = json.loads(path.read_text()) if path.exists() else {"setup": setup, "rows": [], "wall_s": 0.0}
    if doc.get("setup") != setup:
        raise SystemExit(f"error: {path} was measured with {doc.get('setup')}, not {setup}; use another --out-dir")
    return doc


def trend_todo(rows: list[dict], epochs: list[int], cell_ids: list[int]) -> list[tuple[int, int]]:
    """(epochs, cell) pairs lacking a row of either protocol, longest first (the pool packs them best)."""
    have = {(r["epochs"], r["index"], r["protocol"]) for r in rows}
    todo = [(e, i) for e in epochs for i in cell_ids if any((e, i, p) not in have for p in PROTOCOLS)]
    return sorted(todo, key=lambda t: -t[0])


def accuracies(rows: pd.DataFrame, epochs: int, cell_ids: list[int]) -> pd.DataFrame:
    """Cells × protocols test accuracy at one budget (diverged = chance), cells with both protocols."""
    got = rows[(rows["epochs"] == epochs) & rows["index"].isin(cell_ids)].drop_duplicates(["index", "protocol"])
    acc = got.pivot(index="index", columns="protocol", values="test_acc").reindex(columns=list(PROTOCOLS))
    done = got.groupby("index")["protocol"].nunique() == len(PROTOCOLS)
    return acc.loc[done[done].index].astype(float).fillna(CHANCE)


def trend_summary(rows: pd.DataFrame, cell_ids: list[int], epochs: list[int], pub: pd.DataFrame, workers: int) -> list:
    """Per budget that has rows: both τs, Δτ, the mean gain (Estimates), τ(params), wall times."""
    from analysis import stats

    out = []
    for e in epochs:
        acc = accuracies(rows, e, cell_ids)
        got = rows[(rows["epochs"] == e) & rows["index"].isin(acc.index)]
        target, wall = pub.loc[acc.index, TARGET], got.drop_duplicates("index")[["wall_s", "cpu_s"]].sum() / workers
        s = dict(epochs=e, cells=len(acc), diverged=int(got["test_acc"].isna().sum()), wall_min=wall.wall_s / 60)
        s |= dict(idle_min=wall.cpu_s / 60, mean={p: float(acc[p].mean()) for p in PROTOCOLS})
        s |= dict(tau={p: stats.tau(acc[p], target) for p in PROTOCOLS}, gain=stats.change(acc.scaled, acc.nb201))
        s |= dict(dtau=stats.tau_difference(acc.scaled, target, acc.nb201, target))
        s |= dict(floor=stats.tau(pub.loc[acc.index, "params_m_cifar10"], target))
        out += [s] if len(acc) else []
    return out


def gap_change(rows: pd.DataFrame, cell_ids: list[int], first: int, last: int, pub: pd.DataFrame) -> dict:
    """Longest budget minus shortest, paired over the cells both hold: the gain (points) and each τ."""
    from analysis import stats

    a, b = accuracies(rows, last, cell_ids), accuracies(rows, first, cell_ids)
    common = a.index.intersection(b.index)
    a, b, target = a.loc[common], b.loc[common], pub.loc[common, TARGET]
    gain = stats.change(a["scaled"] - a["nb201"], b["scaled"] - b["nb201"])
    return {"gain": gain} | {p: stats.tau_difference(a[p], target, b[p], target) for p in PROTOCOLS}


def trend_table(summary: list[dict], setup: dict, change: dict | None = None) -> str:
    images = f"{setup['max_train'] or 14000:,} train / {setup['max_eval'] or 3000:,} test images"
    lines = [
        f"cpu.yaml's shape ({images}, 16 px, C=4, N=1, batch 64, fp32, 1 seed), `scaled` base LR "
        f"{setup['base_lr']:g} (`official` rule); τ: Kendall τ-b vs published {TARGET}; 95% bootstrap CIs over cells",
        "",
        "| epochs | cells | τ nb201 | τ scaled | Δτ scaled − nb201 | gain scaled − nb201 (points) "
        "| mean acc nb201 / scaled | τ(params) floor | diverged | wall (2 workers) | idle est. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['epochs']} | {s['cells']} | {s['tau']['nb201'].format(2)} | {s['tau']['scaled'].format(2)} | "
            f"{s['dtau'].format(2, signed=True)} | {s['gain'].format(2, signed=True)} | "
            f"{s['mean']['nb201']:.1f} / {s['mean']['scaled']:.1f} | {s['floor'].format(2)} | {s['diverged']} | "
            f"{s['wall_min']:.1f} min | {s['idle_min']:.1f} min |"
        )
    if change:
        first, last = summary[0]["epochs"], summary[-1]["epochs"]
        lines.append(
            f"\n{last} epochs minus {first}, paired over cells: gain {change['gain'].format(2, True)} points; "
            f"τ nb201 {change['nb201'].format(2, True)}; τ scaled {change['scaled'].format(2, True)}"
        )
    return "\n".join(lines)


def trend_plot(summary: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the PNG is drawn by Agg, no display needed

    x = np.array([s["epochs"] for s in summary], dtype=float)

    def draw(ax, ests: list, dx: float, **style) -> None:
        v, lo, hi = (np.array([getattr(e, k) for e in ests]) for k in ("value", "low", "high"))
        ax.errorbar(x * dx, v, yerr=np.nan_to_num(np.vstack([v - lo, hi - v])), marker="o", capsize=3, **style)

    fig = Figure(figsize=(10, 4), layout="tight")
    left, right = fig.subplots(1, 2)
    for p, dx, colour in (("nb201", 0.96, "tab:blue"), ("scaled", 1.04, "tab:orange")):
        draw(left, [s["tau"][p] for s in summary], dx, color=colour, label=p)
    left.plot(x, [s["floor"].value for s in summary], "k--", label="τ(params) floor")
    draw(right, [s["gain"] for s in summary], 1.0, color="tab:green")
    right.axhline(0, color="k", lw=0.8)
    left.set(ylabel=f"Kendall τ vs published ({TARGET})", title="rank agreement")
    right.set(ylabel="scaled − nb201 (points)", title="mean test-accuracy gain")
    for ax in (left, right):
        ax.set(xscale="log", xlabel="epochs")
        ax.set_xticks(x, [str(int(e)) for e in x])
        ax.minorticks_off()
    left.legend()
    fig.savefig(path, dpi=120)


def run_trend(args: argparse.Namespace) -> int:
    from core.atomic import atomic_write_text

    epochs = sorted({int(e) for e in args.epochs.split(",") if e})
    cell_ids = stratified_cells(args.cells or 8, args.seed)
    (out := Path(args.out_dir)).mkdir(parents=True, exist_ok=True)
    path, shape = out / "budget_trend.json", replace(CPU_SHAPE, max_train=args.max_train, max_eval=args.max_eval)
    setup = {"base_lr": args.base_lr, "lr_rule": "official", "max_train": args.max_train, "max_eval": args.max_eval}
    doc = load_trend(path, setup | {"shape": shape.label().replace(" 6ep", ""), "seed": 0})
    source = "the default: cpu.yaml's finder pick at this shape" if args.base_lr == BASE_LR else "from --base-lr"
    print(f"scaled base LR {args.base_lr:g} ({source}); cells {cell_ids}; epochs {epochs}", flush=True)
    todo = trend_todo(doc["rows"], epochs, cell_ids)
    if todo and not args.report:
        start, before = time.perf_counter(), doc["wall_s"]

        def keep(rows: list[dict]) -> None:
            key = (rows[0]["epochs"], rows[0]["index"])
            doc["rows"] = [r for r in doc["rows"] if (r["epochs"], r["index"]) != key] + rows
            doc["wall_s"] = before + time.perf_counter() - start
            atomic_write_text(path, json.dumps(doc, indent=1))

        tasks = [(replace(shape, name=f"{e}ep", epochs=e), i, PROTOCOLS, args.base_lr) for e, i in todo]
        run_pool(tasks, args.workers, keep)
    if not doc["rows"]:
        print(f"nothing measured yet in {path}")
        return 0
    rows, pub = pd.DataFrame(doc["rows"]), published()
    summary = trend_summary(rows, cell_ids, epochs, pub, args.workers)
    ends = (summary[0]["epochs"], summary[-1]["epochs"]) if len(summary) > 1 else None
    change = gap_change(rows, cell_ids, *ends, pub) if ends else None
    text = f"{trend_table(summary, doc['setup'], change)}\n\ntraining wall, all sessions: {doc['wall_s'] / 60:.1f} min"
    atomic_write_text(out / "budget_trend.md", text + "\n")
    trend_plot(summary, out / "budget_trend.png")
    print(f"{text}\nwrote {path}, {out / 'budget_trend.md'}, {out / 'budget_trend.png'}")
    return 0


def run_ladder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    budgets = [b for b in args.budgets.split(",") if b]
    unknown = [b for b in budgets if b not in BUDGETS]
    if unknown:
        parser.error(f"unknown budgets {unknown}; known: {', '.join(BUDGETS)}")
    cell_ids = stratified_cells(args.cells or 24, args.seed)
    (out := Path(args.out)).parent.mkdir(parents=True, exist_ok=True)
    stored = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    done = {(r["budget"], r["index"]) for r in stored}
    todo = [(BUDGETS[b], i, ("nb201",), BASE_LR) for b in budgets for i in cell_ids if (b, i) not in done]
    if not args.report and todo:
        print(f"{len(todo)} trainings to run ({len(done)} already in {out})", flush=True)
        with out.open("a") as f:
            run_pool(
                todo, args.workers, lambda rows: (f.write(json.dumps(rows[0]) + "\n"), f.flush(), stored.extend(rows))
            )
    print(table(pd.DataFrame(stored), cell_ids, budgets, args.workers))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="j16e4,l16e4c4,j16e8c4,j16e4c4,base4k", help=f"of {', '.join(BUDGETS)}")
    parser.add_argument("--cells", type=int, default=None, help="stratified cells (ladder 24, trend 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw within strata")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="results/proxy_ladder.jsonl", help="the ladder's JSON lines")
    parser.add_argument("--report", action="store_true", help="print the table from what is stored, train nothing")
    trend = parser.add_argument_group("trend: both protocols fused, at cpu.yaml's shape, against epochs")
    trend.add_argument("--trend", action="store_true")
    trend.add_argument("--epochs", default="3,6,12,24")
    trend.add_argument("--base-lr", type=float, default=BASE_LR, help=f"scaled's base LR ({BASE_LR}: cpu.yaml's)")
    trend.add_argument("--out-dir", default="results/budget_trend")
    trend.add_argument("--max-train", type=int, default=None, help="cap on training images (smoke runs)")
    trend.add_argument("--max-eval", type=int, default=None, help="cap on test images (smoke runs)")
    args = parser.parse_args(argv)
    return run_trend(args) if args.trend else run_ladder(args, parser)


if __name__ == "__main__":
    raise SystemExit(main())
