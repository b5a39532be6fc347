"""A scripted engine: the same events as the real one, no model. For UI and protocol tests and
demos, never for testing what the real engine does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from repoctx.engine.base import GenerationOptions
from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    EventSink,
    ModelReady,
    Progress,
    Token,
    ignore_events,
)
from repoctx.model.prompt import Prompt, common_prefix


@dataclass
class FakeEngine:
    """Answers with ``script(question_ids)`` word by word. ``prefill_s`` seconds of simulated
    prefill per 1,000 new tokens and ``token_s`` seconds per answer word make it slow on purpose
    (responsiveness tests). It remembers the last prompt like a live KV cache would."""

    answers: Sequence[str] = ("This is a scripted answer.",)
    prefill_s: float = 0.0
    token_s: float = 0.0
    n_ctx: int = 8192
    prompts: list[Prompt] = field(default_factory=list)
    script: Callable[[int], str] | None = None
    _live: list[int] = field(default_factory=list)

    @property
    def ready(self) -> ModelReady:
        return ModelReady("scripted engine", self.n_ctx, "f16", "CPU", False, 0)

    def answer(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
    ) -> AnswerDone:
        started = time.perf_counter()
        self.prompts.append(prompt)
        kept = common_prefix(self._live, prompt.ids)
        todo = len(prompt.ids) - kept
        if not self._prefill(todo, on_event, cancel):
            return AnswerDone(
                "", "cancelled", len(prompt.ids), 0, 0.0, time.perf_counter() - started
            )
        self._live = list(prompt.ids)
        source = "memory" if kept else "none"
        on_event(CacheOutcome(source, kept, todo, 0.0, len(prompt.ids)))
        text = self.script(len(self.prompts)) if self.script else self._scripted()
        return self._stream(text, prompt, options, on_event, cancel, started)

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        kept = common_prefix(self._live, prompt.ids)
        todo = len(prompt.ids) - kept
        if not self._prefill(todo, on_event, cancel):
            return None
        self._live = list(prompt.ids)
        outcome = CacheOutcome("memory" if kept else "none", kept, todo, 0.0, len(prompt.ids))
        on_event(outcome)
        return outcome

    def _scripted(self) -> str:
        return self.answers[(len(self.prompts) - 1) % len(self.answers)]

    def _prefill(self, todo: int, on_event: EventSink, cancel: threading.Event) -> bool:
        steps = max(1, todo // 1000)
        for step in range(steps):
            if cancel.is_set():
                return False
            on_event(Progress("prefill", min(todo, (step + 1) * 1000), todo, "tokens"))
            if self.prefill_s:
                time.sleep(self.prefill_s)
        return True

    def _stream(
        self,
        text: str,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
        started: float,
    ) -> AnswerDone:
        written: list[str] = []
        first = 0.0
        words = text.split(" ")
        reason = "end"
        for index, word in enumerate(words[: options.max_tokens]):
            if cancel.is_set():
                reason = "cancelled"
                break
            piece = word if index == 0 else " " + word
            written.append(piece)
            first = first or time.perf_counter() - started
            on_event(Token(piece))
            if self.token_s:
                time.sleep(self.token_s)
        else:
            reason = "length" if len(words) > options.max_tokens else "end"
        answer = "".join(written)
        total = time.perf_counter() - started
        return AnswerDone(answer, reason, len(prompt.ids), len(written), first, total)

    def fit(self, n_ctx: int, on_event: EventSink) -> None:
        self.n_ctx = max(self.n_ctx, n_ctx)

    def housekeep(self) -> None:
        """Nothing is deferred."""

    def flush(self, on_event: EventSink) -> None:
        """Nothing is deferred."""

    def close(self, on_event: EventSink = ignore_events) -> None:
        self._live = []
