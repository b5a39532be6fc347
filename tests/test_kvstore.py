"""The KV state store: prefix matching, verification, retention, robustness and locking.

Fake states stand in for llama.cpp's: 8 bytes of token count, then pseudo-random bytes derived
from the tokens, so a reader can tell a right state from a wrong one."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import random
import shutil
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from repoctx.events import Event, Notice
from repoctx.kv import files as kvfiles
from repoctx.kv import folder as kvfolder
from repoctx.kv import io as kvio
from repoctx.kv.store import Entry, KVStore, Match, StateKey

KEY = StateKey("sha256:model-a", "f16", True, "llama.cpp b5000")
OTHER = StateKey("sha256:model-b", "f16", True, "llama.cpp b5000")
PER_TOKEN = 64
FORK = multiprocessing.get_context("fork")


def payload(tokens: Sequence[int]) -> bytes:
    seed = zlib.crc32(kvfiles.token_bytes(tokens))
    return len(tokens).to_bytes(8, "little") + random.Random(seed).randbytes(
        len(tokens) * PER_TOKEN
    )


Writer = Callable[[int], str]
Reader = Callable[[int, int], str]


def writer_for(tokens: Sequence[int], pause: float = 0.0) -> Writer:
    """Writes the fake state in four pieces, as a slow engine would; returns its digest."""
    data = payload(tokens)

    def write(fd: int) -> str:
        piece = len(data) // 4 + 1
        for start in range(0, len(data), piece):
            os.pwrite(fd, data[start : start + piece], start)
            time.sleep(pause)
        return kvio.digest(memoryview(data))

    return write


def read_state(fd: int, size: int) -> str:
    return kvio.digest(memoryview(os.pread(fd, size, 0)))


def recording(calls: list[int]) -> Reader:
    """A reader that notes each call, for tests where it must not be called."""

    def reader(fd: int, size: int) -> str:
        calls.append(size)
        return read_state(fd, size)

    return reader


def size_of(tokens: Sequence[int]) -> int:
    return len(payload(tokens)) + 4 * len(tokens)


def save(store: KVStore, tokens: Sequence[int], **options: Any) -> Entry | None:
    options.setdefault("label", "proj-a · llama-3")
    expected = len(payload(tokens))
    return store.save(KEY, tokens, writer_for(tokens), expected_bytes=expected, **options)


def messages(notices: list[Event]) -> str:
    return "\n".join(notice.message for notice in notices if isinstance(notice, Notice))


def entry_files(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root) if name != ".lock")


@pytest.fixture
def notices() -> list[Event]:
    return []


@pytest.fixture
def store(tmp_path: Path, notices: list[Event]) -> KVStore:
    return KVStore(tmp_path / "kv", 10 << 20, notices.append, min_free_bytes=0, lock_timeout=5)


PACK = list(range(1000, 2000))


# -- prefix search -----------------------------------------------------------------------------


def test_find_picks_the_longest_common_prefix(store: KVStore) -> None:
    pack = save(store, PACK, checkpoint=True)
    chat = save(store, [*PACK, *[7] * 500])
    assert pack is not None and chat is not None

    exact = store.find(KEY, PACK)
    assert exact is not None and exact.entry.id == pack.id and exact.prefix == 1000
    middle = store.find(KEY, [*PACK, *[7] * 200, *[8] * 50])
    assert middle is not None and middle.entry.id == chat.id and middle.prefix == 1200
    shorter = store.find(KEY, PACK[:500])
    assert shorter is not None and shorter.entry.id == pack.id and shorter.prefix == 500
    assert store.find(OTHER, [*PACK, *[7] * 500]) is None
    assert store.find(KEY, [5, 6, 7]) is None
    assert store.find(KEY, []) is None


def test_equal_prefixes_prefer_the_smaller_state_then_the_latest_used(store: KVStore) -> None:
    pack = save(store, PACK, checkpoint=True)
    first = save(store, [*PACK, *[1] * 10])
    second = save(store, [*PACK, *[2] * 10])
    assert pack is not None and first is not None and second is not None
    prompt = [*PACK, *[3] * 10]  # shares exactly the pack with all three
    match = store.find(KEY, prompt)
    assert match is not None and match.entry.id == pack.id and match.prefix == 1000
    assert store.find(KEY, prompt, min_prefix=1001) is None
    assert store.remove(pack)
    match = store.find(KEY, prompt)
    assert match is not None and match.entry.id == second.id  # the latest saved
    assert store.load(Match(KEY, first, 1000, 1010), read_state) == 1000
    match = store.find(KEY, prompt)
    assert match is not None and match.entry.id == first.id  # now the latest used


def test_find_skips_states_longer_than_the_context(store: KVStore) -> None:
    save(store, PACK)
    assert store.find(KEY, PACK, max_tokens=999) is None
    assert store.find(KEY, PACK, max_tokens=1000) is not None


def test_load_returns_the_tokens_the_engine_may_keep(store: KVStore) -> None:
    save(store, PACK)
    longer = store.find(KEY, [*PACK, 5, 6])
    assert longer is not None and store.load(longer, read_state) == 1000
    exact = store.find(KEY, PACK)
    assert exact is not None and store.load(exact, read_state) == 999  # one left for the logits
    part = store.find(KEY, [*PACK[:300], 9])
    assert part is not None and store.load(part, read_state) == 300


def test_load_refuses_a_match_for_another_key(store: KVStore) -> None:
    entry = save(store, PACK)
    assert entry is not None
    calls: list[Path] = []
    assert store.load(Match(OTHER, entry, 1000, 1001), recording(calls)) == 0
    assert calls == []


int32 = st.integers(-(2**31), 2**31 - 1)


def naive_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    while count < min(len(a), len(b)) and a[count] == b[count]:
        count += 1
    return count


@settings(max_examples=300, deadline=None)
@given(
    st.lists(int32, max_size=80),
    st.lists(int32, max_size=20),
    st.lists(int32, max_size=20),
    st.sampled_from([4, 8, 12, 64, kvfiles.PREFIX_CHUNK]),
)
@example([1, 2], [256], [512], 4)  # differ only in the second byte of a token
@example([], [2**31 - 1], [-(2**31)], 8)
def test_common_prefix_agrees_with_a_naive_loop(
    common: list[int], tail_a: list[int], tail_b: list[int], chunk: int
) -> None:
    a, b = common + tail_a, common + tail_b
    expected = naive_prefix(a, b)
    got = kvfiles.common_prefix(kvfiles.token_bytes(a), kvfiles.token_bytes(b), chunk)
    assert got == expected
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(kvfiles.token_bytes(b))
        handle.flush()
        assert kvfiles.file_prefix(kvfiles.token_bytes(a), Path(handle.name), chunk) == expected


def test_common_prefix_of_a_million_tokens_is_fast() -> None:
    tokens = [random.randrange(128_000) for _ in range(1_000_000)]
    other = list(tokens)
    other[999_990] += 1
    a, b = kvfiles.token_bytes(tokens), kvfiles.token_bytes(other)
    started = time.perf_counter()
    assert kvfiles.common_prefix(a, b) == 999_990
    assert time.perf_counter() - started < 0.05


# -- saving and retention ----------------------------------------------------------------------


def test_saving_the_same_tokens_again_only_marks_them_used(store: KVStore) -> None:
    first = save(store, PACK)
    assert first is not None

    def must_not_write(path: Path) -> None:
        raise AssertionError("the state was written twice")

    time.sleep(0.01)
    again = store.save(KEY, PACK, must_not_write, label="x", expected_bytes=1)
    assert again is not None and again.id == first.id and again.last_used > first.last_used
    assert [entry.last_used for entry in store.entries()] == [again.last_used]
    assert len(entry_files(store.root)) == 3


def test_a_new_state_replaces_its_prefixes_but_not_checkpoints(store: KVStore) -> None:
    pack = save(store, PACK, checkpoint=True)
    turn1 = save(store, [*PACK, *[1] * 50])
    turn2 = save(store, [*PACK, *[1] * 50, *[2] * 50])
    assert pack is not None and turn1 is not None and turn2 is not None
    assert {entry.id for entry in store.entries()} == {pack.id, turn2.id}


def test_only_the_latest_conversations_per_checkpoint_stay(
    tmp_path: Path, notices: list[Event]
) -> None:
    store = KVStore(tmp_path / "kv", 10 << 20, notices.append, keep_recent=2, min_free_bytes=0)
    pack = save(store, PACK, checkpoint=True)
    other_pack = save(store, list(range(5000, 5600)), checkpoint=True)
    other_chat = save(store, [*range(5000, 5600), 9, 9])
    chats = [save(store, [*PACK, 100 + index, 7]) for index in range(3)]
    assert None not in (pack, other_pack, other_chat, *chats)
    kept = {entry.id for entry in store.entries()}
    expected = {pack.id, other_pack.id, other_chat.id, chats[1].id, chats[2].id}  # type: ignore[union-attr]
    assert kept == expected


def test_least_recently_used_states_are_evicted_to_stay_under_the_cap(
    tmp_path: Path, notices: list[Event]
) -> None:
    states = [list(range(start, start + 200)) for start in (0, 10_000, 20_000, 30_000)]
    cap = 3 * size_of(states[0]) + 100
    store = KVStore(tmp_path / "kv", cap, notices.append, min_free_bytes=0)
    first, second, third = (save(store, tokens) for tokens in states[:3])
    assert first is not None and second is not None and third is not None
    assert store.load(Match(KEY, first, 200, 201), read_state) == 200  # first is now the latest
    fourth = save(store, states[3])
    assert fourth is not None
    assert {entry.id for entry in store.entries()} == {first.id, third.id, fourth.id}
    assert store.stats().bytes <= cap
    assert any(isinstance(notice, Notice) and notice.level == "info" for notice in notices)


def test_a_state_larger_than_the_cap_is_not_saved(store: KVStore, notices: list[Event]) -> None:
    written: list[Path] = []
    entry = store.save(KEY, PACK, written.append, label="x", expected_bytes=11 << 20)
    assert entry is None and written == []
    assert "larger than the KV cache limit" in messages(notices)


def test_a_state_that_the_disk_cannot_hold_is_not_saved_and_nothing_is_evicted(
    store: KVStore, notices: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = save(store, PACK)
    monkeypatch.setattr(kvfolder.Folder, "free_bytes", lambda self: 1000)
    assert save(store, list(range(7000, 8500))) is None  # more than evicting everything frees
    assert "disk is too full" in messages(notices)
    assert [entry.id for entry in store.entries()] == [old.id]  # type: ignore[union-attr]


def test_evicting_makes_room_on_a_full_disk(
    store: KVStore, notices: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = save(store, PACK)
    assert old is not None
    free = [size_of(PACK) // 2]
    monkeypatch.setattr(kvfolder.Folder, "free_bytes", lambda self: free[0])
    new = save(store, list(range(7000, 8000)))
    assert new is not None
    assert [entry.id for entry in store.entries()] == [new.id]


def test_a_save_finishing_second_keeps_the_first_copy(store: KVStore) -> None:
    other = KVStore(store.root, 10 << 20, min_free_bytes=0)
    inner: list[Entry | None] = []

    def write_while_another_process_saves(fd: int) -> str:
        digest = writer_for(PACK)(fd)
        inner.append(save(other, PACK))
        return digest

    expected = len(payload(PACK))
    outer = store.save(
        KEY, PACK, write_while_another_process_saves, label="x", expected_bytes=expected
    )
    first = inner[0]
    assert first is not None and outer is not None
    assert outer.id == first.id and outer.created == first.created
    assert entry_files(store.root) == sorted(
        [first.meta_path.name, first.data_path.name, first.tokens_path.name]
    )


# -- broken states and metadata ----------------------------------------------------------------


def test_a_truncated_state_is_removed_and_reported_once(
    store: KVStore, notices: list[Event]
) -> None:
    entry = save(store, PACK)
    assert entry is not None
    match = store.find(KEY, [*PACK, 1])
    assert match is not None
    os.truncate(entry.data_path, entry.size // 2)
    calls: list[int] = []
    assert store.load(match, recording(calls)) == 0
    assert calls == []
    assert "was truncated" in messages(notices) and "evaluated again" in messages(notices)
    assert entry_files(store.root) == []
    assert store.find(KEY, PACK) is None
    assert store.load(match, read_state) == 0
    assert len(notices) == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:5000] + bytes(4096) + data[9096:], id="zeroed-page"),
        pytest.param(lambda data: data[:30000] + b"x" * 16 + data[30016:], id="overwritten"),
        pytest.param(
            lambda data: data[:-1] + bytes([data[-1] ^ 1]), id="one-bit-flipped-at-the-end"
        ),
    ],
)
def test_damaged_bytes_are_detected_before_the_engine_loads_them(
    store: KVStore, notices: list[Event], damage: Callable[[bytes], bytes]
) -> None:
    entry = save(store, PACK)
    assert entry is not None
    entry.data_path.write_bytes(damage(entry.data_path.read_bytes()))
    match = store.find(KEY, [*PACK, 1])
    assert match is not None  # the size is right: only the checksum can tell
    assert store.load(match, read_state) == 0  # 0: the engine must not load what was read
    assert "was corrupt" in messages(notices)
    assert store.find(KEY, PACK) is None


def test_a_corrupt_token_list_is_detected(store: KVStore, notices: list[Event]) -> None:
    entry = save(store, PACK)
    assert entry is not None
    tokens = bytearray(entry.tokens_path.read_bytes())
    tokens[400] ^= 0xFF
    entry.tokens_path.write_bytes(bytes(tokens))
    match = store.find(KEY, [*PACK, 1])
    assert match is not None and match.prefix == 100
    assert store.load(match, read_state) == 0
    assert "token list does not match" in messages(notices)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: "{not json", "not valid JSON"),
        (lambda text: "[1, 2]", "no format version"),
        (lambda text: text.replace('"n_tokens"', '"n_tokenz"'), "'n_tokens'"),
        (lambda text: text.replace('"checkpoint": false', '"checkpoint": 0'), "'checkpoint'"),
        (lambda text: text.replace('"repositories": []', '"repositories": "/a"'), "'repositories'"),
        (lambda text: text.replace('"format": 2', '"format": 1'), "older repoctx"),
    ],
)
def test_bad_metadata_is_a_reported_miss_and_removed(
    store: KVStore, notices: list[Event], edit: Callable[[str], str], reason: str
) -> None:
    entry = save(store, PACK)
    assert entry is not None
    entry.meta_path.write_text(edit(entry.meta_path.read_text()))
    assert store.find(KEY, PACK) is None
    assert reason in messages(notices) and "removed" in messages(notices)
    assert entry_files(store.root) == []


def test_metadata_of_a_newer_repoctx_is_ignored_but_kept(
    store: KVStore, notices: list[Event]
) -> None:
    entry = save(store, PACK)
    assert entry is not None
    entry.meta_path.write_text(entry.meta_path.read_text().replace('"format": 2', '"format": 9'))
    assert store.find(KEY, PACK) is None
    assert store.find(KEY, PACK) is None
    assert len(notices) == 1 and "newer repoctx" in messages(notices)
    assert save(store, list(range(7000, 7100))) is not None
    assert entry.data_path.exists() and entry.tokens_path.exists()


def test_a_state_of_another_size_than_recorded_is_a_miss(
    store: KVStore, notices: list[Event]
) -> None:
    entry = save(store, PACK)
    assert entry is not None
    with open(entry.data_path, "ab") as handle:
        handle.write(b"extra")
    assert store.find(KEY, PACK) is None
    assert f"{entry.size + 5:,} bytes instead of {entry.size:,}" in messages(notices)


def test_metadata_without_its_state_is_removed(store: KVStore, notices: list[Event]) -> None:
    entry = save(store, PACK)
    assert entry is not None
    entry.data_path.unlink()
    assert store.entries() == []
    assert "only its metadata is left" in messages(notices)
    assert entry_files(store.root) == []


def test_leftovers_of_interrupted_saves_are_swept(store: KVStore, notices: list[Event]) -> None:
    entry = save(store, PACK)
    assert entry is not None
    entry.meta_path.unlink()  # a crash between the renames and the sidecar
    (store.root / ".tmp-dead-1.state").write_bytes(b"half")
    (store.root / ".tmp-dead-1.tokens").write_bytes(b"half")
    (store.root / f".{entry.id}.json.abc.tmp").write_bytes(b"{")
    running = store.root / ".tmp-live-2.state"
    running.write_bytes(b"in progress")
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fresh = save(store, list(range(7000, 7100)))
    finally:
        os.close(fd)
    assert fresh is not None
    kept = [fresh.meta_path.name, fresh.data_path.name, fresh.tokens_path.name, running.name]
    assert entry_files(store.root) == sorted(kept)
    assert "removed 5 leftover file(s)" in messages(notices)


def test_a_deleted_store_folder_is_a_miss_and_is_recreated(store: KVStore) -> None:
    save(store, PACK)
    match = store.find(KEY, [*PACK, 1])
    assert match is not None
    shutil.rmtree(store.root)
    assert store.load(match, read_state) == 0
    assert store.find(KEY, PACK) is None and store.entries() == []
    assert save(store, PACK) is not None
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert store.find(KEY, PACK) is not None


def test_an_unusable_store_folder_never_raises(tmp_path: Path, notices: list[Event]) -> None:
    (tmp_path / "kv").write_text("a file where the folder should be")
    store = KVStore(tmp_path / "kv", 10 << 20, notices.append)
    assert save(store, PACK) is None
    assert store.find(KEY, PACK) is None
    assert store.clear() == 0
    assert "failed" in messages(notices)


# -- failed saves and loads --------------------------------------------------------------------


def test_a_full_disk_while_the_engine_writes_leaves_nothing(
    store: KVStore, notices: list[Event]
) -> None:
    def fill_disk(fd: int) -> str:
        os.write(fd, b"partial state")
        raise OSError(errno.ENOSPC, "No space left on device")

    assert store.save(KEY, PACK, fill_disk, label="x", expected_bytes=1000) is None
    assert "is full" in messages(notices)
    assert entry_files(store.root) == []


def test_a_full_disk_while_writing_the_token_list_leaves_nothing(
    store: KVStore, notices: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tokens"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert save(store, PACK) is None
    monkeypatch.undo()
    assert "is full" in messages(notices)
    assert entry_files(store.root) == []


def test_a_failed_commit_leaves_nothing(
    store: KVStore, notices: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(entry: Entry) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kvfolder.Folder, "rewrite", lambda self, entry: no_space(entry))
    assert save(store, PACK) is None
    assert entry_files(store.root) == []
    assert "is full" in messages(notices)


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(lambda fd: "xxh3c-1:00", id="wrote-nothing"),
        pytest.param(lambda fd: str(1 / 0), id="engine-bug"),
        pytest.param(lambda fd: os.write(fd, b"short") and "xxh3c-1:00", id="wrote-too-little"),
    ],
)
def test_other_failed_saves_are_reported_and_leave_nothing(
    store: KVStore, notices: list[Event], writer: Writer
) -> None:
    assert store.save(KEY, PACK, writer, label="x", expected_bytes=1000) is None
    assert "failed" in messages(notices) and "partial files were removed" in messages(notices)
    assert entry_files(store.root) == []


def test_a_state_that_llama_cpp_rejects_is_removed(store: KVStore, notices: list[Event]) -> None:
    save(store, PACK)
    match = store.find(KEY, [*PACK, 1])
    assert match is not None
    assert store.load(match, read_state) == 1000  # it verifies...
    store.reject(match.entry, "llama.cpp refused it")  # ...but the engine cannot load it
    assert "could not be loaded (llama.cpp refused it)" in messages(notices)
    assert store.find(KEY, PACK) is None


def test_a_read_error_is_reported_and_the_state_removed(
    store: KVStore, notices: list[Event]
) -> None:
    save(store, PACK)
    match = store.find(KEY, [*PACK, 1])
    assert match is not None

    def failing(fd: int, size: int) -> str:
        raise OSError(errno.EIO, "Input/output error")

    assert store.load(match, failing) == 0
    assert "could not be read" in messages(notices) and "Input/output error" in messages(notices)
    assert store.find(KEY, PACK) is None


def test_other_reader_errors_propagate_and_keep_the_state(store: KVStore) -> None:
    entry = save(store, PACK)
    match = store.find(KEY, [*PACK, 1])
    assert entry is not None and match is not None

    def crash(fd: int, size: int) -> str:
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError):
        store.load(match, crash)
    assert store.load(match, read_state) == 1000
    assert store.remove(entry) and not store.remove(entry)


# -- permissions, listing, clearing ------------------------------------------------------------


def test_the_store_is_private(store: KVStore) -> None:
    previous = os.umask(0o022)
    try:
        plain = save(store, PACK)
    finally:
        os.umask(previous)
    assert plain is not None
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    for name in os.listdir(store.root):
        assert stat.S_IMODE((store.root / name).stat().st_mode) == 0o600, name


def test_entries_stats_clear_and_remove(store: KVStore) -> None:
    a = save(store, PACK, label="proj-a · llama-3")
    b = save(store, list(range(7000, 7100)), label="proj-b · llama-3")
    assert a is not None and b is not None
    assert [entry.id for entry in store.entries()] == [b.id, a.id]
    stats = store.stats()
    assert stats.entries == 2 and stats.bytes == size_of(PACK) + size_of(range(7000, 7100))
    assert store.clear("PROJ-B*") == 1
    assert [entry.id for entry in store.entries()] == [a.id]
    assert store.clear(a.id[:8]) == 1
    assert store.entries() == [] and entry_files(store.root) == []


def test_states_record_their_repositories_and_clear_matches_them(store: KVStore) -> None:
    api, web = "/home/ann/src/api", "/home/ann/src/Web-Shop"
    both = save(store, PACK, repositories=[api, web], checkpoint=True)
    alone = save(store, list(range(7000, 7100)), repositories=[web])
    old = save(store, list(range(8000, 8100)))
    assert both is not None and alone is not None and old is not None
    listed = {entry.id: entry.repositories for entry in KVStore(store.root).entries()}
    assert listed == {both.id: (api, web), alone.id: (web,), old.id: ()}
    assert store.clear("/home/ann/src/api") == 1, "a repository's path"
    assert store.clear("web-shop") == 1, "its folder name, case-insensitive"
    assert [entry.id for entry in store.entries()] == [old.id]
    assert store.clear("*/src/*") == 0, "a state that names no repository matches by its label"
    assert store.clear("proj-a*") == 1


def test_saving_the_same_tokens_for_another_repository_adds_it(store: KVStore) -> None:
    first = save(store, PACK, repositories=["/src/a"])
    assert first is not None
    again = store.save(
        KEY, PACK, writer_for(PACK), label="x", expected_bytes=1, repositories=["/src/b", "/src/a"]
    )
    assert again is not None and again.id == first.id
    (entry,) = store.entries()
    assert entry.repositories == ("/src/a", "/src/b")
    assert entry.same_state(first)


def test_metadata_of_a_repoctx_that_recorded_no_repositories_reads(store: KVStore) -> None:
    entry = save(store, PACK, repositories=["/src/a"])
    assert entry is not None
    text = entry.meta_path.read_text()
    assert '"repositories": [\n  "/src/a"\n ]' in text
    entry.meta_path.write_text(text.replace(',\n "repositories": [\n  "/src/a"\n ]', ""))
    assert "repositories" not in entry.meta_path.read_text()
    match = store.find(KEY, PACK)
    assert match is not None and match.entry.repositories == ()
    assert store.load(match, read_state) == len(PACK) - 1


# -- locking and several processes -------------------------------------------------------------


def test_a_busy_store_skips_the_save(tmp_path: Path, notices: list[Event]) -> None:
    store = KVStore(tmp_path / "kv", 10 << 20, notices.append, lock_timeout=0.2, min_free_bytes=0)
    store.root.mkdir()
    fd = os.open(store.root / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        assert save(store, PACK) is None
        assert time.monotonic() - started < 2
    finally:
        os.close(fd)
    assert "busy" in messages(notices)
    assert save(store, PACK) is not None


def _load_slowly(root: Path, tokens: list[int], started: Any, release: Any, out: Any) -> None:
    store = KVStore(root, 10 << 20, min_free_bytes=0)
    match = store.find(KEY, tokens)

    def reader(fd: int, size: int) -> str:
        started.set()
        release.wait(20)
        return read_state(fd, size)

    out.put(store.load(match, reader) if match else -1)


def test_eviction_skips_a_state_that_is_being_loaded(tmp_path: Path) -> None:
    states = [list(range(start, start + 200)) for start in (0, 10_000, 20_000)]
    store = KVStore(tmp_path / "kv", 2 * size_of(states[0]) + 100, min_free_bytes=0)
    oldest, newer = save(store, states[0]), save(store, states[1])
    assert oldest is not None and newer is not None
    started, release, out = FORK.Event(), FORK.Event(), FORK.Queue()
    loader = FORK.Process(target=_load_slowly, args=(store.root, states[0], started, release, out))
    loader.start()
    try:
        assert started.wait(20)
        newest = save(store, states[2])
        assert newest is not None
        assert {entry.id for entry in store.entries()} == {oldest.id, newest.id}
    finally:
        release.set()
        loader.join(20)
    assert out.get(timeout=5) == 199
    assert store.load(Match(KEY, oldest, 200, 201), read_state) == 200


BASE = list(range(50_000, 52_000))


def _save_series(root: Path, out: Any) -> None:
    store = KVStore(root, 50 << 20, min_free_bytes=0, lock_timeout=20)
    saved = 0
    for count in range(200, 2001, 200):
        tokens = BASE[:count]
        entry = store.save(
            KEY, tokens, writer_for(tokens, 0.005), label="t", expected_bytes=len(payload(tokens))
        )
        saved += entry is not None
    out.put(saved)


def _load_until(root: Path, stop: Any, out: Any) -> None:
    seen: list[Event] = []
    store = KVStore(root, 50 << 20, seen.append, min_free_bytes=0, lock_timeout=20)
    loads, wrong = 0, 0

    def reader(fd: int, size: int) -> str:
        nonlocal wrong
        data = os.pread(fd, size, 0)
        count = int.from_bytes(data[:8], "little")
        wrong += data != payload(BASE[:count])
        return read_state(fd, size)

    while not stop.is_set():
        match = store.find(KEY, BASE)
        if match is not None and store.load(match, reader) > 0:
            loads += 1
    out.put((loads, wrong, messages(seen)))


def test_one_process_saves_while_another_finds_and_loads(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    stop, saved, loaded = FORK.Event(), FORK.Queue(), FORK.Queue()
    saver = FORK.Process(target=_save_series, args=(root, saved))
    loader = FORK.Process(target=_load_until, args=(root, stop, loaded))
    loader.start()
    saver.start()
    try:
        assert saved.get(timeout=60) == 10
    finally:
        stop.set()
        saver.join(20)
        loader.join(20)
    loads, wrong, seen = loaded.get(timeout=5)
    assert loads > 0 and wrong == 0 and seen == ""
    # a state the loader held while the next one was saved may outlive its replacement (deletes
    # never wait for a reader) and may even be the most recently used: the longest is kept
    entries = KVStore(root).entries()
    assert max(entry.n_tokens for entry in entries) == 2000
    assert not [name for name in os.listdir(root) if name.startswith(".tmp-")]


def _save_same(root: Path, barrier: Any, out: Any) -> None:
    store = KVStore(root, 10 << 20, min_free_bytes=0)
    barrier.wait(20)
    expected = len(payload(PACK))
    entry = store.save(KEY, PACK, writer_for(PACK, 0.01), label="x", expected_bytes=expected)
    out.put(entry.id if entry else None)


def test_two_processes_saving_the_same_state_keep_one(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    barrier, out = FORK.Barrier(2), FORK.Queue()
    workers = [FORK.Process(target=_save_same, args=(root, barrier, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    ids = {out.get(timeout=5), out.get(timeout=5)}
    assert len(ids) == 1 and None not in ids
    assert len(entry_files(root)) == 3


@pytest.fixture(autouse=True)
def _no_leaked_children() -> Iterator[None]:
    yield
    for child in multiprocessing.active_children():
        child.kill()
