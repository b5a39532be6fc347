"""Conversations on disk, per set of repositories, so that `repoctx chat` can offer the last
one and the editor protocol can list them. Each is one JSON file, written atomically."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repoctx import paths
from repoctx.events import EventSink, Notice, ignore_events
from repoctx.fsutil import atomic_write
from repoctx.prompt import Message


@dataclass
class Conversation:
    id: str
    roots: list[str]
    model: str
    created: float
    updated: float
    messages: list[Message] = field(default_factory=list)

    @property
    def title(self) -> str:
        first = next((m.content for m in self.messages if m.role == "user"), "")
        line = first.strip().splitlines()[0] if first.strip() else "(empty)"
        return line[:80]

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "id": self.id,
            "roots": self.roots,
            "model": self.model,
            "created": self.created,
            "updated": self.updated,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Conversation:
        messages = data["messages"]
        assert isinstance(messages, list)
        return cls(
            id=str(data["id"]),
            roots=[str(r) for r in data["roots"]],  # type: ignore[attr-defined]
            model=str(data["model"]),
            created=float(data["created"]),  # type: ignore[arg-type]
            updated=float(data["updated"]),  # type: ignore[arg-type]
            messages=[Message(str(m["role"]), str(m["content"])) for m in messages],
        )


def roots_key(roots: Sequence[Path]) -> str:
    """Identity of a set of repositories, whatever order they were given in."""
    joined = "\0".join(sorted(str(Path(r).resolve()) for r in roots))
    return hashlib.sha256(joined.encode()).hexdigest()[:24]


class ConversationStore:
    def __init__(self, root: Path | None = None, on_event: EventSink = ignore_events) -> None:
        self.root = root or paths.data_dir() / "conversations"
        self.on_event = on_event

    def _folder(self, roots: Sequence[Path]) -> Path:
        return self.root / roots_key(roots)

    def new(self, roots: Sequence[Path], model: str) -> Conversation:
        now = time.time()
        resolved = [str(Path(r).resolve()) for r in roots]
        return Conversation(uuid.uuid4().hex[:16], resolved, model, now, now)

    def save(self, conversation: Conversation) -> None:
        conversation.updated = time.time()
        folder = paths.ensure_private_dir(self._folder([Path(r) for r in conversation.roots]))
        data = json.dumps(conversation.to_json(), ensure_ascii=False, indent=1).encode()
        atomic_write(folder / f"{conversation.id}.json", data)

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
