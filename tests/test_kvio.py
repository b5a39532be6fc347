"""Moving states between memory and files (kvio) and the host memory they live in (hostmem):
parallel chunked reads and writes whose digest does not depend on how the work was split, and
failures that say where they happened."""

from __future__ import annotations

import llama_cpp  # isort: skip  # before numpy, as the engine does

import ctypes
import errno
import itertools
import os
from pathlib import Path

import pytest

from repoctx.engine import hostmem, pinning
from repoctx.engine.hostmem import HostPool, allocate, pinned_buffer_type
from repoctx.kv import io as kvio

CHUNK = 1 << 16


def data(size: int, seed: int = 0) -> bytes:
    return (bytes(range(256)) * (size // 256 + 2))[seed : seed + size]


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, 5 * CHUNK + 123])
def test_what_is_written_reads_back_with_the_same_digest(tmp_path: Path, size: int) -> None:
    payload = data(size, 7)
    path = tmp_path / "state"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        written = kvio.write_state(fd, memoryview(payload), CHUNK)
        assert path.read_bytes() == payload
        target = bytearray(size)
        assert kvio.read_state(fd, memoryview(target), CHUNK) == written
        assert bytes(target) == payload
        assert kvio.file_digest(fd, size, CHUNK) == written
    finally:
        os.close(fd)
    assert kvio.digest(memoryview(payload), CHUNK) == written
    assert written.startswith(f"xxh3c-{CHUNK}:")


@pytest.mark.parametrize("cached", [True, False], ids=["page-cache", "disk"])
def test_aligned_memory_moves_directly_and_reads_back(tmp_path: Path, cached: bool) -> None:
    """Host buffers are page-aligned: their bulk is written through O_DIRECT (where the file
    system has it), the tail through the page cache; reads go through the page cache, in runs
    of chunks, whether the file is there or not. The bytes and digests agree."""
    size = 3 * CHUNK + 1234
    source, target = allocate(size, None), allocate(size, None)
    try:
        source.view[:size] = data(size, 3)
        path = tmp_path / "state"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            written = kvio.write_state(fd, source.view[:size], CHUNK)
            os.fsync(fd)
            if not cached:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert kvio.read_state(fd, target.view[:size], CHUNK) == written
        finally:
            os.close(fd)
        assert path.read_bytes() == data(size, 3)
        assert bytes(target.view[:size]) == data(size, 3)
    finally:
        source.free()
        target.free()


def test_the_digest_sees_every_byte_and_the_chunking() -> None:
    payload = bytearray(data(3 * CHUNK))
    reference = kvio.digest(memoryview(payload), CHUNK)
    payload[2 * CHUNK + 5] ^= 1
    assert kvio.digest(memoryview(payload), CHUNK) != reference
    assert kvio.digest(memoryview(payload), CHUNK * 2) != kvio.digest(memoryview(payload), CHUNK)


def test_a_short_file_is_an_error_that_says_where(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(data(CHUNK + 10))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=f"ends at byte {CHUNK + 10:,}"):
            kvio.read_state(fd, memoryview(bytearray(3 * CHUNK)), CHUNK)
    finally:
        os.close(fd)


def test_a_failing_chunk_stops_the_write(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "state", os.O_RDWR | os.O_CREAT, 0o600)
    moved: list[int] = []

    def full_disk(count: int) -> None:
        moved.append(count)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        with pytest.raises(OSError, match="No space left"):
            kvio.write_state(fd, memoryview(data(40 * CHUNK)), CHUNK, on_chunk=full_disk)
    finally:
        os.close(fd)
    assert len(moved) < 40, "the chunks not started were dropped"


def test_a_failing_chunk_stops_the_read(tmp_path: Path) -> None:
    """A cancelled restore (the progress callback raises) stops every reader after the chunk
    it is moving, and the error comes out."""
    path = tmp_path / "state"
    path.write_bytes(data(40 * CHUNK))
    moved: list[int] = []

    def cancelled(count: int) -> None:
        moved.append(count)
        raise KeyboardInterrupt

    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(KeyboardInterrupt):
            kvio.read_state(fd, memoryview(bytearray(40 * CHUNK)), CHUNK, on_chunk=cancelled)
    finally:
        os.close(fd)
    assert len(moved) <= kvio.io_threads(kvio.MAX_READERS), "one chunk per reader at most"


