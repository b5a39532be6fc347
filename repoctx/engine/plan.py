"""How to run a model on this machine: context size, KV cache type, flash attention, layers on
the GPU. Decided before loading, from the GGUF's shapes and the free memory, so that a plan
that cannot fit fails with a message that says what would."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass

from repoctx.errors import ModelError
from repoctx.kv.kvtypes import KV_BYTES, KV_TYPES
from repoctx.model.modelfile import ModelInfo, ModelShape

_HEADROOM = 0.92  # of free memory: drivers, fragmentation, other processes
_MIB = 1024 * 1024
MAX_SLOTS = {True: 4, False: 2}  # live sequences at once, on a GPU and on the CPU
_SPARE_FOR_SLOTS = 0.5  # of the memory left after the first slot, what more slots may take
HOST_SHARE = {True: 0.25, False: 0.1}  # of the RAM, for KV states kept in host memory


@dataclass(frozen=True)
class Memory:
    device: str  # "GPU (NVIDIA H100 80GB HBM3)" or "CPU"
    free_bytes: int
    gpu: bool
    host_bytes: int = 8 << 30  # the machine's RAM


@dataclass(frozen=True)
class Plan:
    n_ctx: int
    kv_type: str
    flash_attn: bool
    gpu_layers: int  # -1: all
    n_batch: int
    n_ubatch: int
    device: str
    estimate_bytes: int
    slots: int = 1  # sequences live at once, each with n_ctx cells of its own
    host_bytes: int = 1 << 30  # host memory for KV states between the context and the disk


def estimate_bytes(shape: ModelShape, vocab: int, n_ctx: int, kv_type: str, n_ubatch: int) -> int:
    """Weights + KV cache + compute buffers (flash attention: no n_ctx x n_ubatch scores)."""
    kv = shape.kv_bytes_per_token(KV_BYTES[kv_type], KV_BYTES[kv_type]) * n_ctx
    compute = 4 * n_ubatch * (vocab + 6 * shape.n_embd + 3 * shape.n_ff) + 256 * _MIB
    return int(shape.weights_bytes + kv + compute)


def make_plan(
    model: ModelInfo,
    n_ctx: int,
    memory: Memory,
    kv_type: str | None = None,
    flash_attn: bool | None = None,
) -> Plan:
    """The plan for ``n_ctx`` tokens: the first KV type of ``KV_TYPES`` (largest first) that
    fits in free memory (f16 only on the CPU, where quantized KV slows prefill threefold),
    unless the user chose one. Quantized V needs flash attention, which is on wherever it is
    available."""
    shape = _shape(model)
    trained = model.context_length or n_ctx
    if n_ctx > trained:
        raise ModelError(
            f"{model.path.name} was trained for {trained:,} tokens and the prompt needs "
            f"{n_ctx:,}; pass a smaller --budget or a model with a longer context"
        )
    n_ubatch = 2048 if memory.gpu else 512
    choices = [kv_type] if kv_type else (list(KV_TYPES) if memory.gpu else ["f16"])
    budget = int(memory.free_bytes * _HEADROOM)
    for choice in choices:
        if choice not in KV_BYTES:
            raise ModelError(f"unknown KV cache type {choice!r}; use one of {', '.join(KV_TYPES)}")
        need = estimate_bytes(shape, model.vocab_size, n_ctx, choice, n_ubatch)
        if need <= budget:
            flash = True if flash_attn is None else flash_attn
            if choice != "f16" and not flash:
                raise ModelError("a quantized KV cache needs flash attention; drop --no-flash-attn")
            slot = int(shape.kv_bytes_per_token(KV_BYTES[choice], KV_BYTES[choice]) * n_ctx)
            slots = min(MAX_SLOTS[memory.gpu], 1 + int(_SPARE_FOR_SLOTS * (budget - need)) // slot)
            return Plan(
                n_ctx, choice, flash, -1, n_ubatch, n_ubatch, memory.device,
                need + (slots - 1) * slot, slots, int(HOST_SHARE[memory.gpu] * memory.host_bytes),
            )  # fmt: skip
    raise ModelError(_no_fit_message(model, shape, n_ctx, memory, budget, choices[-1], n_ubatch))


def _shape(model: ModelInfo) -> ModelShape:
    if model.shape is None:
        raise ModelError(f"{model.path.name} has no model weights (a vocabulary-only file?)")
    return model.shape


def _no_fit_message(
    model: ModelInfo, shape: ModelShape, n_ctx: int, memory: Memory, budget: int, kv: str, ub: int
) -> str:
    from repoctx.pack.pipeline import default_reserve  # the context adds it to the pack's budget

    reserve = default_reserve(model.context_length or n_ctx)
    fixed = estimate_bytes(shape, model.vocab_size, 0, kv, ub)
    per_token = shape.kv_bytes_per_token(KV_BYTES[kv], KV_BYTES[kv])
    fits = max(0, int((budget - fixed) / per_token))
    free = f"{memory.free_bytes / 2**30:.1f} GiB free on the {memory.device}"
    if fits < 1024:
        return (
            f"{model.path.name} ({shape.weights_bytes / 2**30:.1f} GiB of weights) does not fit "
            f"in the {free}; free memory or use a smaller quantization of the model"
        )
    return (
        f"{n_ctx:,} tokens do not fit in the {free} even with a {kv} KV cache: about "
        f"{fits:,} would; pass --budget {max(1, fits - reserve - 256):,} or free memory"
    )


def detect_memory(gpu_offload: bool) -> Memory:
    """Free memory where the model will run: the first GPU's (NVML, else nvidia-smi) when
    llama.cpp was built with GPU offload, else the system's available RAM."""
    if gpu_offload:
        found = _nvml_free() or _nvidia_smi_free()
        if found is not None:
            name, free = found
            return Memory(f"GPU ({name})", free, True, _ram("MemTotal"))
    return Memory("CPU", _ram("MemAvailable"), False, _ram("MemTotal"))


def _nvml_free() -> tuple[str, int] | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None

    class _Info(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]  # fmt: skip

    handle = ctypes.c_void_p()
    info = _Info()
    name = ctypes.create_string_buffer(96)
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        if nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) != 0:
            return None
        if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0:
            return None
        nvml.nvmlDeviceGetName(handle, name, 96)
        return name.value.decode(errors="replace") or "NVIDIA GPU", int(info.free)
    finally:
        nvml.nvmlShutdown()


def _nvidia_smi_free() -> tuple[str, int] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,memory.free", "--format=csv,noheader,nounits"]
    try:
        line = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
        name, free_mib = line.splitlines()[0].rsplit(",", 1)
        return name.strip(), int(free_mib.strip()) * _MIB
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _ram(field: str) -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
