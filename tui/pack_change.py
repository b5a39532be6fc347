"""What a new pack changes for the model: the files changed on disk, the files whose place in the
pack moved, and the tokens at the front that stay as they were (the engine keeps those; the
rest is evaluated again). Editing, leaving out or bringing back a file costs what comes after
its place; the pack changing before that place (files that imported a left-out file move to
where their own age puts them, an import cycle it held together splits, the budget reduces or
brings back other files) is what the user is told about before the prefill starts."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from repoctx.pack.fit import Pack
from repoctx.pack.pipeline import PackResult


@dataclass(frozen=True)
class PackChange:
    changed: int  # files edited, added or deleted on disk
    moved: tuple[str, ...]  # files in both packs whose order relative to the others changed
    kept_tokens: int  # tokens at the front that both packs share
    expected_tokens: int  # what stays up to the first file that changed or came in or out
    pack_tokens: int  # tokens of the new pack
    same_text: bool  # the new pack reads exactly as the old one

    @property
    def evaluated(self) -> int:
        """Tokens of the new pack to evaluate again."""
        return 0 if self.same_text else self.pack_tokens - self.kept_tokens

    @property
    def unexpected(self) -> bool:
        """The pack changes before the first file that the change itself touched."""
        return self.kept_tokens < self.expected_tokens


def compare(old: PackResult, new: PackResult) -> PackChange:
    before = {f.key: f.blob_id for f in old.snapshot.files}
    after = {f.key: f.blob_id for f in new.snapshot.files}
    known_before = before.keys() | {s.key for s in old.snapshot.skipped}
    known_after = after.keys() | {s.key for s in new.snapshot.skipped}
    edited = {key for key in before.keys() & after.keys() if before[key] != after[key]}
    changed = len(edited) + len(known_after - known_before) + len(known_before - known_after)
    old_keys = [s.file.key for s in old.pack.segments]
    new_keys = [s.file.key for s in new.pack.segments]
    touched = edited | (set(old_keys) ^ set(new_keys))
    same_header = old.pack.header == new.pack.header
    shared = _shared_segments(old.pack, new.pack) if same_header else 0
    expected = min(_first_of(old_keys, touched), _first_of(new_keys, touched))
    return PackChange(
        changed=changed,
        moved=tuple(k for k in moved_keys(old_keys, new_keys) if k not in edited),
        kept_tokens=_front_tokens(new.pack, shared) if same_header else 0,
        expected_tokens=_front_tokens(new.pack, expected) if same_header else 0,
        pack_tokens=new.pack.tokens,
        same_text=old.pack.text == new.pack.text,
    )


def _shared_segments(old: Pack, new: Pack) -> int:
    count = 0
    for a, b in zip(old.segments, new.segments, strict=False):
        if a.file.key != b.file.key or a.text != b.text:
            break
        count += 1
    return count


def _first_of(keys: Sequence[str], wanted: set[str]) -> int:
    return next((index for index, key in enumerate(keys) if key in wanted), len(keys))


def _front_tokens(pack: Pack, segments: int) -> int:
    return pack.header_tokens + sum(s.tokens for s in pack.segments[:segments])


def moved_keys(old: Sequence[str], new: Sequence[str]) -> tuple[str, ...]:
    """The keys in both sequences that are out of their old relative order: those outside a
    longest run kept in order (a longest increasing subsequence of old positions)."""
    position = {key: index for index, key in enumerate(old)}
    common = [key for key in new if key in position]
    tails: list[int] = []  # smallest old position ending a kept run of each length
    tail_at: list[int] = []  # index into ``common`` of that position
    previous: list[int] = [-1] * len(common)
    for index, key in enumerate(common):
        length = bisect.bisect_left(tails, position[key])
        if length == len(tails):
            tails.append(position[key])
            tail_at.append(index)
        else:
            tails[length] = position[key]
            tail_at[length] = index
        previous[index] = tail_at[length - 1] if length else -1
    kept: set[int] = set()
    cursor = tail_at[-1] if tail_at else -1
    while cursor >= 0:
        kept.add(cursor)
        cursor = previous[cursor]
    return tuple(key for index, key in enumerate(common) if index not in kept)


def notice(change: PackChange, conversation_tokens: int) -> str:
    """What to tell the user before a prefill that costs more than the change itself."""
    tokens = change.evaluated + conversation_tokens
    if change.moved:
        count = len(change.moved)
        files = "1 file moves" if count == 1 else f"{count:,} files move"
        why = f"the pack order changes ({files})"
    else:
        why = "files are reduced or brought back to fit the budget"
    return f"{why}: {tokens:,} tokens will be evaluated again · Escape stops"


def summary(change: PackChange) -> str:
    """``3 files changed``, for the status line after a refresh."""
    if change.changed:
        return f"{change.changed:,} file{'' if change.changed == 1 else 's'} changed"
    return "files read again"