@pytest.mark.parametrize("chunks", [1, 2, 3, 17, 40])
def test_reads_are_cut_in_contiguous_runs_one_per_thread(chunks: int) -> None:
    starts = [index * CHUNK for index in range(chunks)]
    runs = kvio._runs(starts, 16)
    assert [start for run in runs for start in run] == starts, "every chunk once, in order"
    assert len(runs) == min(16, chunks) and all(runs)
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_without_a_gpu_backend_there_is_no_page_locked_buffer_type() -> None:
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("a GPU build: its host buffers are page-locked")
    assert pinned_buffer_type() is None


def test_host_buffers_are_writable_memory_of_the_size_asked() -> None:
    buffer = allocate(1000, None)
    try:
        assert buffer.size >= 1000 and not buffer.pinned
        buffer.view[:5] = b"hello"
        assert bytes(buffer.view[:5]) == b"hello"
    finally:
        buffer.free()


@pytest.mark.parametrize("pages", [1, 3, 8, 13])
def test_touching_cuts_a_buffer_into_whole_huge_pages_one_run_a_thread(pages: int) -> None:
    size = pages * pinning.HUGE_PAGE - 4096  # the last page partly
    runs = pinning._slices(1 << 30, size, 8)
    assert len(runs) == min(8, pages)
    assert runs[0][0] == 1 << 30 and sum(length for _, length in runs) == size
    for (start, length), (after, _) in itertools.pairwise(runs):
        assert start + length == after and length % pinning.HUGE_PAGE == 0


