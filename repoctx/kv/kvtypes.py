"""The KV cache types repoctx runs llama.cpp with: the one list of their names, their bytes per
element and llama.cpp's ggml type ids. Settings, the command line, the planner, the native
context and the benchmarks all take them from here."""

from __future__ import annotations

# name: (bytes per element, llama.cpp's enum ggml_type), largest first: the order the planner
# tries them in (q8_0 stores 34 bytes per block of 32 elements, q4_0 18 per 32)
_TYPES: dict[str, tuple[float, int]] = {
    "f16": (2.0, 1),
    "q8_0": (34 / 32, 8),
    "q4_0": (18 / 32, 2),
}

KV_TYPES: tuple[str, ...] = tuple(_TYPES)
"""The valid names, largest first."""
KV_BYTES: dict[str, float] = {name: size for name, (size, _) in _TYPES.items()}
"""Bytes per element of each type."""
GGML_TYPES: dict[str, int] = {name: ggml for name, (_, ggml) in _TYPES.items()}
"""llama.cpp's ``ggml_type`` of each type (``type_k`` and ``type_v`` of a context)."""

__all__ = ["GGML_TYPES", "KV_BYTES", "KV_TYPES", "kv_types_text"]


def kv_types_text() -> str:
    """The names for a message: ``f16, q8_0 or q4_0``."""
    *first, last = KV_TYPES
    return f"{', '.join(first)} or {last}"
