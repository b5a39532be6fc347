"""Conversations on disk: times and stop reasons of each exchange, exclude patterns, the files
added to a question, files from before they were kept, repeated questions that take the place of
the one they repeat, and deleting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repoctx.conversations import (
    REPEAT_WINDOW_S,
    Conversation,
    ConversationStore,
    Exchange,
    roots_key,
)
from repoctx.model.prompt import Message

START = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> ConversationStore:
    return ConversationStore(tmp_path / "conversations", clock=clock)


def asked(
    store: ConversationStore,
    repo: Path,
    *questions: str,
    stop_reason: str = "end",
    exclude: tuple[str, ...] = (),
) -> Conversation:
    conversation = store.new([repo], "m.gguf")
    for question in questions:
        conversation.add_exchange(question, f"about {question}", stop_reason, store.clock())
        conversation.exclude = exclude
        store.save(conversation)
    return conversation


def test_exchanges_keep_their_times_stop_reasons_and_the_exclude_patterns(
    store: ConversationStore, clock: Clock, tmp_path: Path
) -> None:
    conversation = store.new([tmp_path], "m.gguf")
    conversation.add_exchange("Why?", "Because", "end", START)
    conversation.add_exchange("How?", "```py\nhalf", "cancelled", START + 60)
    conversation.exclude = ("/tests/", "*.md")
    clock.now = START + 61
    store.save(conversation)

    (loaded,) = store.list([tmp_path])
    assert loaded.exchanges() == [
        Exchange("Why?", "Because", START, "end"),
        Exchange("How?", "```py\nhalf", START + 60, "cancelled"),
    ]
    assert [e.stopped for e in loaded.exchanges()] == [False, True]
    assert loaded.exclude == ("/tests/", "*.md")
    assert (loaded.created, loaded.updated) == (START, START + 61)
    assert loaded.messages == [
        Message("user", "Why?"),
        Message("assistant", "Because"),
        Message("user", "How?"),
        Message("assistant", "```py\nhalf"),
    ]


def test_a_question_that_was_not_utf8_is_kept_as_it_was_read(
    store: ConversationStore, tmp_path: Path
) -> None:
    """Bytes that are not UTF-8 reach a question as lone surrogates (a pipe into ``ask``)."""
    question = b"What is in legacy.py? \xff\xfe caf\xc3\xa9".decode("utf-8", "surrogateescape")
    asked(store, tmp_path, question)
    (loaded,) = store.list([tmp_path])
    assert [exchange.question for exchange in loaded.exchanges()] == [question]


def older_file(tmp_path: Path, record: dict[str, object]) -> tuple[ConversationStore, Path]:
    """A store holding one conversation file written by an earlier version (``record``, with
    the id, roots and model filled in), and the repository it is about."""
    store = ConversationStore(tmp_path / "conversations")
    repo = tmp_path / "repo"
    folder = store.root / roots_key([repo])
    folder.mkdir(parents=True)
    record = {"id": "0123456789abcdef", "roots": [str(repo.resolve())], "model": "m.gguf", **record}
    (folder / "0123456789abcdef.json").write_text(json.dumps(record), encoding="utf-8")
    return store, repo


def test_files_from_before_times_were_kept_still_read(tmp_path: Path) -> None:
    old = {
        "version": 1,
        "created": START,
        "updated": START,
        "messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "!"}],
    }
    store, repo = older_file(tmp_path, old)

    (loaded,) = store.list([repo])
    assert loaded.exchanges() == [Exchange("Why?", "!", None, "")]
    assert loaded.exclude is None
    loaded.add_exchange("And?", "So.", "length", START + 5)
    store.save(loaded)
    (again,) = store.list([repo])
    assert again.exchanges() == [
        Exchange("Why?", "!", None, ""),
        Exchange("And?", "So.", START + 5, "length"),
    ]


def test_files_added_to_a_question_are_kept_with_it(
    store: ConversationStore, tmp_path: Path
) -> None:
    conversation = store.new([tmp_path], "m.gguf")
    tail = 'Left out, picked:\n<file path="p/a.py">\nx = 1\n</file>\n'
    conversation.add_exchange("What is x?", "1", "end", START, context=tail, added=["p/a.py"])
    conversation.add_exchange("And y?", "2", "end", START + 1)
    store.save(conversation)

    (saved,) = (store.root / roots_key([tmp_path])).glob("*.json")
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["version"] == 3
    assert data["messages"][0]["tail"] == {"files": ["p/a.py"], "text": tail}
    assert data["messages"][0]["content"] == "What is x?", "the question as asked"
    assert "tail" not in data["messages"][2]
    (loaded,) = store.list([tmp_path])
    assert loaded.messages[0] == Message("user", "What is x?", tail)
    assert loaded.messages[2] == Message("user", "And y?")
    assert [e.added for e in loaded.exchanges()] == [("p/a.py",), ()]
    assert loaded.title == "What is x?"


def test_files_from_before_tails_were_kept_still_read(tmp_path: Path) -> None:
    version_2 = {
        "version": 2,
        "created": START,
        "updated": START + 9,
        "exclude": ["/tests/"],
        "messages": [
            {"role": "user", "content": "Why?", "at": START},
            {"role": "assistant", "content": "!", "stop_reason": "length"},
        ],
    }
    store, repo = older_file(tmp_path, version_2)

    (loaded,) = store.list([repo])
    assert loaded.exchanges() == [Exchange("Why?", "!", START, "length", ())]
    assert loaded.messages == [Message("user", "Why?"), Message("assistant", "!")]
    assert loaded.exclude == ("/tests/",)


def test_messages_set_directly_read_as_exchanges_of_unknown_time() -> None:
    conversation = Conversation("c", ["/r"], "m", START, START)
    conversation.messages = [Message("user", "Q"), Message("assistant", "A"), Message("user", "R")]
    assert conversation.exchanges() == [Exchange("Q", "A"), Exchange("R", None)]
    assert Conversation.from_json(conversation.to_json()).exchanges() == conversation.exchanges()


def test_the_same_question_asked_again_soon_takes_the_place_of_the_last_one(
    store: ConversationStore, clock: Clock, tmp_path: Path
) -> None:
    first = asked(store, tmp_path, "What does total do?")
    clock.now += 60
    again = asked(store, tmp_path, "  What does\ntotal do? ")
    (only,) = store.list([tmp_path])
    assert again.id == first.id == only.id
    assert (only.created, only.updated) == (START, START + 60)
    assert only.exchanges()[0].asked == START + 60  # the answer kept is the new one


@pytest.mark.parametrize(
    "later",
    [
        "another question",
        "after the window",
        "other patterns",
        "in a conversation that went on",
    ],
)
def test_repeats_are_kept_apart_when_they_are_not_a_redo(
    store: ConversationStore, clock: Clock, tmp_path: Path, later: str
) -> None:
    question = "What does total do?"
    first = asked(store, tmp_path, question, *(["And then?"] if "went on" in later else []))
    clock.now += REPEAT_WINDOW_S + 1 if later == "after the window" else 60
    second = asked(
        store,
        tmp_path,
        "Where is Money?" if later == "another question" else question,
        exclude=("*.md",) if later == "other patterns" else (),
    )
    assert second.id != first.id
    assert [c.id for c in store.list([tmp_path])] == [second.id, first.id]


def test_a_conversation_that_goes_on_keeps_its_place(
    store: ConversationStore, clock: Clock, tmp_path: Path
) -> None:
    conversation = asked(store, tmp_path, "Why?")
    clock.now += 10
    conversation.add_exchange("Why?", "still", "end", clock.now)
    store.save(conversation)
    (only,) = store.list([tmp_path])
    assert only.id == conversation.id and only.questions == 2


def test_conversations_are_deleted(store: ConversationStore, clock: Clock, tmp_path: Path) -> None:
    first = asked(store, tmp_path, "Why?")
    clock.now += 60
    second = asked(store, tmp_path, "How?")
    assert store.delete([tmp_path], first.id)
    assert [c.id for c in store.list([tmp_path])] == [second.id]
    assert not store.delete([tmp_path], first.id)
    assert not store.delete([tmp_path / "elsewhere"], second.id)
    assert store.get([tmp_path], second.id) is not None
