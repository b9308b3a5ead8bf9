"""The proxy ladder: how well does a CPU-sized `nb201` run rank architectures, against its budget?

For each budget (images, pixels, width C, cells per stage N, epochs, batch) it trains the SAME
cells with NB201's recipe (PyTorch-default init once `cells.INIT_RULES` has `torch-default`, else
He-normal `kaiming`; LR 0.1, per-epoch cosine, SGD Nesterov 0.9, wd 5e-4, one seed) and prints
Kendall τ-b of our test accuracy against the published CIFAR-10 test accuracy at 200 epochs
(`cifar10_test_acc_200ep`), over all cells and over the top half by published accuracy, with
bootstrap 95% CIs; next to it the floors on the same cells: τ of the parameter count, of the MACs
(at that budget's shape) and of NB201's own 12-epoch run (`cifar10_test_acc_12ep`); and the
spread of our accuracies (std over cells) against the sampling error of the test set
(√(p(1−p)/n) at the mean accuracy).

Cells: stratified by PUBLISHED accuracy, never by our results: the cells that have an
input→output path are sorted by `cifar10_test_acc_200ep`, cut into `--cells` equal-count strata
(quantiles), and one cell is drawn per stratum (seeded). So the set spans the published range in
proportion to how cells are spread over it. No-path cells (never trained) are not in the count.

No Ray: `--workers` processes (default 2), one torch thread each, one training per task. Every
finished training is appended to `--out` (JSON lines) at once; a rerun skips what is there
(resumable). `--report` prints the table from `--out` without training.

    .venv/bin/python perf/proxy_ladder.py --budgets j16e4,l16e4c4,j16e8c4,j16e4c4,base4k --cells 24
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("NB201_SHARED", ROOT.parent / "shared"))
LOSSLESS = SHARED / "data" / "cifar10"
JPEG = SHARED / "data" / "cifar10" / "jpeg_q75"
PUBLISHED = SHARED / "data" / "nb201" / "nb201_published.csv"
TARGET = "cifar10_test_acc_200ep"
EP12 = "cifar10_test_acc_12ep"


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


def init_rule() -> str:
    from cells import INIT_RULES

    return "torch-default" if "torch-default" in INIT_RULES else "kaiming"


def stratified_cells(count: int, seed: int = 0) -> list[int]:
    """One cell per equal-count stratum of published CIFAR-10 test accuracy (paths only)."""
    from cells import cell_at, paths

    table = pd.read_csv(PUBLISHED, usecols=["nb201_index", TARGET])
    table = table[[len(paths(cell_at(int(i)))) > 0 for i in table["nb201_index"]]]
    ranked = table.sort_values([TARGET, "nb201_index"])["nb201_index"].to_numpy()
    strata = np.array_split(ranked, count)
    rng = random.Random(seed)
    return sorted(int(rng.choice(list(s))) for s in strata)


# --- workers ---------------------------------------------------------------------------------

_DATA: dict[tuple, object] = {}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _train_one(task: tuple[str, int]) -> dict:
    import torch

    from cells import cell_at
    from core.config import TrainConfig
    from pipeline.train.data import load_splits
    from pipeline.train.engine import train

    torch.set_num_threads(1)
    name, index = task
    b = BUDGETS[name]
    key = (b.joined, b.px)
    if key not in _DATA:
        _DATA[key] = load_splits("cifar10", b.dirs, image_size=b.px)
    data = _DATA[key]
    cfg = TrainConfig(
        width=b.width,
        cells_per_stage=b.cells_per_stage,
        init_rule=init_rule(),
        lr=b.lr,
        epochs=b.epochs,
        batch_size=b.batch,
        schedule="epoch",
        seed=0,
        device="cpu",
        threads=1,
    )
    start, cpu = time.perf_counter(), time.process_time()
    record = train(cell_at(index), data, cfg)
    cpu_s = time.process_time() - cpu
    return {
        "budget": name,
        "index": index,
        "init": cfg.init_rule,
        "status": record.status,
        "test_acc": record.eval_acc.get("test"),
        "n_test": record.n_eval["test"],
        "n_train": record.n_train,
        "wall_s": time.perf_counter() - start,
        "cpu_s": cpu_s,  # one thread: the wall time this training would take on an idle core
        "images_per_s": record.images_per_s,
        "precision": record.precision,
        "fingerprint": data.fingerprint,
        "load": os.getloadavg()[0],
    }


# --- the table -------------------------------------------------------------------------------


def _tau(x: pd.Series, y: pd.Series) -> str:
    from analysis.stats import tau

    return tau(x, y, n_resamples=1000).format(2)


def table(rows: pd.DataFrame, cell_ids: list[int], budgets: list[str], workers: int) -> str:
    from cells import cell_at
    from cells.cost import network_macs
    from core.shape import NetShape

    pub = pd.read_csv(PUBLISHED).set_index("nb201_index").loc[cell_ids]
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
        acc = got["test_acc"].astype(float).fillna(10.0)  # diverged = chance
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="j16e4,l16e4c4,j16e8c4,j16e4c4,base4k", help=f"of {', '.join(BUDGETS)}")
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw within strata")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="results/proxy_ladder.jsonl")
    parser.add_argument("--report", action="store_true", help="print the table from --out, train nothing")
    args = parser.parse_args(argv)

    budgets = [b for b in args.budgets.split(",") if b]
    unknown = [b for b in budgets if b not in BUDGETS]
    if unknown:
        parser.error(f"unknown budgets {unknown}; known: {', '.join(BUDGETS)}")
    cell_ids = stratified_cells(args.cells, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["budget"], r["index"]))
    todo = [(b, i) for b in budgets for i in cell_ids if (b, i) not in done]
    if not args.report and todo:
        print(f"{len(todo)} trainings to run ({len(done)} already in {out}); load {os.getloadavg()}", flush=True)
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_worker_init, maxtasksperchild=None) as pool, out.open("a") as f:
            for k, record in enumerate(pool.imap_unordered(_train_one, todo), 1):
                f.write(json.dumps(record) + "\n")
                f.flush()
                print(
                    f"[{k}/{len(todo)}] {record['budget']} cell {record['index']}: "
                    f"{record['test_acc']} ({record['wall_s']:.0f} s, load {record['load']:.1f})",
                    flush=True,
                )
    rows = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
    print(table(rows, cell_ids, budgets, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
