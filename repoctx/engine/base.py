"""What every engine offers the session."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from repoctx.events import AnswerDone, CacheOutcome, EventSink, ModelReady
from repoctx.prompt import Prompt


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 1024
    temperature: float = 0.0  # 0: greedy, the same answer every time
    seed: int = 0


class Engine(Protocol):
    """Evaluates prompts and streams answers; keeps whatever state makes the next prompt with a
    shared prefix cheap."""

    @property
    def ready(self) -> ModelReady: ...

    def answer(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
    ) -> AnswerDone:
        """Evaluate ``prompt`` (restoring what can be restored), stream ``Token`` events, and
        return the whole answer. ``cancel`` set: stop as soon as possible, keep what was
        written (``stop_reason`` "cancelled")."""
        ...

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        """Evaluate ``prompt`` without answering, so that the next prompt sharing it starts at
        once; None when cancelled."""
        ...

    def close(self) -> None: ...
