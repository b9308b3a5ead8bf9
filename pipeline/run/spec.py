"""RunSpec: what one YAML file says a run is, hashed into a run id; the one place a spec becomes a
`TrainConfig`. Reading the YAML is `spec_load`, the semantic checks are `spec_checks`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from cells import N_CELLS, Cell, CellError, cell_at, index_of, scaled_lr
from cells.export import cells_table
from core import nb201
from core.config import TrainConfig
from core.datasets import DATASETS
from core.errors import UserError
from core.shape import NetShape

SELECTIONS: tuple[str, ...] = ("all", "classes", "sample", "list")
FINDER_SCORES: tuple[str, ...] = ("end-pass", "epoch-mean")
"""`base_lr_search.score`: what a one-epoch trial's loss is (pipeline.run.base_lr.SCORES says each in full)."""


_TYPED = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)
"""How pydantic validates these dataclasses: unknown keys and non-finite numbers are errors."""


class SpecError(UserError):
    """A run config that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Protocol:
    """How one architecture is trained: an init rule plus a fixed or scaled learning rate.

    `lr` set: that LR for every cell (NB201's recipe is torch-default + 0.1).
    `lr_rule` set: LR = base_lr x cells.lr_factor(cell, lr_rule); base_lr "auto" = found by
    `find-base-lr` on the skip-chain base network.
    `parametrization: mup` (with a fixed `lr`): the μP baseline of the paper's Appendix E.3, Microsoft's `mup`
    as its basic usage says, base and delta networks of widths `mup_base_width` and `mup_delta_width`
    (core.config.PARAMETRIZATIONS; pipeline/train/muparam.py). Absent (`sp`), none of the three keys enters
    the run identity, so run ids from before they existed stay.
    """

    __pydantic_config__ = _TYPED

    name: str
    init: str = nb201.INIT_RULE
    lr: float | None = None
    lr_rule: str | None = None
    base_lr: float | str | None = None
    parametrization: str = "sp"
    mup_base_width: int | None = None
    mup_delta_width: int | None = None

    @property
    def scaled(self) -> bool:
        return self.lr_rule is not None

    @property
    def lone_only(self) -> bool:
        """Trained as a lone network, never fused (pipeline/train/fused.py refuses μP: another optimizer)."""
        return self.parametrization != "sp"

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
    allow_one_seed: bool = False
    """A one-seed grid is refused (the pick rule's standard error is undefined) unless this is true; then
    the search record says `se_defined: false`. Not part of the run identity: it changes no number."""
    score: str = "end-pass"
    """A trial's loss (`pipeline.run.base_lr.SCORES`): `end-pass`, the final weights over one more pass of
    the training split (the default), or `epoch-mean`, the running mean over the epoch."""

    def grid(self) -> list[float]:
        if self.points == 1:
            return [self.low]
        ratio = (self.high / self.low) ** (1 / (self.points - 1))
        return [round(self.low * ratio**i, 6) for i in range(self.points)]


@dataclass(frozen=True)
class LRTransfer:
    """Makes a run the LR-transfer study (pipeline.run.lr_transfer): the `base_lr_search` grid, seeds and
    score on every selected cell and on the skip chain, all searched under `init`, instead of the sweep."""

    __pydantic_config__ = _TYPED
    init: str = "arch-source"


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
class Download:
    """Fetching the dataset when `data_dir` does not hold it (pipeline/train/download.py): the official
    archive through torchvision's downloader, md5-checked, unpacked into `cache`, read from there."""

    __pydantic_config__ = _TYPED

    enabled: bool = True
    cache: str | None = None
    """Folder the dataset is fetched into and read from; None = $NB201_DATA, else data/ in the repo."""
    url: str | None = None
    """A mirror of the official archive (e.g. http://host/cifar-10-python.tar.gz); None = torchvision's URL."""
    archive: str | None = None
    """A local copy of the official archive, used instead of the network (md5-checked the same way)."""


@dataclass(frozen=True)
class RunSpec:
    """A whole run: data, network size, schedule, cells, protocols, resources, where results go."""

    __pydantic_config__ = _TYPED
    name: str
    dataset: str = "cifar10"
    data_dir: str | tuple[str, ...] = "../shared/data/cifar10"
    """One folder, or several (a list; or one string joined by ':') whose files are joined (pipeline.train.data)."""
    download: bool | Download = False
    """false: a missing data_dir is an error; true: fetch into data_dir (one folder); a mapping (`Download`):
    fetch into its cache when data_dir does not hold the data (pipeline.train.data.locate)."""
    width: int = nb201.WIDTH
    cells_per_stage: int = nb201.CELLS_PER_STAGE
    epochs: int = nb201.EPOCHS
    batch_size: int = nb201.BATCH_SIZE
    schedule: str = "epoch"
    precision: str = "fp32"
    """`fp32` (NB201's), `bf16` or `auto` (core.config.PRECISIONS); part of the run's identity, and each
    row records what its trial ran in."""
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
    lr_transfer: LRTransfer | None = None
    """Set: the run is the LR-transfer study (no protocols); unset: the sweep."""
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
        identity = {k: v for k, v in asdict(self).items() if k not in ignored}
        identity["base_lr_search"].pop("allow_one_seed")  # a permission, not a number
        if self.base_lr_search.score == "end-pass":  # the default keeps the run ids from before the key
            identity["base_lr_search"].pop("score")
        if self.lr_transfer is None:
            identity.pop("lr_transfer")
        for protocol in identity["protocols"]:  # `sp` (the default) keeps the run ids from before the keys
            if protocol["parametrization"] == "sp":
                for key in ("parametrization", "mup_base_width", "mup_delta_width"):
                    protocol.pop(key)
        return identity

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
            precision=self.precision,
            eval_every=self.eval_every,
            parametrization=protocol.parametrization,
            mup_base_width=protocol.mup_base_width,
            mup_delta_width=protocol.mup_delta_width,
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
