"""Datasets as uint8 tensors, NB201's splits, and a loader that augments on the training device.

Files are read with a restricted unpickler (numpy arrays and plain containers only), because
dataset pickles may come from anywhere. A whole split is one uint8 tensor N×3×H×W; each batch
is drawn by a seeded permutation and cropped/flipped/normalised with batched tensor ops on the
device, so there is no Python per image, no PIL and no DataLoader (design.md, "Hot path").

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

import io
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.datasets import DATASETS, DatasetInfo
from core.errors import UserError
from core.provenance import Fingerprint

SPLIT_SEED = 201
"""Seed of the valid/test (or train/valid) halving; fixed, so every run sees the same split."""
SUBSAMPLE_SEED = 202
"""Seed of the `max_train`/`max_eval` subsets; fixed, so every cell sees the same images."""

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
IMAGENET16_DIR = "ImageNet16"


class DataError(UserError):
    """Missing, corrupt or unexpected dataset files; the message names the file and the fix."""


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


# --- safe reading ------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy array reconstruction and builtin containers; anything else is refused."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(path: Path, fingerprint: Fingerprint | None = None) -> dict:
    """Load one dataset pickle (latin1 strings, as torchvision does) or raise DataError naming the file.

    With `fingerprint`, the bytes read are hashed into it (no second read of the file).
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror}") from error
    if fingerprint is not None:
        fingerprint.add(f"{path.parent.name}/{path.name}", raw)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # truncated, corrupt, or not a dataset pickle at all
        raise DataError(
            f"{path} is corrupt or not a dataset pickle ({type(error).__name__}: {error}); "
            "delete it and fetch the dataset again (--download for CIFAR)"
        ) from error
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict; fetch the dataset again")
    return obj


def _images_labels(path: Path, entry: dict, label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{path} lacks usable 'data'/'{label_key}' entries ({error}); fetch the dataset again"
        ) from error
    pixels = 3 * side * side
    if data.ndim != 2 or data.shape[1] != pixels or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: expected data N×{pixels} and N labels, got {data.shape} and {labels.shape}; fetch it again"
        )
    return data.reshape(-1, 3, side, side), labels


def _numbered(folder: Path, prefix: str) -> list[Path]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def _resolve(data_dir: Path, subdir: str, marker: str, dataset: str) -> Path:
    """The folder holding the files: `data_dir/subdir` or `data_dir` itself."""
    for candidate in (data_dir / subdir, data_dir):
        if (candidate / marker).is_file():
            return candidate
    fix = "pass --download to fetch it" if dataset != "imagenet16_120" else "get NB201's ImageNet16 pickles"
    raise DataError(f"no {dataset} data in {data_dir} (looked for {subdir}/{marker} and {marker}); {fix}")


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


Split = tuple[torch.Tensor, torch.Tensor]


def read_cifar10(data_dir: Path, fingerprint: Fingerprint | None = None) -> tuple[Split, Split]:
    """(train, test) from `cifar-10-batches-py`: any number of `data_batch_*`, plus `test_batch`."""
    folder = _resolve(data_dir, CIFAR10_DIR, "test_batch", "cifar10")
    batches = _numbered(folder, "data_batch_")
    if not batches:
        raise DataError(f"no data_batch_* files in {folder}; fetch the dataset again (--download)")
    parts = [_images_labels(p, safe_unpickle(p, fingerprint), "labels", 32) for p in batches]
    train = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    test = _images_labels(folder / "test_batch", safe_unpickle(folder / "test_batch", fingerprint), "labels", 32)
    return _tensors(*train), _tensors(*test)


def read_cifar100(data_dir: Path, fingerprint: Fingerprint | None = None) -> tuple[Split, Split]:
    """(train, test) from `cifar-100-python/{train,test}` with the 100 fine labels."""
    folder = _resolve(data_dir, CIFAR100_DIR, "test", "cifar100")
    out = []
    for name in ("train", "test"):
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing; fetch CIFAR-100 (--download)")
        out.append(_tensors(*_images_labels(path, safe_unpickle(path, fingerprint), "fine_labels", 32)))
    return out[0], out[1]


