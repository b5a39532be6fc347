"""How long page-locking a KV state's host buffer takes, and what copies from it run at, for
the ways a process can get page-locked memory from CUDA. Runs on the GPU machine only (it needs
the CUDA runtime library, not llama.cpp):

    python3 benchmarks/host-pinning.py [GB]      (default 9.13, a 128K-token q8_0 state)

Rows: cudaHostAlloc (what ggml's host buffer type does, and so the engine today); an anonymous
map in 4 KiB pages, touched, then cudaHostRegister; the same map with transparent huge pages
asked for (MADV_HUGEPAGE); and plain pageable memory (no page-locking) for the copy speed alone.
"""

from __future__ import annotations

import ctypes
import glob
import mmap
import sys
import time

MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
H2D = 1
CHUNK = 1 << 30


def cudart() -> ctypes.CDLL:
    patterns = [
        "/usr/local/cuda/lib64/libcudart.so*",
        "/usr/local/cuda*/lib64/libcudart.so*",
        "/usr/lib/x86_64-linux-gnu/libcudart.so*",
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    sys.exit("no libcudart found")


LIB = cudart()
LIB.cudaHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
LIB.cudaFreeHost.argtypes = [ctypes.c_void_p]
LIB.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
LIB.cudaHostUnregister.argtypes = [ctypes.c_void_p]
LIB.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
LIB.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
LIBC.memset.restype = ctypes.c_void_p


def check(code: int, what: str) -> None:
    if code != 0:
        sys.exit(f"{what}: CUDA error {code}")


def copy_rate(device: int, host: int, size: int) -> float:
    began = time.perf_counter()
    for offset in range(0, size, CHUNK):
        n = min(CHUNK, size - offset)
        check(LIB.cudaMemcpy(device + offset, host + offset, n, H2D), "cudaMemcpy")
    return size / (time.perf_counter() - began) / 1e9


def anonymous(size: int, advice: int | None) -> tuple[mmap.mmap, int, float]:
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anchor = ctypes.c_char.from_buffer(memory)
    address = ctypes.addressof(anchor)
    del anchor
    if advice is not None and LIBC.madvise(address, size, advice) != 0:
        print(f"madvise({advice}) refused: errno {ctypes.get_errno()}")
    began = time.perf_counter()
    LIBC.memset(address, 1, size)
    return memory, address, time.perf_counter() - began


def huge_pages_in_use() -> str:
    with open("/proc/meminfo") as meminfo:
        return next((line.strip() for line in meminfo if line.startswith("AnonHugePages")), "?")


def registered(device: int, size: int, advice: int | None, label: str) -> None:
    memory, address, touch_s = anonymous(size, advice)
    thp = huge_pages_in_use()
    began = time.perf_counter()
    check(LIB.cudaHostRegister(address, size, 0), "cudaHostRegister")
    register_s = time.perf_counter() - began
    rate = copy_rate(device, address, size)
    began = time.perf_counter()
    check(LIB.cudaHostUnregister(address), "cudaHostUnregister")
    unregister_s = time.perf_counter() - began
    memory.close()
    print(
        f"{label}: touch {touch_s:.2f} s, register {register_s:.2f} s "
        f"({size / register_s / 1e9:.1f} GB/s), H2D {rate:.1f} GB/s, "
        f"unregister {unregister_s:.2f} s [{thp}]"
    )


def main() -> None:
    size = int(float(sys.argv[1] if len(sys.argv) > 1 else 9.13) * 1e9) // (1 << 21) * (1 << 21)
    for name in ("enabled", "defrag"):
        with open(f"/sys/kernel/mm/transparent_hugepage/{name}") as setting:
            print(f"transparent_hugepage/{name}: {setting.read().strip()}")
    device = ctypes.c_void_p()
    check(LIB.cudaMalloc(ctypes.byref(device), size), "cudaMalloc")
    target = int(device.value or 0)
    print(f"size {size / 1e9:.2f} GB")

    pointer = ctypes.c_void_p()
    began = time.perf_counter()
    check(LIB.cudaHostAlloc(ctypes.byref(pointer), size, 0), "cudaHostAlloc")
    alloc_s = time.perf_counter() - began
    host = int(pointer.value or 0)
    rate = copy_rate(target, host, size)
    began = time.perf_counter()
    check(LIB.cudaFreeHost(host), "cudaFreeHost")
    print(
        f"cudaHostAlloc: {alloc_s:.2f} s ({size / alloc_s / 1e9:.1f} GB/s), H2D {rate:.1f} GB/s, "
        f"free {time.perf_counter() - began:.2f} s"
    )

    registered(target, size, MADV_NOHUGEPAGE, "4 KiB pages + cudaHostRegister")
    registered(target, size, MADV_HUGEPAGE, "huge pages + cudaHostRegister")

    memory, address, touch_s = anonymous(size, MADV_HUGEPAGE)
    print(
        f"pageable (huge pages asked): touch {touch_s:.2f} s, "
        f"H2D {copy_rate(target, address, size):.1f} GB/s"
    )
    memory.close()
    memory, address, touch_s = anonymous(size, MADV_NOHUGEPAGE)
    print(
        f"pageable (4 KiB pages): touch {touch_s:.2f} s, "
        f"H2D {copy_rate(target, address, size):.1f} GB/s"
    )
    memory.close()


if __name__ == "__main__":
    main()
