"""The live tier: which tokens each sequence of the context holds.

A context has a fixed number of slots (llama.cpp sequences, each with a KV stream of its own).
A prompt goes to the slot that shares the longest prefix with it; when another conversation
holds that prefix, the prompt gets a copy in a free slot (a device-side copy of the stream)
rather than taking the other conversation's cells away. llama.cpp copies a stream whole, at the
next decode (9 GB at 128K tokens), so while the engine is idle a free slot is made a *spare*: a
copy of the latest conversation's pack, which the next new question on that pack starts from.
With no slot free, a spare is given up first, then the least recently used slot, after its
state is copied to host memory when that is worth it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from repoctx.model.prompt import common_prefix

_clock = itertools.count(1)


@dataclass(eq=False)
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)
    used: int = 0
    stored: int = 0  # leading tokens whose state is kept in another tier (host or disk)
    label: str = ""  # what the tokens are, for the stores: "model: 123,456 tokens"
    checkpoint: bool = False  # holds a prefix (the pack) meant to outlive conversations
    repositories: tuple[str, ...] = ()  # the roots its prompt was packed from
    prefix: int = 0  # leading tokens its last prompt shares with others (the pack)
    spare: bool = False  # a copy of another slot's pack, waiting for a new conversation

    def touch(self) -> None:
        self.used = next(_clock)

    def unsaved(self) -> int:
        """Tokens held here and nowhere else."""
        return len(self.tokens) - self.stored

    def keep(self, count: int) -> None:
        """Forget all but the first ``count`` tokens (their cells are dropped by the caller)."""
        del self.tokens[count:]
        self.stored = min(self.stored, count)
        if not count:
            self.spare = False  # an empty slot is free, not a spare


class Slots:
    def __init__(self, count: int) -> None:
        self.all = [Slot(seq) for seq in range(count)]

    def best(self, ids: Sequence[int]) -> tuple[Slot | None, int]:
        """The slot sharing the most leading tokens with ``ids`` (ties: the shortest, then the
        most recently used), and that count."""
        best: Slot | None = None
        rank = (0, 0, 0)
        prompt = list(ids)
        for slot in self.all:
            if not slot.tokens:
                continue
            shared = common_prefix(slot.tokens, prompt)
            candidate = (shared, -len(slot.tokens), slot.used)
            if shared and candidate > rank:
                best, rank = slot, candidate
        return best, rank[0]

    def free(self) -> Slot | None:
        return next((slot for slot in self.all if not slot.tokens), None)

    def least_recent(self, besides: Slot | None = None) -> Slot | None:
        """The slot to give up: a spare first, else the least recently used."""
        taken = [slot for slot in self.all if slot.tokens and slot is not besides]
        return min(taken, key=lambda slot: (not slot.spare, slot.used), default=None)

    def spare_for(self, ids: Sequence[int], at_least: int) -> Slot | None:
        """A spare holding ``at_least`` or more leading tokens of ``ids``, and nothing else."""
        for slot in self.all:
            held = len(slot.tokens)
            if slot.spare and at_least <= held < len(ids) and slot.tokens == list(ids[:held]):
                return slot
        return None

    def wanting_a_spare(self, at_least: int) -> tuple[Slot, int] | None:
        """The most recently used conversation and the length of its pack, when that pack
        (``at_least`` tokens or more, kept in another tier too) is worth a spare: the slot
        holds more than the pack, and no other slot holds just the pack."""
        taken = [slot for slot in self.all if slot.tokens and not slot.spare]
        latest = max(taken, key=lambda slot: slot.used, default=None)
        if latest is None:
            return None
        length = min(latest.prefix, latest.stored)
        if not at_least <= length < len(latest.tokens):
            return None
        pack = latest.tokens[:length]
        if any(slot.tokens == pack for slot in self.all):
            return None
        return latest, length

    def holding(self) -> list[Slot]:
        return [slot for slot in self.all if slot.tokens]
