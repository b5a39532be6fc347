"""`repoctx models ...` and `repoctx cache ...`: what is stored where, and how big."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from repoctx import paths
from repoctx.cli.console import StderrEvents
from repoctx.events import Notice

if TYPE_CHECKING:
    from repoctx.kv.store import Entry, KVStore
    from repoctx.model.hub import ModelEntry


_PIPE_WIDTH = 10_000  # tables printed to a pipe are as wide as their longest row
# `models list` at its narrowest besides the names: borders and padding (13), "not downloaded"
# (14), a size (8) and 9 columns of the description
_MODEL_COLUMNS_BESIDE_NAMES = 44
_NARROWEST_NAMES = 16


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value} B"


def list_models(as_json: bool = False) -> None:
    from repoctx.model.hub import list_models as entries

    models = entries()
    if as_json:
        _print_json([_model_record(entry) for entry in models])
        return
    console = Console(highlight=False)
    table = Table(title="Models", title_justify="left")
    names = [entry.name for entry in models]
    _add_name_column(table, console, "name", names, _MODEL_COLUMNS_BESIDE_NAMES)
    table.add_column("state", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("about", overflow="fold", ratio=1)
    for entry in models:
        about = Text(entry.description)
        if entry.present and entry.path:
            about.append(("\n" if entry.description else "") + str(entry.path), style="dim")
        table.add_row(entry.name, _model_state(entry), _size(entry.size), about)
    _print_table(console, table)


def _model_state(entry: ModelEntry) -> str:
    if entry.embedded:
        return "embedded"
    if entry.verified:
        return "verified"
    return "downloaded" if entry.present else "not downloaded"


def _model_record(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "state": _model_state(entry),
        "about": entry.description,
        "size": entry.size,
        "path": str(entry.path) if entry.present and entry.path else None,
        "repo_id": entry.repo_id,
        "filename": entry.filename,
    }


def _add_name_column(
    table: Table, console: Console, header: str, names: list[str], beside: int
) -> None:
    """A column of names that users type (``--model NAME``): each on one line where the
    terminal has room for the longest besides ``beside`` columns of the others, else folded
    at the width left; never cut short."""
    room = console.width - beside
    if not console.is_terminal or max(map(len, names), default=0) <= room:
        table.add_column(header, no_wrap=True)
    else:
        table.add_column(header, overflow="fold", width=max(room, _NARROWEST_NAMES))


def _print_table(console: Console, table: Table) -> None:
    """On a terminal, fitted to its width (the columns that may wrap do); in a pipe, every row
    on one line, however long."""
    if not console.is_terminal:
        unlimited = console.options.update_width(_PIPE_WIDTH)
        console.width = max(console.width, console.measure(table, options=unlimited).maximum)
    console.print(table)


def _print_json(records: list[dict[str, Any]]) -> None:
    print(json.dumps(records, indent=1, ensure_ascii=False))


def pull_model(spec: str, revision: str | None) -> None:
    """Download the model, then derive its tokenizer (once per vocabulary, stored in the cache)
    so that the first pack with it does not."""
    from repoctx.model.hub import pull
    from repoctx.tokens.count import prepare_tokenizer

    with StderrEvents(delay_s=0.0) as events:
        path = pull(spec, events, revision)
        prepare_tokenizer(path, events)
    print(path)


def model_path(name: str | None) -> None:
    from repoctx.model.choice import resolve_model_path
    from repoctx.model.hub import model_path as locate

    print(locate(name) if name else resolve_model_path(None))


def _kv_store() -> KVStore:
    from repoctx.kv.store import KVStore

    return KVStore(on_event=_notice)


def _notice(event: object) -> None:
    if isinstance(event, Notice):
        Console(stderr=True, soft_wrap=True, highlight=False).print(
            f"[yellow]warning:[/] {escape(event.message)}"
        )


def list_cache(as_json: bool = False) -> None:
    store = _kv_store()
    entries = store.entries()
    if as_json:
        _print_json([_state_record(entry) for entry in entries])
        return
    console = Console(highlight=False)
    table = Table(title=f"KV states in {store.root}", title_justify="left")
    table.add_column("id", no_wrap=True)  # `cache clear ID` takes a prefix of it
    table.add_column("repos", overflow="fold", ratio=2)  # paths: typed in `cache clear`
    table.add_column("tokens", no_wrap=True, justify="right")
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("last used", no_wrap=True)
    table.add_column("what", overflow="fold", ratio=1)
    for entry in entries:
        flash = ", flash attention" if entry.key.flash_attn else ""
        what = f"{entry.label} ({entry.key.kv_type} KV{flash})"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        repositories = "\n".join(entry.repositories) or "-"
        table.add_row(entry.id[:12], repositories, f"{entry.n_tokens:,}",
                      _size(entry.disk_bytes), used, what)  # fmt: skip
    _print_table(console, table)


def _state_record(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "repositories": list(entry.repositories),
        "label": entry.label,
        "tokens": entry.n_tokens,
        "bytes": entry.disk_bytes,
        "kv_type": entry.key.kv_type,
        "flash_attn": entry.key.flash_attn,
        "model_fingerprint": entry.key.model,
        "checkpoint": entry.checkpoint,
        "created": entry.created,
        "last_used": entry.last_used,
        "path": str(entry.data_path),
    }


def _state_pattern(pattern: str | None) -> str | None:
    """A PATTERN that names an existing folder (``.``, ``../api``) stands for the repository
    at its absolute path; anything else is an id prefix or a glob (kvstore.matches)."""
    if pattern is None or not Path(pattern).expanduser().is_dir():
        return pattern
    return str(Path(pattern).expanduser().resolve())


def cache_stats() -> None:
    from repoctx.cache import ContentCache

    store = _kv_store()
    stats = store.stats()
    console = Console(highlight=False, soft_wrap=True)  # paths: never wrapped
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
    removed = store.clear(_state_pattern(pattern))
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"removed {removed:,} KV states from {store.root}")
    if everything:
        index = ContentCache.open(_notice)
        index.clear()
        index.close()
        console.print(f"cleared the file index {index.location}")
