"""RunSpec: one YAML file describes a run; validated once, hashed into a run id.

Every key is known: a typo is an error naming the key, never a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from cells import INIT_RULES, LR_RULES, N_CELLS, Cell, CellError, cell_at

DATASETS: tuple[str, ...] = ("cifar10", "cifar10-valid", "cifar100", "imagenet16_120")
SELECTIONS: tuple[str, ...] = ("all", "classes", "sample", "list")
URI_SCHEMES: tuple[str, ...] = ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""What `results_uri` may name: the filesystems `pyarrow.fs.FileSystem.from_uri` knows."""


class SpecError(ValueError):
    """A run config that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Protocol:
    """How one architecture is trained: an init rule plus a fixed or scaled learning rate.

    `lr` set: that LR for every cell (NB201's recipe is kaiming + 0.1).
    `lr_rule` set: LR = base_lr x cells.lr_factor(cell, lr_rule); base_lr "auto" = found by
    `find-base-lr` on the skip-chain base network.
    """

    name: str
    init: str = "kaiming"
    lr: float | None = None
    lr_rule: str | None = None
    base_lr: float | str | None = None

    @property
    def scaled(self) -> bool:
        return self.lr_rule is not None


@dataclass(frozen=True)
class CellSelection:
    select: str = "sample"
    count: int = 40
    seed: int = 0
    cells: tuple[str, ...] = ()

    def resolve(self) -> list[int]:
        """NB201 indices, in a deterministic order."""
        if self.select == "all":
            return list(range(N_CELLS))
        if self.select == "classes":
            from cells.export import cells_table

            table = cells_table()
            return table.loc[table["representative"], "nb201_index"].tolist()
        if self.select == "sample":
            return sorted(random.Random(self.seed).sample(range(N_CELLS), self.count))
        return [parse_cell_ref(ref) for ref in self.cells]


@dataclass(frozen=True)
class BaseLRSearch:
    """Grid for the base-LR finder: log-spaced from `low` to `high` (paper §4: one epoch each)."""

    low: float = 0.01
    high: float = 2.0
    points: int = 8
    epochs: int = 1
    tolerance: float = 0.0

    def grid(self) -> list[float]:
        if self.points == 1:
            return [self.low]
        ratio = (self.high / self.low) ** (1 / (self.points - 1))
        return [round(self.low * ratio**i, 6) for i in range(self.points)]


@dataclass(frozen=True)
class Resources:
    """What one unit asks Ray for. `gpus_per_trial: auto` packs by model size (see pipeline.packing)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0
    torch_threads: int = 1


@dataclass(frozen=True)
class RunSpec:
    name: str
    dataset: str = "cifar10"
    data_dir: str = "../shared/data/cifar10"
    download: bool = False
    width: int = 16
    cells_per_stage: int = 5
    epochs: int = 200
    batch_size: int = 256
    seeds: tuple[int, ...] = (0,)
    max_train: int | None = None
    max_eval: int | None = None
    cells: CellSelection = field(default_factory=CellSelection)
    dedup: bool = True
    protocols: tuple[Protocol, ...] = ()
    base_lr_search: BaseLRSearch = field(default_factory=BaseLRSearch)
    resources: Resources = field(default_factory=Resources)
    max_attempts: int = 3
    device: str = "auto"
    reference: str | None = None
    results_dir: str = "results"
    results_uri: str | None = None

    # --- identity ---------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What defines the numbers a run produces (not where data lives or how it is scheduled)."""
        ignored = {"data_dir", "download", "resources", "max_attempts", "device", "reference"}
        ignored |= {"results_dir", "results_uri"}
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run_id

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(asdict(self)), sort_keys=False)


