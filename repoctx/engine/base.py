"""What every engine offers the session."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from repoctx.config import DEFAULT_REPEAT_PENALTY
from repoctx.events import AnswerDone, CacheOutcome, EventSink, ModelReady, ignore_events
from repoctx.model.prompt import Prompt

DEFAULT_REPEAT_LAST_N = 64


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 1024
    temperature: float = 0.0  # 0: greedy, the same answer every time
    seed: int = 0
    # llama.cpp's repeat penalty on the tokens among the answer's last ``repeat_last_n``
    # (1.0: none); mild, so that greedy answers stay deterministic and on topic
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N


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
        written (``stop_reason`` "cancelled"). An answer that loops (engine/repetition.py)
        stops with ``stop_reason`` "repetition"."""
        ...

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        """Evaluate ``prompt`` without answering, so that the next prompt sharing it starts at
        once; None when cancelled."""
        ...

    def fit(self, n_ctx: int, on_event: EventSink) -> None:
        """Make room for prompts of ``n_ctx`` tokens with the model loaded (at once when
        there is room already); what the engine holds stays restorable."""
        ...

    def housekeep(self) -> None:
        """Deferred work nobody waits for (snapshots of sequences to save, writes to start);
        a resident engine calls it whenever it is idle. Returns quickly."""
        ...

    def flush(self, on_event: EventSink) -> None:
        """Finish every deferred save, reporting ``save`` progress; before a process exits."""
        ...

    def close(self, on_event: EventSink = ignore_events) -> None:
        """Flush (an interrupt drops the save in progress, cleanly), then free the model and
        its memory."""
        ...
