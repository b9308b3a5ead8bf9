"""Time `cells export` (all 15,625 cells: paths, classes under three init rules, NB201 classes).

Run: .venv/bin/python perf/cells_bench.py   (target: under 10 s on a 2-core CPU)
Prints the cold export time and its ratio to the 10 s budget.
"""

from __future__ import annotations

import time

BUDGET_S = 10.0


def main() -> None:
    start = time.perf_counter()
    from cells.export import cells_table  # imports count: a user pays them too

    table = cells_table()
    elapsed = time.perf_counter() - start
    print(f"cells export: {len(table):,} cells in {elapsed:.2f} s (cold, imports included)")
    print(f"budget {BUDGET_S:.0f} s -> {elapsed / BUDGET_S:.2f} of budget; {len(table) / elapsed:,.0f} cells/s")


if __name__ == "__main__":
    main()
