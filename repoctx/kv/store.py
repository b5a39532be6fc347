"""Saved llama.cpp KV states of long prompts, keyed by content, so that a follow-up question never
pays for the prefill again. The engine passes callbacks that move a state between its memory
and an open state file (kv/io.py does it at the disk's speed, hashing as it goes); this module
never imports llama_cpp.

    match = store.find(key, prompt, max_tokens=n_ctx)
    keep = store.load(match, read) if match else 0    # read(fd, size) -> digest of what it read
    # keep 0: nothing usable was read. Else load what was read; if llama.cpp refuses it:
    store.reject(match.entry, "why")
    store.save(key, tokens, write, label=..., expected_bytes=..., checkpoint=...,
               repositories=...)

Trust: a state is used only when its key matches and its sizes, token hash and the digest of
the bytes read (kv/files.py) verify; anything else is a miss, reported once as a Notice, and a
broken entry is removed. Saves go through temporary files and never leave a partial entry. Several
processes may share the store: kv/folder.py says how it is locked.

Retention: saving exactly the tokens of an existing entry only marks it used. A new state
replaces the older states that are prefixes of it, except checkpoints (``checkpoint=True``: the
pack prefix), which stay; of the states extending the same checkpoint (conversations on one
pack), the ``keep_recent`` most recently used stay. Least recently used entries are evicted to
stay under ``cap_bytes`` and to leave ``min_free_bytes`` free on the disk.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

from repoctx import paths
from repoctx.errors import CacheError
from repoctx.events import EventSink, Notice, ignore_events
from repoctx.kv import files as kvfiles
from repoctx.kv.files import BadEntry, Entry, StateKey, size_text
from repoctx.kv.folder import Folder, Gone, PendingSave, StoreBusy, lock

__all__ = ["DEFAULT_CAP_BYTES", "Entry", "KVStats", "KVStore", "Match", "StateKey", "matches"]

DEFAULT_CAP_BYTES = 100 << 30
DEFAULT_MIN_FREE_BYTES = 4 << 30
Reader = Callable[[int, int], str]  # (state fd, size) -> digest of the bytes read
Writer = Callable[[int], str]  # (state fd) -> digest of the bytes written


@dataclass(frozen=True)
class Match:
    """A saved state sharing ``prefix`` leading tokens with a prompt of ``prompt_tokens``
    tokens. Only ``KVStore.load``'s result says how many tokens the engine may keep."""

    key: StateKey
    entry: Entry
    prefix: int
    prompt_tokens: int


@dataclass(frozen=True)
class KVStats:
    root: Path
    entries: int
    bytes: int
    cap_bytes: int


