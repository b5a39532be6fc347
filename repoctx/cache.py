"""A small content-keyed store for per-file results (imports, token counts, git history).

Keys are content identities (git blob ids, commit ids, tokenizer fingerprints), never mtimes,
so a hit is always right. The one record keyed otherwise, the scan's file-status records (see
``repoctx.scan.scanner``), holds status data that is checked against the file on every use, as git
checks its index. The store is one SQLite database: writes are atomic, a second process waits
on SQLite's lock, the size is capped with least-recently-used eviction, and a corrupt or
unwritable database is replaced (or, failing that, kept in memory) with a notice instead of
failing the run. Reads mark entries used at most once an hour, so a warm run writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from repoctx import paths
from repoctx.events import EventSink, Notice, ignore_events

DEFAULT_CAP_BYTES = 256 * 1024 * 1024
_CHUNK = 500
# a read marks an entry used only when its mark is older than this: an hour is precise enough
# for least-recently-used eviction, and a warm run's reads then write nothing
_TOUCH_AFTER_S = 3600.0
_CHECK_EVERY_S = 24 * 3600.0  # between checks of the database's structure (see _check_due)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
"""


_R = TypeVar("_R")


def _locked(method: Callable[..., _R]) -> Callable[..., _R]:
    @functools.wraps(method)
    def run(self: ContentCache, *args: Any, **kwargs: Any) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class ContentCache:
    """JSON values by ``(namespace, key)``. Use ``ContentCache.open()`` for the user's cache,
    ``ContentCache.memory()`` for a throwaway one."""

    def __init__(
        self,
        location: Path | None,
        cap_bytes: int = DEFAULT_CAP_BYTES,
        on_event: EventSink = ignore_events,
    ) -> None:
        self.location = location
        self.cap_bytes = cap_bytes
        self._on_event = on_event
        self._lock = threading.RLock()  # one connection, shared by the threads of a session
        self._db = self._connect()

    @classmethod
    def open(cls, on_event: EventSink = ignore_events) -> ContentCache:
        return cls(paths.cache_dir() / "index.sqlite3", on_event=on_event)

    @classmethod
    def memory(cls) -> ContentCache:
        return cls(None)

    def _connect(self) -> sqlite3.Connection:
        if self.location is None:
            return _initialised(sqlite3.connect(":memory:", check_same_thread=False))
        try:
            paths.ensure_private_dir(self.location.parent)
            return _initialised(_open_file(self.location))
        except sqlite3.DatabaseError:
            self._notice(f"cache {self.location} was corrupt; rebuilding it")
            _remove_database(self.location)
        except OSError as error:
            self._notice(f"cache {self.location} cannot be used ({error}); caching in memory")
            self.location = None
            return _initialised(sqlite3.connect(":memory:", check_same_thread=False))
        try:
            return _initialised(_open_file(self.location))
        except (sqlite3.DatabaseError, OSError) as error:
            self._notice(f"cache {self.location} cannot be rebuilt ({error}); caching in memory")
            self.location = None
            return _initialised(sqlite3.connect(":memory:", check_same_thread=False))

    def _notice(self, message: str) -> None:
        self._on_event(Notice(message))

    def _or_rebuilt(self, run: Callable[[], _R], fallback: _R) -> _R:
        """``run()``; when the database fails under it, ``fallback``, the database rebuilt."""
        try:
            return run()
        except sqlite3.Error as error:
            self._recover(error)
            return fallback

    def _recover(self, error: sqlite3.Error) -> None:
        self._notice(f"cache {self.location} failed ({error}); rebuilding it")
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self.location is not None:
            _remove_database(self.location)
        self._db = self._connect()

    @_locked
    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that are present."""
        wanted = list(dict.fromkeys(keys))
        nothing: list[tuple[str, bytes]] = []
        found = self._or_rebuilt(lambda: self._select(namespace, wanted), nothing)
        result: dict[str, Any] = {}
        for key, raw in found:
            with contextlib.suppress(ValueError):
                result[key] = json.loads(raw)
        return result

    def _select(self, namespace: str, keys: list[str]) -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = []
        now = time.time()
        with self._db:
            for marks, chunk in _chunks(keys):
                args = [namespace, *chunk]
                rows += self._db.execute(
                    f"SELECT key, value FROM entries WHERE namespace=? AND key IN ({marks})", args
                ).fetchall()
                self._db.execute(
                    f"UPDATE entries SET used=? WHERE namespace=? AND key IN ({marks}) AND used<?",
                    [now, *args, now - _TOUCH_AFTER_S],
                )
        return rows

    @_locked
    def present(self, namespace: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a stored value (not read, nor marked as used)."""
        wanted = list(dict.fromkeys(keys))

        def select() -> set[str]:
            found: set[str] = set()
            for marks, chunk in _chunks(wanted):
                rows = self._db.execute(
                    f"SELECT key FROM entries WHERE namespace=? AND key IN ({marks})",
                    [namespace, *chunk],
                )
                found.update(key for (key,) in rows)
            return found

        return self._or_rebuilt(select, set())

    def get(self, namespace: str, key: str) -> Any | None:
        return self.get_many(namespace, [key]).get(key)

    @_locked
    def put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        rows = []
        for key, value in items.items():
            raw = json.dumps(value, separators=(",", ":")).encode()
            rows.append((namespace, key, raw, len(raw) + len(key) + 32, now))

        def write() -> None:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?)", rows)
            self._evict()

        self._or_rebuilt(write, None)

    def put(self, namespace: str, key: str, value: Any) -> None:
        self.put_many(namespace, {key: value})

    def _evict(self) -> None:
        if self._page_bytes() <= self.cap_bytes:
            return  # the entries take more room than their sizes add up to: under the cap
        total = self.size_bytes()
        if total <= self.cap_bytes:
            return
        target = int(self.cap_bytes * 0.8)
        with self._db:
            rows = self._db.execute("SELECT namespace, key, size FROM entries ORDER BY used")
            doomed = []
            for namespace, key, size in rows:
                if total <= target:
                    break
                doomed.append((namespace, key))
                total -= size
            self._db.executemany("DELETE FROM entries WHERE namespace=? AND key=?", doomed)

    def _page_bytes(self) -> int:
        """The bytes of the pages in use: cheap, unlike adding up every entry's size."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * int(self._db.execute("PRAGMA page_size").fetchone()[0])

    @_locked
    def size_bytes(self) -> int:
        query = "SELECT COALESCE(SUM(size), 0) FROM entries"
        return int(self._or_rebuilt(lambda: self._db.execute(query).fetchone()[0], 0))

    @_locked
    def stats(self) -> dict[str, tuple[int, int]]:
        """Namespace -> (entries, bytes)."""
        query = "SELECT namespace, COUNT(*), SUM(size) FROM entries GROUP BY namespace"
        rows: list[tuple[str, int, int]] = self._or_rebuilt(
            lambda: self._db.execute(query).fetchall(), []
        )
        return {namespace: (int(count), int(size)) for namespace, count, size in rows}

    @_locked
    def clear(self) -> None:

        def delete() -> None:
            with self._db:
                self._db.execute("DELETE FROM entries")

        self._or_rebuilt(delete, None)  # else a new, empty database

    @_locked
    def close(self) -> None:
        self._db.close()


def _chunks(keys: list[str]) -> Iterator[tuple[str, list[str]]]:
    """``keys`` in chunks that one statement takes, each with its placeholders ("?,?,...")."""
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        yield ",".join("?" * len(chunk)), chunk


def _open_file(location: Path) -> sqlite3.Connection:
    fresh = not location.exists()
    db = sqlite3.connect(location, timeout=30.0, isolation_level=None, check_same_thread=False)
    if fresh:
        os.chmod(location, 0o600)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if _check_due(location):
        verdict = db.execute("PRAGMA quick_check(1)").fetchone()
        if verdict is None or verdict[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {verdict[0] if verdict else 'no answer'}")
        _checked_now(location)
    return db


def _stamp(location: Path) -> Path:
    return location.with_name(location.name + ".checked")


def _check_due(location: Path) -> bool:
    """Whether the database's structure is to be checked at this opening. The check reads the
    whole file (60 ms at 100 MB), so it runs once a day; damage found in between fails the
    statement that meets it, and the cache is rebuilt then (``_recover``)."""
    try:
        checked = _stamp(location).stat().st_mtime
    except OSError:
        return True
    return not 0 <= time.time() - checked < _CHECK_EVERY_S


def _checked_now(location: Path) -> None:
    stamp = _stamp(location)
    with contextlib.suppress(OSError):
        stamp.touch(mode=0o600)  # an existing stamp gets the time now


def _initialised(db: sqlite3.Connection) -> sqlite3.Connection:
    db.isolation_level = None
    db.executescript(_SCHEMA)
    db.isolation_level = "DEFERRED"
    return db


def _remove_database(location: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".checked"):
        with contextlib.suppress(OSError):
            os.unlink(f"{location}{suffix}")
