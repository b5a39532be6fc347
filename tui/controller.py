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
from repoctx.pack.pipeline import PackResult
from repoctx.paths import user_path
from repoctx.session import Session
from tui.messages import (
    AnswerFinished,
    ConversationLoaded,
    CoreEvent,
    HistoryListed,
    JobDone,
    PackReady,
    Refreshed,
    ResumeOffer,
    Usage,
)
from tui.pack_change import compare, notice, summary

Change = Callable[[Session], None]
T = TypeVar("T")


class SessionController:
    def __init__(self, session: Session, post: Callable[[Message], object]) -> None:
        self.session = session
        self._post = post
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repoctx-session")
        self.scanned_ns = time.time_ns()  # when the scan of the last pack began

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
        self.scanned_ns = time.time_ns()
        result = self.session.pack(self.emit)
        return PackReady(result, self._usage_of_pack(), self.session.settings.exclude)

    def _usage_of_pack(self) -> Usage:
        usage = self.usage()
        assert usage is not None
        return usage

    def change(self, change: Change, done: str, cancel: threading.Event) -> Refreshed:
        """Apply ``change``, pack again and bring the new pack into the model's context; when
        the new pack fails, the session goes back to its roots and settings from before (and
        its pack), and the error is raised."""
        old = self.session.result
        roots, settings = list(self.session.roots), self.session.settings
        try:
            change(self.session)
            ready = self.pack()
        except RepoctxError:
            if (self.session.roots, self.session.settings) != (roots, settings):
                self.session.set_roots(roots)
                self.session.settings = settings
                self.session.result = None
                self.session.remember_patterns()
                with contextlib.suppress(RepoctxError):
                    self.session.pack(self.emit)
            raise
        return self._bring_in(old, ready, done, cancel)

    def refresh(self, cancel: threading.Event) -> Refreshed:
        """Read the files again (they changed, or the user asked), then as ``change``."""
        old = self.session.result
        return self._bring_in(old, self.pack(), "", cancel)

    def _bring_in(
        self, old: PackResult | None, ready: PackReady, done: str, cancel: threading.Event
    ) -> Refreshed:
        """Show the new pack (saying first what the prefill will cost when the pack changed
        before the files that changed), then prefill it: the engine keeps the front that did
        not change. A pack that reads as before is not prefilled again."""
        if old is None:
            self._post(ready)
            return Refreshed(done or "packed", cancel, self.session.warm(self.emit, cancel))
        change = compare(old, ready.result)
        ready.change = change
        what = done or summary(change)
        if change.same_text and self.session.engine is not None:
            self._post(ready)
            return Refreshed(what, cancel, prefilled=False)
        if change.unexpected:
            ready.notice = notice(change, ready.usage.conversation)
        self._post(ready)
        return Refreshed(what, cancel, self.session.warm(self.emit, cancel))

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
        return ResumeOffer(found) if found else JobDone("offer")

    def history(self) -> HistoryListed:
        return HistoryListed(self.session.conversations())

    def resume(self, conversation_id: str) -> ConversationLoaded:
        """Resume a conversation, with the exclude patterns it was packed with (packing again
        when they differ from those in use)."""
        excluded = self.session.settings.exclude
        found = self.session.resume(conversation_id, patterns=True)
        if found is None:
            raise UsageError("that conversation is gone from disk; pick another one")
        if self.session.result is None:
            self._post(self.pack())
        note = ""
        if self.session.settings.exclude != excluded:
            patterns = ", ".join(self.session.settings.exclude) or "none"
            note = f"exclude patterns as when this conversation was saved: {patterns}"
        return ConversationLoaded(found, self.usage(), note)

    def delete(self, conversation_id: str, title: str) -> JobDone:
        if not self.session.store.delete(self.session.roots, conversation_id):
            raise UsageError("that conversation was already gone from disk")
        return JobDone("delete", f"deleted the conversation “{title}”")

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
