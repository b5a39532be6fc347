"""What the app asks of the session, as blocking jobs. Each job returns the message to post
when it is done. They all run, one at a time, on one thread that the session owns: a re-pack
never races an answer, and the session's SQLite cache (bound to the thread that opened it) and
engine always see the same thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from textual.message import Message

from repoctx.errors import NotADirectoryError_, PathNotFoundError, RepoctxError, UsageError
from repoctx.events import Event
from repoctx.fsutil import atomic_write
from repoctx.paths import user_path
from repoctx.session import Session
from tui.messages import (
    AnswerFinished,
    ConversationLoaded,
    CoreEvent,
    HistoryListed,
    JobDone,
    PackReady,
    ResumeOffer,
    Usage,
)

Change = Callable[[Session], None]
T = TypeVar("T")


class SessionController:
    def __init__(self, session: Session, post: Callable[[Message], object]) -> None:
        self.session = session
        self._post = post
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repoctx-session")

    def call(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the session's thread, after the jobs before it; wait for it."""
        return self._thread.submit(job).result()

    def close(self) -> None:
        """Close the session on its thread once the jobs before have finished (a running
        answer must have been cancelled, or this waits for it)."""
        self.call(self.session.close)
        self._thread.shutdown()

    def emit(self, event: Event) -> None:
        """The session's event sink: each event becomes a message for the app."""
        self._post(CoreEvent(event, time.monotonic()))

    def usage(self) -> Usage | None:
        """How the context is spent now; None before the first pack."""
        result = self.session.result
        if result is None:
            return None
        context = result.model.context_length or result.pack.budget
        conversation = self.session.conversation
        spent = 0
        if conversation is not None and conversation.messages:
            prompt = self.session.prompt_for("")
            spent = max(0, len(prompt) - prompt.prefix_tokens)
        return Usage(context, result.pack.tokens, spent)

    # -- the pack -----------------------------------------------------------------------------

    def pack(self) -> PackReady:
        result = self.session.pack(self.emit)
        return PackReady(result, self._usage_of_pack(), self.session.settings.exclude)

    def _usage_of_pack(self) -> Usage:
        usage = self.usage()
        assert usage is not None
        return usage

    def change(self, change: Change) -> PackReady:
        """Apply ``change`` and pack again; when the new pack fails, the session goes back to
        its roots and settings from before (and its pack), and the error is raised."""
        roots, settings = list(self.session.roots), self.session.settings
        try:
            change(self.session)
            return self.pack()
        except RepoctxError:
            if (self.session.roots, self.session.settings) != (roots, settings):
                self.session.set_roots(roots)
                self.session.settings = settings
                self.session.result = None
                with contextlib.suppress(RepoctxError):
                    self.session.pack(self.emit)
            raise

    # -- questions and conversations ----------------------------------------------------------

    def ask(self, question: str, cancel: threading.Event) -> AnswerFinished:
        done = self.session.ask(question, self.emit, cancel)
        return AnswerFinished(done, self.usage())

    def warm(self, cancel: threading.Event) -> JobDone:
        """Restore (or prefill) the pack and the conversation so far before the next question;
        the status line follows through the events."""
        self.session.warm(self.emit, cancel)
        return JobDone("warm")

    def offer(self) -> ResumeOffer | JobDone:
        found = self.session.conversations()
        return ResumeOffer(found[0]) if found else JobDone("offer")

    def history(self) -> HistoryListed:
        return HistoryListed(self.session.conversations())

    def resume(self, conversation_id: str) -> ConversationLoaded:
        found = self.session.resume(conversation_id)
        if found is None:
            raise UsageError("that conversation is gone from disk; pick another one")
        return ConversationLoaded(found, self.usage())

    def new_conversation(self) -> ConversationLoaded:
        conversation = self.session.new_conversation()
        return ConversationLoaded(conversation, self.usage())

    def save_transcript(self, path: Path, text: str) -> JobDone:
        atomic_write(path, text.encode("utf-8", "surrogatepass"), mode=0o644)
        return JobDone("save", f"saved the conversation to {path}")


# -- changes to the session, for ``SessionController.change`` ---------------------------------


def add_root(path: Path) -> Change:
    def change(session: Session) -> None:
        folder = user_path(path)
        if not folder.exists():
            raise PathNotFoundError(str(path))
        if not folder.is_dir():
            raise NotADirectoryError_(str(path))
        if any(_same(folder, root) for root in session.roots):
            raise UsageError(f"{path} is already in the pack; /drop it or /add another folder")
        session.set_roots([*session.roots, folder])

    return change


def drop(target: str) -> Change:
    """Drop the repository ``target`` names (its folder or its name in the pack), or else
    leave out the path ``target`` inside the repositories."""

    def change(session: Session) -> None:
        kept = [root for root in session.roots if not _names_root(target, root)]
        if len(kept) == len(session.roots):
            session.exclude(path_pattern(target))
            return
        if not kept:
            raise UsageError(f"{target} is the only repository; /add another one first")
        session.set_roots(kept)

    return change


def exclude(pattern: str) -> Change:
    def change(session: Session) -> None:
        if pattern in session.settings.exclude:
            raise UsageError(f"{pattern} is already excluded; /include {pattern} brings it back")
        session.exclude(pattern)

    return change


def include_again(patterns: tuple[str, ...]) -> Change:
    def change(session: Session) -> None:
        missing = [p for p in patterns if p not in session.settings.exclude]
        if missing:
            known = ", ".join(session.settings.exclude) or "none"
            raise UsageError(f"{missing[0]} is not an exclude pattern (excluded now: {known})")
        for pattern in patterns:
            session.include_again(pattern)

    return change


def switch_model(model: str) -> Change:
    def change(session: Session) -> None:
        session.set_model(str(user_path(model)))

    return change


def path_pattern(path: str) -> str:
    """The exclude pattern for a root-relative path: anchored to the roots, so that ``src``
    leaves out ``src/`` and not ``lib/src/``."""
    cleaned = path.strip().strip("/")
    return f"/{cleaned}"


def _names_root(target: str, root: Path) -> bool:
    return target.strip().rstrip("/") == root.name or _same(user_path(target), root)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
