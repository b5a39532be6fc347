"""Messages that the session's thread workers post to the app (``post_message`` is
thread-safe); the app renders them on its own thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from repoctx.conversations import Conversation
from repoctx.events import AnswerDone, CacheOutcome, Event
from repoctx.pack.pipeline import PackResult
from tui.pack_change import PackChange


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
    """A new pack is built; ``excluded`` are the session's exclude patterns now. ``change``
    compares it with the pack before (None for the first); ``notice`` is said before the
    prefill when that costs more than the change itself."""

    def __init__(
        self,
        result: PackResult,
        usage: Usage,
        excluded: tuple[str, ...],
        change: PackChange | None = None,
        notice: str = "",
    ) -> None:
        super().__init__()
        self.result = result
        self.usage = usage
        self.excluded = excluded
        self.change = change
        self.notice = notice


class Refreshed(Message):
    """The pack was built again (files changed, or the user changed what is packed) and
    brought into the model's context: ``outcome`` says what the prefill evaluated (None: it
    was stopped, or not needed when ``prefilled`` is False). ``what`` says what happened."""

    def __init__(
        self,
        what: str,
        cancel: threading.Event,
        outcome: CacheOutcome | None = None,
        prefilled: bool = True,
    ) -> None:
        super().__init__()
        self.what = what
        self.cancel = cancel
        self.outcome = outcome
        self.prefilled = prefilled


class FilesChanged(Message):
    """The watcher saw these files or folders change (posted from its thread)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths


class AnswerFinished(Message):
    def __init__(self, done: AnswerDone, usage: Usage | None) -> None:
        super().__init__()
        self.done = done
        self.usage = usage


class ConversationLoaded(Message):
    """The conversation to show now (resumed, or a new empty one); ``note`` is shown when not
    empty."""

    def __init__(self, conversation: Conversation, usage: Usage | None, note: str = "") -> None:
        super().__init__()
        self.conversation = conversation
        self.usage = usage
        self.note = note


class ResumeOffer(Message):
    """The conversations about these repositories, latest first, to offer at start."""

    def __init__(self, conversations: list[Conversation]) -> None:
        super().__init__()
        self.conversations = conversations


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
