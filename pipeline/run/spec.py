"""RunSpec: one YAML file describes a run; validated once, hashed into a run id.

Every key is known: a typo is an error naming the key, never a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pydantic
import yaml

from cells import INIT_RULES, LR_RULES, N_CELLS, Cell, CellError, cell_at, index_of, scaled_lr
from cells.export import cells_table
from core.config import SCHEDULES, TrainConfig
from core.datasets import DATASET_NAMES, DATASETS
from core.errors import UserError
from core.shape import NetShape

SELECTIONS: tuple[str, ...] = ("all", "classes", "sample", "list")
URI_SCHEMES: tuple[str, ...] = ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""What `results_uri` may name: the filesystems `pyarrow.fs.FileSystem.from_uri` knows."""


_TYPED = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)
"""How pydantic validates these dataclasses: unknown keys and non-finite numbers are errors."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A run name is a folder name under results/: no path separators, no leading dot."""


class SpecError(UserError):
    """A run config that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Protocol:
    """How one architecture is trained: an init rule plus a fixed or scaled learning rate.

    `lr` set: that LR for every cell (NB201's recipe is torch-default + 0.1).
    `lr_rule` set: LR = base_lr x cells.lr_factor(cell, lr_rule); base_lr "auto" = found by
    `find-base-lr` on the skip-chain base network.
    """

    __pydantic_config__ = _TYPED

    name: str
    init: str = "torch-default"
    lr: float | None = None
    lr_rule: str | None = None
    base_lr: float | str | None = None

    @property
    def scaled(self) -> bool:
        return self.lr_rule is not None

    def lr_for(self, cell: Cell, base_lr: float | None) -> float:
        """The peak LR this protocol gives `cell`: its fixed `lr`, or base_lr x the rule's factor
        (`cells.scaled_lr`, the one place LR scaling is computed)."""
        if self.lr_rule is None:
            assert self.lr is not None
            return float(self.lr)
        assert base_lr is not None, "a scaled protocol's base LR is resolved before any training"
        scaled = scaled_lr(cell, base_lr, self.lr_rule)
        if scaled.lr is None:
            raise ValueError(f"{cell.official_code} has no scaled LR ({scaled.reason}); no-path cells are not trained")
        return scaled.lr


@dataclass(frozen=True)
class CellSelection:
    """Which cells a run trains: all, one per class, a seeded sample, or a list."""

    __pydantic_config__ = _TYPED
    select: str = "sample"
    count: int = 40
    seed: int = 0
    cells: tuple[int | str, ...] = ()

    def resolve(self) -> list[int]:
        """NB201 indices, in a deterministic order."""
        if self.select == "all":
            return list(range(N_CELLS))
        if self.select == "classes":
            table = cells_table()
            return table.loc[table["representative"], "nb201_index"].tolist()
        if self.select == "sample":
            return sorted(random.Random(self.seed).sample(range(N_CELLS), self.count))
        return [parse_cell_ref(ref) for ref in self.cells]


@dataclass(frozen=True)
class BaseLRSearch:
    """Grid for the base-LR finder (paper §4): log-spaced from `low` to `high`, each point trained
    for `epochs` at a constant LR once per seed in `seeds` (pipeline.sweep.finder says how it picks)."""

    __pydantic_config__ = _TYPED

    low: float = 0.01
    high: float = 4.0
    points: int = 13
    epochs: int = 1
    seeds: tuple[int, ...] = (0, 1, 2)

    def grid(self) -> list[float]:
        if self.points == 1:
            return [self.low]
        ratio = (self.high / self.low) ** (1 / (self.points - 1))
        return [round(self.low * ratio**i, 6) for i in range(self.points)]


@dataclass(frozen=True)
class Resources:
    """What one unit asks Ray for. `gpus_per_trial: auto` packs by model size (see pipeline.sweep.packing)."""

    __pydantic_config__ = _TYPED

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0
    torch_threads: int = 1
    fuse: int | str = "auto"
    """Units of one cell trained as one fused network per task (pipeline/train/fused.py): a number, or
    `auto` = 8 where tasks get GPUs, 1 on CPUs (one thread per net: K=2 trains 1.23-1.44x the
    images/s of a lone net at cpu.yaml's C=4, 16 px, batch 64, but 0.87-1.04x at C=8, 32 px,
    batch 256; so CPU configs opt in, as cpu.yaml does)."""


@dataclass(frozen=True)
class RunSpec:
    """A whole run: data, network size, schedule, cells, protocols, resources, where results go."""

    __pydantic_config__ = _TYPED
    name: str
    dataset: str = "cifar10"
    data_dir: str | tuple[str, ...] = "../shared/data/cifar10"
    """One folder, or several (a list; or one string joined by ':') whose files are joined (pipeline.train.data)."""
    download: bool = False
    width: int = 16
    cells_per_stage: int = 5
    epochs: int = 200
    batch_size: int = 256
    schedule: str = "epoch"
    eval_every: int = 0
    seeds: tuple[int, ...] = (0,)
    max_train: int | None = None
    max_eval: int | None = None
    image_size: int | None = None
    """Downsample the images once at load time to this side (e.g. 16; must divide the dataset's); None = native."""
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
        if self.image_size is None:  # unset keeps the run ids of configs written before the key existed
            ignored.add("image_size")
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"

    @property
    def shape(self) -> NetShape:
        info = DATASETS[self.dataset]
        return NetShape(self.width, self.cells_per_stage, self.image_size or info.image_size, info.num_classes)

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run_id

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(asdict(self)), sort_keys=False)

    def train_config(self, protocol: Protocol, seed: int, lr: float, *, device: str | None = None) -> TrainConfig:
        """The settings of one training of this run (the only place a spec becomes a TrainConfig)."""
        return TrainConfig(
            width=self.width,
            cells_per_stage=self.cells_per_stage,
            init_rule=protocol.init,
            lr=lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=seed,
            device=device or self.device,
            threads=self.resources.torch_threads,
            schedule=self.schedule,
            eval_every=self.eval_every,
        )


def parse_cell_ref(ref: object) -> int:
    """An NB201 index, or any cell string form -> index."""
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


def spec_from_dict(data: dict[str, Any], source: str = "config") -> RunSpec:
    """Typed validation (pydantic, over these dataclasses) then the semantic checks of `validate`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping of keys to values")
    data = dict(data)
    if "name" not in data:
        raise SpecError(f"{source}: missing key 'name' (the run's name, e.g. name: cpu)")
    if not data.get("protocols") or not isinstance(data["protocols"], list):
        raise SpecError(f"{source}: 'protocols' must be a non-empty list (e.g. nb201 and scaled)")
    if "seeds" in data and not isinstance(data["seeds"], list):
        data["seeds"] = [data["seeds"]]
    try:
        spec = _ADAPTER.validate_python(data)
    except pydantic.ValidationError as error:
        raise SpecError(f"{source}: {_first_problem(error)}") from None
    validate(spec)
    return spec


def _first_problem(error: pydantic.ValidationError) -> str:
    """One line for the first problem pydantic found: the dotted key, what is wrong, what was given."""
    problem = error.errors()[0]
    path = [str(part) for part in problem["loc"] if not _is_type_tag(part)]
    key = ".".join(path)
    if problem["type"] == "unexpected_keyword_argument":
        known = _known_keys(path[:-1])
        return f"unknown key {key}; known keys: {', '.join(known)}"
    if problem["type"] == "missing_argument":
        return f"missing key {key}"
    given = problem.get("input")
    shown = repr(given) if not isinstance(given, dict | list) else type(given).__name__
    return f"key {key}: {problem['msg'].lower()}, got {shown}"


def _is_type_tag(part: object) -> bool:
    """pydantic names union members in `loc` (`float`, `str`, `function-after[...]`); they are not keys."""
    return isinstance(part, str) and (part in ("float", "int", "str", "bool", "none") or "[" in part)


def _known_keys(path: list[str]) -> list[str]:
    kind: Any = RunSpec
    for part in path:
        if part.isdigit():
            continue
        hint = typing.get_type_hints(kind)[part]
        inner = [a for a in typing.get_args(hint) if isinstance(a, type)] or [hint]
        kind = next((a for a in inner if hasattr(a, "__dataclass_fields__")), inner[0])
    return sorted(f.name for f in fields(kind))


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
        apply_override(data, dotted, value)
    return spec_from_dict(data, str(path))


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` (e.g. `cells.count`, `protocols.1.base_lr`) in the parsed YAML; a number reaches
    into a list. Raises SpecError naming the part of the path that does not fit."""
    target: Any = data
    *parents, leaf = dotted.split(".")
    walked = []
    for part in [*parents, leaf]:
        if not part:
            raise SpecError(f"--set {dotted}: empty key part; write keys like cells.count or protocols.1.base_lr")
    for part in parents:
        walked.append(part)
        if isinstance(target, list):
            target = target[_list_index(target, part, dotted)]
        elif isinstance(target, dict):
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
        else:
            break
        if not isinstance(target, dict | list):
            raise SpecError(f"--set {dotted}: {'.'.join(walked)} is a value, not a mapping or list")
    if isinstance(target, list):
        target[_list_index(target, leaf, dotted)] = value
    else:
        target[leaf] = value


def _list_index(items: list[Any], part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise SpecError(f"--set {dotted}: {part!r} is not an index of a list of {len(items)} item(s) (0-based)")
    return int(part)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def validate(spec: RunSpec) -> None:
    """All checks that need no data and no Ray: cheap, before any work."""
    _check(
        NAME_PATTERN.fullmatch(spec.name) is not None,
        f"name {spec.name!r} must be a folder name: letters, digits, '.', '_' or '-', not starting with a dot",
    )
    _check(
        spec.dataset in DATASET_NAMES,
        f"dataset {spec.dataset!r} is unknown; choose one of {', '.join(DATASET_NAMES)}",
    )
    for key in ("width", "cells_per_stage", "epochs", "batch_size", "max_attempts"):
        value = getattr(spec, key)
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{key} must be a positive integer, got {value!r}",
        )
    native = DATASETS[spec.dataset].image_size if spec.dataset in DATASETS else 32
    _check(
        spec.image_size is None or (1 <= spec.image_size <= native and native % spec.image_size == 0),
        f"image_size must divide {spec.dataset}'s {native} px (e.g. {native // 2}) or be null, got {spec.image_size!r}",
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
        0 < search.low < search.high and search.points >= 1 and search.epochs >= 1 and len(search.seeds) >= 1,
        "base_lr_search needs 0 < low < high, points >= 1, epochs >= 1 and at least one seed",
    )
    _check(
        spec.schedule in SCHEDULES and spec.schedule != "constant",  # constant is the finder's, not a run's
        f"schedule {spec.schedule!r} is unknown; choose epoch (NB201's cosine, per epoch) or step (cosine per step)",
    )
    _check(
        isinstance(spec.eval_every, int) and not isinstance(spec.eval_every, bool) and spec.eval_every >= 0,
        f"eval_every must be an integer >= 0 (0 = evaluate only after the last epoch), got {spec.eval_every!r}",
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
    _check(
        res.fuse == "auto" or (isinstance(res.fuse, int) and res.fuse >= 1),
        f"resources.fuse must be a positive integer or 'auto', got {res.fuse!r}",
    )
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


_ADAPTER = pydantic.TypeAdapter(RunSpec)


def with_overrides(spec: RunSpec, **changes: Any) -> RunSpec:
    """A validated copy with some fields changed (CLI flags such as --data-dir)."""
    new = replace(spec, **changes)
    validate(new)
    return new
