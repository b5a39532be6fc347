"""The content cache: reads that write nothing on warm runs, eviction under the cap."""

from __future__ import annotations

import pytest

from repoctx import cache as cache_module
from repoctx.cache import ContentCache


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
