"""NB201 re-evaluation, in three layers and a CLI on top (`python -m pipeline`):

- `pipeline.train`: the network, the data and the training loop (torch; no Ray, no run folder);
- `pipeline.run`: a run's bookkeeping: config, units, store, identity, lock, rows (no torch, no Ray);
- `pipeline.sweep`: Ray: connection, pre-flight checks, the sweep, the base-LR finder, the task body;
- `__main__`, `commands`, `jobs`, `plan`: the command line, Ray Jobs and the cost planner.

Imports go one way only (CLI → sweep → run → train → cells/core); `make lint` checks it.
Importing the package is cheap: each layer loads its heavy dependencies itself.
"""
