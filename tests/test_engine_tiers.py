"""The engine's tiers with a tiny synthetic model: live slots (one KV stream each), states in
host memory, the disk in the background. Greedy answers are the same whichever tier a state
comes from, conversations on one pack stay live side by side, and nothing waits for the disk."""

from __future__ import annotations

# llama_cpp before anything that imports numpy: on CUDA builds the other order crashes at model
# load. Keep this the first third-party import.
import llama_cpp  # isort: skip  # noqa: F401

import dataclasses
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import LLAMA3_VOCAB, Events

from repoctx.engine.base import GenerationOptions
from repoctx.engine.llama import SAVE_AFTER_TOKENS, LlamaEngine
from repoctx.engine.native import NativeModel
from repoctx.engine.slots import Slots
from repoctx.events import AnswerDone, CacheOutcome, ModelReady, Progress
from repoctx.kv import io as kvio
from repoctx.kv.store import KVStore
from repoctx.model import synth
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.model.prompt import Prompt

N_CTX = 8192
GREEDY = GenerationOptions(max_tokens=8, temperature=0.0)


def ids(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1_000, 120_000) for _ in range(count)]


PACK = ids(3_000, seed=1)  # a pack: the prefix that conversations share
ONE = Prompt(PACK + ids(60, seed=2), len(PACK))
TWO = Prompt(PACK + ids(50, seed=3), len(PACK))
OTHER_REPO = Prompt(ids(2_500, seed=4), 2_400)
THIRD_REPO = Prompt(ids(2_200, seed=5), 2_100)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    path = tmp_path_factory.mktemp("synth") / "tiny-llama3.gguf"
    synth.write_synthetic_gguf(path, synth.TINY, vocab_from=LLAMA3_VOCAB)
    return read_model_info(path)


def open_engine(model: ModelInfo, root: Path | None, events: Events, **plan: Any) -> LlamaEngine:
    """An engine over the store at ``root`` (None: no disk), with its plan changed by ``plan``
    (e.g. slots=1)."""
    store = KVStore(root, on_event=events) if root is not None else None
    engine = LlamaEngine.open(model, N_CTX, events, store=store, persist=root is not None)
    if plan:
        engine.context.close()
        engine._start(dataclasses.replace(engine.plan, **plan))
    return engine


def ask(engine: LlamaEngine, prompt: Prompt) -> tuple[AnswerDone, CacheOutcome]:
    events = Events()
    done = engine.answer(prompt, GREEDY, events, threading.Event())
    engine.housekeep()
    return done, events.outcome()


def follow_up(prompt: Prompt, engine: LlamaEngine, done: AnswerDone, seed: int) -> Prompt:
    """The prompt of a next question in the conversation of ``prompt`` (its answer's tokens as
    the engine generated them, then new ones)."""
    (slot,) = [s for s in engine.slots.holding() if s.tokens[: len(prompt)] == prompt.ids]
    return Prompt(slot.tokens[: len(prompt) + done.generated_tokens] + ids(30, seed), len(PACK))


def test_conversations_on_one_pack_stay_live_side_by_side(model: ModelInfo) -> None:
    engine = open_engine(model, None, Events())
    try:
        assert engine.plan.slots == 2
        first, _ = ask(engine, ONE)
        _, outcome = ask(engine, TWO)  # a new conversation: a copy of the pack's stream
        assert (outcome.source, outcome.restored_tokens) == ("memory", len(PACK))
        # the first conversation kept its cells: its follow-up evaluates only the new tokens
        _, outcome = ask(engine, follow_up(ONE, engine, first, seed=6))
        assert outcome.source == "memory"
        assert outcome.evaluated_tokens <= 31
    finally:
        engine.close()


def test_a_new_question_on_the_pack_starts_from_the_spare(model: ModelInfo, tmp_path: Path) -> None:
    """After an answer, a free slot gets a copy of the pack while the engine is idle; a new
    conversation starts there (no stream copy in its path), gives the answer it would have
    given from a prefill, and the first conversation keeps its cells."""
    engine = open_engine(model, tmp_path / "kv", Events())
    try:
        first, _ = ask(engine, ONE)
        (spare,) = [slot for slot in engine.slots.all if slot.spare]
        assert spare.tokens == PACK
        second, outcome = ask(engine, TWO)
        assert (outcome.source, outcome.restored_tokens) == ("memory", len(PACK))
        assert not any(slot.spare for slot in engine.slots.all), "no slot left free for one"
        _, outcome = ask(engine, follow_up(ONE, engine, first, seed=6))
        assert (outcome.source, outcome.evaluated_tokens) == ("memory", 30)
    finally:
        engine.close()
    engine = open_engine(model, None, Events())
    try:
        fresh, outcome = ask(engine, TWO)
        assert outcome.evaluated_tokens == len(TWO)
    finally:
        engine.close()
    assert second.text == fresh.text


