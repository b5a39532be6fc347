"""Faults around the engine's saved KV states, injected with a tiny synthetic model: each is
reported once, answered by a fresh prefill with the same answer, never a crash, never an answer
computed on a wrong state (llama.cpp never sees bytes that did not verify), never a partial file
left behind. And stopping a prefill (cancel, Ctrl-C) keeps a checkpoint that the next answer
resumes from."""

from __future__ import annotations

# llama_cpp before anything that imports numpy: on CUDA builds the other order crashes at model
# load. Keep this the first third-party import.
import llama_cpp  # isort: skip  # noqa: F401

import errno
import fcntl
import json
import os
import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import LLAMA3_VOCAB, Events

from repoctx.engine.base import GenerationOptions
from repoctx.engine.llama import SAVE_AFTER_TOKENS, LlamaEngine
from repoctx.engine.native import NativeContext
from repoctx.events import AnswerDone, CacheOutcome, Event, Progress, Token
from repoctx.kv import files as kvfiles
from repoctx.kv import folder as kvfolder
from repoctx.kv import io as kvio
from repoctx.kv.store import Entry, KVStore
from repoctx.model import synth
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.model.prompt import Prompt

N_CTX = 8192
GREEDY = GenerationOptions(max_tokens=8, temperature=0.0)
PROMPT = Prompt([random.Random(7).randrange(1_000, 120_000) for _ in range(3_000)], 2_000)
FOLLOW_UP = Prompt(
    PROMPT.ids[:-8] + [random.Random(9).randrange(1_000, 120_000) for _ in range(40)], 2_000
)
LONG_PROMPT = Prompt([random.Random(8).randrange(1_000, 120_000) for _ in range(4_096)], 3_000)
STOP_AT = 2_048  # a multiple of the CPU plan's 512-token batches, above SAVE_AFTER_TOKENS


def open_engine(model: ModelInfo, root: Path, sink: Events, **store_options: Any) -> LlamaEngine:
    store = KVStore(root, on_event=sink, **store_options)
    return LlamaEngine.open(model, N_CTX, sink, store=store)


def answer(
    model: ModelInfo, root: Path, prompt: Prompt = PROMPT, **store_options: Any
) -> tuple[AnswerDone, Events]:
    """One answer by a new engine (no live context) over the store at ``root``."""
    events = Events()
    engine = open_engine(model, root, events, **store_options)
    try:
        done = engine.answer(prompt, GREEDY, events, threading.Event())
    finally:
        engine.close(events)  # the background save ends here, its notices reported
    return done, events


def fresh(model: ModelInfo, prompt: Prompt = PROMPT) -> AnswerDone:
    engine = LlamaEngine.open(model, N_CTX, persist=False)
    try:
        return engine.answer(prompt, GREEDY, Events(), threading.Event())
    finally:
        engine.close()


def assert_fresh(done: AnswerDone, events: Events, reference: AnswerDone, prompt: Prompt) -> None:
    outcome = events.outcome()
    assert (outcome.source, outcome.restored_tokens) == ("none", 0)
    assert outcome.evaluated_tokens == len(prompt)
    assert done.text == reference.text
    assert done.stop_reason == reference.stop_reason


def assert_clean(root: Path) -> None:
    """Only whole entries (sidecar, state, token list) and the lock file are in the store."""
    names = set(os.listdir(root)) if root.exists() else set()
    assert not [name for name in names if name.startswith(".tmp-") or name.endswith(".tmp")]
    stems = {name.rsplit(".", 1)[0] for name in names if name != ".lock"}
    for stem in stems:
        assert {f"{stem}.json", f"{stem}.state", f"{stem}.tokens"} <= names, stem


def only_entry(root: Path) -> Entry:
    (entry,) = KVStore(root).entries()
    return entry


def edit_sidecar(entry: Entry, **fields: Any) -> None:
    data = json.loads(entry.meta_path.read_bytes())
    data.update(fields)
    entry.meta_path.write_text(json.dumps(data))