class KVStore:
    """KV state files keyed by content: a ``StateKey`` (model fingerprint, KV type, flash
    attention, llama.cpp version) and the token ids. ``find`` gives the entry with the longest
    common prefix; ``save`` writes atomically under a lock and evicts least recently used
    entries past ``cap_bytes``; ``load`` verifies the checksum as the bytes are read. A corrupt,
    truncated or foreign entry is reported once and never loaded."""

    def __init__(
        self,
        root: Path | None = None,
        cap_bytes: int = DEFAULT_CAP_BYTES,
        on_event: EventSink = ignore_events,
        *,
        lock_timeout: float = 30.0,
        keep_recent: int = 3,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self.root = root if root is not None else paths.cache_dir() / "kv"
        self.cap_bytes = cap_bytes
        self.lock_timeout = lock_timeout
        self.keep_recent = max(1, keep_recent)
        self.min_free_bytes = min_free_bytes
        self._folder = Folder(self.root)
        self.on_event = on_event  # where notices go; the engine points it at each answer's sink
        self._reported: set[str] = set()

    def find(
        self, key: StateKey, tokens: Sequence[int], *, max_tokens: int | None = None,
        min_prefix: int = 1,
    ) -> Match | None:  # fmt: skip
        """The entry under ``key`` sharing the longest prefix with ``tokens``: at least
        ``min_prefix`` tokens, and at most ``max_tokens`` tokens in all (the context size). Of
        equal prefixes, the entry with the fewest tokens (least to read and drop), then the
        most recently used."""
        prompt = kvfiles.token_bytes(tokens)
        best: tuple[tuple[int, int, float, float], Entry] | None = None
        for entry in self._entries():
            if entry.key != key or (max_tokens is not None and entry.n_tokens > max_tokens):
                continue
            try:
                prefix = kvfiles.file_prefix(prompt, entry.tokens_path)
            except OSError:
                continue
            rank = (prefix, -entry.n_tokens, entry.last_used, entry.created)
            if prefix >= max(min_prefix, 1) and (best is None or rank > best[0]):
                best = (rank, entry)
        return None if best is None else Match(key, best[1], best[0][0], len(tokens))

    def load(self, match: Match, reader: Reader) -> int:
        """Read the matched state with ``reader(fd, size)`` under a shared lock and check the
        digest it returns. Returns how many leading prompt tokens the engine may keep once it
        has loaded what was read: at most ``match.prefix`` and ``prompt_tokens - 1`` (one is
        left to evaluate for the logits); 0 when nothing usable was read (a broken state is
        removed with a Notice). Exceptions of ``reader`` other than OSError propagate."""
        entry = match.entry
        try:
            fd = os.open(entry.data_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        except OSError as error:
            self._notice(
                f"saved state {entry.data_path} cannot be read ({error.strerror}); prefilling "
                "instead. Check its permissions, or remove it with `repoctx cache clear`",
                once=entry.id,
            )
            return 0
        try:
            if not lock(fd, shared=True, timeout=self.lock_timeout):
                self._notice(f"saved state {entry.data_path} stayed locked; prefilling instead")
                return 0
            problem = self._folder.check(fd, entry, match.key) or _read(fd, entry, reader)
        except Gone:
            return 0
        finally:
            os.close(fd)
        if problem is not None:
            self._discard(entry, problem)
            return 0
        self._touch(entry)
        return max(0, min(match.prefix, entry.n_tokens, match.prompt_tokens - 1))

    def tokens(self, entry: Entry) -> list[int] | None:
        """The token ids of ``entry`` (None when its token list is gone or damaged)."""
        try:
            data = entry.tokens_path.read_bytes()
        except OSError:
            return None
        if kvfiles.tokens_hash(data) != entry.tokens_hash:
            return None
        return kvfiles.token_ids(data)

    def reject(self, entry: Entry, reason: str) -> None:
        """llama.cpp refused a state that verified (another llama.cpp's format under the same
        key): remove it, with a Notice."""
        self._discard(entry, f"could not be loaded ({reason})")

    def save(
        self, key: StateKey, tokens: Sequence[int], writer: Writer, *, label: str,
        expected_bytes: int, checkpoint: bool = False, repositories: Sequence[str] = (),
    ) -> Entry | None:  # fmt: skip
        """Save the state of ``tokens``: ``writer(fd)`` writes it to a temporary file and returns
        its digest (raising OSError or CacheError on failure); the store then fsyncs and
        commits it atomically. ``expected_bytes``, the state's size, sizes the eviction first.
        ``repositories``: the roots the tokens were packed from, for ``cache list`` and ``clear``.
        Returns the entry (the existing one when these tokens were saved already: it now names
        ``repositories`` too), or None with a Notice when the state was not saved: a failed
        save never raises."""
        data = kvfiles.token_bytes(tokens)
        if not data:
            raise ValueError("save() needs at least one token")
        if expected_bytes > self.cap_bytes:
            self._notice(
                f"the KV state ({size_text(expected_bytes)}) is larger than the KV cache limit "
                f"of {size_text(self.cap_bytes)}; it was not saved. Raise the limit to keep it"
            )
            return None
        ident = kvfiles.entry_id(key, kvfiles.tokens_hash(data))
        try:
            self._folder.ensure()
            with self._folder.locked(self.lock_timeout):
                existing = self._existing(ident, key, data)
                if existing is not None:
                    return self._touch_locked(existing, repositories)
                if not self._make_room(expected_bytes + len(data), keep=set()):
                    return None
                pending = PendingSave(self.root, ident)
        except StoreBusy:
            self._notice(f"KV cache {self.root} is busy (locked by another repoctx); not saved")
            return None
        except OSError as error:
            self._save_failed(error, expected_bytes)
            return None
        n_tokens = len(data) // kvfiles.TOKEN_SIZE
        draft = Entry(
            self.root, ident, key, n_tokens, 0, "", "", 0, 0, label, checkpoint,
            tuple(repositories),
        )  # fmt: skip
        return self._write(pending, draft, data, writer, expected_bytes)

    def _write(
        self, pending: PendingSave, draft: Entry, data: bytes, writer: Writer, expected: int
    ) -> Entry | None:
        try:
            with pending:
                digest = writer(pending.fd)
                size = pending.finish(data)
                if size != expected:
                    raise CacheError(f"the state file has {size:,} bytes, not {expected:,}")
                now = time.time()
                entry = replace(
                    draft, size=size, tokens_hash=kvfiles.tokens_hash(data), digest=digest,
                    created=now, last_used=now,
                )  # fmt: skip
                with self._folder.locked(self.lock_timeout):
                    existing = self._existing(entry.id, entry.key, data)
                    if existing is not None:  # another process saved the same state meanwhile
                        return self._touch_locked(existing, draft.repositories)
                    self._folder.commit(pending, entry)
                    self._prune(entry, data)
                    self._make_room(0, keep={entry.id})
                    return entry
        except StoreBusy:
            self._notice(f"KV cache {self.root} is busy (locked by another repoctx); not saved")
        except Exception as error:  # saving is optional: a failed save never ends the answer
            self._save_failed(error, expected)
        return None

    def _existing(self, ident: str, key: StateKey, data: bytes) -> Entry | None:
        """The intact entry of exactly these tokens, if any (store lock held)."""
        try:
            entry = self._folder.read(ident)
        except FileNotFoundError:
            return None
        except BadEntry as bad:
            if not bad.keep:
                self._folder.delete(ident)
            return None
        if entry.key != key or entry.tokens_hash != kvfiles.tokens_hash(data):
            return None
        return entry

    def _save_failed(self, error: Exception, expected: int) -> None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            self._notice(
                f"the disk of {self.root} is full: the KV state (~{size_text(expected)}) was not"
                " saved and its partial files were removed. Free disk space or lower the KV "
                "cache limit"
            )
            return
        detail = str(error) if isinstance(error, OSError | CacheError) else repr(error)
        self._notice(
            f"saving the KV state to {self.root} failed ({detail}); its partial files were "
            "removed and the prompt will be evaluated again next time"
        )

    def _make_room(self, needed: int, keep: set[str]) -> bool:
        """Evict least recently used entries until ``needed`` more bytes fit under the cap and
        (when ``needed``) leave ``min_free_bytes`` free on the disk; evict nothing when even all
        of them would not make room. Store lock held."""
        found = self._entries(locked=True)
        if swept := self._folder.sweep({entry.id for entry in found}):
            self._notice(f"removed {swept} leftover file(s) of interrupted saves from {self.root}")
        victims = sorted(
            (entry for entry in found if entry.id not in keep),
            key=lambda entry: (entry.last_used, entry.created),
        )
        total = sum(entry.disk_bytes for entry in found)
        free = self._folder.free_bytes()
        spare = sum(entry.disk_bytes for entry in victims)
        if self._fits(needed, total - spare, free + spare):
            evicted = 0
            for victim in victims:
                if self._fits(needed, total, free):
                    break
                if self._folder.delete(victim.id):
                    evicted += victim.disk_bytes
                    total, free = total - victim.disk_bytes, free + victim.disk_bytes
            if evicted:
                self._notice(f"removed old KV states ({size_text(evicted)}) to make room", "info")
        if needed and not self._fits(needed, total, free):
            disk_full = total + needed <= self.cap_bytes
            why = "its disk is too full" if disk_full else "the states filling it are in use"
            self._notice(
                f"the KV state (~{size_text(needed)}) was not saved in {self.root}: {why} "
                f"({size_text(free)} free); free disk space or lower the KV cache limit"
            )
            return False
        return True

    def _fits(self, needed: int, total: int, free: int) -> bool:
        disk_ok = needed == 0 or free >= needed + self.min_free_bytes
        return disk_ok and total + needed <= self.cap_bytes

    def _prune(self, new: Entry, data: bytes) -> None:
        """Remove the older states that ``new`` makes redundant. Store lock held."""
        shared: dict[str, int] = {}
        others: list[Entry] = []
        for entry in self._entries(locked=True):
            if entry.key == new.key and entry.id != new.id:
                with suppress(OSError):
                    shared[entry.id] = kvfiles.file_prefix(data, entry.tokens_path)
                    others.append(entry)
        for entry in kvfiles.redundant(new, others, shared, self.keep_recent):
            self._folder.delete(entry.id)

    def entries(self) -> list[Entry]:
        """The usable entries, most recently used first."""
        return sorted(self._entries(), key=lambda entry: entry.last_used, reverse=True)

    def stats(self) -> KVStats:
        found = self._entries()
        return KVStats(self.root, len(found), sum(e.disk_bytes for e in found), self.cap_bytes)

    def remove(self, entry: Entry) -> bool:
        """Remove ``entry``; False when it is gone already, in use, or the store is busy."""
        try:
            with self._folder.locked(self.lock_timeout):
                return entry.meta_path.exists() and self._folder.delete(entry.id)
        except (StoreBusy, OSError):
            return False

    def clear(self, pattern: str | None = None) -> int:
        """Remove every entry and leftover file, or the entries that ``pattern`` matches (see
        ``matches``). Returns how many entries went; states being loaded by another process
        stay."""
        if not self.root.is_dir():
            return 0
        try:
            with self._folder.locked(self.lock_timeout):
                found = self._entries(locked=True)
                if pattern is None:
                    self._folder.sweep({entry.id for entry in found})
                chosen = [entry for entry in found if pattern is None or matches(entry, pattern)]
                removed = sum(self._folder.delete(entry.id) for entry in chosen)
        except (StoreBusy, OSError) as error:
            self._notice(f"KV cache {self.root} could not be cleared ({error})")
            return 0
        if removed < len(chosen):
            self._notice(f"{len(chosen) - removed} KV state(s) in use by another process stay")
        return removed

    def _discard(self, entry: Entry, problem: str) -> None:
        self._notice(
            f"saved state {entry.data_path} {problem}; it was removed and the prompt will be "
            "evaluated again",
            once=entry.id,
        )
        with suppress(StoreBusy, OSError), self._folder.locked(self.lock_timeout):
            try:
                current = self._folder.read(entry.id)
            except BadEntry:
                current = entry
            if current.same_state(entry):
                self._folder.delete(entry.id)

    def _entries(self, locked: bool = False) -> list[Entry]:
        """The entries that read well. The others are checked again under the store lock (a
        removal may have been in flight), then reported and removed, or ignored when they are
        to be kept (a newer format)."""
        try:
            good, bad = self._folder.scan()
        except OSError as error:
            self._notice(f"KV cache folder {self.root} cannot be read ({error})", once="root")
            return []
        for ident, problem in bad.items():
            if problem.keep:
                path = self.root / f"{ident}.state"
                self._notice(f"saved state {path} {problem.reason}; it is ignored", "info", ident)
        suspects = [ident for ident, problem in bad.items() if not problem.keep]
        if suspects and locked:
            self._repair(suspects)
        elif suspects:  # opportunistic: a reader does not wait long for the lock
            with suppress(StoreBusy, OSError), self._folder.locked(min(self.lock_timeout, 1.0)):
                self._repair(suspects)
        return good

    def _repair(self, suspects: list[str]) -> None:
        for ident in suspects:
            try:
                self._folder.read(ident)
            except BadEntry as bad:
                done = "it was removed" if self._folder.delete(ident) else "it is skipped"
                self._notice(
                    f"saved state {self.root / ident}.state {bad.reason}; {done}", once=ident
                )
            except OSError:
                pass

    def _touch(self, entry: Entry) -> None:
        with suppress(StoreBusy, OSError, BadEntry), self._folder.locked(2.0):
            current = self._folder.read(entry.id)
            if current.same_state(entry):
                self._touch_locked(current)

    def _touch_locked(self, entry: Entry, repositories: Sequence[str] = ()) -> Entry:
        """Mark ``entry`` used, adding the ``repositories`` it does not name yet."""
        named = (*entry.repositories, *(r for r in repositories if r not in entry.repositories))
        used = replace(entry, last_used=max(time.time(), entry.last_used), repositories=named)
        with suppress(OSError):
            self._folder.rewrite(used)
        return used

    def _notice(self, message: str, level: str = "warning", once: str | None = None) -> None:
        if once is not None:
            if once in self._reported:
                return
            self._reported.add(once)
        self.on_event(Notice(message, level))


def _read(fd: int, entry: Entry, reader: Reader) -> str | None:
    try:
        digest = reader(fd, entry.size)
    except OSError as error:
        return f"could not be read ({error})"
    if digest != entry.digest:
        return "was corrupt (its contents do not match their checksum)"
    return None


def matches(entry: Entry, pattern: str) -> bool:
    """Whether ``entry``'s id starts with ``pattern``, or the glob ``pattern`` (case-insensitive)
    matches one of its repositories (the absolute path or the folder's name) or its label."""
    if entry.id.startswith(pattern):
        return True
    glob = pattern.lower()
    names = [entry.label]
    for repository in entry.repositories:
        names += [repository, PurePath(repository).name]
    return any(fnmatch.fnmatchcase(name.lower(), glob) for name in names)
