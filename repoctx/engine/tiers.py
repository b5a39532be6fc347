"""The engine's tiers: where a prompt's prefix comes from (a live slot, a state in host memory,
a state on disk) and where states go once an answer is out (host memory, then the disk in the
background), with a spare slot readied while idle. ``LlamaEngine`` (llama.py) builds on it.
"""

from __future__ import annotations

import threading
import time

from repoctx.engine.hostcache import HostCache, HostState
from repoctx.engine.hostmem import HostPool
from repoctx.engine.image import BadImage, StateImage
from repoctx.engine.native import DecodeError, NativeContext, NoRoom
from repoctx.engine.plan import Plan
from repoctx.engine.saver import Saver
from repoctx.engine.slots import Slot, Slots
from repoctx.events import EventSink, Notice, Progress
from repoctx.kv import io as kvio
from repoctx.kv.store import KVStore, Match, StateKey
from repoctx.model.modelfile import ModelInfo

SAVE_AFTER_TOKENS = 1024  # states with fewer new tokens are cheaper to evaluate again than to keep
# a spare lacking this many of a prompt's tokens is taken over a copy of a whole stream: the copy
# costs about as much (0.08 s at 128K tokens on an H100) as evaluating them again
SPARE_SLACK_TOKENS = 256


class Tiers:
    """Placing prompts in slots and moving states between the tiers; the attributes are the
    engine's (set up by ``LlamaEngine``)."""

    model: ModelInfo
    plan: Plan
    key: StateKey
    context: NativeContext
    slots: Slots
    host: HostCache
    pool: HostPool
    store: KVStore | None
    saver: Saver | None
    spare_s: float  # how long readying the latest spare took
    _pending: list[Slot]  # slots answered since the last housekeeping
    _notices: list[Notice]  # for the next request

    def _place(self, ids: list[int], on_event: EventSink) -> tuple[Slot, int, str, float]:
        """The slot to evaluate ``ids`` in and how many of them it holds already: from the
        tier with the longest prefix; of equal ones, the live, then host memory, then disk."""
        limit = len(ids) - 1  # one token is always evaluated, for the logits
        live, live_shared = self._best_live(ids, limit)
        state, host_shared, match = None, 0, None
        if live_shared < limit:  # else no other tier can hold more
            state, host_shared = self.host.best(ids)
            host_shared = min(host_shared, limit)
            match = (
                self.store.find(self.key, ids, max_tokens=self.plan.n_ctx) if self.store else None
            )
        disk_shared = min(match.prefix, limit) if match else 0
        started = time.perf_counter()
        if state is not None and host_shared > live_shared and host_shared >= disk_shared:
            slot = self._vacant(besides=live)
            if self._load_host(slot, state, host_shared):
                return slot, host_shared, "host", time.perf_counter() - started
            live, live_shared = self._best_live(ids, limit)  # a failed load may have taken it
        if match is not None and disk_shared > max(live_shared, host_shared):
            slot = self._vacant(besides=live)
            kept = self._load_disk(slot, match, on_event)
            if kept:
                return slot, kept, "disk", time.perf_counter() - started
            live, live_shared = self._best_live(ids, limit)  # a failed load may have taken it
        if live is not None and live_shared:
            slot, kept = self._from_live(live, live_shared, ids)
            return slot, kept, "memory", 0.0
        slot = self._vacant()
        self._truncate(slot, 0)
        return slot, 0, "none", 0.0

    def _best_live(self, ids: list[int], limit: int) -> tuple[Slot | None, int]:
        live, shared = self.slots.best(ids)
        return live, min(shared, limit)

    def _from_live(self, slot: Slot, shared: int, ids: list[int]) -> tuple[Slot, int]:
        """A slot for ``ids``, of which ``slot`` holds the first ``shared``, and how many it
        holds: ``slot`` itself when the prompt continues it; else a spare that lacks only a
        few of them; else a copy in a free slot, so that the other conversation keeps its
        cells. With no slot free, ``slot`` itself when what it holds beyond is cheap to
        evaluate again, else a copy in the least recently used slot."""
        slot.touch()
        if slot.spare:  # nobody needs its cells
            self._truncate(slot, shared)
            return slot, shared
        spare = None
        if shared < len(slot.tokens):
            spare = self.slots.spare_for(ids, shared - SPARE_SLACK_TOKENS)
        if spare is not None:
            spare.touch()
            return spare, len(spare.tokens)
        return self._branch(slot, shared), shared

    def _branch(self, slot: Slot, shared: int) -> Slot:
        lost = len(slot.tokens) - max(shared, slot.stored)
        target = self.slots.free() if shared < len(slot.tokens) else None
        if target is None and (shared == len(slot.tokens) or lost < SAVE_AFTER_TOKENS):
            self._truncate(slot, shared)
            return slot
        if target is None:
            victim = self.slots.least_recent(besides=slot)
            if victim is None:
                self._give_up(slot, force=True, drop=False)
                self._truncate(slot, shared)
                return slot
            self._give_up(victim)
            target = victim
        self._copy_slot(slot, target, shared)
        return target

    def _copy_slot(self, source: Slot, target: Slot, keep: int) -> None:
        """Make ``target`` hold the first ``keep`` tokens of ``source`` (llama.cpp copies the
        whole stream at the next decode)."""
        self.context.copy(source.seq, target.seq)
        target.tokens, target.stored = list(source.tokens), source.stored
        target.label, target.repositories = source.label, source.repositories
        target.checkpoint = False
        target.touch()
        self._truncate(target, keep)

    def _vacant(self, besides: Slot | None = None) -> Slot:
        """An empty slot, giving up the least recently used one (never ``besides``) if none
        is free."""
        slot = self.slots.free()
        if slot is None:
            slot = self.slots.least_recent(besides=besides) or self.slots.least_recent()
            assert slot is not None
            self._give_up(slot)
        slot.touch()
        return slot

    def _give_up(self, slot: Slot, force: bool = False, drop: bool = True) -> None:
        """Copy ``slot``'s state to host memory when it holds enough that no other tier has
        (``force``: whenever it holds anything new), then (``drop``) empty it."""
        covered = max(slot.stored, self.host.covering(slot.tokens))
        if slot.tokens and len(slot.tokens) - covered >= (1 if force else SAVE_AFTER_TOKENS):
            self._snapshot(slot)
        if slot in self._pending:
            self._pending.remove(slot)
        if drop:
            self._truncate(slot, 0)
            slot.checkpoint = False

    def _load_host(self, slot: Slot, state: HostState, keep: int) -> bool:
        self._truncate(slot, 0)
        if not state.image.load_into(self.context, slot.seq):
            self.context.remove(slot.seq)
            return False
        self.host.touch(state)
        self._hold(slot, state, keep)
        return True

    def _load_disk(self, slot: Slot, match: Match, on_event: EventSink) -> int:
        """Read the matched state into host memory (verifying it as it is read), load it into
        ``slot`` and keep it in the host tier; the tokens ``slot`` may keep, 0 on failure."""
        assert self.store is not None
        entry = match.entry
        self._truncate(slot, 0)
        try:
            image = StateImage.empty(entry.size, self.pool)
        except MemoryError:
            return 0
        progress = _Moved(on_event, "restore", entry.size)
        kept = self.store.load(
            match, lambda fd, size: kvio.read_state(fd, image.view, on_chunk=progress)
        )
        tokens = self.store.tokens(entry) if kept else None
        if tokens is None or not image.load_into(self.context, slot.seq):
            if tokens is not None:
                self.store.reject(entry, "llama.cpp refused it")
            self.context.remove(slot.seq)
            image.release(self.pool)
            return 0
        loaded = HostState(
            tokens, image, entry.label, entry.checkpoint, True, repositories=entry.repositories
        )
        self.host.add(loaded)
        self._hold(slot, loaded, kept)
        return kept

    def _hold(self, slot: Slot, state: HostState, keep: int) -> None:
        """``slot`` holds the first ``keep`` tokens of ``state``, just loaded into it."""
        slot.tokens, slot.stored, slot.label = list(state.tokens), len(state.tokens), state.label
        slot.checkpoint, slot.repositories = state.checkpoint, state.repositories
        self._truncate(slot, keep)

    def _label(self, count: int) -> str:
        """What a state is, for the stores' listings."""
        return f"{self.model.path.name}: {count:,} tokens"

    def _truncate(self, slot: Slot, keep: int) -> None:
        """Drop positions ``keep``.. of ``slot``."""
        if keep < len(slot.tokens) or keep == 0:
            self.context.remove(slot.seq, keep)
        slot.keep(keep)

    def _mark(self, slot: Slot) -> None:
        """Save ``slot`` once the request is over, if it holds enough new tokens."""
        slot.label = self._label(len(slot.tokens))
        worth = self.saver is not None and slot.unsaved() >= SAVE_AFTER_TOKENS
        if worth and slot not in self._pending:
            self._pending.append(slot)

    def _snapshot(self, slot: Slot) -> None:
        """Copy ``slot``'s state into the host tier and, with a store, queue it for the disk."""
        try:
            image = StateImage.capture(self.context, slot.seq, self.pool)
        except (MemoryError, BadImage) as error:
            self.host.trim()
            self._notices.append(Notice(f"the KV state could not be kept in memory ({error})"))
            return
        label = self._label(len(slot.tokens))
        fresh = HostState(
            list(slot.tokens), image, label, slot.checkpoint, self.saver is None,
            repositories=slot.repositories,
        )  # fmt: skip
        state = self.host.add(fresh)
        slot.stored = len(slot.tokens)
        if self.saver is not None and state is fresh:
            self.saver.submit(state, self.key)

    def housekeep(self) -> None:
        """The work after an answer: copy the states of the requests just answered to host
        memory and queue them for the disk, drop host states beyond the cap, ready a spare."""
        self._keep_pending()
        self._ready_spare()

    def _keep_pending(self) -> None:
        pending, self._pending = self._pending, []
        for slot in pending:
            if slot.tokens and slot.unsaved() >= SAVE_AFTER_TOKENS:
                self._snapshot(slot)
        self.host.trim()

    def _ready_spare(self) -> None:
        """Copy the latest conversation's pack into a free slot, so that a new question on the
        pack does not wait for llama.cpp to copy a whole KV stream (it does so at the next
        decode: one token is decoded past the pack for it, then dropped)."""
        target = self.slots.free()
        wanting = self.slots.wanting_a_spare(SAVE_AFTER_TOKENS) if target else None
        if target is None or wanting is None:
            return
        source, length = wanting
        started = time.perf_counter()
        self._copy_slot(source, target, length)
        try:
            self.context.decode(source.tokens[length : length + 1], target.seq, length, False)
        except (NoRoom, DecodeError):
            self._truncate(target, 0)  # no spare this time; the slot stays free
            return
        self.context.remove(target.seq, length)
        target.prefix, target.spare, target.label = length, True, self._label(length)
        self.spare_s = time.perf_counter() - started


class _Moved:
    """Progress of bytes moved by kvio's threads, reported one at a time."""

    def __init__(self, on_event: EventSink, stage: str, total: int) -> None:
        self.on_event, self.stage, self.total = on_event, stage, total
        self.done = 0
        self._lock = threading.Lock()
        on_event(Progress(stage, 0, total, "bytes"))

    def __call__(self, count: int) -> None:
        with self._lock:
            self.done += count
            self.on_event(Progress(self.stage, self.done, self.total, "bytes"))
