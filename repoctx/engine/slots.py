"""The live tier: which tokens each sequence of the context holds.

A context has a fixed number of slots (llama.cpp sequences, each with a KV stream of its own).
A prompt goes to the slot that shares the longest prefix with it; when another conversation
holds that prefix, the prompt gets a copy in a free slot (a device-side copy of the stream)
rather than taking the other conversation's cells away. With no slot free, the least recently
used one is given up, after its state is copied to host memory when that is worth it.
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

    def touch(self) -> None:
        self.used = next(_clock)

    def unsaved(self) -> int:
        """Tokens held here and nowhere else."""
        return len(self.tokens) - self.stored

    def keep(self, count: int) -> None:
        """Forget all but the first ``count`` tokens (their cells are dropped by the caller)."""
        del self.tokens[count:]
        self.stored = min(self.stored, count)


class Slots:
    def __init__(self, count: int) -> None:
        self.all = [Slot(seq) for seq in range(count)]

    def best(self, ids: Sequence[int]) -> tuple[Slot | None, int]:
        """The slot sharing the most leading tokens with ``ids`` (ties: the shortest, then the
        most recently used), and that count."""
        best: Slot | None = None
        rank = (0, 0, 0)
        for slot in self.all:
            if not slot.tokens:
                continue
            shared = common_prefix(slot.tokens, list(ids))
            candidate = (shared, -len(slot.tokens), slot.used)
            if shared and candidate > rank:
                best, rank = slot, candidate
        return best, rank[0]

    def free(self) -> Slot | None:
        return next((slot for slot in self.all if not slot.tokens), None)

    def least_recent(self, besides: Slot | None = None) -> Slot | None:
        taken = [slot for slot in self.all if slot.tokens and slot is not besides]
        return min(taken, key=lambda slot: slot.used, default=None)

    def holding(self) -> list[Slot]:
        return [slot for slot in self.all if slot.tokens]