def test_a_pack_edited_inside_takes_the_spare_s_cells_before_the_edit(
    model: ModelInfo, tmp_path: Path
) -> None:
    """An edit inside the pack: the spare is cut at the edit and evaluated on from there (no
    copy), while the conversation keeps its cells."""
    edited = [*PACK[:2_000], *ids(1_000, seed=9)]
    engine = open_engine(model, tmp_path / "kv", Events())
    try:
        ask(engine, ONE)
        (spare,) = [slot for slot in engine.slots.all if slot.spare]
        done, outcome = ask(engine, Prompt(edited + ids(40, seed=10), len(edited)))
        assert (outcome.source, outcome.restored_tokens) == ("memory", 2_000)
        assert spare.tokens[: len(edited)] == edited and not spare.spare
        assert any(slot.tokens[: len(ONE)] == ONE.ids for slot in engine.slots.all)
    finally:
        engine.close()
    engine = open_engine(model, None, Events())
    try:
        fresh, _ = ask(engine, Prompt(edited + ids(40, seed=10), len(edited)))
    finally:
        engine.close()
    assert done.text == fresh.text


def test_a_state_from_host_memory_gives_the_live_answer(model: ModelInfo) -> None:
    """Three repositories, two slots: the least recently used slot goes to host memory, and
    its next question is answered from there as it would have been live."""
    engine = open_engine(model, None, Events())
    try:
        fresh, _ = ask(engine, ONE)
        live, outcome = ask(engine, ONE)  # asked again: from the live slot
        assert (outcome.source, outcome.restored_tokens) == ("memory", len(ONE) - 1)
        assert live.text == fresh.text, "a prefill evaluates the last token as a restore does"
        ask(engine, OTHER_REPO)
        ask(engine, THIRD_REPO)  # no slot left: ONE's goes to host memory
        assert all(slot.tokens[: len(PACK)] != PACK for slot in engine.slots.all)
        assert [len(state.tokens) for state in engine.host.states()][:1] == [len(ONE) + 8]
        restored, outcome = ask(engine, ONE)
    finally:
        engine.close()
    assert (outcome.source, outcome.restored_tokens) == ("host", len(ONE) - 1)
    assert outcome.evaluated_tokens == 1
    assert restored.text == live.text


def test_the_disk_tier_gives_the_live_answer_in_any_slot_of_any_context(
    model: ModelInfo, tmp_path: Path
) -> None:
    """A state saved from one slot of a two-slot context loads into another slot, and into a
    context of one slot (the stream count of llama.cpp's format is rewritten, not kept)."""
    root = tmp_path / "kv"
    engine = open_engine(model, root, Events())
    try:
        ask(engine, OTHER_REPO)  # slot 0
        ask(engine, ONE)  # slot 1: its state is saved
        live, _ = ask(engine, ONE)
        assert [s.seq for s in engine.slots.holding() if s.tokens[:10] == PACK[:10]] == [1]
        images = [state.image for state in engine.host.states()]
        assert len(images) == 2, "both slots' states were copied out"
        assert [(i.buffer.address + i.offset) % kvio.BLOCK for i in images] == [0, 0], (
            "block-aligned in memory, for direct writes"
        )
    finally:
        engine.close()
    answers = []
    for slots in (2, 1):
        engine = open_engine(model, root, Events(), slots=slots)
        try:
            done, outcome = ask(engine, ONE)
            assert (outcome.source, outcome.restored_tokens) == ("disk", len(ONE) - 1)
            assert engine.slots.holding()[0].seq == 0
            answers.append(done.text)
        finally:
            engine.close()
    assert answers == [live.text, live.text]


def test_a_restored_state_stays_in_host_memory(model: ModelInfo, tmp_path: Path) -> None:
    root = tmp_path / "kv"
    engine = open_engine(model, root, Events())
    try:
        ask(engine, ONE)
    finally:
        engine.close()
    engine = open_engine(model, root, Events(), slots=1)
    try:
        _, outcome = ask(engine, ONE)
        assert outcome.source == "disk"
        ask(engine, OTHER_REPO)  # takes the only slot
        _, outcome = ask(engine, ONE)
        assert outcome.source == "host", "read from disk once, then kept in memory"
    finally:
        engine.close()


