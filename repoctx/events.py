"""Events that the core emits and every front end renders.

The core never prints: long operations take an ``EventSink`` and report through it. The CLI,
the TUI and the stdio protocol render the same events.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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
class TailAdded:
    """Files that the pack left out for its budget, picked for this question and put after the
    cached prefix, before the question (``repoctx.pack.tail``): ``files`` in the order they
    appear; of those, ``named`` are named by the question and ``reduced`` are given as
    signatures only. They take ``tokens`` of the ``budget`` the question had for them."""

    files: tuple[str, ...]
    tokens: int
    budget: int
    named: tuple[str, ...] = ()
    reduced: tuple[str, ...] = ()


def added_note(files: Sequence[str]) -> str:
    """How front ends show the files added to a question: ``added for this question: a, b``."""
    return f"added for this question: {', '.join(files)}"


@dataclass(frozen=True)
class Token:
    """A piece of the answer, as text (complete UTF-8 characters only)."""

    text: str


@dataclass(frozen=True)
class AnswerDone:
    """The answer is complete (or was stopped: ``stop_reason`` "cancelled", "repetition")."""

    text: str
    # "end" (end-of-generation token), "length" (max_tokens or the context), "cancelled",
    # "repetition" (the model looped: engine/repetition.py)
    stop_reason: str
    prompt_tokens: int
    generated_tokens: int
    first_token_s: float  # from the question to the first token
    total_s: float


Event = Progress | Notice | ModelReady | CacheOutcome | TailAdded | Token | AnswerDone
EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink for callers that do not render progress."""


EVENT_TYPES: dict[str, type[Event]] = {
    kind.__name__: kind
    for kind in (Progress, Notice, ModelReady, CacheOutcome, TailAdded, Token, AnswerDone)
}


def event_to_json(event: Event) -> dict[str, Any]:
    """``{"event": "Progress", "stage": ..., ...}``: the event's class name and its fields."""
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


def event_from_json(record: Mapping[str, Any]) -> Event:
    """The event that ``event_to_json`` wrote. Raises ``ValueError`` naming the problem for an
    unknown event, an unknown or missing field, or a field of the wrong type."""
    name = record.get("event")
    kind = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown event {name!r}; known: {', '.join(EVENT_TYPES)}")
    name = kind.__name__
    fields = {field.name: field for field in dataclasses.fields(kind)}
    unknown = sorted(set(record) - set(fields) - {"event"})
    if unknown:
        raise ValueError(f"{name} has no field {', '.join(map(repr, unknown))}")
    hints = typing.get_type_hints(kind)
    values: dict[str, Any] = {}
    for field_name, field in fields.items():
        if field_name not in record:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"{name} lacks its field {field_name!r}")
            continue
        values[field_name] = _checked(name, field_name, record[field_name], hints[field_name])
    return kind(**values)


def _checked(event: str, name: str, value: Any, expected: Any) -> Any:
    if typing.get_origin(expected) is tuple:  # tuple[str, ...]: a JSON list of strings
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{event}.{name} must be a list of strings")
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{event}.{name} must be {expected.__name__}, not {type(value).__name__}")
    return value
