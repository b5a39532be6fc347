"""`repoctx models synth`: writing a synthetic llama GGUF (a preset's shapes, random weights) for
tests and benchmarks, with ``repoctx.model.synth``."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from repoctx.model.synthshape import PRESETS


def write_synthetic_model(
    out: Path, preset: str, vocab_from: Path | None, seed: int, overrides: dict[str, Any]
) -> None:
    """Write the model of ``preset`` with the ``overrides`` that are not None (``context_length``,
    ``quant``, ``rope_freq_base``) to ``out``, and say where and how big. Raises ``UsageError``
    for a shape that cannot be, ``ModelError`` for an unreadable ``vocab_from``."""
    from repoctx.model.synth import write_synthetic_gguf  # numpy and gguf: only when writing

    started = time.perf_counter()
    changes = {key: value for key, value in overrides.items() if value is not None}
    path = write_synthetic_gguf(out, replace(PRESETS[preset], **changes), vocab_from, seed)
    seconds = time.perf_counter() - started
    print(f"wrote {path} ({path.stat().st_size:,} bytes) in {seconds:.1f} s")
