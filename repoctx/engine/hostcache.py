"""The host tier: sequence states in host memory (page-locked with a GPU), between the live
context and the disk. A state lands here when a slot is given up, when it is read from disk
(the next restore of it is then a copy from memory), and on its way to the disk: the saver
writes it from here. States on their way to disk are never dropped; the others go least
recently used first once the tier holds more than its cap.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from repoctx.engine.hostmem import HostPool
from repoctx.engine.image import StateImage
from repoctx.model.prompt import common_prefix

_clock = itertools.count(1)


@dataclass(eq=False)
class HostState:
    tokens: list[int]
    image: StateImage
    label: str
    checkpoint: bool = False
    settled: bool = False  # on disk, or its save failed: the tier may drop it
    writing: bool = False  # the saver is reading its image
    used: int = 0
    repositories: tuple[str, ...] = ()  # the roots its prompt was packed from

    @property
    def size(self) -> int:
        return self.image.buffer.size


class HostCache:
    """Used by the engine's thread. The saver reads images from its own, between
    ``begin_write`` and ``end_write``; only settled states that it is not writing are dropped,
    and only by the engine's thread, so nothing is freed under it."""

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self._states: list[HostState] = []
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(state.size for state in self._states)

    def states(self) -> list[HostState]:
        with self._lock:
            return list(self._states)

    def best(self, ids: list[int]) -> tuple[HostState | None, int]:
        """The state sharing the most leading tokens with ``ids`` (ties: the shortest)."""
        best: HostState | None = None
        rank = (0, 0)
        for state in self.states():
            shared = common_prefix(state.tokens, ids)
            if shared and (shared, -len(state.tokens)) > rank:
                best, rank = state, (shared, -len(state.tokens))
        return best, rank[0]

    def covering(self, tokens: list[int]) -> int:
        """The most leading ``tokens`` that one state here holds."""
        return max((common_prefix(s.tokens, tokens) for s in self.states()), default=0)

    def add(self, state: HostState) -> HostState:
        """Keep ``state`` (or, when a state of the same tokens is here already, that one: the
        new image is released), then drop the least recently used states on disk while over
        the cap. Returns the state kept."""
        with self._lock:
            same = next((s for s in self._states if s.tokens == state.tokens), None)
            if same is None:
                self._states.append(state)
        if same is not None:
            same.settled = same.settled or state.settled
            same.repositories = same.repositories or state.repositories
            self._drop(state)
            state = same
        state.used = next(_clock)
        self.trim()
        return state

    def touch(self, state: HostState) -> None:
        state.used = next(_clock)

    def begin_write(self, state: HostState) -> bool:
        """The saver takes ``state``; False when there is nothing to write."""
        with self._lock:
            if state.settled:
                return False
            state.writing = True
            return True

    def end_write(self, state: HostState) -> None:
        with self._lock:
            state.writing = False
            state.settled = True  # saved, or failed (reported): no reason to hold it longer

    def trim(self) -> None:
        with self._lock:
            total = sum(s.size for s in self._states)
            victims = []
            for state in sorted(self._states, key=lambda s: s.used):
                if total <= self.pool.cap_bytes:
                    break
                if state.settled and not state.writing:
                    victims.append(state)
                    total -= state.size
            self._states = [s for s in self._states if s not in victims]
        for state in victims:
            self._drop(state)

    def _drop(self, state: HostState) -> None:
        state.image.release(self.pool)

    def close(self) -> None:
        with self._lock:
            states, self._states = self._states, []
        for state in states:
            self._drop(state)
