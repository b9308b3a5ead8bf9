"""TrialRow: the one declaration of the results table (field, type, meaning).

The SQLite schema (`sqlite_columns`), the Parquet schema (`arrow_schema`), the column table in
results/README.md (`markdown_table`, checked by a test) and the analysis all read it. A row is
one (run, dataset, protocol, cell, seed); a trained unit fills one row per class member.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cache
from typing import Any

from core import nb201

STATUSES: tuple[str, ...] = ("ok", "diverged", "no-path", "failed")
FINISHED: tuple[str, ...] = ("ok", "diverged", "no-path")
"""Statuses a rerun does not retrain; `failed` units are retried up to max_attempts."""


def column(meaning: str, *, key: bool = False, default: Any = None) -> Any:
    """A field of the table with its meaning; key columns have no default."""
    metadata = {"meaning": meaning, "key": key}
    if key:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrialRow:
    # --- identity (primary key) ---
    run_id: str = column("`<name>-<hash8>`: the run (config + data + code) that produced the row", key=True)
    dataset: str = column("`cifar10`, `cifar10-valid`, `cifar100` or `imagenet16_120` (NB201's splits)", key=True)
    protocol: str = column("protocol name from the config, e.g. `nb201`, `scaled`", key=True)
    nb201_index: int = column("official NB201 index of the cell", key=True)
    seed: int = column("training seed", key=True)
    # --- the cell ---
    arch_str: str = column("NB201 cell string", default="")
    class_id: int | None = column("isomorphism class under this protocol's init rule (`cells export`'s `class_id*`)")
    shared: bool = column(
        "True: not trained itself; the row copies the result of `trained_index`, a member of the same class",
        default=False,
    )
    trained_index: int | None = column("the cell that was actually trained for this row")
    # --- outcome ---
    status: str = column(
        "`ok`, `diverged` (NaN/inf loss; `diverged_epoch` says when), `no-path` (no input→output path: not "
        "trained), `failed` (an error; `error` says which)",
        default="failed",
    )
    error: str | None = column("error text for `failed`, reason for `no-path`")
    valid_acc: float | None = column("final top-1 (%) on the valid split; null where the dataset has none")
    test_acc: float | None = column("final top-1 (%) on the test split; null where the dataset has none")
    valid_loss: float | None = column("final mean cross-entropy on the valid split")
    test_loss: float | None = column("final mean cross-entropy on the test split")
    train_acc: float | None = column("last epoch's training top-1 (%), on augmented batches")
    train_loss: list[float] | None = column("mean training loss per epoch")
    end_train_loss: float | None = column(
        "mean cross-entropy of the final weights over one more pass of the training split (train-mode BN, "
        "augmented, no update): the finder's `end-pass` score; null unless the trial asked for it"
    )
    train_acc_curve: list[float] | None = column("training top-1 (%) per epoch")
    diverged_epoch: int | None = column("1-based epoch whose loss became non-finite")
    eval_epochs: list[float] | None = column(
        "1-based epochs of the learning curve (`eval_every` > 0; always ends with the last epoch); null when off"
    )
    valid_acc_curve: list[float] | None = column("top-1 (%) on the valid split at each of `eval_epochs`")
    test_acc_curve: list[float] | None = column("top-1 (%) on the test split at each of `eval_epochs`")
    # --- how it was trained ---
    init_rule: str = column(
        "`torch-default` (PyTorch's layer defaults, NB201's), `kaiming` (He-normal), `arch-source` or `arch-target`",
        default="torch-default",
    )
    lr_rule: str | None = column("`official`, `kernel`, or null for a fixed LR")
    base_lr: float | None = column("base LR the scaled LR came from (null for fixed)")
    lr: float | None = column("the LR actually used (peak of the cosine schedule)")
    lr_schedule: str | None = column(
        "`epoch` (cosine constant within an epoch, NB201's), `step` (cosine per step) or `constant`"
    )
    width: int = column("channels C of the first stage", default=nb201.WIDTH)
    cells_per_stage: int = column("cells N per stage", default=nb201.CELLS_PER_STAGE)
    epochs: int = column("training epochs", default=nb201.EPOCHS)
    batch_size: int = column("training batch size", default=nb201.BATCH_SIZE)
    image_size: int | None = column("side (px) of the images the network saw (`image_size`, else the dataset's)")
    momentum: float | None = column("SGD momentum")
    nesterov: bool | None = column("Nesterov momentum")
    weight_decay: float | None = column(
        "weight decay on every parameter (under `mup`: before MuSGD's per-layer scaling)"
    )
    parametrization: str | None = column(
        "`sp` (one LR for every parameter, NB201's) or `mup` (Microsoft's `mup`: MuReadout, MuSGD's per-layer LR and "
        "weight-decay multipliers); null in stores written before the column (= `sp`)"
    )
    mup_base_width: int | None = column("`mup`: width C of `set_base_shapes`' base network; null under `sp`")
    mup_delta_width: int | None = column(
        "`mup`: width C of the delta network (marks the width dimensions); null under `sp`"
    )
    precision: str | None = column(
        "`fp32` or `bf16 autocast`: the numerics the trial ran in (the run's `precision`, resolved on its device)"
    )
    steps: int | None = column("optimizer steps taken")
    n_train: int | None = column("training images")
    n_params: int | None = column("parameters of the trained network")
    fused_k: int | None = column("models trained together as one fused network (pipeline/train/fused.py); null = alone")
    # --- provenance and cost ---
    attempts: int = column("how many times the driver ran this unit (Ray's own task retries included)", default=0)
    wall_s: float | None = column("seconds for the whole trial (build, train, eval)")
    images_per_s: float | None = column("training throughput of the trial")
    device: str | None = column(
        "where it trained and where Ray placed it, e.g. `cpu (1 threads); node 127.0.0.1`, "
        "`cuda:0 (NVIDIA H200); ray gpu ids [3], CUDA_VISIBLE_DEVICES=3; node 10.0.0.7`"
    )
    code_version: str | None = column("package version and git commit of the code that trained the row")
    code_identity: str | None = column("hash of the source files that determine the numbers (cells, core, engine)")
    data_fingerprint: str | None = column("hash of the dataset files the run read")
    versions: dict[str, str] | None = column("JSON: python, torch, numpy, ray versions of the worker")
    finished_at: str | None = column("UTC ISO time the row was written")


KEY: tuple[str, ...] = tuple(f.name for f in fields(TrialRow) if f.metadata["key"])
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TrialRow))


def _base_type(f: Field) -> tuple[Any, bool]:
    """(type without None, nullable) of a field."""
    hint = typing.get_type_hints(TrialRow)[f.name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


def _kind(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return "list[float]"
    if origin is dict:
        return "json"
    return {str: "str", int: "int", float: "float", bool: "bool"}[hint]


@cache
def column_kinds() -> dict[str, tuple[str, bool]]:
    """Column -> (kind, nullable); kind is str, int, float, bool, list[float] or json."""
    out = {}
    for f in fields(TrialRow):
        hint, nullable = _base_type(f)
        out[f.name] = (_kind(hint), nullable and not f.metadata["key"])
    return out


_SQLITE = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER", "list[float]": "TEXT", "json": "TEXT"}


def sqlite_columns() -> dict[str, str]:
    """Column -> SQLite declaration (lists and JSON stored as JSON text)."""
    return {
        name: _SQLITE[kind] + ("" if nullable else " NOT NULL") for name, (kind, nullable) in column_kinds().items()
    }


def arrow_schema() -> Any:
    """The Parquet schema of `results.parquet`."""
    import pyarrow as pa

    arrow = {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "list[float]": pa.list_(pa.float64()),
        "json": pa.string(),
    }
    return pa.schema(
        [pa.field(name, arrow[kind], nullable=nullable) for name, (kind, nullable) in column_kinds().items()]
    )


def to_record(row: dict[str, Any]) -> dict[str, Any]:
    """A full row (every column, unknown names refused) from a partial mapping; checks the key."""
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"not columns of TrialRow: {unknown}")
    missing = [k for k in KEY if row.get(k) is None]
    if missing:
        raise ValueError(f"row lacks key columns {missing}")
    defaults = {f.name: f.default for f in fields(TrialRow) if f.default is not MISSING}
    return {name: row.get(name, defaults.get(name)) for name in COLUMNS}


def encode_json(kind: str, value: Any) -> Any:
    """Lists and dicts as JSON text for SQLite."""
    if kind in ("list[float]", "json"):
        return None if value is None else json.dumps(value, sort_keys=True)
    if kind == "bool":
        return None if value is None else int(bool(value))
    return value


def markdown_table() -> str:
    """The column table of results/README.md, generated from the declaration."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for f in fields(TrialRow):
        kind, nullable = column_kinds()[f.name]
        shown = kind if kind != "json" else "str (JSON)"
        lines.append(f"| `{f.name}` | {shown}{'' if not nullable else ', null'} | {f.metadata['meaning']} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the column table of results/README.md
    print(markdown_table())
