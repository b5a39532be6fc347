"""Moving a KV state between memory and a file at the disk's speed: the state is cut in chunks
that several threads write (or read) at once, each hashing its chunk as it goes (a read, piece
by piece while the piece is still in the processor's cache), so the checksum is ready when the
last byte has moved.

Writes drive the disk directly (O_DIRECT) for the block-aligned bulk of a state held in aligned
memory: on this project's machines buffered writes and an fsync ran at a third of the disk's
speed (a disk that O_DIRECT writes at 1.1-3 GB/s took them at 0.4-1.0). The unaligned tail, and
file systems without O_DIRECT, use ordinary I/O, with the write-back started chunk by chunk.
Reads go through the page cache: each thread reads a contiguous run of chunks in order through a
descriptor of its own, so the kernel's read-ahead sees one sequential stream per thread (on the
lent GPU machine a buffered read of a file not in the page cache beat O_DIRECT reads), and the
file stays cached for the next restore.

The digest of a state is ``xxh3c-<chunk size>:<hex>``: the XXH3-128 of the XXH3-64 digests of
its chunks in order. It depends only on the bytes and the chunk size, never on the threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import xxhash

CHUNK_BYTES = 64 << 20
PIECE_BYTES = 1 << 20  # moved, then hashed while still in the (level 2) cache
MAX_THREADS = 8  # writers
MAX_READERS = 16  # from the page cache, a copy per thread runs at a fraction of memory's speed
BLOCK = 4096  # alignment of O_DIRECT transfers: address, offset and length
_PREFIX = "xxh3c-"
Moved = Callable[[int], None]  # called with each chunk's size once it has moved; may raise


def io_threads(most: int = MAX_THREADS) -> int:
    return max(2, min(most, os.cpu_count() or 1))


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
    """Write ``view`` at the start of ``fd`` (a regular file open for writing) with parallel
    positioned writes; returns its digest. Raises OSError (ENOSPC included), or what
    ``on_chunk`` raised, once the writes under way have ended. ``fsync`` is the caller's."""
    with _direct(fd, view, os.O_WRONLY) as direct:
        bulk = _bulk(len(view), direct)

        def move(start: int, end: int) -> bytes:
            if direct is not None and start < bulk:
                _write_range(direct, view, start, min(end, bulk))
            if end > bulk:
                _write_range(fd, view, max(start, bulk), end)
                _start_write_back(fd, max(start, bulk), end - max(start, bulk))
            if on_chunk is not None:
                on_chunk(end - start)
            return xxhash.xxh3_64_digest(view[start:end])  # the disk is the slower part

        return _parallel(len(view), chunk, move)


def read_state(
    fd: int, view: memoryview, chunk: int = CHUNK_BYTES, on_chunk: Moved | None = None
) -> str:
    """Fill ``view`` from the start of ``fd`` with parallel positioned reads; returns the
    digest of what was read. Raises OSError when the file is shorter than ``view``, or what
    ``on_chunk`` raised, once the reads under way have ended."""
    starts = list(_starts(len(view), chunk))
    runs = _runs(starts, io_threads(MAX_READERS))
    stop = threading.Event()

    def read_run(run: list[int]) -> list[bytes]:
        digests = []
        with _own_descriptor(fd) as own:
            if run and hasattr(os, "posix_fadvise"):
                with contextlib.suppress(OSError):
                    end = min(len(view), run[-1] + chunk)
                    os.posix_fadvise(own, run[0], end - run[0], os.POSIX_FADV_SEQUENTIAL)
            try:
                for start in run:
                    if stop.is_set():
                        break
                    end = min(len(view), start + chunk)
                    digests.append(_read_chunk(own, view, start, end))
                    if on_chunk is not None:
                        on_chunk(end - start)
            except BaseException:
                stop.set()  # the other threads stop after their chunk under way
                raise
        return digests

    if len(runs) <= 1:
        return combine(read_run(starts), chunk)
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = [pool.submit(read_run, run) for run in runs]
        try:
            return combine([d for future in futures for d in future.result()], chunk)
        except BaseException:
            stop.set()
            raise


def _read_chunk(fd: int, view: memoryview, start: int, end: int) -> bytes:
    hasher = xxhash.xxh3_64()
    for at, until in _pieces(start, end):
        _read_range(fd, view, at, until)
        hasher.update(view[at:until])
    return hasher.digest()


def _runs(starts: list[int], threads: int) -> list[list[int]]:
    """``starts`` cut in at most ``threads`` contiguous runs of nearly equal length."""
    count = min(threads, len(starts))
    if count <= 1:
        return [starts]
    size, extra = divmod(len(starts), count)
    runs, at = [], 0
    for index in range(count):
        length = size + (1 if index < extra else 0)
        runs.append(starts[at : at + length])
        at += length
    return runs


def _pieces(start: int, end: int) -> Iterator[tuple[int, int]]:
    for at in range(start, end, PIECE_BYTES):
        yield at, min(end, at + PIECE_BYTES)


@contextlib.contextmanager
def _own_descriptor(fd: int) -> Iterator[int]:
    """A descriptor of ``fd``'s file with a file position and read-ahead state of its own
    (``fd`` itself where /proc is missing)."""
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield fd
        return
    try:
        yield own
    finally:
        os.close(own)


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


@contextlib.contextmanager
def _direct(fd: int, view: memoryview, mode: int) -> Iterator[int | None]:
    """A second descriptor of ``fd``'s file with O_DIRECT, when the memory of ``view`` is
    aligned for it and the file system has it; else None."""
    direct: int | None = None
    flag = getattr(os, "O_DIRECT", 0)
    address = _address(view)
    if flag and address is not None and address % BLOCK == 0 and len(view) >= BLOCK:
        with contextlib.suppress(OSError):
            direct = os.open(f"/proc/self/fd/{fd}", mode | flag | os.O_CLOEXEC)
    try:
        yield direct
    finally:
        if direct is not None:
            os.close(direct)


def _address(view: memoryview) -> int | None:
    if view.readonly:
        return None
    try:
        anchor = ctypes.c_char.from_buffer(view)
    except (TypeError, ValueError):
        return None
    address = ctypes.addressof(anchor)
    del anchor
    return address


def _bulk(size: int, direct: int | None) -> int:
    """How many leading bytes move through the O_DIRECT descriptor."""
    return size // BLOCK * BLOCK if direct is not None else 0


def _write_range(fd: int, view: memoryview, start: int, end: int) -> None:
    position = start
    while position < end:
        written = os.pwrite(fd, view[position:end], position)
        if written <= 0:
            raise OSError(f"no progress writing the state at byte {position:,}")
        position += written


def _read_range(fd: int, view: memoryview, start: int, end: int) -> None:
    position = start
    while position < end:
        count = os.preadv(fd, [view[position:end]], position)
        if count == 0:
            size = os.fstat(fd).st_size  # where it ends, whichever reader came upon it
            raise OSError(f"the state file ends at byte {size:,} of {len(view):,}")
        position += count


_SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_sync_file_range = _libc_sync_file_range()


def _start_write_back(fd: int, start: int, length: int) -> None:
    """Ask the kernel to start writing this range to the disk now (Linux; elsewhere the
    final fsync does it all)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, start, length, _SYNC_FILE_RANGE_WRITE)
