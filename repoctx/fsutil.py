"""Writing files so that a crash or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int = 0o600) -> None:
    """Write ``data`` (bytes, or chunks of them) to ``path`` through a temporary file in the
    same folder: fsync, then rename over the target. Readers see the old file or the new one,
    never a mix. A symlink is written through (its target is replaced, the link stays); a
    device or a pipe (``-o /dev/null``) is written to directly: it cannot be replaced."""
    chunks = [data] if isinstance(data, bytes) else data
    if _is_special(path):
        with open(path, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        return
    path = path.resolve() if path.is_symlink() else path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _is_special(path: Path) -> bool:
    """Whether ``path`` exists and is not a regular file (after following links)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
