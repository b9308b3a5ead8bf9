"""Write-temp-then-rename, once: readers see the old file or the new one, never part of one.

The temporary file gets a unique name in the target's folder (same filesystem, so `os.replace`
is atomic), so two processes writing the same target never trip over each other's temp file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `target`; on a clean exit it replaces `target`.

    On an exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets an ordinary file's mode
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Replace `target` with `text` atomically; returns the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
