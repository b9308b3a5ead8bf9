"""Dataset files → uint8 tensors: the restricted unpickler, the CIFAR-10/100 and ImageNet16 readers,
and folder lists (several folders' files joined in order).

Files are read with a restricted unpickler (numpy arrays and plain containers only), because
dataset pickles may come from anywhere. `pipeline.train.data` cuts NB201's splits from what these
readers return; `pipeline.train.download` fetches CIFAR when no folder holds it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.datasets import DATASETS
from core.errors import UserError
from core.provenance import Fingerprint

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
IMAGENET16_DIR = "ImageNet16"

Split = tuple[torch.Tensor, torch.Tensor]


class DataError(UserError):
    """Missing, corrupt or unexpected dataset files; the message names the file and the fix."""


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


LAYOUT = {
    "cifar10": (CIFAR10_DIR, "test_batch"),
    "cifar100": (CIFAR100_DIR, "test"),
    "imagenet16_120": (IMAGENET16_DIR, "val_data"),
}
"""`DatasetInfo.files` -> (the folder its files sit in, a file every copy has)."""


def holds(files: str, data_dir: Path) -> bool:
    """Whether `data_dir` (or its `cifar-10-batches-py`-style subfolder) holds `files`' dataset."""
    subdir, marker = LAYOUT[files]
    return any((candidate / marker).is_file() for candidate in (data_dir / subdir, data_dir))


def _resolve(data_dir: Path, files: str, dataset: str) -> Path:
    """The folder holding the files: `data_dir/subdir` or `data_dir` itself."""
    subdir, marker = LAYOUT[files]
    for candidate in (data_dir / subdir, data_dir):
        if (candidate / marker).is_file():
            return candidate
    fix = "pass --download to fetch it" if dataset != "imagenet16_120" else "get NB201's ImageNet16 pickles"
    raise DataError(f"no {dataset} data in {data_dir} (looked for {subdir}/{marker} and {marker}); {fix}")


def _tensors(x: np.ndarray, y: np.ndarray) -> Split:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def read_cifar10(data_dir: Path, fingerprint: Fingerprint | None = None) -> tuple[Split, Split]:
    """(train, test) from `cifar-10-batches-py`: any number of `data_batch_*`, plus `test_batch`."""
    folder = _resolve(data_dir, "cifar10", "cifar10")
    batches = _numbered(folder, "data_batch_")
    if not batches:
        raise DataError(f"no data_batch_* files in {folder}; fetch the dataset again (--download)")
    parts = [_images_labels(p, safe_unpickle(p, fingerprint), "labels", 32) for p in batches]
    train = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    test = _images_labels(folder / "test_batch", safe_unpickle(folder / "test_batch", fingerprint), "labels", 32)
    return _tensors(*train), _tensors(*test)


def read_cifar100(data_dir: Path, fingerprint: Fingerprint | None = None) -> tuple[Split, Split]:
    """(train, test) from `cifar-100-python/{train,test}` with the 100 fine labels."""
    folder = _resolve(data_dir, "cifar100", "cifar100")
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
    folder = _resolve(data_dir, "imagenet16_120", "imagenet16_120")
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


# --- several folders ------------------------------------------------------------------------------

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