def test_the_latest_state_s_buffer_is_allocated_while_the_model_loads(
    model: ModelInfo, tmp_path: Path, host_allocations: list[str]
) -> None:
    """Page-locking gigabytes takes about a second per 10 GB: the buffer of the latest saved
    state is allocated in the background while the model loads, so the restore that follows
    allocates nothing in its path. A new state's buffer is allocated when it is copied out,
    after the answer (never beside a prefill, which it would stall)."""
    made = host_allocations
    root = tmp_path / "kv"
    engine = open_engine(model, root, Events())
    try:
        assert made == [], "no state saved yet: nothing to reserve"
        ask(engine, ONE)  # evaluated, then copied to host memory and saved
    finally:
        engine.close()
    assert made == ["MainThread"], "the copy allocated its buffer after the answer"
    made.clear()
    engine = open_engine(model, root, Events())
    try:
        assert engine.pool.reserved_s > 0 and made == ["repoctx-host-reserve"]
        _, outcome = ask(engine, ONE)
        assert outcome.source == "disk"
        assert made == ["repoctx-host-reserve"], "the restore found its buffer ready"
    finally:
        engine.close()


def test_a_bigger_context_keeps_what_the_slots_held(model: ModelInfo) -> None:
    events = Events()
    engine = open_engine(model, None, events)
    try:
        ask(engine, ONE)
        events.events.clear()
        engine.fit(2 * N_CTX, events)
        assert [ready.n_ctx for ready in events.of(ModelReady)] == [2 * N_CTX]
        assert engine.ready.n_ctx == 2 * N_CTX and engine.slots.holding() == []
        _, outcome = ask(engine, ONE)
    finally:
        engine.close()
    assert (outcome.source, outcome.restored_tokens) == ("host", len(ONE) - 1)


def test_the_answer_never_waits_for_the_disk(
    model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, writing = threading.Event(), threading.Event()
    real = kvio.write_state

    def slow_disk(fd: int, view: memoryview, **options: Any) -> str:
        writing.set()
        assert release.wait(30)
        return real(fd, view, **options)

    monkeypatch.setattr(kvio, "write_state", slow_disk)
    root = tmp_path / "kv"
    events = Events()
    engine = open_engine(model, root, events)
    try:
        ask(engine, ONE)  # answered, and its state handed to the saver
        assert writing.wait(30)
        _, outcome = ask(engine, OTHER_REPO)  # while the disk is still busy with the first
        assert outcome.source == "none"
        assert KVStore(root).entries() == []
        assert not [e for e in events.of(Progress) if e.stage == "save"]
        release.set()
        engine.flush(events)
        assert len(KVStore(root).entries()) == 2
    finally:
        release.set()
        engine.close()


def test_an_interrupt_while_saves_finish_drops_them_cleanly(
    model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = kvio.write_state

    def slow_disk(fd: int, view: memoryview, **options: Any) -> str:
        assert release.wait(30)
        return real(fd, view, **options)

    def interrupt(event: object) -> None:
        if isinstance(event, Progress) and event.stage == "save":
            threading.Timer(0.5, release.set).start()
            raise KeyboardInterrupt

    monkeypatch.setattr(kvio, "write_state", slow_disk)
    root = tmp_path / "kv"
    engine = open_engine(model, root, Events())
    ask(engine, ONE)
    with pytest.raises(KeyboardInterrupt):
        engine.close(interrupt)
    assert KVStore(root).entries() == []
    assert [name for name in os.listdir(root) if name != ".lock"] == []


def test_prompts_shorter_than_the_save_threshold_are_not_saved(
    model: ModelInfo, tmp_path: Path
) -> None:
    root = tmp_path / "kv"
    engine = open_engine(model, root, Events())
    try:
        ask(engine, Prompt(ids(SAVE_AFTER_TOKENS - 200, seed=9), 100))
        engine.flush(Events())
        assert KVStore(root).entries() == [] and engine.host.states() == []
    finally:
        engine.close()


def test_the_model_loads_with_progress(model: ModelInfo) -> None:
    fractions: list[float] = []
    loaded = NativeModel(model.path, 0, fractions.append)
    try:
        assert fractions and fractions[-1] == 1.0
        assert fractions == sorted(fractions)
    finally:
        loaded.close()


def test_an_emptied_spare_is_a_free_slot_and_no_spare() -> None:
    slots = Slots(2)
    spare = slots.all[0]
    spare.tokens, spare.spare = [5, 6, 7], True
    assert slots.spare_for([5, 6, 7, 8], at_least=-100) is spare
    spare.keep(0)
    assert slots.free() is spare
    assert slots.spare_for([5, 6, 7, 8], at_least=-100) is None