def read_imagenet16(
    data_dir: Path, fingerprint: Fingerprint | None = None, classes: int = DATASETS["imagenet16_120"].num_classes
) -> tuple[Split, Split]:
    """(train, val) from NB201's ImageNet16 pickles, keeping labels 1..classes, made 0-based."""
    folder = _resolve(data_dir, IMAGENET16_DIR, "val_data", "imagenet16_120")
    batches = _numbered(folder, "train_data_batch_")
    if not batches:
        raise DataError(f"no train_data_batch_* files in {folder}; get NB201's ImageNet16 pickles")
    out = []
    for paths in (batches, [folder / "val_data"]):
        parts = [_images_labels(p, safe_unpickle(p, fingerprint), "labels", 16) for p in paths]
        x, y = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
        keep = (y >= 1) & (y <= classes)
        out.append(_tensors(x[keep], y[keep] - 1))
    return out[0], out[1]


READERS = {"cifar10": read_cifar10, "cifar100": read_cifar100, "imagenet16_120": read_imagenet16}
"""`DatasetInfo.files` -> the reader of those files."""


def _download(dataset: str, data_dir: Path) -> None:
    """Fetch CIFAR with torchvision's helper (which checks md5), then we read the pickles ourselves."""
    import torchvision

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if dataset == "cifar100":
            torchvision.datasets.CIFAR100(str(data_dir), train=True, download=True)
        elif dataset.startswith("cifar10"):
            torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
        else:
            raise DataError("ImageNet16-120 cannot be downloaded automatically; get NB201's ImageNet16 pickles")
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"downloading {dataset} into {data_dir} failed: {error}") from error


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


DataDirs = str | Path | Sequence[str | Path]
"""One folder, several folders (a list, or one string joined by `os.pathsep`, e.g. `a:b`)."""


def data_dirs(data_dir: DataDirs) -> list[Path]:
    """The folders `data_dir` names, in order: a list/tuple, or a string split on `os.pathsep`."""
    parts: list[str | Path]
    if isinstance(data_dir, str):
        parts = [p for p in data_dir.split(os.pathsep) if p]
    elif isinstance(data_dir, Path):
        parts = [data_dir]
    else:
        parts = list(data_dir)
    if not parts:
        raise DataError("no data directory given")
    return [Path(p).expanduser() for p in parts]


class _Prefixed:
    """A Fingerprint view that prefixes every file name: folders holding same-named files stay distinct."""

    def __init__(self, fingerprint: Fingerprint, prefix: str) -> None:
        self.fingerprint, self.prefix = fingerprint, prefix

    def add(self, name: str, content: bytes) -> None:
        self.fingerprint.add(self.prefix + name, content)


def read_joined(files: str, folders: list[Path], fingerprint: Fingerprint) -> tuple[Split, Split]:
    """(train, test) of every folder, concatenated in the order given (one folder: read as is).

    With several folders each file is fingerprinted as `<k>:<folder>/<file>` (k = position), so the
    fingerprint covers every file of every folder; a single folder keeps its plain names (and so
    its fingerprint). The folders must not share images (not checked here: the shipped lossless
    and JPEG CIFAR-10 sets do not, see their manifest.csv).
    """
    if len(folders) == 1:
        return READERS[files](folders[0], fingerprint)
    trains, tests = [], []
    for k, folder in enumerate(folders):
        train, test = READERS[files](folder, _Prefixed(fingerprint, f"{k}:"))  # type: ignore[arg-type]
        trains.append(train)
        tests.append(test)
    return _cat(trains), _cat(tests)


def _cat(parts: list[Split]) -> Split:
    sides = {tuple(x.shape[1:]) for x, _ in parts}
    if len(sides) != 1:
        raise DataError(f"the joined folders hold images of different shapes {sorted(sides)}; join only one dataset")
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


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
    download: bool = False,
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
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    side = info.image_size if image_size is None else image_size
    if not (isinstance(side, int) and 1 <= side <= info.image_size and info.image_size % side == 0):
        raise DataError(f"image_size {image_size!r} must divide {dataset}'s {info.image_size} px (e.g. 16)")
    pad = max(1, info.pad * side // info.image_size) if side != info.image_size else info.pad
    folders = data_dirs(data_dir)
    if len(folders) > 1 and download:
        raise DataError("--download needs one data directory, not a list")
    for folder in folders:
        if download:
            _download(dataset, folder)
        elif not folder.is_dir():
            raise DataError(f"data directory {folder} does not exist; create it and pass --download to fetch {dataset}")
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
