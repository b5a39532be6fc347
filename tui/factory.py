"""The one way to build the session that the app drives: `repoctx chat` and the tests share it,
so that the tests exercise what users run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repoctx.config import load_settings
from repoctx.conversations import ConversationStore
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.events import Event, EventSink, ModelReady
from repoctx.model.modelfile import ModelInfo
from repoctx.paths import user_path
from repoctx.session import EngineFactory, Session, engine_factory_from_env


def announcing(factory: EngineFactory) -> EngineFactory:
    """``factory``, making sure that the engine's ``ModelReady`` is reported once it is loaded
    (the scripted engine does not report it; the real one does)."""

    def open_engine(model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        reported: list[Event] = []

        def sink(event: Event) -> None:
            if isinstance(event, ModelReady):
                reported.append(event)
            on_event(event)

        engine = factory(model, n_ctx, sink)
        if not reported:
            on_event(engine.ready)
        return engine

    return open_engine


def build_session(
    paths: Sequence[Path],
    flags: Mapping[str, Any],
    *,
    engine_factory: EngineFactory | None = None,
    generation: GenerationOptions | None = None,
    conversations: ConversationStore | None = None,
) -> Session:
    """A session over ``paths`` with settings layered as for every command, and the engine
    chosen by the environment unless one is given."""
    roots = [user_path(path) for path in paths]
    settings = load_settings(roots, flags)
    return Session(
        roots,
        settings,
        engine_factory=announcing(engine_factory or engine_factory_from_env(settings)),
        generation=generation,
        conversations=conversations,
    )
