"""The session sizes the engine's context for a conversation on the pack, and a conversation
that outgrows it gets a bigger context on the loaded model, never a reload (an editor's
selections make questions long: each used to reload the model and restore from disk)."""

from __future__ import annotations

from repo_helpers import MakeRepo

from repoctx.config import Settings
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.engine.fake import FakeEngine
from repoctx.events import EventSink
from repoctx.model.modelfile import ModelInfo
from repoctx.session import Session

FILES = {f"mod{i}.py": f"def f{i}(x):\n    return x * {i}\n" * 20 for i in range(5)}


def test_a_growing_conversation_keeps_the_loaded_model(make_repo: MakeRepo) -> None:
    opened: list[FakeEngine] = []

    def factory(model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        engine = FakeEngine(answers=("word " * 200,), n_ctx=n_ctx)
        opened.append(engine)
        return engine

    generation = GenerationOptions(max_tokens=256)
    session = Session([make_repo(FILES)], Settings(), engine_factory=factory, generation=generation)
    result = session.pack()
    session.ask("What is f1?")
    (engine,) = opened
    assert engine.n_ctx >= result.pack.tokens + 4 * generation.max_tokens, "room to converse"
    selection = "\n".join(f"line {i} of a selection the editor sent" for i in range(150))
    for _ in range(2):
        session.ask(f"Explain this:\n{selection}")
    assert opened == [engine], "one engine, never reopened"
    assert session.engine is engine
    assert len(engine.prompts[-1]) > engine.prompts[0].prefix_tokens + 4 * generation.max_tokens
    assert engine.n_ctx >= len(engine.prompts[-1]) + generation.max_tokens, "grown in place"


def test_the_context_never_exceeds_what_the_model_was_trained_for(make_repo: MakeRepo) -> None:
    opened: list[int] = []

    def factory(model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        opened.append(n_ctx)
        return FakeEngine(n_ctx=n_ctx)

    session = Session([make_repo(FILES)], Settings(), engine_factory=factory)
    result = session.pack()
    session.ask("What is f2?")
    assert opened and opened[0] <= (result.model.context_length or 0)
