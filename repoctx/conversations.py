"""Conversations on disk, per set of repositories, so that `repoctx chat` can offer the last
one and the editor protocol can list them. Each is one JSON file, written atomically.

A conversation keeps when it was started and last saved, when each question was asked and how
its answer ended (the engine's stop reason: "end", "length", "cancelled", "repetition"), and the
exclude patterns in use, so that resuming it can pack what it was about again. A question that
got files the pack left out (``repoctx.pack.tail``) keeps them, as the text the model read and
their paths: a follow-up builds the same history tokens, so the KV state of the conversation so
far is reused, and nothing is picked again. Files written before these were kept still read
(version 1: times and stop reasons unknown; version 2: no files added to questions).

Repeats do not pile up: a conversation saved for the first time that holds one question, the
same question (spaces aside) as the only question of the latest conversation about the same
repositories, with the same model and exclude patterns, saved within ``REPEAT_WINDOW_S`` (30
minutes) of that one's last save, takes that conversation's place (its id and start time; the
earlier answer is replaced): asking again at once is redoing the question, not starting
something new. A conversation with more than one question is never replaced, and a new question
never goes into an earlier conversation by itself: continuing one is always asked for
(``Session.resume``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repoctx import paths
from repoctx.events import EventSink, Notice, ignore_events
from repoctx.fsutil import atomic_write
from repoctx.model.prompt import Message

FORMAT_VERSION = 3
REPEAT_WINDOW_S = 30 * 60
Clock = Callable[[], float]


@dataclass(frozen=True)
class Exchange:
    """One question and its answer, as shown and saved."""

    question: str
    answer: str | None  # None: no answer was kept
    asked: float | None = None  # unix time; None in files from before times were kept
    stop_reason: str = ""  # how the answer ended; "" when not known
    added: tuple[str, ...] = ()  # the files the pack left out that were added for it

    @property
    def stopped(self) -> bool:
        """The answer did not end by itself: stopped by the user, cut or looping."""
        return self.stop_reason not in ("", "end")


@dataclass(frozen=True)
class _Asked:
    at: float | None
    stop_reason: str
    added: tuple[str, ...] = ()


@dataclass
class Conversation:
    id: str
    roots: list[str]
    model: str
    created: float
    updated: float
    messages: list[Message] = field(default_factory=list)
    # the exclude patterns in use when last saved; None: not known (older files)
    exclude: tuple[str, ...] | None = None
    # one per question, in order: when it was asked and how its answer ended (may be shorter
    # than the questions when messages were set directly)
    _asked: list[_Asked] = field(default_factory=list, repr=False)

    @property
    def title(self) -> str:
        first = next((m.content for m in self.messages if m.role == "user"), "")
        line = first.strip().splitlines()[0] if first.strip() else "(empty)"
        return line[:80]

    @property
    def questions(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")

    def add_exchange(
        self,
        question: str,
        answer: str,
        stop_reason: str,
        asked: float,
        *,
        context: str = "",
        added: Sequence[str] = (),
    ) -> None:
        """``context``: what the model read before ``question`` in its turn, the text of the
        files ``added`` for it."""
        self._asked += [_Asked(None, "")] * (self.questions - len(self._asked))
        self.messages += [Message("user", question, context), Message("assistant", answer)]
        self._asked.append(_Asked(asked, stop_reason, tuple(added)))

    def exchanges(self) -> list[Exchange]:
        """The questions with their answers, times and stop reasons, in order."""
        found: list[Exchange] = []
        for index, message in enumerate(self.messages):
            if message.role != "user":
                continue
            following = self.messages[index + 1] if index + 1 < len(self.messages) else None
            answer = following.content if following and following.role == "assistant" else None
            asked = self._info(len(found))
            found.append(
                Exchange(message.content, answer, asked.at, asked.stop_reason, asked.added)
            )
        return found

    def _info(self, number: int) -> _Asked:
        return self._asked[number] if number < len(self._asked) else _Asked(None, "")

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "version": FORMAT_VERSION,
            "id": self.id,
            "roots": self.roots,
            "model": self.model,
            "created": self.created,
            "updated": self.updated,
            "messages": self._messages_json(),
        }
        if self.exclude is not None:
            data["exclude"] = list(self.exclude)
        return data

    def _messages_json(self) -> list[dict[str, object]]:
        written: list[dict[str, object]] = []
        questions = 0
        for message in self.messages:
            entry: dict[str, object] = {"role": message.role, "content": message.content}
            if message.role == "user":
                asked = self._info(questions)
                questions += 1
                if asked.at is not None:
                    entry["at"] = asked.at
                if message.context:
                    entry["tail"] = {"files": list(asked.added), "text": message.context}
            elif message.role == "assistant" and questions:
                stop_reason = self._info(questions - 1).stop_reason
                if stop_reason:
                    entry["stop_reason"] = stop_reason
            written.append(entry)
        return written

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Conversation:
        messages = data["messages"]
        assert isinstance(messages, list)
        exclude = data.get("exclude")
        conversation = cls(
            id=str(data["id"]),
            roots=[str(r) for r in data["roots"]],  # type: ignore[attr-defined]
            model=str(data["model"]),
            created=float(data["created"]),  # type: ignore[arg-type]
            updated=float(data["updated"]),  # type: ignore[arg-type]
            messages=[Message(str(m["role"]), str(m["content"]), _tail(m)[1]) for m in messages],
            exclude=tuple(str(p) for p in exclude) if isinstance(exclude, list) else None,
        )
        conversation._asked = _asked_from_json(messages)
        return conversation


def _tail(message: dict[str, object]) -> tuple[tuple[str, ...], str]:
    """The files added to a question and their text; none in files from before version 3."""
    tail = message.get("tail")
    if message.get("role") != "user" or not isinstance(tail, dict):
        return (), ""
    files, text = tail.get("files"), tail.get("text")
    return tuple(str(f) for f in files) if isinstance(files, list) else (), str(text or "")


def _asked_from_json(messages: list[dict[str, object]]) -> list[_Asked]:
    asked: list[_Asked] = []
    for message in messages:
        if message["role"] == "user":
            at = message.get("at")
            when = float(at) if isinstance(at, int | float) else None
            asked.append(_Asked(when, "", _tail(message)[0]))
        elif message["role"] == "assistant" and asked:
            stop_reason = message.get("stop_reason")
            if isinstance(stop_reason, str):
                asked[-1] = _Asked(asked[-1].at, stop_reason, asked[-1].added)
    return asked


def roots_key(roots: Sequence[Path]) -> str:
    """Identity of a set of repositories, whatever order they were given in."""
    joined = "\0".join(sorted(str(Path(r).resolve()) for r in roots))
    return hashlib.sha256(joined.encode()).hexdigest()[:24]


def _same_question(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


class ConversationStore:
    def __init__(
        self,
        root: Path | None = None,
        on_event: EventSink = ignore_events,
        clock: Clock = time.time,
    ) -> None:
        self.root = root or paths.data_dir() / "conversations"
        self.on_event = on_event
        self.clock = clock

    def _folder(self, roots: Sequence[Path]) -> Path:
        return self.root / roots_key(roots)

    def _path(self, conversation: Conversation) -> Path:
        return self._folder([Path(r) for r in conversation.roots]) / f"{conversation.id}.json"

    def new(self, roots: Sequence[Path], model: str) -> Conversation:
        now = self.clock()
        resolved = [str(Path(r).resolve()) for r in roots]
        return Conversation(uuid.uuid4().hex[:16], resolved, model, now, now)

    def save(self, conversation: Conversation) -> None:
        """Write ``conversation``; the first save of a repeated question takes the place of the
        conversation it repeats (see the module's docstring), whose id it takes."""
        now = self.clock()
        if not self._path(conversation).exists():
            repeated = self._repeated(conversation, now)
            if repeated is not None:
                conversation.id, conversation.created = repeated.id, repeated.created
        conversation.updated = now
        folder = paths.ensure_private_dir(self._path(conversation).parent)
        text = json.dumps(conversation.to_json(), ensure_ascii=False, indent=1)
        # a question read from bytes that are not UTF-8 (stdin, arguments, a protocol's "\udcff")
        # holds lone surrogates: written as JSON escapes, they read back as they were
        data = text.encode("utf-8", "backslashreplace")
        atomic_write(folder / f"{conversation.id}.json", data)

    def _repeated(self, conversation: Conversation, now: float) -> Conversation | None:
        """The latest conversation, when ``conversation`` repeats its only question."""
        if conversation.questions != 1:
            return None
        latest = self.latest([Path(r) for r in conversation.roots])
        if latest is None or latest.questions != 1 or now - latest.updated > REPEAT_WINDOW_S:
            return None
        same = (
            _same_question(latest.exchanges()[0].question, conversation.exchanges()[0].question)
            and latest.model == conversation.model
            and (latest.exclude or ()) == (conversation.exclude or ())
        )
        return latest if same else None

    def list(self, roots: Sequence[Path]) -> list[Conversation]:
        """The conversations about ``roots``, most recent first; unreadable files are reported
        once and skipped (never deleted: they may be someone's work)."""
        found = []
        folder = self._folder(roots)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found.append(Conversation.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError, AssertionError) as error:
                self.on_event(Notice(f"conversation {path} cannot be read ({error}); skipped"))
        return sorted(found, key=lambda c: c.updated, reverse=True)

    def latest(self, roots: Sequence[Path]) -> Conversation | None:
        conversations = self.list(roots)
        return conversations[0] if conversations else None

    def get(self, roots: Sequence[Path], conversation_id: str) -> Conversation | None:
        return next((c for c in self.list(roots) if c.id == conversation_id), None)

    def delete(self, roots: Sequence[Path], conversation_id: str) -> bool:
        """Remove a conversation from disk; False when it was not there."""
        if self.get(roots, conversation_id) is None:
            return False
        (self._folder(roots) / f"{conversation_id}.json").unlink(missing_ok=True)
        return True
