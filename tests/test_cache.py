"""The content cache: reads that write nothing on warm runs, eviction under the cap, and a
damaged database rebuilt with a notice, whether found by the daily check or on use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from repoctx import cache as cache_module
from repoctx.cache import ContentCache
from repoctx.events import Event, Notice


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def used(cache: ContentCache, key: str) -> float:
    row = cache._db.execute("SELECT used FROM entries WHERE key=?", (key,)).fetchone()
    return float(row[0])


def test_reads_mark_an_entry_used_at_most_once_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(cache_module.time, "time", clock)
    cache = ContentCache.memory()
    cache.put_many("ns", {"a": 1, "b": 2})
    clock.now += 600
    assert cache.get_many("ns", ["a", "b", "missing"]) == {"a": 1, "b": 2}
    assert used(cache, "a") == 1_000_000.0  # ten minutes later: left as it was
    clock.now += 3600
    assert cache.get("ns", "a") == 1
    assert used(cache, "a") == 1_000_000.0 + 4200 and used(cache, "b") == 1_000_000.0


def test_presence_is_told_without_reading_or_marking_use(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(cache_module.time, "time", clock)
    cache = ContentCache.memory()
    cache.put_many("ns", {f"k{i}": i for i in range(1500)})  # more than one query's chunk
    cache.put("other", "k1", 1)
    clock.now += 7200
    wanted = [f"k{i}" for i in range(0, 3000, 2)]
    assert cache.present("ns", wanted) == {f"k{i}" for i in range(0, 1500, 2)}
    assert used(cache, "k0") == 1_000_000.0


def test_the_least_recently_used_entries_are_evicted_to_stay_under_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(cache_module.time, "time", clock)
    cache = ContentCache(None, cap_bytes=256 * 1024)
    value = "x" * 1000
    for number in range(600):
        clock.now += 7200  # every entry older than the next by more than the touch interval
        cache.put("ns", f"k{number:04}", value)
    assert cache.size_bytes() <= 256 * 1024
    kept = cache.get_many("ns", [f"k{n:04}" for n in range(600)])
    assert 150 < len(kept) < 256
    assert sorted(kept) == [f"k{n:04}" for n in range(600 - len(kept), 600)]  # the newest


def filled(location: Path) -> list[str]:
    """A cache file at ``location`` with enough entries to span many pages; their keys."""
    cache = ContentCache(location)
    keys = [f"k{number:04}" for number in range(400)]
    cache.put_many("ns", {key: "v" * 300 for key in keys})
    cache.close()
    return keys


def damage_pages(location: Path) -> None:
    """Overwrite the middle of the database file (pages of the table, not its header)."""
    data = bytearray(location.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = bytes(range(256)) * 32
    location.write_bytes(bytes(data))


def notices(events: list[Event]) -> list[str]:
    return [event.message for event in events if isinstance(event, Notice)]


def test_a_file_that_is_no_database_is_replaced_with_a_notice(tmp_path: Path) -> None:
    location = tmp_path / "index.sqlite3"
    location.write_bytes(b"not a database, whatever it was" * 100)
    events: list[Event] = []
    cache = ContentCache(location, on_event=events.append)
    assert any("was corrupt; rebuilding it" in message for message in notices(events))
    cache.put("ns", "a", 1)
    assert cache.get("ns", "a") == 1


def test_damage_met_on_use_rebuilds_the_cache_and_the_run_goes_on(tmp_path: Path) -> None:
    """Between the daily checks, a damaged page fails the statement that reads it: the cache is
    rebuilt then, with a notice, and the lookup is a miss rather than an error."""
    location = tmp_path / "index.sqlite3"
    keys = filled(location)
    damage_pages(location)
    events: list[Event] = []
    cache = ContentCache(location, on_event=events.append)  # checked today: not scanned now
    assert notices(events) == []
    assert cache.get_many("ns", keys) == {}
    assert any("failed" in message and "rebuilding" in message for message in notices(events))
    cache.put("ns", "a", 1)
    assert cache.get("ns", "a") == 1 and cache.stats() == {"ns": (1, cache.size_bytes())}


def test_the_daily_check_finds_damage_when_the_cache_opens(tmp_path: Path) -> None:
    location = tmp_path / "index.sqlite3"
    filled(location)
    stamp = location.with_name(location.name + ".checked")
    assert stamp.exists(), "a new database was checked when it was opened"
    damage_pages(location)
    two_days_ago = time.time() - 2 * 86400
    os.utime(stamp, (two_days_ago, two_days_ago))
    events: list[Event] = []
    cache = ContentCache(location, on_event=events.append)
    assert any("was corrupt; rebuilding it" in message for message in notices(events))
    assert cache.stats() == {}
    assert time.time() - stamp.stat().st_mtime < 60, "the rebuilt database is checked"


def test_a_database_checked_today_is_not_scanned_again(tmp_path: Path) -> None:
    location = tmp_path / "index.sqlite3"
    filled(location)
    stamp = location.with_name(location.name + ".checked")
    an_hour_ago = time.time() - 3600
    os.utime(stamp, (an_hour_ago, an_hour_ago))
    ContentCache(location).close()
    assert stamp.stat().st_mtime == an_hour_ago
    a_day_ago = time.time() - 86400 - 60
    os.utime(stamp, (a_day_ago, a_day_ago))
    ContentCache(location).close()
    assert stamp.stat().st_mtime > an_hour_ago
