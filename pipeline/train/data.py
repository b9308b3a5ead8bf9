"""NB201's splits of a dataset as uint8 tensors, and a loader that augments on the training device.

The files are read by `pipeline.train.readers` (restricted unpickler); when no configured folder
holds them and downloading is on, `pipeline.train.download` fetches CIFAR into a cache first
(`locate`). A whole split is one uint8 tensor N×3×H×W; each batch is drawn by a seeded
permutation and cropped/flipped/normalised with batched tensor ops on the device, so there is no
Python per image, no PIL and no DataLoader (design.md, "Hot path").

Splits (NB201's; `DatasetInfo.split` in core.datasets):
- `cifar10-valid`: the training set cut in two halves by a seeded permutation: train on the
  first, evaluate on the second (`valid`) and on the test set (`test`). NB201 used a fixed
  split file; ours is a different but equally sized, deterministic split.
- `cifar10`: full training set; `test` = test set.
- `cifar100`, `imagenet16_120`: full training set; the test set is cut in two halves by a
  seeded permutation into `valid` and `test` (NB201's x-valid / x-test; again not NB201's exact
  file). Their mean over equal halves is NB201's full-test `valtest` number.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from core.datasets import DATASETS, DatasetInfo, image_size_problem
from core.provenance import Fingerprint
from pipeline.train.download import Fetch, FetchSettings, ensure
from pipeline.train.readers import (
    LAYOUT,
    READERS,
    DataDirs,
    DataError,
    Split,
    data_dirs,
    holds,
    read_joined,
)

SPLIT_SEED = 201
"""Seed of the valid/test (or train/valid) halving; fixed, so every run sees the same split."""
SUBSAMPLE_SEED = 202
"""Seed of the `max_train`/`max_eval` subsets; fixed, so every cell sees the same images."""


@dataclass(frozen=True)
class DatasetSplits:
    """One dataset in NB201's split: uint8 images N×3×H×W (CPU), int64 labels, and how to normalise."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval: dict[str, tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    pad: int
    fingerprint: str = ""
    """Hash of the dataset files read (`core.provenance.Fingerprint`); part of a run's identity."""

    def describe(self) -> str:
        evals = ", ".join(f"{k} {len(v[1]):,}" for k, v in self.eval.items())
        return f"{self.name}: train {len(self.train_y):,}; {evals}; {self.num_classes} classes, {self.image_size}px"


# --- splits -----------------------------------------------------------------------------------


