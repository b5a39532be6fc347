"""Page-locking memory the process already has, through the CUDA runtime that the GPU backend
loaded (``cudaHostRegister``), rather than asking that runtime for new page-locked memory
(``cudaHostAlloc``, ggml's host buffer type).

Measured on an H100 host for 9.13 GB (`benchmarks/host-pinning.py`): cudaHostAlloc took 5.6 s.
Faulting in an anonymous map backed by transparent huge pages took 0.85 s on 8 threads (1.1 s
on one), and registering it 0.26 s, with copies to the device at the bus's speed. Only the
registration is CUDA's work, and CUDA serializes its work with the model's upload: a process
that restores a 128K-token state loaded its model in 3.3 s instead of 5.3 s.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

_REGISTER_PORTABLE = 1  # cudaHostRegisterPortable: page-locked for every CUDA context
_MADV_DONTFORK = 10
_MADV_HUGEPAGE = 14
_MADV_POPULATE_WRITE = 23  # Linux 5.14: fault pages in writable, without writing them
HUGE_PAGE = 1 << 21
_TOUCH_THREADS = 8


@cache
def _cuda_runtime() -> ctypes.CDLL | None:
    """The CUDA runtime library already mapped into this process (by ggml's CUDA backend),
    or None: a runtime of its own would be a second copy, with its own error state."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libcudart.so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            runtime = ctypes.CDLL(path)
        except OSError:
            continue
        runtime.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        runtime.cudaHostRegister.restype = ctypes.c_int
        runtime.cudaHostUnregister.argtypes = [ctypes.c_void_p]
        runtime.cudaHostUnregister.restype = ctypes.c_int
        runtime.cudaGetLastError.restype = ctypes.c_int
        return runtime
    return None


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.memset.restype = ctypes.c_void_p
    return libc


def can_register() -> bool:
    """Whether the GPU backend's CUDA runtime is loaded in this process."""
    return _cuda_runtime() is not None


def map_touched(size: int) -> tuple[mmap.mmap, int]:
    """An anonymous map with ``size`` bytes at a huge-page boundary (the returned address),
    with transparent huge pages asked for and every page faulted in by several threads. A
    touched page is what page-locking needs, and faulting is the slow part of it: huge pages
    make it about three times faster, threads share what is left."""
    memory = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anchor = ctypes.c_char.from_buffer(memory)
    start = ctypes.addressof(anchor)
    del anchor  # an export left alive would keep the map from closing
    address = -(-start // HUGE_PAGE) * HUGE_PAGE
    libc = _libc()
    libc.madvise(address, size, _MADV_HUGEPAGE)  # refused where THP is off: 4 KiB pages then
    # a child forked later (the pack's worker processes) must not share these pages copy-on-write:
    # before Linux 5.9 the parent's next write could move a page the GPU still copies into
    libc.madvise(start, size + HUGE_PAGE, _MADV_DONTFORK)
    slices = _slices(address, size, min(_TOUCH_THREADS, os.cpu_count() or 1))
    try:
        with ThreadPoolExecutor(len(slices), thread_name_prefix="repoctx-touch") as pool:
            list(pool.map(lambda part: _touch(*part), slices))  # ctypes calls release the GIL
    except OSError:
        memory.close()
        raise
    return memory, address


def _slices(address: int, size: int, parts: int) -> list[tuple[int, int]]:
    """``size`` bytes from ``address`` cut into up to ``parts`` runs on huge-page bounds."""
    pages = -(-size // HUGE_PAGE)
    count = max(1, min(parts, pages))
    runs, begin = [], address
    for index in range(count):
        length = (pages // count + (index < pages % count)) * HUGE_PAGE
        runs.append((begin, min(length, address + size - begin)))
        begin += length
    return runs


def _touch(address: int, size: int) -> None:
    """Fault ``size`` bytes in; OSError (ENOMEM) when the system has no memory for them, where
    writing them would wake the OOM killer instead."""
    libc = _libc()
    if libc.madvise(address, size, _MADV_POPULATE_WRITE) == 0:
        return
    code = ctypes.get_errno()
    if code != errno.EINVAL:
        raise OSError(code, os.strerror(code))
    libc.memset(address, 0, size)  # a kernel before 5.14


def register(address: int, size: int) -> Callable[[], None] | None:
    """Page-lock ``size`` bytes at ``address`` for the GPU; the function that undoes it, or None
    when the runtime is missing or refuses (its error is cleared: ggml checks the runtime's
    last error after its own calls, and would take ours for its own)."""
    runtime = _cuda_runtime()
    if runtime is None:
        return None
    if runtime.cudaHostRegister(address, size, _REGISTER_PORTABLE) != 0:
        runtime.cudaGetLastError()
        return None

    def unregister() -> None:
        if runtime.cudaHostUnregister(address) != 0:  # the runtime is shutting down
            runtime.cudaGetLastError()

    return unregister
