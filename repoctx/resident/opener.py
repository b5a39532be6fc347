"""How the resident engine opens engines: which engine a request needs, and the openers (the
llama.cpp engine, or the scripted one when the server runs with ``REPOCTX_ENGINE=fake``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from repoctx.engine.base import Engine
from repoctx.events import EventSink
from repoctx.model.modelfile import ModelInfo

# (model, context tokens needed, events, kv_type, flash_attn) -> a loaded engine
Opener = Callable[[ModelInfo, int, EventSink, str | None, bool | None], Engine]


@dataclass(frozen=True)
class EngineKey:
    """What must match for a loaded engine to serve a request (``None``: the engine's choice)."""

    model_path: str
    fingerprint: str
    kv_type: str | None
    flash_attn: bool | None


def llama_opener(
    model: ModelInfo, n_ctx: int, on_event: EventSink, kv_type: str | None, flash_attn: bool | None
) -> Engine:
    from repoctx.engine.llama import LlamaEngine  # imports llama_cpp: only when a model runs

    engine: Engine = LlamaEngine.open(
        model, n_ctx, on_event, kv_type=kv_type, flash_attn=flash_attn
    )
    return engine


def scripted_opener(
    model: ModelInfo, n_ctx: int, on_event: EventSink, kv_type: str | None, flash_attn: bool | None
) -> Engine:
    from repoctx.session import scripted_engine_factory

    return scripted_engine_factory()(model, n_ctx, on_event)


def opener_from_env() -> Opener:
    return scripted_opener if os.environ.get("REPOCTX_ENGINE") == "fake" else llama_opener
