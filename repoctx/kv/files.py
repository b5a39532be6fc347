"""What the KV state store (kv/store.py) keeps on disk: layout, metadata, token prefixes. How
the folder changes safely is kv/folder.py; how states move between memory and disk, kv/io.py.

An entry with id ID is three files in the store folder, all 0600:

    ID.state    the sequence state (llama_state_seq_get_data, one KV stream), never changed
    ID.tokens   the prompt's token ids, int32 little-endian
    ID.json     the metadata sidecar, written last: an entry exists once its sidecar does

The state's digest (kv/io.py: XXH3 over fixed-size chunks) is computed while the state is
written and again while it is read, so truncated, zeroed or partly overwritten files are
caught before llama.cpp sees a byte of them, at no cost beyond the I/O itself.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import xxhash

FORMAT = 2  # 1: llama_state_seq_save_file's files, whole-file XXH3-128
TOKEN_SIZE = 4
PREFIX_CHUNK = 1 << 18
_T = TypeVar("_T")

if (
    array("i").itemsize != TOKEN_SIZE
):  # pragma: no cover - every supported platform has 32-bit C ints
    raise ImportError("repoctx needs a platform whose C int has 32 bits")


@dataclass(frozen=True)
class StateKey:
    """Everything besides the tokens that must match for a saved state to be usable: llama.cpp
    itself does not check that a state file came from the same model."""

    model: str
    kv_type: str
    flash_attn: bool
    extra: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kv_type": self.kv_type,
            "flash_attn": self.flash_attn,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class Entry:
    """One saved state. ``digest`` is the kvio digest of the state file, ``tokens_hash`` the
    XXH3-128 of the token file."""

    directory: Path
    id: str
    key: StateKey
    n_tokens: int
    size: int
    tokens_hash: str
    digest: str
    created: float
    last_used: float
    label: str
    checkpoint: bool
    repositories: tuple[str, ...] = ()  # the roots the prompt was packed from (absolute paths)

    @property
    def data_path(self) -> Path:
        return self.directory / f"{self.id}.state"

    @property
    def tokens_path(self) -> Path:
        return self.directory / f"{self.id}.tokens"

    @property
    def meta_path(self) -> Path:
        return self.directory / f"{self.id}.json"

    @property
    def disk_bytes(self) -> int:
        return self.size + self.n_tokens * TOKEN_SIZE

    def same_state(self, other: Entry) -> bool:
        """The same saved state, however recently either copy was used and whatever
        repositories either names."""
        return replace(self, last_used=0.0, repositories=()) == replace(
            other, last_used=0.0, repositories=()
        )


class BadEntry(Exception):
    """An entry that cannot be used. ``reason`` completes "saved state PATH ..."; ``keep`` when it
    is to be left alone (a later repoctx wrote it, or it cannot be read) rather than removed."""

    def __init__(self, reason: str, keep: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keep = keep


def entry_id(key: StateKey, tokens_hash: str) -> str:
    canonical = json.dumps(key.as_json(), sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_128_hexdigest(f"{canonical}\n{tokens_hash}".encode())


def entry_json(entry: Entry) -> bytes:
    fields = {
        "format": FORMAT,
        "id": entry.id,
        "key": entry.key.as_json(),
        "n_tokens": entry.n_tokens,
        "tokens_xxh3_128": entry.tokens_hash,
        "size": entry.size,
        "digest": entry.digest,
        "created": entry.created,
        "last_used": entry.last_used,
        "label": entry.label,
        "checkpoint": entry.checkpoint,
        "repositories": list(entry.repositories),
    }
    return json.dumps(fields, indent=1).encode()


def parse_entry(raw: bytes, directory: Path, ident: str) -> Entry:
    """The entry a sidecar describes; BadEntry when it cannot be trusted."""
    try:
        fields = json.loads(raw)
    except ValueError as error:
        raise BadEntry("has unreadable metadata (not valid JSON)") from error
    version = fields.get("format") if isinstance(fields, dict) else None
    if type(version) is not int:
        raise BadEntry("has unreadable metadata (no format version)")
    if version > FORMAT:
        raise BadEntry(f"was saved by a newer repoctx (format {version})", keep=True)
    if version < FORMAT:
        raise BadEntry(f"was saved by an older repoctx (format {version})")
    try:
        entry = _entry_fields(fields, directory)
    except (KeyError, TypeError) as error:
        field = error.args[0] if error.args else "?"
        raise BadEntry(f"has unreadable metadata (field {field!r} missing or invalid)") from error
    if entry.id != ident or entry.n_tokens <= 0 or entry.size <= 0:
        raise BadEntry("has inconsistent metadata (id, token count or size)")
    return entry


def _entry_fields(fields: dict[str, Any], directory: Path) -> Entry:
    key = fields["key"]
    if not isinstance(key, dict):
        raise TypeError("key")
    return Entry(
        directory=directory,
        id=_get(fields, "id", str),
        key=StateKey(
            _get(key, "model", str),
            _get(key, "kv_type", str),
            _get(key, "flash_attn", bool),
            _get(key, "extra", str),
        ),
        n_tokens=_get(fields, "n_tokens", int),
        size=_get(fields, "size", int),
        tokens_hash=_get(fields, "tokens_xxh3_128", str),
        digest=_get(fields, "digest", str),
        created=float(_get(fields, "created", float)),
        last_used=float(_get(fields, "last_used", float)),
        label=_get(fields, "label", str),
        checkpoint=_get(fields, "checkpoint", bool),
        repositories=_repositories(fields),
    )


def _repositories(fields: dict[str, Any]) -> tuple[str, ...]:
    """Optional: entries saved before repoctx recorded repositories have none."""
    value = fields.get("repositories", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("repositories")
    return tuple(value)


def _get(fields: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = fields[name]
    if type(value) is kind or (kind is float and type(value) is int):
        return cast(_T, value)
    raise TypeError(name)


def token_bytes(tokens: Sequence[int]) -> bytes:
    """Token ids as int32 little-endian bytes: the token file format, and what prefixes compare."""
    ids = array("i", tokens)
    if sys.byteorder == "big":  # pragma: no cover - no big-endian test machine
        ids.byteswap()
    return ids.tobytes()


def token_ids(data: bytes) -> list[int]:
    """The inverse of ``token_bytes``."""
    ids = array("i")
    ids.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover - no big-endian test machine
        ids.byteswap()
    return ids.tolist()


def tokens_hash(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def common_prefix(a: bytes, b: bytes, chunk: int = PREFIX_CHUNK) -> int:
    """How many leading int32 tokens ``a`` and ``b`` share. Equal chunks are skipped with C-speed
    comparisons; inside the first unequal chunk a binary search finds the first different token."""
    if chunk <= 0 or chunk % TOKEN_SIZE:
        raise ValueError("chunk must be a positive multiple of the token size")
    end = min(len(a), len(b)) // TOKEN_SIZE * TOKEN_SIZE
    start = 0
    while start < end:
        stop = min(start + chunk, end)
        if a[start:stop] != b[start:stop]:
            return _agreeing_until(a, b, start, stop) // TOKEN_SIZE
        start = stop
    return end // TOKEN_SIZE


def _agreeing_until(a: bytes, b: bytes, low: int, high: int) -> int:
    """Given a[:low] == b[:low] and a[low:high] != b[low:high], the offset of the first token
    that differs."""
    while high - low > TOKEN_SIZE:
        middle = low + (high - low) // (2 * TOKEN_SIZE) * TOKEN_SIZE
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


def file_prefix(prompt: bytes, path: Path, chunk: int = PREFIX_CHUNK) -> int:
    """How many leading tokens ``prompt`` shares with the token file at ``path``, reading the
    file only as far as the two agree."""
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            shared = common_prefix(block, prompt[done : done + len(block)], chunk)
            if shared * TOKEN_SIZE < len(block):
                return done // TOKEN_SIZE + shared
            done += len(block)
    return done // TOKEN_SIZE


def size_problem(actual: int, expected: int) -> str:
    if actual < expected:
        return f"was truncated ({actual:,} of {expected:,} bytes)"
    return f"was corrupt ({actual:,} bytes instead of {expected:,})"


def size_text(count: int) -> str:
    if count >= 1 << 30:
        return f"{count / (1 << 30):.1f} GiB"
    return f"{count / (1 << 20):.1f} MiB"


def redundant(new: Entry, others: list[Entry], shared: dict[str, int], keep: int) -> list[Entry]:
    """The states under ``new``'s key made redundant by saving ``new``, given how many tokens
    each shares with it: the non-checkpoint states that are prefixes of ``new``, and, of the
    states extending the same checkpoint as ``new``, all but the ``keep`` most recently used
    (``new`` included)."""
    prefixes = [entry for entry in others if shared[entry.id] == entry.n_tokens]
    doomed = [entry for entry in prefixes if not entry.checkpoint]
    anchor = max((entry.n_tokens for entry in prefixes if entry.checkpoint), default=0)
    if anchor and not new.checkpoint:
        siblings = [
            entry
            for entry in others
            if not entry.checkpoint and entry not in doomed and shared[entry.id] >= anchor
        ]
        siblings.sort(key=lambda entry: entry.last_used, reverse=True)
        doomed += siblings[keep - 1 :]
    return doomed
