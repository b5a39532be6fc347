"""`repoctx models ...` and `repoctx cache ...`: what is stored where, and how big."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from repoctx import paths
from repoctx.console import StderrEvents
from repoctx.events import Notice

if TYPE_CHECKING:
    from repoctx.kvstore import KVStore


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value} B"


def list_models() -> None:
    from repoctx.hub import list_models as entries

    table = Table(title="Models", title_justify="left")
    for column in ("name", "about", "size", "state", "path"):
        table.add_column(column)
    for entry in entries():
        state = (
            "embedded"
            if entry.embedded
            else "verified"
            if entry.verified
            else ("downloaded" if entry.present else "not downloaded")
        )
        table.add_row(entry.name, entry.description, _size(entry.size), state,
                      str(entry.path) if entry.present and entry.path else "")  # fmt: skip
    Console().print(table)


def pull_model(spec: str, revision: str | None) -> None:
    from repoctx.hub import pull

    with StderrEvents(delay_s=0.0) as events:
        path = pull(spec, events, revision)
    Console(highlight=False).print(str(path))


def model_path(name: str | None) -> None:
    from repoctx.hub import model_path as locate
    from repoctx.models import resolve_model_path

    print(locate(name) if name else resolve_model_path(None))


def _kv_store() -> KVStore:
    from repoctx.kvstore import KVStore

    return KVStore(on_event=_notice)


def _notice(event: object) -> None:
    if isinstance(event, Notice):
        Console(stderr=True).print(f"[yellow]warning:[/] {event.message}", highlight=False)


def list_cache() -> None:
    store = _kv_store()
    table = Table(title=f"KV states in {store.root}", title_justify="left")
    for column in ("id", "what", "tokens", "KV", "size", "last used"):
        table.add_column(column, justify="right" if column in ("tokens", "size") else "left")
    for entry in store.entries():
        kv = f"{entry.key.kv_type}{' fa' if entry.key.flash_attn else ''}"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        table.add_row(entry.id[:12], entry.label, f"{entry.n_tokens:,}", kv,
                      _size(entry.disk_bytes), used)  # fmt: skip
    Console().print(table)


def cache_stats() -> None:
    from repoctx.cache import ContentCache

    store = _kv_store()
    stats = store.stats()
    console = Console(highlight=False)
    console.print(f"KV states: {stats.entries:,} in {stats.root}, {_size(stats.bytes)} of "
                  f"{_size(stats.cap_bytes)} allowed")  # fmt: skip
    index = ContentCache.open(_notice)
    for namespace, (count, size) in sorted(index.stats().items()):
        console.print(f"file index {namespace}: {count:,} entries, {_size(size)}")
    console.print(f"file index: {index.location}")
    console.print(f"conversations: {paths.data_dir() / 'conversations'}")
    index.close()


def clear_cache(pattern: str | None, everything: bool) -> None:
    from repoctx.cache import ContentCache

    store = _kv_store()
    removed = store.clear(pattern)
    console = Console(highlight=False)
    console.print(f"removed {removed:,} KV states from {store.root}")
    if everything:
        index = ContentCache.open(_notice)
        index.clear()
        index.close()
        console.print(f"cleared the file index {index.location}")
