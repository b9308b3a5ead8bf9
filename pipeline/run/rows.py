"""The rows a training becomes (`core.rows.TrialRow`): the columns every row has, a trained unit's
outcome spread over its class members, and a `TrainRecord` as columns.

Every value a row holds is taken from the config that trained (`TrainRecord.config`) or from the
run's spec where no training happened (no-path and failed rows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cells import all_cells
from core.config import TrainConfig
from core.provenance import code_identity, code_version
from pipeline.run.spec import Protocol, RunSpec
from pipeline.run.units import Unit, class_id_of

if TYPE_CHECKING:
    from pipeline.train.loop import TrainRecord


def base_row(spec: RunSpec, protocol: Protocol, index: int, seed: int, base_lr: float | None) -> dict[str, Any]:
    """The columns every row has, whether trained, shared, failed or without a path (`core.rows.TrialRow`)."""
    return {
        "run_id": spec.run_id,
        "dataset": spec.dataset,
        "protocol": protocol.name,
        "nb201_index": index,
        "seed": seed,
        "arch_str": all_cells()[index].arch_str,
        "class_id": class_id_of(index, protocol.init),
        "init_rule": protocol.init,
        "lr_rule": protocol.lr_rule,
        "base_lr": base_lr,
        "parametrization": protocol.parametrization,
        "mup_base_width": protocol.mup_base_width,
        "mup_delta_width": protocol.mup_delta_width,
        "code_version": code_version(),
        "code_identity": code_identity(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def no_path_row(spec: RunSpec, protocol: Protocol, index: int, seed: int, base_lr: float | None) -> dict[str, Any]:
    """A cell that is never trained: its network size is the run's (no config trained it)."""
    row = base_row(spec, protocol, index, seed, base_lr)
    shape = {"width": spec.width, "cells_per_stage": spec.cells_per_stage, "image_size": spec.shape.image_size}
    row.update(shape, epochs=spec.epochs, batch_size=spec.batch_size)
    row.update(status="no-path", shared=False, attempts=0, error="no input->output path; not trained")
    return row


def config_columns(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a unit trained with, as row columns: taken from the config that trained, never
    re-read from the spec."""
    return {
        "width": cfg.width,
        "cells_per_stage": cfg.cells_per_stage,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "lr_schedule": cfg.schedule,
        "momentum": cfg.momentum,
        "nesterov": cfg.nesterov,
        "weight_decay": cfg.weight_decay,
        "parametrization": cfg.parametrization,
        "mup_base_width": cfg.mup_base_width,
        "mup_delta_width": cfg.mup_delta_width,
    }


def unit_rows(spec: RunSpec, unit: Unit, base_lr: float | None, outcome: dict[str, Any], attempts: int) -> list[dict]:
    """One row per member: the representative's outcome, flagged `shared` on the others."""
    rows = []
    for index in unit.members:
        row = base_row(spec, unit.protocol, index, unit.seed, base_lr)
        row.update(outcome, shared=index != unit.index, trained_index=unit.index, attempts=attempts)
        rows.append(row)
    return rows


def record_columns(record: TrainRecord) -> dict[str, Any]:
    """A training record as TrialRow columns: every field that matters survives into the row."""
    result = record.to_dict()
    cfg = record.config
    return {
        **config_columns(cfg),
        "status": result["status"],
        "precision": result["precision"],
        "valid_acc": result["eval_acc"].get("valid"),
        "test_acc": result["eval_acc"].get("test"),
        "valid_loss": result["eval_loss"].get("valid"),
        "test_loss": result["eval_loss"].get("test"),
        "train_acc": result["train_acc"][-1] if result["train_acc"] else None,
        "train_loss": result["train_loss"],
        "end_train_loss": result.get("end_train_loss"),
        "train_acc_curve": result["train_acc"],
        "diverged_epoch": result["diverged_epoch"],
        "eval_epochs": result["eval_epochs"] or None,
        "valid_acc_curve": result["eval_curve"].get("valid"),
        "test_acc_curve": result["eval_curve"].get("test"),
        "steps": result["steps"],
        "n_train": result["n_train"],
        "n_params": result["n_params"],
        "wall_s": result["wall_s"],
        "images_per_s": result["images_per_s"],
        "device": result["device"],
        "error": None,
    }