def _halves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return perm[: n // 2].sort().values, perm[n // 2 :].sort().values


def _subsample(x: torch.Tensor, y: torch.Tensor, limit: int | None, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `limit` images, a seeded subset kept in the original order (all of them when None)."""
    if limit is None or limit >= len(y):
        return x, y
    if limit < 1:
        raise DataError(f"a subset must hold at least one image, got {limit}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SUBSAMPLE_SEED + salt))
    keep = perm[:limit].sort().values
    return x[keep], y[keep]


def downsample(x: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 N×3×H×W -> N×3×side×side by averaging f×f blocks (f = H/side), rounded to uint8.

    Area interpolation at an integer factor: what ImageNet16's makers did with box filtering, done
    once at load time so training pays nothing for it.
    """
    n, c, h, w = x.shape
    if h != w or side < 1 or h % side:
        raise DataError(f"image_size {side} must divide the native side {h}")
    factor = h // side
    if factor == 1:
        return x
    out = torch.empty((n, c, side, side), dtype=torch.uint8)
    for start in range(0, n, 4096):  # bounded float memory
        chunk = x[start : start + 4096].float()
        out[start : start + 4096] = torch.nn.functional.avg_pool2d(chunk, factor).round_().to(torch.uint8)
    return out


def load_splits(
    dataset: str,
    data_dir: DataDirs,
    *,
    download: bool | FetchSettings = False,
    max_train: int | None = None,
    max_eval: int | None = None,
    image_size: int | None = None,
) -> DatasetSplits:
    """Read `dataset` (one of `DATASETS`) from `data_dir` and cut NB201's splits.

    `data_dir` may be the folder holding `cifar-10-batches-py` (etc.) or that folder itself; or
    several such folders (a list, or one string joined by `os.pathsep`), whose train and test files
    are concatenated in order before the splits are cut (e.g. the lossless and the JPEG CIFAR-10
    subsets in ../shared: 14,000 train + 3,000 test images, no image shared). The fingerprint covers
    every file of every folder.
    `max_train` / `max_eval` cap each split with a fixed seeded subset (CPU proxies).
    `image_size` (None = the dataset's own) downsamples every image once, here, by block averaging
    (`downsample`); the random-crop padding scales with it (4 at 32 px -> 2 at 16 px, NB201's
    ImageNet16 value).

    `download`: what to do when `data_dir` does not hold the dataset (`locate`): False = an error
    naming the fix, True = fetch into `data_dir`, a `FetchSettings` = fetch into its cache.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    side = info.image_size if image_size is None else image_size
    problem = image_size_problem(dataset, side)
    if problem:
        raise DataError(problem)
    pad = max(1, info.pad * side // info.image_size) if side != info.image_size else info.pad
    folders = locate(dataset, data_dir, download)
    data_dir = folders[0] if len(folders) == 1 else os.pathsep.join(map(str, folders))

    fingerprint = Fingerprint()
    (tx, ty), (ex, ey) = read_joined(info.files, folders, fingerprint)
    if side != info.image_size:
        tx, ex = downsample(tx, side), downsample(ex, side)
    tx, ty, evals = _cut(info, tx, ty, ex, ey)
    tx, ty = _subsample(tx, ty, max_train, 0)
    evals = {name: _subsample(x, y, max_eval, i + 1) for i, (name, (x, y)) in enumerate(evals.items())}
    for name, (_, y) in [("train", (tx, ty)), *evals.items()]:
        if len(y) == 0:
            raise DataError(f"{dataset} split {name!r} is empty in {data_dir}; fetch the dataset again")
    return DatasetSplits(
        dataset,
        tx,
        ty,
        evals,
        info.num_classes,
        info.mean,
        info.std,
        side,
        pad,
        fingerprint.hexdigest(),
    )


def _cut(
    info: DatasetInfo, tx: torch.Tensor, ty: torch.Tensor, ex: torch.Tensor, ey: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Split]]:
    """NB201's split of the files (`DatasetInfo.split`): training images and the eval splits."""
    if info.split == "train-halves":
        first, second = _halves(len(ty))
        return tx[first], ty[first], {"valid": (tx[second], ty[second]), "test": (ex, ey)}
    if info.split == "test-halves":
        first, second = _halves(len(ey))
        return tx, ty, {"valid": (ex[first], ey[first]), "test": (ex[second], ey[second])}
    return tx, ty, {"test": (ex, ey)}


# --- loading on the device ----------------------------------------------------------------------


class Normalise:
    """uint8 → float, (x/255 − mean)/std folded into one multiply-add, on the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        m, s = torch.tensor(mean), torch.tensor(std)
        self.scale = (1.0 / (255.0 * s)).view(1, 3, 1, 1).to(device)
        self.shift = (-m / s).view(1, 3, 1, 1).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


class TrainBatches:
    """Shuffled, augmented training batches from one uint8 tensor kept on `device`.

    Per epoch: a seeded permutation; per image a random crop (pad with zeros once, then gather
    at random offsets) and a random horizontal flip, all as batched indexing on the device.
    The last partial batch is kept (like NB201's DataLoader, which does not drop it).
    Same seed, same device → same batches.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        pad: int,
        seed: int,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.n, _, self.h, self.w = x.shape
        self.padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.pad = pad
        self.channels_last = channels_last
        self.normalise = Normalise(mean, std, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rows = torch.arange(self.h, device=self.device)
        self.cols = torch.arange(self.w, device=self.device)
        self.channels = torch.arange(3, device=self.device)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g, dev = self.generator, self.device
        order = torch.randperm(self.n, generator=g, device=dev)
        dy = torch.randint(0, 2 * self.pad + 1, (self.n,), generator=g, device=dev)
        dx = torch.randint(0, 2 * self.pad + 1, (self.n,), generator=g, device=dev)
        flip = torch.rand(self.n, generator=g, device=dev) < 0.5
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            i = slice(start, start + self.batch_size)
            rows = dy[i, None] + self.rows  # B×H
            cols = dx[i, None] + torch.where(flip[i, None], self.w - 1 - self.cols, self.cols)  # B×W
            if self.channels_last:  # gather straight into NHWC memory, viewed as NCHW
                img = self.padded[
                    idx[:, None, None, None], self.channels, rows[:, :, None, None], cols[:, None, :, None]
                ]
                img = img.permute(0, 3, 1, 2)
            else:
                img = self.padded[
                    idx[:, None, None, None],
                    self.channels[:, None, None],
                    rows[:, None, :, None],
                    cols[:, None, None, :],
                ]
            yield self.normalise(img), self.y[idx]


def eval_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    normalise: Normalise,
    device: torch.device,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented, in-order batches, moved to `device` one batch at a time."""
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yield normalise(xb), y[start : start + batch_size].to(device, non_blocking=True)


def locate(dataset: str, data_dir: DataDirs, download: bool | FetchSettings = False) -> list[Path]:
    """The folders to read `dataset` from: `data_dir`'s when every one of them holds it; else, with
    downloading on, the cache `pipeline.train.download` fetches it into; else one DataError naming the fix.

    `download=True` (the `--download` of `pipeline train`, a config's `download: true`) fetches into
    `data_dir` itself (one folder), as torchvision does; a mapping (`RunSpec.download`) fetches into
    its `cache` (default $NB201_DATA, else data/ in the repository).
    """
    files = DATASETS[dataset].files
    folders = data_dirs(data_dir)
    missing = [folder for folder in folders if not holds(files, folder)]
    if not missing:
        return folders
    if isinstance(download, bool):
        single = str(folders[0]) if len(folders) == 1 else None
        download = Fetch(enabled=download, cache=single)
    if not download.enabled:
        where = missing[0]
        if not where.is_dir():
            raise DataError(
                f"data directory {where} does not exist; point --data-dir at the folder holding {LAYOUT[files][0]}, "
                f"or pass --download to fetch {dataset}"
            )
        READERS[files](where)  # raises the reader's own DataError, naming the files it looked for
    root = ensure(files, download)
    if root.resolve() not in {folder.resolve() for folder in folders}:
        print(f"data: {missing[0]} holds no {dataset}; reading the fetched copy in {root}", file=sys.stderr)
    return [root]
