"""What the worker runs for ``open``, ``answer`` and ``prefill``: their parameters checked, and
the bodies that use the engines."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from repoctx.engine.base import GenerationOptions
from repoctx.events import EventSink, event_to_json
from repoctx.model.prompt import Prompt
from repoctx.resident.opener import EngineKey
from repoctx.resident.wire import JsonObject, WireError, ids_from_payload
from repoctx.resident.worker import Engines

_T = TypeVar("_T")
JobBody = Callable[[Engines, EventSink, threading.Event], JsonObject]


@dataclass(frozen=True)
class Opened:
    """What a connection's ``open`` asked for; its answers and prefills use that engine."""

    key: EngineKey
    n_ctx: int


class Params:
    """A request's parameters, each checked for its type; unknown names are refused."""

    def __init__(self, method: str, raw: Any, known: tuple[str, ...]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise WireError(f"{method}: params must be an object, not {type(raw).__name__}")
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise WireError(f"{method}: unknown parameters {', '.join(unknown)}")
        self.method = method
        self.raw: Mapping[str, Any] = raw

    def get(self, name: str, kind: type[_T] | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self.raw:
            if default is ...:
                raise WireError(f"{self.method}: the parameter {name!r} is missing")
            return default
        value = self.raw[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (bool not in kinds and isinstance(value, bool)) or not isinstance(value, kinds):
            raise WireError(f"{self.method}: {name} has the wrong type ({type(value).__name__})")
        return value


def parse_open(raw: Any) -> Opened:
    params = Params("open", raw, ("model", "fingerprint", "n_ctx", "kv_type", "flash_attn"))
    key = EngineKey(
        params.get("model", str),
        params.get("fingerprint", str),
        params.get("kv_type", (str, type(None)), None),
        params.get("flash_attn", (bool, type(None)), None),
    )
    n_ctx = params.get("n_ctx", int)
    if n_ctx <= 0:
        raise WireError(f"open: n_ctx must be positive, not {n_ctx}")
    return Opened(key, n_ctx)


def open_body(opened: Opened) -> JobBody:
    def run(engines: Engines, on_event: EventSink, cancel: threading.Event) -> JsonObject:
        engine, reported = engines.get(opened.key, opened.n_ctx, on_event)
        if not reported:
            on_event(engine.ready)
        return {"ready": event_to_json(engine.ready)}

    return run


def parse_fit(raw: Any, opened: Opened) -> Opened:
    n_ctx = Params("fit", raw, ("n_ctx",)).get("n_ctx", int)
    if n_ctx <= 0:
        raise WireError(f"fit: n_ctx must be positive, not {n_ctx}")
    return Opened(opened.key, max(n_ctx, opened.n_ctx))


def parse_prompt(method: str, raw: Any, payload: bytes) -> tuple[Prompt, GenerationOptions]:
    names = ("prefix_tokens", "repositories", "max_tokens", "temperature", "seed", "repeat_penalty")
    params = Params(method, raw, names if method == "answer" else names[:2])
    ids = ids_from_payload(payload)
    prefix = params.get("prefix_tokens", int, 0)
    if not 0 <= prefix <= len(ids):
        raise WireError(f"{method}: prefix_tokens {prefix} is outside the prompt's {len(ids)}")
    defaults = GenerationOptions()
    options = GenerationOptions(
        max_tokens=params.get("max_tokens", int, defaults.max_tokens),
        temperature=float(params.get("temperature", (int, float), defaults.temperature)),
        seed=params.get("seed", int, defaults.seed),
        repeat_penalty=float(params.get("repeat_penalty", (int, float), defaults.repeat_penalty)),
    )
    repositories = params.get("repositories", list, [])
    if not all(isinstance(root, str) for root in repositories):
        raise WireError(f"{method}: repositories must be a list of paths")
    return Prompt(ids, prefix, tuple(repositories)), options


def answer_body(opened: Opened, prompt: Prompt, options: GenerationOptions) -> JobBody:
    def run(engines: Engines, on_event: EventSink, cancel: threading.Event) -> JsonObject:
        engine, _ = engines.get(opened.key, opened.n_ctx, on_event)
        done = engine.answer(prompt, options, on_event, cancel)
        return {"done": event_to_json(done)}

    return run


def prefill_body(opened: Opened, prompt: Prompt) -> JobBody:
    def run(engines: Engines, on_event: EventSink, cancel: threading.Event) -> JsonObject:
        engine, _ = engines.get(opened.key, opened.n_ctx, on_event)
        outcome = engine.prefill(prompt, on_event, cancel)
        return {"outcome": None if outcome is None else event_to_json(outcome)}

    return run