def parse_cell_ref(ref: object) -> int:
    """An NB201 index, or any cell string form -> index."""
    from cells import index_of

    if isinstance(ref, int) and not isinstance(ref, bool):
        cell_at(ref)  # range check
        return ref
    try:
        return index_of(Cell.parse(str(ref)))
    except CellError as error:
        raise SpecError(f"cells.cells: {error}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(kind: type, data: Any, where: str) -> Any:
    """Dataclass from a mapping, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"unknown key {where}.{unknown[0]}; known keys: {', '.join(sorted(known))}")
    return kind(**data)


def spec_from_dict(data: dict[str, Any], source: str = "config") -> RunSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping of keys to values")
    data = dict(data)
    if "name" not in data:
        raise SpecError(f"{source}: missing key 'name' (the run's name, e.g. name: cpu)")
    protocols = data.pop("protocols", None)
    if not protocols or not isinstance(protocols, list):
        raise SpecError(f"{source}: 'protocols' must be a non-empty list (e.g. nb201 and scaled)")
    sub = {
        "cells": CellSelection,
        "base_lr_search": BaseLRSearch,
        "resources": Resources,
    }
    built: dict[str, Any] = {}
    for key, kind in sub.items():
        if key in data:
            value = dict(data.pop(key))
            if key == "cells" and "cells" in value:
                value["cells"] = tuple(value["cells"])
            built[key] = _build(kind, value, key)
    if "seeds" in data:
        seeds = data.pop("seeds")
        built["seeds"] = tuple(seeds) if isinstance(seeds, list) else (seeds,)
    built["protocols"] = tuple(_build(Protocol, p, f"protocols[{i}]") for i, p in enumerate(protocols))
    spec = _build(RunSpec, {**data, **built}, "config")
    validate(spec)
    return spec


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Read a YAML run config, apply CLI overrides (dotted keys allowed: cells.count=10), validate."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file {path} not found; shipped configs are in configs/")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}; check indentation and colons") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        target = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return spec_from_dict(data, str(path))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def validate(spec: RunSpec) -> None:
    """All checks that need no data and no Ray: cheap, before any work."""
    _check(spec.dataset in DATASETS, f"dataset {spec.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    for key in ("width", "cells_per_stage", "epochs", "batch_size", "max_attempts"):
        value = getattr(spec, key)
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{key} must be a positive integer, got {value!r}",
        )
    for key in ("max_train", "max_eval"):
        value = getattr(spec, key)
        _check(value is None or (isinstance(value, int) and value >= 1), f"{key} must be a positive integer or null")
    _check(all(isinstance(s, int) for s in spec.seeds) and len(spec.seeds) >= 1, "seeds must be a list of integers")
    _check(spec.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {spec.device!r}")
    selection = spec.cells
    _check(
        selection.select in SELECTIONS,
        f"cells.select {selection.select!r} is unknown; choose one of {', '.join(SELECTIONS)}",
    )
    if selection.select == "sample":
        _check(1 <= selection.count <= N_CELLS, f"cells.count must be in 1..{N_CELLS}, got {selection.count}")
    if selection.select == "list":
        _check(len(selection.cells) > 0, "cells.select is 'list' but cells.cells is empty")
        for ref in selection.cells:
            try:
                parse_cell_ref(ref)
            except IndexError as error:
                raise SpecError(f"cells.cells: {error}") from None
    names = [p.name for p in spec.protocols]
    _check(len(set(names)) == len(names), f"protocol names must be unique, got {names}")
    for p in spec.protocols:
        where = f"protocol {p.name!r}"
        _check(p.init in INIT_RULES, f"{where}: init {p.init!r} is unknown; choose one of {', '.join(INIT_RULES)}")
        _check((p.lr is None) != (p.lr_rule is None), f"{where}: set exactly one of lr (fixed) or lr_rule (scaled)")
        if p.lr is not None:
            _check(isinstance(p.lr, int | float) and p.lr > 0, f"{where}: lr must be a positive number")
            _check(p.base_lr is None, f"{where}: base_lr only applies with lr_rule")
        else:
            _check(
                p.lr_rule in LR_RULES, f"{where}: lr_rule {p.lr_rule!r} is unknown; choose one of {', '.join(LR_RULES)}"
            )
            _check(
                p.base_lr == "auto" or (isinstance(p.base_lr, int | float) and p.base_lr > 0),
                f"{where}: base_lr must be a positive number or 'auto'",
            )
    search = spec.base_lr_search
    _check(
        0 < search.low < search.high and search.points >= 1 and search.epochs >= 1,
        "base_lr_search needs 0 < low < high, points >= 1, epochs >= 1",
    )
    res = spec.resources
    _check(
        isinstance(res.cpus_per_trial, int | float) and res.cpus_per_trial > 0, "resources.cpus_per_trial must be > 0"
    )
    _check(
        res.gpus_per_trial == "auto" or (isinstance(res.gpus_per_trial, int | float) and res.gpus_per_trial >= 0),
        "resources.gpus_per_trial must be a number >= 0 or 'auto'",
    )
    _check(isinstance(res.torch_threads, int) and res.torch_threads >= 1, "resources.torch_threads must be >= 1")
    _check_results_uri(spec.results_uri)


def _check_results_uri(uri: object) -> None:
    """Shape only (no I/O here): the store opens it, and writes a probe, before any training."""
    if uri is None:
        return
    scheme, sep, rest = str(uri).partition("://")
    _check(
        isinstance(uri, str) and ((sep and scheme in URI_SCHEMES and rest) or (not sep and uri.startswith("/"))),
        f"results_uri must be a URI such as s3://bucket/prefix or file:///abs/path (schemes: "
        f"{', '.join(URI_SCHEMES)}), got {uri!r}",
    )


def with_overrides(spec: RunSpec, **changes: Any) -> RunSpec:
    """A validated copy with some fields changed (CLI flags such as --data-dir)."""
    new = replace(spec, **changes)
    validate(new)
    return new
