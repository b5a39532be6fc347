"""`Session.warm`: the pack (and the conversation so far) is brought into the model's context
before the first question, from disk when it was saved, so the question pays only for itself."""

from __future__ import annotations

# llama_cpp before anything that imports numpy: on CUDA builds the other order crashes at load
import llama_cpp  # isort: skip  # noqa: F401

import threading
from pathlib import Path

import pytest
from repo_helpers import LLAMA3_VOCAB, MakeRepo, write_files

from repoctx.config import Settings
from repoctx.engine.base import GenerationOptions
from repoctx.engine.llama import LlamaEngine
from repoctx.events import CacheOutcome, Event, Progress
from repoctx.kv.store import KVStore
from repoctx.model import synth
from repoctx.session import Session

FILES = {f"mod{i}.py": f"def f{i}(x):\n    return x * {i} + {i * 7}\n" * 12 for i in range(9)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    return synth.write_synthetic_gguf(path, synth.TINY, vocab_from=LLAMA3_VOCAB)


def session(repo: Path, model: Path) -> Session:
    settings = Settings(model=str(model), budget=20_000)
    return Session([repo], settings, generation=GenerationOptions(max_tokens=4))


def outcomes(events: list[Event]) -> list[CacheOutcome]:
    return [event for event in events if isinstance(event, CacheOutcome)]


def test_warm_then_ask_evaluates_only_the_question(make_repo: MakeRepo, tiny_model: Path) -> None:
    repo = make_repo(FILES)
    first = session(repo, tiny_model)
    events: list[Event] = []
    warmed = first.warm(events.append)
    assert warmed is not None and warmed.source == "none" and warmed.evaluated_tokens > 1024
    assert not any(isinstance(e, Progress) and e.stage == "save" for e in events), "no waiting"
    first.ask("What does f3 do?", events.append)
    asked = outcomes(events)[-1]
    assert asked.source == "memory" and asked.restored_tokens == warmed.prompt_tokens
    assert asked.evaluated_tokens < 40
    events.clear()
    first.close(events.append)  # the pack's state is written by now, in the background
    saved = [e for e in KVStore().entries() if e.n_tokens == warmed.prompt_tokens]
    assert [entry.checkpoint for entry in saved] == [True]

    second = session(repo, tiny_model)
    again = second.warm(lambda event: None)
    assert again is not None and again.source == "disk"
    assert again.restored_tokens == warmed.prompt_tokens - 1
    second.close()


def test_warm_after_an_edit_evaluates_only_the_tail(make_repo: MakeRepo, tiny_model: Path) -> None:
    repo = make_repo(FILES)
    before = session(repo, tiny_model)
    warmed = before.warm(lambda event: None)
    assert warmed is not None
    before.close()
    last = before.result.pack.segments[-1].file.path if before.result else ""
    write_files(repo, {last: "def changed():\n    return 1\n"})
    after = session(repo, tiny_model)
    outcome = after.warm(lambda event: None)
    assert outcome is not None and outcome.source == "disk"
    assert 0 < outcome.evaluated_tokens < warmed.prompt_tokens // 4
    after.close()


def test_warm_can_be_cancelled(make_repo: MakeRepo, tiny_model: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    warm = session(make_repo(FILES), tiny_model)
    assert warm.warm(lambda event: None, cancel) is None
    warm.close()


@pytest.mark.parametrize("last", [False, True], ids=["more-to-come", "one-shot"])
def test_a_one_shot_question_readies_no_spare_and_still_saves(
    make_repo: MakeRepo, tiny_model: Path, last: bool
) -> None:
    """After an answer the engine readies a spare copy of the pack for the next conversation;
    a one-shot ask closes right after, so it leaves that out, and ``close`` saves the state."""
    repo = make_repo({name: f"# one shot: {last}\n{text}" for name, text in FILES.items()})
    before = {entry.id for entry in KVStore().entries()}
    asking = session(repo, tiny_model)
    done = asking.ask("What does f3 do?", last=last)
    engine = asking.engine
    assert isinstance(engine, LlamaEngine)
    assert any(slot.spare for slot in engine.slots.all) is not last
    asking.close()
    saved = [entry for entry in KVStore().entries() if entry.id not in before]
    assert any(entry.n_tokens >= done.prompt_tokens for entry in saved), "the exchange is saved"
