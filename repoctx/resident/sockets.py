"""The resident engine's Unix socket and lock files: owner-only folders, socket paths longer
than AF_UNIX allows, the peer's credentials, and flock-based locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from repoctx.errors import EngineError
from repoctx.paths import ensure_private_dir

MAX_UNIX_PATH = 107  # sun_path is 108 bytes on Linux, with its terminating NUL
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def private_runtime_dir(path: Path) -> Path:
    """``path`` created 0700, or made 0700 when it exists; refused when another user owns it
    (someone could then read or replace the socket)."""
    ensure_private_dir(path)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise EngineError(
            f"{path} belongs to user {info.st_uid}, not to you; remove it or set REPOCTX_HOME "
            "to a folder of your own"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind/connect: ``path`` itself, or when it is longer than AF_UNIX allows,
    the same file reached through ``/proc/self/fd`` of a descriptor of its folder."""
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_lock(fd: int, exclusive: bool = True) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block, waiting up to ``timeout`` seconds."""
    fd = open_lock_file(path)
    try:
        deadline = time.monotonic() + timeout
        while not try_lock(fd):
            if time.monotonic() > deadline:
                raise EngineError(f"{path} stayed locked for {timeout:.0f} s ({what}); try again")
            time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether a process holds ``path``'s flock (the server holds its lock while it lives)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if try_lock(fd, exclusive=False):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
