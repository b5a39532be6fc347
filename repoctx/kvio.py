"""Moving a KV state between memory and a file at the disk's speed: the state is cut in chunks
that several threads write (or read) at once, each hashing its chunk as it goes, so the
checksum costs no extra pass over the data and is ready when the last byte has moved.

The digest of a state is ``xxh3c-<chunk size>:<hex>``: the XXH3-128 of the XXH3-64 digests of
its chunks in order. It depends only on the bytes and the chunk size, never on the threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import xxhash

CHUNK_BYTES = 64 << 20
MAX_THREADS = 8
_PREFIX = "xxh3c-"
Moved = Callable[[int], None]  # called with each chunk's size once it has moved; may raise


def io_threads() -> int:
    return max(2, min(MAX_THREADS, os.cpu_count() or 1))


def combine(chunk_digests: list[bytes], chunk: int) -> str:
    return f"{_PREFIX}{chunk}:{xxhash.xxh3_128_hexdigest(b''.join(chunk_digests))}"


def digest(view: memoryview, chunk: int = CHUNK_BYTES) -> str:
    """The digest of the bytes in ``view``, computed in memory."""
    starts = _starts(len(view), chunk)
    parts = [xxhash.xxh3_64_digest(view[start : start + chunk]) for start in starts]
    return combine(parts, chunk)


def write_state(
    fd: int, view: memoryview, chunk: int = CHUNK_BYTES, on_chunk: Moved | None = None
) -> str:
    """Write ``view`` at the start of ``fd`` with parallel positioned writes; returns its
    digest. Raises OSError (ENOSPC included), or what ``on_chunk`` raised, once the writes
    under way have ended."""

    def move(start: int, end: int) -> bytes:
        digest = _write_chunk(fd, view, start, end)
        if on_chunk is not None:
            on_chunk(end - start)
        return digest

    return _parallel(len(view), chunk, move)


def read_state(
    fd: int, view: memoryview, chunk: int = CHUNK_BYTES, on_chunk: Moved | None = None
) -> str:
    """Fill ``view`` from the start of ``fd`` with parallel positioned reads; returns the
    digest of what was read. Raises OSError when the file is shorter than ``view``."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, len(view), os.POSIX_FADV_SEQUENTIAL)

    def move(start: int, end: int) -> bytes:
        digest = _read_chunk(fd, view, start, end)
        if on_chunk is not None:
            on_chunk(end - start)
        return digest

    return _parallel(len(view), chunk, move)


def file_digest(fd: int, size: int, chunk: int = CHUNK_BYTES) -> str:
    """The digest of the first ``size`` bytes of ``fd``, read in chunks (for tests and tools)."""
    parts = []
    for start in _starts(size, chunk):
        data = os.pread(fd, min(chunk, size - start), start)
        parts.append(xxhash.xxh3_64_digest(data))
    return combine(parts, chunk)


def _starts(size: int, chunk: int) -> range:
    return range(0, max(size, 1), chunk) if size else range(0)


def _parallel(size: int, chunk: int, move: Callable[[int, int], bytes]) -> str:
    starts = list(_starts(size, chunk))
    if len(starts) <= 1:
        return combine([move(start, min(size, start + chunk)) for start in starts], chunk)
    with ThreadPoolExecutor(max_workers=min(io_threads(), len(starts))) as pool:
        futures = [pool.submit(move, start, min(size, start + chunk)) for start in starts]
        try:
            return combine([future.result() for future in futures], chunk)
        except BaseException:
            for future in futures:
                future.cancel()  # chunks not started yet; those under way finish first
            raise


def _write_chunk(fd: int, view: memoryview, start: int, end: int) -> bytes:
    position = start
    while position < end:
        written = os.pwrite(fd, view[position:end], position)
        if written <= 0:
            raise OSError(f"no progress writing the state at byte {position:,}")
        position += written
    return xxhash.xxh3_64_digest(view[start:end])


def _read_chunk(fd: int, view: memoryview, start: int, end: int) -> bytes:
    position = start
    while position < end:
        count = os.preadv(fd, [view[position:end]], position)
        if count == 0:
            raise OSError(f"the state file ends at byte {position:,} of {len(view):,}")
        position += count
    return xxhash.xxh3_64_digest(view[start:end])
