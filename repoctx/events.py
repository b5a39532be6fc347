"""Events that the core emits and every front end renders.

The core never prints: long operations take an ``EventSink`` and report through it. The CLI,
the TUI and the stdio protocol render the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` are finished (``total`` 0 when unknown).

    Stages: scan, parse, tokens (packing); load, restore, prefill, save (engine); download,
    verify (models)."""

    stage: str
    done: int
    total: int
    unit: str = "files"


@dataclass(frozen=True)
class Notice:
    """Something the user should know that did not stop the work (a cache rebuilt, a file
    that could not be read)."""

    message: str
    level: str = "warning"


@dataclass(frozen=True)
class ModelReady:
    """The model is loaded and how it runs."""

    model: str
    n_ctx: int
    kv_type: str
    device: str  # "GPU (NVIDIA H100, 80 GiB)" or "CPU"
    flash_attn: bool
    gpu_layers: int


@dataclass(frozen=True)
class CacheOutcome:
    """Where the prompt's KV state came from before generation started.

    ``source``: "memory" (the live context of this process), "disk" (a state file), or "none".
    """

    source: str
    restored_tokens: int
    evaluated_tokens: int
    restore_s: float
    prompt_tokens: int


@dataclass(frozen=True)
class Token:
    """A piece of the answer, as text (complete UTF-8 characters only)."""

    text: str


@dataclass(frozen=True)
class AnswerDone:
    """The answer is complete (or was stopped: ``stop_reason`` "cancelled")."""

    text: str
    stop_reason: str  # "end" (end-of-generation token), "length", "cancelled"
    prompt_tokens: int
    generated_tokens: int
    first_token_s: float  # from the question to the first token
    total_s: float


Event = Progress | Notice | ModelReady | CacheOutcome | Token | AnswerDone
EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink for callers that do not render progress."""
