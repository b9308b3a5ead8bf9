"""Fetching CIFAR-10/100 when no configured folder holds them: the official archive through
torchvision's downloader (md5-checked), unpacked into a cache folder.

The cache is `download.cache`, else `$NB201_DATA`, else `data/` in the repository (git-ignored).
A cache whose `cifar-10-batches-py` already holds the official files (every file's md5 matches
torchvision's list) is used as is: point it at a CIFAR-10 you already have. Nothing half-written is
ever left there: the archive is downloaded to a temporary folder inside the cache, verified,
unpacked beside it, its files checked against their own md5s, and only then renamed into place;
any failure removes what was written and raises one `DownloadError` that names the fix. A folder
that exists but is not the official files is never overwritten. A lock file serialises two
drivers sharing one cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.train.readers import DataError

REPO = Path(__file__).resolve().parents[2]
CACHE_ENV = "NB201_DATA"
"""Environment variable naming the default cache folder."""
LOCK_NAME = ".nb201-fetch.lock"
TEMP_PREFIX = ".nb201-fetch-"


class DownloadError(DataError):
    """Fetching or unpacking the dataset failed; nothing was left in the cache. The message names the fix."""


class FetchSettings(Protocol):
    """What `RunSpec.download` (a mapping in the config) says; any object with these attributes."""

    enabled: bool
    cache: str | None
    url: str | None
    archive: str | None


@dataclass(frozen=True)
class Fetch:
    """`FetchSettings` for callers without a config (`load_splits(download=True)`, the tests)."""

    enabled: bool = True
    cache: str | None = None
    url: str | None = None
    archive: str | None = None


@dataclass(frozen=True)
class Archive:
    """One downloadable dataset: where its archive lives, its md5, the folder it unpacks to and the md5
    of every file in that folder."""

    url: str
    filename: str
    md5: str
    folder: str
    files: dict[str, str]


ARCHIVES: dict[str, Archive] = {}
"""`DatasetInfo.files` -> its archive, filled from torchvision's dataset classes on first use."""


def archive_for(files: str) -> Archive:
    """The archive of `files` (`cifar10`, `cifar100`); ImageNet16-120 has none to download."""
    if files not in ARCHIVES:
        from torchvision.datasets import CIFAR10, CIFAR100

        classes = {"cifar10": CIFAR10, "cifar100": CIFAR100}
        if files not in classes:
            raise DataError("ImageNet16-120 cannot be downloaded automatically; get NB201's ImageNet16 pickles")
        cls = classes[files]
        listed = {name: md5 for name, md5 in [*cls.train_list, *cls.test_list]}
        listed[cls.meta["filename"]] = cls.meta["md5"]
        ARCHIVES[files] = Archive(cls.url, cls.filename, cls.tgz_md5, cls.base_folder, listed)
    return ARCHIVES[files]


def cache_root(cache: str | None) -> Path:
    """Where fetched datasets live: `cache`, else $NB201_DATA, else `data/` in the repository."""
    chosen = cache or os.environ.get(CACHE_ENV) or str(REPO / "data")
    return Path(chosen).expanduser()


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _wrong_files(folder: Path, archive: Archive) -> list[str]:
    """Files of `archive` missing from `folder` or differing from their md5 (empty: all official)."""
    return [
        name for name, md5 in archive.files.items() if not (folder / name).is_file() or md5_of(folder / name) != md5
    ]


def ensure(files: str, settings: FetchSettings) -> Path:
    """The cache folder that holds `files`' dataset (the folder above `cifar-10-batches-py`), fetched
    and unpacked there first when it does not yet hold the official files."""
    archive = archive_for(files)
    root = cache_root(settings.cache)
    target = root / archive.folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"cannot create the data cache {root} ({error.strerror}); set {CACHE_ENV} or download.cache"
        ) from None
    with _locked(root):
        if target.exists():
            wrong = _wrong_files(target, archive)
            if wrong:
                raise DownloadError(
                    f"{target} exists but is not the official {archive.filename} contents ({wrong[0]} is missing or "
                    f"differs); move it away to fetch it again, or pass --data-dir {root} to read it as it is"
                )
            return root
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=root) as tmp:
            tgz = _local(Path(settings.archive).expanduser(), archive) if settings.archive else None
            tgz = tgz or _download(settings.url or archive.url, Path(tmp), archive, root)
            unpacked = _unpack(tgz, Path(tmp) / "unpacked", archive)
            os.replace(unpacked, target)
    print(f"data: {archive.folder} ready in {root}", file=sys.stderr)
    return root


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the cache's lock; remove temporary folders a killed fetch left behind."""
    with (root / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for stale in root.glob(TEMP_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fixes(archive: Archive) -> str:
    return (
        f"set download.url to a mirror of {archive.filename}, or download.archive to a local copy of it, "
        "or --data-dir to a folder holding cifar-10-batches-py"
    ).replace("cifar-10-batches-py", archive.folder)


def _local(path: Path, archive: Archive) -> Path:
    """A local archive (`download.archive`), verified in place."""
    if not path.is_file():
        raise DownloadError(f"download.archive {path} does not exist; give the path of {archive.filename}")
    got = md5_of(path)
    if got != archive.md5:
        raise DownloadError(
            f"checksum mismatch: download.archive {path} has md5 {got}, expected {archive.md5} (truncated, or not "
            f"the official {archive.filename}); fetch it again, or drop download.archive to download it"
        )
    return path


def _download(url: str, folder: Path, archive: Archive, root: Path) -> Path:
    """torchvision's `download_url` into `folder` (a temporary folder), md5-checked."""
    from torchvision.datasets.utils import download_url

    path = folder / archive.filename
    print(f"data: fetching {url} into {root} (checked against md5 {archive.md5})", file=sys.stderr)
    try:
        download_url(url, str(folder), archive.filename, archive.md5)
        print(file=sys.stderr)  # ends torchvision's progress line
    except RuntimeError as error:  # torchvision's "File not found or corrupted.": the md5 differs
        got = md5_of(path) if path.is_file() else "none (no file)"
        size = path.stat().st_size if path.is_file() else 0
        raise DownloadError(
            f"checksum mismatch: {url} gave {size:,} bytes with md5 {got}, expected {archive.md5} (a download that "
            f"broke off, or an altered file); nothing was kept in {root}. Fix: run again, or {_fixes(archive)}"
        ) from error
    except http.client.IncompleteRead as error:
        raise DownloadError(
            f"the download of {url} broke off after {len(error.partial):,} bytes of a chunk (truncated); nothing was "
            f"kept in {root}. Fix: run again, or {_fixes(archive)}"
        ) from None
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}; {_fixes(archive)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError, RecursionError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"cannot download {url} ({reason}): no network here? Fix: {_fixes(archive)}; nothing was kept in {root}"
        ) from None
    return path


def _unpack(tgz: Path, dest: Path, archive: Archive) -> Path:
    """Unpack `tgz` into `dest` (a temporary folder) and check every file; the unpacked folder."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DownloadError(
            f"{tgz.name} could not be unpacked ({type(error).__name__}: {error}); nothing was kept. Fix: fetch it "
            "again (delete download.archive's file if you gave one)"
        ) from None
    folder = dest / archive.folder
    wrong = _wrong_files(folder, archive)
    if wrong:
        raise DownloadError(
            f"{tgz.name} passed its checksum but its {wrong[0]} is missing or differs; nothing was kept. "
            "Fix: fetch it again"
        )
    return folder
