"""Host memory for KV states. With a GPU, buffers are page-locked: copies between them and the
device run at the bus's speed, where ordinary memory is staged through a bounce buffer at a
fraction of it. With CUDA they are anonymous maps on huge pages, touched by several threads and
registered with the runtime (``pinning``); else they come from the GPU backend's own host
allocator (CUDA's cudaMallocHost, several times slower to get). Without a GPU, they are
anonymous memory maps. Page-locking is slow, so the engine keeps freed buffers in a pool and
hands them out again. The buffer of the state a new process most likely restores (the latest
saved) is asked for ahead of time (``reserve``), in a thread of its own while the model loads,
instead of in front of the restore. Page-locking stalls the GPU's work while it runs (CUDA
serializes it with kernels and copies: a prefill took as much longer as the page-locking beside
it took), so it is never done while a prompt is evaluated: the buffer of a new state is
allocated when it is copied out, after the answer.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp  # noqa: F401 - before numpy; loads the ggml libraries used below
import llama_cpp._ggml as ggml_bindings

from repoctx.engine import pinning

_GPU_DEVICE = 1  # GGML_BACKEND_DEVICE_TYPE_GPU
_ALIGN = 1 << 21


def _ggml() -> ctypes.CDLL:
    lib: ctypes.CDLL = ggml_bindings.libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_host_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_host_buffer_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buft_alloc_buffer.restype = ctypes.c_void_p
    lib.ggml_backend_buft_alloc_buffer.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_backend_buffer_get_base.restype = ctypes.c_void_p
    lib.ggml_backend_buffer_get_base.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_free.restype = None
    lib.ggml_backend_buffer_free.argtypes = [ctypes.c_void_p]
    return lib


def pinned_buffer_type() -> int | None:
    """The host buffer type of the first GPU device, if the backend has one."""
    lib = _ggml()
    for index in range(int(lib.ggml_backend_dev_count())):
        device = lib.ggml_backend_dev_get(index)
        if device and lib.ggml_backend_dev_type(device) == _GPU_DEVICE:
            buffer_type = lib.ggml_backend_dev_host_buffer_type(device)
            return int(buffer_type) if buffer_type else None
    return None


@dataclass(eq=False)
class HostBuffer:
    """``size`` bytes at ``address``; ``view`` is a writable memoryview of them."""

    address: int
    size: int
    pinned: bool
    _release: Callable[[], None] | None = field(repr=False)
    registered: bool = False  # page-locked by registering touched memory (see ``pinning``)
    view: memoryview = field(init=False, repr=False)

    def __post_init__(self) -> None:
        array = (ctypes.c_ubyte * self.size).from_address(self.address)
        self.view = memoryview(array).cast("B")

    def free(self) -> None:
        release, self._release = self._release, None
        self.view.release()
        if release is not None:
            release()


def allocate(size: int, buffer_type: int | None) -> HostBuffer:
    """A buffer of at least ``size`` bytes: page-locked when ``buffer_type`` (the GPU backend's
    host buffer type) is given, registered with CUDA or else from ``buffer_type`` (ordinary
    memory when the driver refuses both), else an anonymous map. MemoryError when the system
    has no memory left."""
    size = max(_ALIGN, -(-size // _ALIGN) * _ALIGN)
    if buffer_type is not None:
        registered = _registered(size)
        if registered is not None:
            return registered
        lib = _ggml()
        handle = lib.ggml_backend_buft_alloc_buffer(buffer_type, size)
        if handle:
            base = int(lib.ggml_backend_buffer_get_base(handle))
            return HostBuffer(base, size, True, lambda: _ggml().ggml_backend_buffer_free(handle))
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    try:  # populated: faulting its pages in one by one while a state is read costs more
        memory = mmap.mmap(-1, size, flags=flags)
    except OSError as error:
        raise MemoryError(f"cannot map {size:,} bytes for a KV state") from error
    anchor = ctypes.c_char.from_buffer(memory)
    base = ctypes.addressof(anchor)
    del anchor  # an export left alive would keep the map from closing
    return HostBuffer(base, size, False, memory.close)


def _registered(size: int) -> HostBuffer | None:
    """``size`` bytes of touched memory registered with the CUDA runtime, or None where there
    is no such runtime or it refuses."""
    if not pinning.can_register():
        return None
    try:
        memory, address = pinning.map_touched(size)
    except OSError as error:
        raise MemoryError(f"cannot map {size:,} bytes for a KV state") from error
    unregister = pinning.register(address, size)
    if unregister is None:
        memory.close()
        return None

    def release() -> None:  # the runtime lets go of the pages before they are unmapped
        unregister()
        memory.close()

    return HostBuffer(address, size, True, release, registered=True)


class HostPool:
    """Buffers handed out and taken back; freed buffers are kept for reuse up to ``cap_bytes``
    of memory in all (lent, kept and being reserved), so page-locking is paid once per size."""

    def __init__(self, cap_bytes: int, buffer_type: int | None) -> None:
        self.cap_bytes = cap_bytes
        self.buffer_type = buffer_type
        self._kept: list[HostBuffer] = []
        self._lent = 0
        self._reserving: tuple[threading.Thread, int] | None = None
        self._lock = threading.Lock()
        self.allocated_s = 0.0  # ``take`` spent allocating, or waiting for a reservation
        self.reserved_s = 0.0  # spent allocating in the background

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._held()

    def _held(self) -> int:
        reserving = self._reserving[1] if self._reserving else 0
        return self._lent + reserving + sum(buffer.size for buffer in self._kept)

    def _kept_for(self, size: int) -> HostBuffer | None:
        """The smallest kept buffer that holds ``size`` bytes and is not twice too big."""
        fitting = [buffer for buffer in self._kept if buffer.size >= size]
        chosen = min(fitting, key=lambda buffer: buffer.size, default=None)
        return chosen if chosen is not None and chosen.size <= 2 * size + _ALIGN else None

    def reserve(self, size: int) -> None:
        """Start allocating a buffer of ``size`` bytes in a thread, kept for a ``take`` to
        come. Nothing happens when a kept buffer would serve, a reservation is under way or
        the buffer would not fit under the cap beside what is held."""
        with self._lock:
            busy = self._reserving is not None or self._kept_for(size) is not None
            if busy or size <= 0 or self._held() + size > self.cap_bytes:
                return
            thread = threading.Thread(
                target=self._allocate_kept, args=(size,), name="repoctx-host-reserve", daemon=True
            )
            self._reserving = (thread, size)
        thread.start()

    def _allocate_kept(self, size: int) -> None:
        began = time.perf_counter()
        try:
            buffer: HostBuffer | None = allocate(size, self.buffer_type)
        except MemoryError:
            buffer = None  # the take that needs it will say so
        with self._lock:
            self._reserving = None
            self.reserved_s += time.perf_counter() - began
            if buffer is not None:
                self._kept.append(buffer)

    def _await_reservation(self) -> None:
        with self._lock:
            reserving = self._reserving
        if reserving is not None:
            began = time.perf_counter()
            reserving[0].join()
            self.allocated_s += time.perf_counter() - began

    def take(self, size: int) -> HostBuffer:
        """The smallest kept buffer that holds ``size`` bytes (waiting for a reservation under
        way first), else a new one (freeing kept ones first to stay under the cap)."""
        self._await_reservation()
        with self._lock:
            chosen = self._kept_for(size)
            if chosen is not None:
                self._kept.remove(chosen)
                self._lent += chosen.size
                return chosen
            while self._kept and self._held() + size > self.cap_bytes:
                self._kept.pop(0).free()
        began = time.perf_counter()
        buffer = allocate(size, self.buffer_type)
        with self._lock:
            self._lent += buffer.size
            self.allocated_s += time.perf_counter() - began
        return buffer

    def give_back(self, buffer: HostBuffer) -> None:
        with self._lock:
            self._lent -= buffer.size
            if self._held() + buffer.size <= self.cap_bytes:
                self._kept.append(buffer)
                return
        buffer.free()

    def close(self) -> None:
        self._await_reservation()
        with self._lock:
            kept, self._kept = self._kept, []
        for buffer in kept:
            buffer.free()
