"""Messages that the session's thread workers post to the app (``post_message`` is
thread-safe); the app renders them on its own thread."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from repoctx.conversations import Conversation
from repoctx.events import AnswerDone, Event
from repoctx.pipeline import PackResult


@dataclass(frozen=True)
class Usage:
    """How the model's context is spent, in tokens."""

    context: int
    pack: int
    conversation: int

    @property
    def free(self) -> int:
        return max(0, self.context - self.pack - self.conversation)


class CoreEvent(Message):
    """An event of the core, with the monotonic time at which it happened."""

    def __init__(self, event: Event, at: float) -> None:
        super().__init__()
        self.event = event
        self.at = at


class PackReady(Message):
    """A new pack is built; ``excluded`` are the session's exclude patterns now."""

    def __init__(self, result: PackResult, usage: Usage, excluded: tuple[str, ...]) -> None:
        super().__init__()
        self.result = result
        self.usage = usage
        self.excluded = excluded


class AnswerFinished(Message):
    def __init__(self, done: AnswerDone, usage: Usage | None) -> None:
        super().__init__()
        self.done = done
        self.usage = usage


class ConversationLoaded(Message):
    """The conversation to show now (resumed, or a new empty one)."""

    def __init__(self, conversation: Conversation, usage: Usage | None) -> None:
        super().__init__()
        self.conversation = conversation
        self.usage = usage


class ResumeOffer(Message):
    """The last conversation about these repositories, to offer at start."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self.conversation = conversation


class HistoryListed(Message):
    def __init__(self, conversations: list[Conversation]) -> None:
        super().__init__()
        self.conversations = conversations


class JobDone(Message):
    """A job without a result of its own finished; ``note`` is shown when not empty."""

    def __init__(self, job: str, note: str = "") -> None:
        super().__init__()
        self.job = job
        self.note = note


class JobFailed(Message):
    """A job raised a RepoctxError (or could not touch the disk); ``text`` says what to do."""

    def __init__(self, job: str, text: str) -> None:
        super().__init__()
        self.job = job
        self.text = text