def redigest(entry: Entry) -> None:
    """Make the sidecar agree with the state file as it is now (as if it had been saved so)."""
    fd = os.open(entry.data_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        digest = kvio.file_digest(fd, size)
    finally:
        os.close(fd)
    edit_sidecar(entry, size=size, digest=digest)


def overwrite_middle(path: Path, length: int = 16 * 1024) -> None:
    """Overwrite K data in the middle of a state: 0x7F7F is a NaN in f16. (The middle of the
    file, away from the per-layer headers that llama.cpp checks.)"""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size * 3 // 8)
        handle.write(b"\x7f" * length)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    path = tmp_path_factory.mktemp("synth") / "tiny-llama3.gguf"
    synth.write_synthetic_gguf(path, synth.TINY, vocab_from=LLAMA3_VOCAB)
    return read_model_info(path)


@pytest.fixture(scope="module")
def reference(model: ModelInfo) -> AnswerDone:
    """The answer to PROMPT from a fresh prefill."""
    done = fresh(model)
    assert done.text and done.generated_tokens == GREEDY.max_tokens
    return done


@pytest.fixture(scope="module")
def pristine(model: ModelInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the state of PROMPT (and its answer), saved by the engine."""
    root = tmp_path_factory.mktemp("pristine") / "kv"
    done, events = answer(model, root)
    assert events.outcome().source == "none" and events.notices() == []
    assert only_entry(root).n_tokens == len(PROMPT) + done.generated_tokens
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine store for one test."""
    copy = tmp_path / "kv"
    shutil.copytree(pristine, copy)
    return copy


def test_an_intact_state_is_restored_and_gives_the_fresh_answer(
    model: ModelInfo, root: Path, reference: AnswerDone
) -> None:
    done, events = answer(model, root)
    outcome = events.outcome()
    assert outcome.source == "disk"
    assert outcome.restored_tokens == len(PROMPT) - 1  # one is evaluated again for its logits
    assert outcome.evaluated_tokens == 1
    assert events.notices() == []
    assert done.text == reference.text


# -- damaged states -----------------------------------------------------------------------------


def truncate(entry: Entry) -> None:
    os.truncate(entry.data_path, entry.size // 2)


def corrupt_middle(entry: Entry) -> None:
    overwrite_middle(entry.data_path)


def incompatible_state(entry: Entry) -> None:
    """A state in another version of llama.cpp's format, with checksums that verify: llama.cpp
    refuses it (as it would a state of a llama.cpp whose format changed under the same key)."""
    with open(entry.data_path, "r+b") as handle:
        magic = int.from_bytes(handle.read(4), "little")  # the sequence state's magic
        handle.seek(0)
        handle.write((magic + 1).to_bytes(4, "little"))
    redigest(entry)


def older_format(entry: Entry) -> None:
    edit_sidecar(entry, format=kvfiles.FORMAT - 1)


def newer_format(entry: Entry) -> None:
    edit_sidecar(entry, format=kvfiles.FORMAT + 1)


@pytest.mark.parametrize(
    ("damage", "reported", "level"),
    [
        (truncate, "was truncated", "warning"),
        (corrupt_middle, "was corrupt", "warning"),
        (incompatible_state, "could not be loaded", "warning"),
        (older_format, "older repoctx", "warning"),
        (newer_format, "newer repoctx", "info"),
    ],
    ids=[
        "truncated",
        "corrupt-middle",
        "incompatible-llama.cpp-state",
        "older-format",
        "newer-format",
    ],
)
def test_a_damaged_state_is_reported_once_and_answered_fresh(
    model: ModelInfo,
    root: Path,
    reference: AnswerDone,
    damage: Callable[[Entry], None],
    reported: str,
    level: str,
) -> None:
    entry = only_entry(root)
    damage(entry)
    events = Events()
    engine = open_engine(model, root, events)
    try:
        done = engine.answer(PROMPT, GREEDY, events, threading.Event())
        assert_fresh(done, events, reference, PROMPT)
        (notice,) = events.notices()
        assert reported in notice.message and str(entry.data_path) in notice.message
        assert notice.level == level
        events.events.clear()  # a follow-up: from memory, nothing reported again
        engine.answer(FOLLOW_UP, GREEDY, events, threading.Event())
        assert events.outcome().source == "memory"
        assert events.notices() == []
    finally:
        engine.close()
    assert_clean(root)
    # the fresh answer saved a good state again: the next process restores it
    done, events = answer(model, root)
    assert events.outcome().source == "disk" and done.text == reference.text


def test_llama_cpp_never_sees_a_state_that_does_not_verify(
    model: ModelInfo, root: Path, reference: AnswerDone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is read into memory and its digest checked before llama.cpp loads a byte of
    it: a corrupt state is never handed to llama.cpp (which may crash on one, or load it)."""
    loaded: list[int] = []
    real = NativeContext.set_state

    def set_state(self: NativeContext, seq: int, address: int, size: int) -> int:
        loaded.append(size)
        return real(self, seq, address, size)

    monkeypatch.setattr(NativeContext, "set_state", set_state)
    overwrite_middle(only_entry(root).data_path)
    done, events = answer(model, root)
    assert_fresh(done, events, reference, PROMPT)
    assert loaded == [], "nothing was loaded"
    (notice,) = events.notices()
    assert "was corrupt" in notice.message
    assert_clean(root)


def test_a_state_of_a_replaced_model_file_is_never_restored(
    model: ModelInfo, tmp_path: Path
) -> None:
    """The model file is replaced by another (same shapes and vocabulary, other weights), at the
    same path: llama.cpp would load the old state; the fingerprint in the key must prevent it."""
    path = tmp_path / "model.gguf"
    shutil.copyfile(model.path, path)
    first = read_model_info(path)
    root = tmp_path / "kv"
    first_done, _ = answer(first, root)
    old = only_entry(root)

    synth.write_synthetic_gguf(path, synth.TINY, vocab_from=LLAMA3_VOCAB, seed=1)
    second = read_model_info(path)
    assert second.fingerprint != first.fingerprint
    reference = fresh(second)
    assert reference.text != first_done.text, "the models must answer differently"
    done, events = answer(second, root)
    assert_fresh(done, events, reference, PROMPT)
    assert events.notices() == []  # not a fault: the state is good for the model that saved it
    assert old in KVStore(root).entries(), "another model's state is left alone"
    assert len(KVStore(root).entries()) == 2


def test_a_state_saved_without_flash_attention_is_never_restored_with_it(
    model: ModelInfo, root: Path
) -> None:
    """The KV layout differs with flash attention (V transposed without it): the key keeps
    them apart."""
    events = Events()
    store = KVStore(root, on_event=events)
    engine = LlamaEngine.open(model, N_CTX, events, flash_attn=False, store=store)
    try:
        assert (engine.ready.flash_attn, engine.ready.kv_type) == (False, "f16")
        engine.answer(PROMPT, GREEDY, events, threading.Event())
    finally:
        engine.close()
    assert (events.outcome().source, events.outcome().restored_tokens) == ("none", 0)
    assert events.notices() == []
    assert {entry.key.flash_attn for entry in KVStore(root).entries()} == {True, False}


# -- the store's folder and disk ----------------------------------------------------------------


def test_a_deleted_cache_folder_is_a_fresh_prefill_and_is_recreated(
    model: ModelInfo, root: Path, reference: AnswerDone
) -> None:
    shutil.rmtree(root)
    done, events = answer(model, root)
    assert_fresh(done, events, reference, PROMPT)
    # an absent folder is an empty cache, as on the first run: nothing to warn about
    assert events.notices() == []
    assert root.stat().st_mode & 0o777 == 0o700
    assert_clean(root)
    assert only_entry(root).n_tokens == len(PROMPT) + done.generated_tokens


Writer = Callable[..., str]


def failing_write(action: Callable[[int], None]) -> Writer:
    """kvio.write_state that writes the state, then calls ``action(fd)``."""
    real = kvio.write_state

    def write(fd: int, view: memoryview, *args: Any, **kwargs: Any) -> str:
        digest = real(fd, view, *args, **kwargs)
        action(fd)
        return digest

    return write


def disk_full_midway(fd: int) -> None:
    os.ftruncate(fd, os.fstat(fd).st_size // 2)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_the_state_is_written_leaves_nothing(
    model: ModelInfo, tmp_path: Path, reference: AnswerDone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kvio, "write_state", failing_write(disk_full_midway))
    root = tmp_path / "kv"
    done, events = answer(model, root)
    assert_fresh(done, events, reference, PROMPT)
    (notice,) = events.notices()
    assert "full" in notice.message
    assert KVStore(root).entries() == []
    assert_clean(root)
    monkeypatch.undo()
    done, events = answer(model, root)  # nothing was kept: a fresh prefill, saved this time
    assert_fresh(done, events, reference, PROMPT)
    assert len(KVStore(root).entries()) == 1


def test_a_state_file_left_short_is_not_kept(
    model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever shortens the file after the writes reported success (another process, a file
    system that dropped a write), it is not kept: its digest would not verify on the next
    read, and its size is checked before it is committed."""
    monkeypatch.setattr(kvio, "write_state", failing_write(lambda fd: os.ftruncate(fd, 4096)))
    root = tmp_path / "kv"
    _, events = answer(model, root)
    assert KVStore(root).entries() == []
    assert len(events.notices()) == 1
    assert_clean(root)


def test_a_full_disk_while_the_store_writes_the_token_list_leaves_nothing(
    model: ModelInfo, tmp_path: Path, reference: AnswerDone, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_all(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(kvfolder, "_write_all", write_all)
    root = tmp_path / "kv"
    done, events = answer(model, root)
    assert_fresh(done, events, reference, PROMPT)
    (notice,) = events.notices()
    assert "full" in notice.message
    assert KVStore(root).entries() == []
    assert_clean(root)


def test_the_cache_folder_deleted_while_saving_is_reported(
    model: ModelInfo, tmp_path: Path, reference: AnswerDone, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "kv"
    # e.g. `rm -rf ~/.cache/repoctx` in another terminal
    monkeypatch.setattr(kvio, "write_state", failing_write(lambda fd: shutil.rmtree(root)))
    done, events = answer(model, root)
    assert_fresh(done, events, reference, PROMPT)
    (notice,) = events.notices()
    assert "failed" in notice.message
    assert_clean(root)
    monkeypatch.undo()
    answer(model, root)
    assert len(KVStore(root).entries()) == 1, "the next save recreates the folder"


def test_a_locked_state_is_reported_and_prefilled(
    model: ModelInfo, root: Path, reference: AnswerDone
) -> None:
    entry = only_entry(root)
    fd = os.open(entry.data_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a removal by another process would hold it
        done, events = answer(model, root, lock_timeout=0.2)
        assert_fresh(done, events, reference, PROMPT)
        (notice,) = events.notices()
        assert "locked" in notice.message
    finally:
        os.close(fd)
    assert only_entry(root).id == entry.id, "a state in use elsewhere is not removed"
    done, events = answer(model, root)  # once free again, it is restored
    assert events.outcome().source == "disk" and done.text == reference.text


def test_an_unreadable_state_is_reported_once_and_prefilled(
    model: ModelInfo, root: Path, reference: AnswerDone, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = only_entry(root)
    real_open = os.open

    def deny(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(os.fsdecode(path)) == entry.data_path:  # as chmod 000 does for a non-root user
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    events = Events()
    store = KVStore(root, on_event=events)
    for attempt in range(2):  # two engines of one process, sharing its store
        engine = LlamaEngine.open(model, N_CTX, events, store=store)
        try:
            done = engine.answer(PROMPT, GREEDY, events, threading.Event())
        finally:
            engine.close()
        assert_fresh(done, events, reference, PROMPT)
        if attempt == 0:
            (notice,) = events.notices()
            assert str(entry.data_path) in notice.message
        else:
            assert events.notices() == [], "reported once"
        events.events.clear()
    assert_clean(root)


# -- notices reach the answer they concern ------------------------------------------------------


def test_notices_of_an_answer_go_to_that_answers_sink(
    model: ModelInfo, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine opens its own store when none is passed (as Session's factory does); a server
    sends each answer's events to that request's sink, so a problem with the KV state found
    during the second answer must be reported to the second answer's sink."""
    home = tmp = root.parent / "home"
    shutil.copytree(root, tmp / "cache" / "kv")
    monkeypatch.setenv("REPOCTX_HOME", str(home))
    at_open, first, second = Events(), Events(), Events()
    engine = LlamaEngine.open(model, N_CTX, at_open)
    try:
        engine.answer(LONG_PROMPT, GREEDY, first, threading.Event())
        assert engine.store is not None
        (entry,) = [e for e in engine.store.entries() if e.n_tokens != len(LONG_PROMPT)]
        truncate(entry)
        engine.answer(PROMPT, GREEDY, second, threading.Event())
    finally:
        engine.close()
    assert [n for n in at_open.notices() + first.notices() if "truncated" in n.message] == []
    assert ["truncated" in n.message for n in second.notices()] == [True]


def test_a_failed_background_save_is_reported_to_the_next_request(
    model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody waits for a save: when one fails, the next request hears of it."""
    monkeypatch.setattr(kvio, "write_state", failing_write(disk_full_midway))
    first, second = Events(), Events()
    engine = open_engine(model, tmp_path / "kv", first)
    try:
        engine.answer(PROMPT, GREEDY, first, threading.Event())
        engine.housekeep()
        assert engine.saver is not None
        engine.saver.wait(lambda event: None)  # the save has ended (failed) by now...
        assert first.notices() == []  # ...and its request is long answered
        engine.answer(FOLLOW_UP, GREEDY, second, threading.Event())
    finally:
        engine.close()
    (notice,) = second.notices()
    assert "full" in notice.message


# -- stopping a prefill -------------------------------------------------------------------------


def stop_at(tokens: int, action: Callable[[], None]) -> Callable[[Event], None]:
    def sink(event: Event) -> None:
        if isinstance(event, Progress) and event.stage == "prefill" and event.done >= tokens:
            action()

    return sink


def both(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    def sink(event: Event) -> None:
        for each in sinks:
            each(event)

    return sink


def test_cancel_mid_prefill_keeps_a_checkpoint_that_the_next_answer_resumes(
    model: ModelInfo, tmp_path: Path
) -> None:
    root, saved = tmp_path / "kv", tmp_path / "checkpoint"
    reference = fresh(model, LONG_PROMPT)
    events = Events()
    cancel = threading.Event()
    engine = open_engine(model, root, events)
    try:
        done = engine.answer(
            LONG_PROMPT, GREEDY, both(events, stop_at(STOP_AT, cancel.set)), cancel
        )
        engine.flush(events)
        assert done.stop_reason == "cancelled" and done.text == ""
        assert events.of(Token) == [] and events.of(CacheOutcome) == []
        prefill = [e.done for e in events.of(Progress) if e.stage == "prefill"]
        assert max(prefill) == STOP_AT < len(LONG_PROMPT), "the prefill stopped"
        checkpoint = only_entry(root)
        assert checkpoint.n_tokens == STOP_AT
        assert checkpoint.tokens_path.read_bytes() == kvfiles.token_bytes(LONG_PROMPT.ids[:STOP_AT])
        assert_clean(root)
        shutil.copytree(root, saved)
        events.events.clear()  # the same process goes on from its live context
        done = engine.answer(LONG_PROMPT, GREEDY, events, threading.Event())
        assert (events.outcome().source, events.outcome().restored_tokens) == ("memory", STOP_AT)
        assert done.text == reference.text
    finally:
        engine.close()
    done, events = answer(model, saved, LONG_PROMPT)  # a new process resumes from the checkpoint
    outcome = events.outcome()
    assert (outcome.source, outcome.restored_tokens) == ("disk", STOP_AT)
    assert outcome.evaluated_tokens == len(LONG_PROMPT) - STOP_AT
    assert done.text == reference.text


def test_a_short_cancelled_prefill_is_not_saved(model: ModelInfo, tmp_path: Path) -> None:
    root = tmp_path / "kv"
    cancel = threading.Event()
    engine = open_engine(model, root, Events())
    try:
        stopped = 512
        assert stopped < SAVE_AFTER_TOKENS
        done = engine.answer(LONG_PROMPT, GREEDY, stop_at(stopped, cancel.set), cancel)
        engine.flush(Events())
        assert done.stop_reason == "cancelled"
        assert KVStore(root).entries() == []
        events = Events()
        engine.answer(LONG_PROMPT, GREEDY, events, threading.Event())
        assert (events.outcome().source, events.outcome().restored_tokens) == ("memory", stopped)
    finally:
        engine.close()


def test_ctrl_c_mid_prefill_checkpoints_and_propagates(model: ModelInfo, tmp_path: Path) -> None:
    root = tmp_path / "kv"
    reference = fresh(model, LONG_PROMPT)

    def interrupt() -> None:
        raise KeyboardInterrupt

    engine = open_engine(model, root, Events())
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.answer(LONG_PROMPT, GREEDY, stop_at(STOP_AT, interrupt), threading.Event())
    finally:
        engine.close()
    assert only_entry(root).n_tokens == STOP_AT
    assert_clean(root)
    done, events = answer(model, root, LONG_PROMPT)
    outcome = events.outcome()
    assert (outcome.source, outcome.restored_tokens) == ("disk", STOP_AT)
    assert outcome.evaluated_tokens == len(LONG_PROMPT) - STOP_AT
    assert done.text == reference.text
