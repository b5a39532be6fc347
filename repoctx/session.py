"""A session: repositories, their pack, a model and a conversation. The one place where the
packer, the prompt, the engine and the conversation store meet; the CLI, the TUI and the stdio
protocol all drive this class."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.conversations import Conversation, ConversationStore
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.errors import ConfigError
from repoctx.events import AnswerDone, CacheOutcome, EventSink, TailAdded, ignore_events
from repoctx.model.modelfile import ModelInfo
from repoctx.model.prompt import ChatFormat, Message, Prompt, common_prefix
from repoctx.pack.pipeline import PackResult, build_pack, default_reserve
from repoctx.pack.tail import Tail, TailPicker
from repoctx.tokens.count import load_tokenizer

# (model, context tokens needed, events) -> a loaded engine
EngineFactory = Callable[[ModelInfo, int, EventSink], Engine]


__all__ = [
    "EngineFactory", "LlamaEngineFactory", "Session", "engine_factory_from_env", "open_session",
    "scripted_engine_factory",
]  # fmt: skip


class LlamaEngineFactory:
    """Opens the llama.cpp engine with the user's KV type and flash attention choices."""

    def __init__(self, kv_type: str | None = None, flash_attn: bool | None = None) -> None:
        self.kv_type = kv_type
        self.flash_attn = flash_attn

    def __call__(self, model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        from repoctx.engine.llama import LlamaEngine  # imports llama_cpp: only when a model runs

        engine: Engine = LlamaEngine.open(
            model, n_ctx, on_event, kv_type=self.kv_type, flash_attn=self.flash_attn
        )
        return engine


llama_engine = LlamaEngineFactory()


class Session:
    """The one place that composes the stages for a set of repositories: ``pack`` (scan,
    dependency order, exact fit), then ``ask`` or ``warm`` through the engine its factory
    opens, in the current conversation (``new_conversation``, ``resume``). Every step reports
    to an event sink; nothing here prints. ``close`` finishes the engine's saves.

    When the pack sheds files for its budget, each question gets the shed files most relevant
    to it after the pack, before the question (``tail_for``, ``repoctx.pack.tail``); they are
    kept with the question in the conversation, so a follow-up reads the same history."""

    def __init__(
        self,
        roots: Sequence[Path],
        settings: Settings,
        *,
        engine_factory: EngineFactory = llama_engine,
        generation: GenerationOptions | None = None,
        cache: ContentCache | None = None,
        conversations: ConversationStore | None = None,
    ) -> None:
        self.roots = [Path(r) for r in roots]
        self.settings = settings
        self.generation = generation or GenerationOptions(
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            repeat_penalty=settings.repeat_penalty,
        )
        self.engine_factory = engine_factory
        self.cache = cache
        self.store = conversations or ConversationStore()
        self.result: PackResult | None = None
        self.engine: Engine | None = None
        self._format: ChatFormat | None = None
        self._format_model = ""
        self.conversation: Conversation | None = None
        self._base_exclude = settings.exclude  # what a resumed conversation's patterns add to
        self._tails: TailPicker | None = None  # for the pack in ``result``
        self._lock = threading.Lock()

    # -- the pack -----------------------------------------------------------------------------

    def pack(self, on_event: EventSink = ignore_events) -> PackResult:
        """(Re)build the pack from the files on disk; the next question uses it."""
        cache = self.cache if self.cache is not None else ContentCache.open(on_event)
        self.cache = cache
        self.result = build_pack(self.roots, self.settings, cache, on_event)
        if self._format is None or self._format_model != self.result.model.fingerprint:
            tokenizer = load_tokenizer(self.result.model.path, on_event)
            self._format = ChatFormat(self.result.model, tokenizer, cache)
            self._format_model = self.result.model.fingerprint
        return self.result

    def set_roots(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self.result = None

    def set_model(self, model: str) -> None:
        self.settings = dataclasses.replace(self.settings, model=model)
        self.close_engine()
        self._format = None
        self.result = None

    def exclude(self, pattern: str) -> None:
        self._set_patterns(exclude=(*self.settings.exclude, pattern))

    def include_again(self, pattern: str) -> None:
        self._set_patterns(exclude=tuple(p for p in self.settings.exclude if p != pattern))

    def _set_patterns(self, exclude: tuple[str, ...]) -> None:
        self.settings = dataclasses.replace(self.settings, exclude=exclude)
        self.result = None
        self.remember_patterns()

    def remember_patterns(self) -> None:
        """The conversation keeps the exclude patterns in use (on disk once it has begun)."""
        if self.conversation is not None:
            self.conversation.exclude = self.settings.exclude
            if self.conversation.messages:
                self.store.save(self.conversation)

    # -- conversations ------------------------------------------------------------------------

    def new_conversation(self) -> Conversation:
        model = self.result.model.path.name if self.result else str(self.settings.model or "")
        self.conversation = self.store.new(self.roots, model)
        return self.conversation

    def resume(
        self, conversation_id: str | None = None, *, patterns: bool = False
    ) -> Conversation | None:
        """The given conversation, or the latest about these repositories. With ``patterns``,
        the exclude patterns it was packed with apply again, on top of the settings' own; when
        that changes them, the pack is built again at its next use."""
        if conversation_id is None:
            found = self.store.latest(self.roots)
        else:
            found = self.store.get(self.roots, conversation_id)
        if found is not None:
            self.conversation = found
            if patterns and found.exclude is not None:
                exclude = tuple(dict.fromkeys((*self._base_exclude, *found.exclude)))
                if exclude != self.settings.exclude:
                    self.settings = dataclasses.replace(self.settings, exclude=exclude)
                    self.result = None
        return found

    def conversations(self) -> list[Conversation]:
        return self.store.list(self.roots)

    # -- questions ----------------------------------------------------------------------------

    def prompt_for(self, question: str, tail: Tail | None = None) -> Prompt:
        """The prompt that asks ``question`` in the current conversation, with the files of
        ``tail`` before it in its turn (the earlier questions' own tails are in the history)."""
        result = self.result or self.pack()
        assert self._format is not None
        history = self.conversation.messages if self.conversation else []
        asking = Message("user", question, tail.text if tail is not None else "")
        prompt = self._format.build(result.pack.text, [*history, asking])
        return dataclasses.replace(prompt, repositories=self._repositories())

    def tail_for(self, question: str, prompt_tokens: int | None = None) -> Tail | None:
        """The files the pack left out that ``question`` would get now, within
        ``tail_budget``; None when the pack shed nothing or nothing shed fits or is about it.
        ``prompt_tokens``: of the prompt without them, when known."""
        if self.result is None:
            self.pack()
        if prompt_tokens is None:
            prompt_tokens = len(self.prompt_for(question))
        budget = self.tail_budget(prompt_tokens)
        if budget <= 0:
            return None
        return self._picker().pick(question, budget)

    def tail_budget(self, prompt_tokens: int) -> int:
        """Tokens for the files added to a question whose prompt has ``prompt_tokens`` without
        them: ``tail_tokens`` at most, and only what the context kept for the conversation
        leaves beside that prompt and the longest answer."""
        wanted = self.settings.tail_tokens
        context = self._context_tokens()
        if context is None or wanted <= 0:
            return max(0, wanted)
        return max(0, min(wanted, context - prompt_tokens - self.generation.max_tokens))

    def _picker(self) -> TailPicker:
        assert self.result is not None and self._format is not None
        if self._tails is None or self._tails.result is not self.result:
            cache = self.cache if self.cache is not None else ContentCache.memory()
            self._tails = TailPicker(self.result, self._format.tokenizer, cache)
        return self._tails

    def _repositories(self) -> tuple[str, ...]:
        """The roots as absolute paths: what the engine's saved states record."""
        return tuple(str(root.resolve()) for root in self.roots)

    def ask(
        self,
        question: str,
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
        *,
        last: bool = False,
    ) -> AnswerDone:
        """Answer ``question`` in the current conversation (a new one if none), streaming
        events, with the files the pack left out that it is about before it (``tail_for``,
        reported as ``TailAdded``); the exchange, those files included, is saved to the
        conversation even when stopped early. ``last``: the session closes after this answer
        (a one-shot ask), so the engine's deferred work is left to ``close``, which saves
        the state, and nothing is readied for a question that will not come."""
        with self._lock:
            asked = self.store.clock()
            if self.result is None:
                self.pack(on_event)
            assert self.result is not None
            prompt = self.prompt_for(question)
            tail = self.tail_for(question, len(prompt))
            if tail is not None:
                prompt = self.prompt_for(question, tail)
                on_event(TailAdded(tail.files, tail.tokens, tail.budget, tail.named, tail.reduced))
            engine = self._engine_for(len(prompt) + self.generation.max_tokens, on_event)
            done = engine.answer(prompt, self.generation, on_event, cancel or threading.Event())
            self._remember(question, done, asked, tail)
            on_event(done)
            if not last:
                engine.housekeep()  # the answer is out: now copy its state away to be saved
            return done

    def warm(
        self, on_event: EventSink = ignore_events, cancel: threading.Event | None = None
    ) -> CacheOutcome | None:
        """Load the model and bring the pack and the conversation so far into its context
        (restored from disk, or prefilled and saved), so that the next question only pays for
        its own tokens. After an edit, only the tail from the first changed file is evaluated.
        Then the files the pack left out are indexed for the next question's tail. None when
        cancelled."""
        with self._lock:
            if self.result is None:
                self.pack(on_event)
            one, other = self.prompt_for("a"), self.prompt_for("b")
            stable = common_prefix(one.ids, other.ids)
            prompt = Prompt(one.ids[:stable], min(one.prefix_tokens, stable), self._repositories())
            engine = self._engine_for(len(one) + self.generation.max_tokens, on_event)
            outcome = engine.prefill(prompt, on_event, cancel or threading.Event())
            engine.housekeep()
            if outcome is not None and self.settings.tail_tokens > 0:
                self._picker().index()  # the terms of the files left out, for the question
            return outcome

    def _engine_for(self, needed: int, on_event: EventSink) -> Engine:
        """The engine, loaded with room for ``needed`` tokens: a conversation that outgrows
        the context gets a bigger one, at least half again as big, on the model loaded."""
        assert self.result is not None
        trained = self.result.model.context_length or needed
        if self.engine is not None:
            if self.engine.ready.n_ctx < needed:
                grown = max(needed, self.engine.ready.n_ctx * 3 // 2)
                self.engine.fit(min(trained, _round_up(grown, 256)), on_event)
            return self.engine
        n_ctx = min(trained, _round_up(max(needed, self._pack_and_room(trained)), 256))
        self.engine = self.engine_factory(self.result.model, n_ctx, on_event)
        return self.engine

    def _pack_and_room(self, trained: int) -> int:
        """The pack, and room for a conversation of a few answers (an editor's selections, the
        files added to questions) on it."""
        assert self.result is not None
        spare = max(default_reserve(trained), 4 * self.generation.max_tokens)
        return self.result.pack.tokens + spare

    def _context_tokens(self) -> int | None:
        """The context that the engine has, or is first opened with, for the pack (None: the
        model does not say how long its context is)."""
        assert self.result is not None
        trained = self.result.model.context_length
        if not trained:
            return None
        opened = min(trained, _round_up(self._pack_and_room(trained), 256))
        if self.engine is not None:
            return max(opened, min(trained, self.engine.ready.n_ctx))
        return opened

    def _remember(self, question: str, done: AnswerDone, asked: float, tail: Tail | None) -> None:
        if self.conversation is None:
            self.new_conversation()
        assert self.conversation is not None
        context, added = (tail.text, tail.files) if tail is not None else ("", ())
        self.conversation.add_exchange(
            question, done.text, done.stop_reason, asked, context=context, added=added
        )
        self.conversation.exclude = self.settings.exclude
        self.store.save(self.conversation)

    def close_engine(self, on_event: EventSink = ignore_events) -> None:
        """Finish the engine's saves (reporting their progress), then close it."""
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close(on_event)

    def close(self, on_event: EventSink = ignore_events) -> None:
        self.close_engine(on_event)
        if self.cache is not None:
            self.cache.close()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def open_session(
    roots: Sequence[Path], settings: Settings, conversations: ConversationStore | None = None
) -> Session:
    """The session of every front end (ask, serve, chat): the engine ``REPOCTX_ENGINE``
    selects, with the KV type and flash attention of ``settings``."""
    factory = engine_factory_from_env(settings)
    return Session(roots, settings, engine_factory=factory, conversations=conversations)


def engine_factory_from_env(settings: Settings | None = None) -> EngineFactory:
    """The engine that ``REPOCTX_ENGINE`` selects, with the KV type and flash attention of
    ``settings``: unset or empty, the resident engine process (``repoctx engine``, started on
    demand); ``local``, llama.cpp in this process; ``fake``, the scripted engine (demos,
    editor-plugin tests)."""
    import os

    choice = os.environ.get("REPOCTX_ENGINE", "")
    kv_type = settings.kv_type if settings else None
    flash_attn = settings.flash_attn if settings else None
    if choice == "fake":
        return scripted_engine_factory()
    if choice == "local":
        return LlamaEngineFactory(kv_type, flash_attn) if settings else llama_engine
    if choice not in ("", "resident"):
        raise ConfigError(
            f"REPOCTX_ENGINE={choice!r} is not an engine; set it to local or fake, or unset it "
            "for the resident engine"
        )
    from repoctx.resident.client import ResidentEngineFactory

    return ResidentEngineFactory(kv_type, flash_attn)


def scripted_engine_factory() -> EngineFactory:
    """Opens the scripted engine: ``REPOCTX_FAKE_ANSWER`` is its answer, ``REPOCTX_FAKE_TOKEN_S``
    the seconds it takes per word."""
    import os

    from repoctx.engine.fake import FakeEngine

    answer = os.environ.get("REPOCTX_FAKE_ANSWER", "This is a scripted answer.")
    delay = float(os.environ.get("REPOCTX_FAKE_TOKEN_S", "0") or 0)

    def fake(model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        engine = FakeEngine(answers=(answer,), token_s=delay, n_ctx=n_ctx)
        on_event(engine.ready)
        return engine

    return fake