def _resident_pages(address: int, size: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-size // 4096)
    vector = (ctypes.c_ubyte * pages)()
    assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
    return sum(byte & 1 for byte in vector)


def test_memory_to_register_is_aligned_to_a_huge_page_and_already_touched() -> None:
    """Page-locking touches every page; the threads do it first, while the model loads."""
    size = 5 * pinning.HUGE_PAGE + 12_288
    memory, address = pinning.map_touched(size)
    try:
        assert address % pinning.HUGE_PAGE == 0
        assert _resident_pages(address, size) == -(-size // 4096)
        ctypes.memset(address + size - 3, 7, 3)  # writable to its last byte
        assert ctypes.string_at(address + size - 3, 3) == b"\x07\x07\x07"
    finally:
        memory.close()


class RefusingLibc:
    """libc whose ``madvise`` refuses to populate with ``code``, recording ``memset`` calls."""

    def __init__(self, code: int) -> None:
        self.code, self.memsets = code, 0

    def madvise(self, address: int, size: int, advice: int) -> int:
        if advice != pinning._MADV_POPULATE_WRITE:
            return 0
        ctypes.set_errno(self.code)
        return -1

    def memset(self, address: int, value: int, size: int) -> None:
        self.memsets += 1
        ctypes.memset(address, value, size)


def test_a_forked_child_does_not_share_the_memory_to_register() -> None:
    """The pack forks workers; pages the GPU copies into must stay the parent's alone."""
    memory, address = pinning.map_touched(pinning.HUGE_PAGE)
    try:
        child = os.fork()
        if child == 0:  # mincore fails with ENOMEM where nothing is mapped
            vector = (ctypes.c_ubyte * 512)()
            libc = ctypes.CDLL(None, use_errno=True)
            mapped = libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(4096), vector) == 0
            os._exit(1 if mapped else 0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _resident_pages(address, pinning.HUGE_PAGE) == pinning.HUGE_PAGE // 4096
    finally:
        memory.close()


def test_without_memory_to_touch_a_buffer_is_a_memory_error_not_the_oom_killer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = RefusingLibc(errno.ENOMEM)
    monkeypatch.setattr(pinning, "_libc", lambda: libc)
    monkeypatch.setattr(pinning, "can_register", lambda: True)
    with pytest.raises(MemoryError, match="cannot map"):
        allocate(3 << 20, buffer_type=1)
    assert libc.memsets == 0, "writing pages the system cannot give would wake the OOM killer"


def test_a_kernel_without_populate_has_its_pages_written_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = RefusingLibc(errno.EINVAL)
    monkeypatch.setattr(pinning, "_libc", lambda: libc)
    memory, address = pinning.map_touched(3 * pinning.HUGE_PAGE)
    try:
        assert libc.memsets == min(3, os.cpu_count() or 1)  # one a thread
        assert _resident_pages(address, 3 * pinning.HUGE_PAGE) == 3 * pinning.HUGE_PAGE // 4096
    finally:
        memory.close()


def test_without_the_cuda_runtime_nothing_is_registered() -> None:
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("a GPU build")
    assert not pinning.can_register() and pinning.register(1 << 30, 4096) is None


def test_a_registered_buffer_is_unregistered_before_it_is_unmapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CUDA runtime stood in for on a machine without a GPU: ``allocate`` with a GPU's
    buffer type registers touched memory, and frees it in the order the runtime needs."""
    calls: list[tuple[str, int, bool]] = []

    def register(address: int, size: int) -> object:
        calls.append(("register", size, _resident_pages(address, size) > 0))
        return lambda: calls.append(("unregister", size, _resident_pages(address, size) > 0))

    monkeypatch.setattr(pinning, "can_register", lambda: True)
    monkeypatch.setattr(pinning, "register", register)
    buffer = allocate(3 << 20, buffer_type=1)
    assert buffer.pinned and buffer.registered and buffer.size == 4 << 20
    buffer.view[-5:] = b"hello"
    buffer.free()
    assert calls == [("register", 4 << 20, True), ("unregister", 4 << 20, True)]


def test_memory_the_runtime_refuses_to_register_is_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mapped: list[object] = []
    real = pinning.map_touched

    def map_touched(size: int) -> object:
        memory, address = real(size)
        mapped.append(memory)
        return memory, address

    monkeypatch.setattr(pinning, "can_register", lambda: True)
    monkeypatch.setattr(pinning, "map_touched", map_touched)
    monkeypatch.setattr(pinning, "register", lambda address, size: None)
    assert hostmem._registered(2 << 20) is None
    assert [memory.closed for memory in mapped] == [True]  # type: ignore[attr-defined]


def test_the_pool_hands_freed_buffers_out_again_within_its_cap() -> None:
    pool = HostPool(cap_bytes=8 << 20, buffer_type=None)
    first = pool.take(3 << 20)
    pool.give_back(first)
    again = pool.take(3 << 20)
    assert again is first, "reused rather than allocated (page-locking is slow)"
    other = pool.take(3 << 20)
    assert other is not first and pool.held_bytes == first.size + other.size
    pool.give_back(again)
    pool.give_back(other)
    assert pool.held_bytes <= 8 << 20
    big = pool.take(6 << 20)  # kept buffers are freed to make room under the cap
    assert pool.held_bytes <= 8 << 20 + big.size
    pool.give_back(big)
    pool.close()
    assert pool.held_bytes == 0


def test_a_reserved_buffer_is_allocated_in_the_background_and_taken(
    host_allocations: list[str],
) -> None:
    """``reserve`` page-locks ahead of time in a thread of its own; the ``take`` that comes
    next waits for it, if it must, and allocates nothing itself."""
    made = host_allocations
    pool = HostPool(cap_bytes=16 << 20, buffer_type=None)
    pool.reserve(5 << 20)
    pool.reserve(5 << 20)  # one reservation at a time
    buffer = pool.take(5 << 20)
    assert made == ["repoctx-host-reserve"], "allocated once, in the background"
    assert pool.reserved_s > 0
    pool.give_back(buffer)
    pool.reserve(5 << 20)  # a kept buffer serves: nothing to reserve
    pool.reserve(64 << 20)  # over the cap: nothing either
    assert made == ["repoctx-host-reserve"]
    pool.close()
    assert pool.held_bytes == 0
