"""The engine: llama.cpp through llama-cpp-python, with the KV state kept in three tiers.

- live: the context's slots (native.py, slots.py), one KV stream per sequence, so that several
  conversations and repositories stay loaded and none changes another's answers;
- host: states copied out of the context into host memory (hostcache.py; page-locked on a GPU,
  so copies run at the bus's speed);
- disk: the content-keyed store (kv/store.py), written in the background (saver.py).

A prompt is evaluated from the longest prefix any tier holds (ties go to the faster tier), and
only what follows is evaluated. Nothing waits for the disk: a state worth keeping is copied to
host memory once the answer is given (``housekeep``) and written from there.
"""

from __future__ import annotations

import codecs
import os
import threading
import time

import llama_cpp  # before anything imports numpy: on CUDA builds that order crashes

from repoctx.engine.base import GenerationOptions
from repoctx.engine.hostcache import HostCache, HostState
from repoctx.engine.hostmem import HostPool, pinned_buffer_type
from repoctx.engine.image import BadImage, StateImage, restore_bytes
from repoctx.engine.native import (
    ContextShape,
    DecodeError,
    NativeContext,
    NativeModel,
    NoRoom,
    Sampler,
)
from repoctx.engine.plan import Plan, detect_memory, make_plan
from repoctx.engine.repetition import LoopGuard
from repoctx.engine.saver import Saver
from repoctx.engine.slots import Slot, Slots
from repoctx.errors import ModelError
from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    EventSink,
    ModelReady,
    Notice,
    Progress,
    Token,
    ignore_events,
)
from repoctx.kv import io as kvio
from repoctx.kv.store import KVStore, Match, StateKey
from repoctx.model.modelfile import ModelInfo
from repoctx.model.prompt import Prompt

SAVE_AFTER_TOKENS = 1024  # states with fewer new tokens are cheaper to evaluate again than to keep
# a spare lacking this many of a prompt's tokens is taken over a copy of a whole stream: the copy
# costs about as much (0.08 s at 128K tokens on an H100) as evaluating them again
SPARE_SLACK_TOKENS = 256


__all__ = ["SAVE_AFTER_TOKENS", "LlamaEngine"]


class LlamaEngine:
    """llama.cpp with the KV state in three tiers (see the module docstring). ``open`` plans
    against free memory and loads the model; ``answer`` and ``prefill`` evaluate a prompt from
    the longest prefix any tier holds; ``housekeep`` and ``flush`` move states to host memory
    and disk after the answer; ``fit`` grows the context; ``close`` finishes the saves."""

    def __init__(
        self,
        model: ModelInfo,
        plan: Plan,
        native: NativeModel,
        store: KVStore | None,
        choices: tuple[str | None, bool | None] = (None, None),
        pool: HostPool | None = None,
    ) -> None:
        self.model = model
        self._choices = choices  # the user's KV type and flash attention, for a new plan
        self.native = native
        self.store = store
        self.pool = pool or _host_pool(plan)
        self.host = HostCache(self.pool)
        self.saver = Saver(store, self.host) if store is not None else None
        self._pending: list[Slot] = []
        self._notices: list[Notice] = []
        self.spare_s = 0.0  # how long readying the latest spare took
        self._start(plan)

    def _start(self, plan: Plan) -> None:
        self.plan = plan
        self.key = state_key(self.model, plan)
        shape = ContextShape(
            plan.n_ctx, plan.n_batch, plan.n_ubatch, plan.slots, plan.kv_type, plan.flash_attn,
            os.cpu_count() or 1,
        )  # fmt: skip
        try:
            self.context = NativeContext(self.native, shape)
        except OSError as error:
            raise ModelError(_no_context(self.model, plan, error)) from error
        self.slots = Slots(plan.slots)
        layers = self.model.shape.n_layer if self.model.shape and plan.device != "CPU" else 0
        self._ready = ModelReady(
            self.model.path.name, plan.n_ctx, plan.kv_type, plan.device, plan.flash_attn, layers
        )

    @classmethod
    def open(
        cls,
        model: ModelInfo,
        n_ctx: int,
        on_event: EventSink = ignore_events,
        *,
        kv_type: str | None = None,
        flash_attn: bool | None = None,
        store: KVStore | None = None,
        persist: bool = True,
    ) -> LlamaEngine:
        """Plan against free memory, load, and report ``ModelReady``. ``persist`` False: no
        state is read from or written to disk (the live and host tiers still work)."""
        plan = make_plan(model, n_ctx, detect_memory(_gpu_offload()), kv_type, flash_attn)
        size = max(1, model.path.stat().st_size)
        on_event(Progress("load", 0, size, "bytes"))
        reported = [0.0]

        def loading(fraction: float) -> None:  # called per tensor: report each percent
            if fraction >= 1.0 or fraction - reported[0] >= 0.01:
                reported[0] = fraction
                on_event(Progress("load", int(fraction * size), size, "bytes"))

        if persist and store is None:
            store = KVStore(on_event=on_event)
        pool = _host_pool(plan)
        if persist and store is not None:  # page-locked while the model loads (see hostmem)
            pool.reserve(_latest_state_bytes(store, state_key(model, plan)))
        try:
            native = NativeModel(model.path, plan.gpu_layers, loading)
        except OSError as error:
            pool.close()
            raise ModelError(_no_context(model, plan, error)) from error
        try:
            engine = cls(
                model, plan, native, store if persist else None, (kv_type, flash_attn), pool
            )
        except BaseException:
            pool.close()
            native.close()
            raise
        on_event(engine.ready)
        return engine

    @property
    def ready(self) -> ModelReady:
        return self._ready

    def fit(self, n_ctx: int, on_event: EventSink) -> None:
        """Make room for prompts of ``n_ctx`` tokens: a bigger context on the same loaded
        model, with what the slots held kept in host memory (restored from there)."""
        if n_ctx <= self.plan.n_ctx:
            return
        plan = make_plan(self.model, n_ctx, detect_memory(_gpu_offload()), *self._choices)
        for slot in self.slots.holding():
            self._give_up(slot, force=True)
        self._keep_pending()
        self.context.close()
        if (plan.kv_type, plan.flash_attn) != (self.plan.kv_type, self.plan.flash_attn):
            self.flush(on_event)
            self.host.close()  # states of another KV type cannot be loaded any more
        self._start(plan)
        on_event(self.ready)

    # -- answering ----------------------------------------------------------------------------

    def answer(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
    ) -> AnswerDone:
        started = time.perf_counter()
        slot, outcome = self._evaluate(prompt, on_event, cancel)
        if outcome is None:
            return AnswerDone("", "cancelled", len(prompt), 0, 0.0, time.perf_counter() - started)
        done = self._generate(slot, len(prompt), options, on_event, cancel, started)
        self._mark(slot)
        return done

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        """Bring ``prompt`` into a slot (restoring what can be restored) and keep it as a
        checkpoint that conversations build on: the next question starts at once."""
        slot, outcome = self._evaluate(prompt, on_event, cancel)
        if outcome is not None:
            slot.checkpoint = True
            self._mark(slot)
        return outcome

    def _evaluate(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> tuple[Slot, CacheOutcome | None]:
        """Place the prompt in a slot, then evaluate what it lacks; no outcome when cancelled
        (the slot keeps what was evaluated, to be saved as a checkpoint)."""
        ids = prompt.ids
        if len(ids) + 1 >= self.plan.n_ctx:
            raise ModelError(
                f"the prompt has {len(ids):,} tokens and the context {self.plan.n_ctx:,}; "
                "start a new conversation or pass a smaller --budget"
            )
        self._pass_notices(on_event)
        if self.store is not None:
            self.store.on_event = on_event  # what the store finds concerns this request
        slot, kept, source, seconds = self._place(ids, on_event)
        slot.repositories = prompt.repositories or slot.repositories
        slot.prefix, slot.spare = prompt.prefix_tokens, False
        evaluated = self._prefill(slot, ids, kept, on_event, cancel)
        if evaluated < len(ids) - kept:
            return slot, None
        outcome = CacheOutcome(source, kept, evaluated, seconds, len(ids))
        on_event(outcome)
        return slot, outcome

    def _place(self, ids: list[int], on_event: EventSink) -> tuple[Slot, int, str, float]:
        """The slot to evaluate ``ids`` in and how many of them it holds already: from the
        tier with the longest prefix; of equal ones, the live, then host memory, then disk."""
        limit = len(ids) - 1  # one token is always evaluated, for the logits
        live, live_shared = self.slots.best(ids)
        state, host_shared = self.host.best(ids)
        match = self.store.find(self.key, ids, max_tokens=self.plan.n_ctx) if self.store else None
        live_shared, host_shared = min(live_shared, limit), min(host_shared, limit)
        disk_shared = min(match.prefix, limit) if match else 0
        started = time.perf_counter()
        if state is not None and host_shared > live_shared and host_shared >= disk_shared:
            slot = self._vacant(besides=live)
            if self._load_host(slot, state, host_shared):
                return slot, host_shared, "host", time.perf_counter() - started
        if match is not None and disk_shared > max(live_shared, host_shared):
            slot = self._vacant(besides=live)
            kept = self._load_disk(slot, match, on_event)
            if kept:
                return slot, kept, "disk", time.perf_counter() - started
        live, live_shared = self.slots.best(ids)  # a failed load may have taken its slot
        live_shared = min(live_shared, limit)
        if live is not None and live_shared:
            slot, kept = self._from_live(live, live_shared, ids)
            return slot, kept, "memory", 0.0
        slot = self._vacant()
        self._truncate(slot, 0)
        return slot, 0, "none", 0.0

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
        self.context.copy(slot.seq, target.seq)
        target.tokens, target.stored, target.label = list(slot.tokens), slot.stored, slot.label
        target.repositories = slot.repositories
        target.checkpoint = False
        target.touch()
        self._truncate(target, shared)
        return target

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
        slot.tokens, slot.stored, slot.label = list(state.tokens), len(state.tokens), state.label
        slot.checkpoint, slot.repositories = state.checkpoint, state.repositories
        self._truncate(slot, keep)
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
        state = self.host.add(
            HostState(
                tokens, image, entry.label, entry.checkpoint, True,
                repositories=entry.repositories,
            )
        )  # fmt: skip
        slot.tokens, slot.stored, slot.label = list(state.tokens), len(tokens), entry.label
        slot.checkpoint, slot.repositories = entry.checkpoint, entry.repositories
        self._truncate(slot, kept)
        return kept

    def _truncate(self, slot: Slot, keep: int) -> None:
        """Drop positions ``keep``.. of ``slot``."""
        if keep < len(slot.tokens) or keep == 0:
            self.context.remove(slot.seq, keep)
        slot.keep(keep)

    def _prefill(
        self, slot: Slot, ids: list[int], start: int, on_event: EventSink, cancel: threading.Event
    ) -> int:
        """Evaluate ``ids[start:]`` into ``slot`` in batches with progress; stopped (cancel,
        Ctrl-C), the slot keeps what was evaluated and is saved as a checkpoint. Returns the
        tokens evaluated.

        The last token is evaluated on its own, as it is after any restore (which keeps all
        but the last token): the logits of a batch depend on its shape, so this is what makes
        a greedy answer the same from a fresh prefill and from every tier."""
        total = len(ids) - start
        position = start
        last = len(ids) - 1
        on_event(Progress("prefill", 0, total, "tokens"))
        try:
            while position < len(ids) and not cancel.is_set():
                end = len(ids) if position == last else min(last, position + self.plan.n_batch)
                self._decode(slot, ids[position:end], logits=end == len(ids))
                position = end
                on_event(Progress("prefill", position - start, total, "tokens"))
        finally:
            if position < len(ids):
                self._mark(slot)
        return position - start

    def _decode(self, slot: Slot, ids: list[int], logits: bool) -> None:
        try:
            self.context.decode(ids, slot.seq, len(slot.tokens), logits)
        except NoRoom as error:
            raise ModelError(
                f"the context of {self.plan.n_ctx:,} tokens is full; start a new conversation "
                "or pass a smaller --budget"
            ) from error
        slot.tokens.extend(ids)

    def _generate(
        self,
        slot: Slot,
        prompt_tokens: int,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
        started: float,
    ) -> AnswerDone:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sampler = Sampler(
            options.temperature, options.seed, n_vocab=self.native.n_vocab,
            repeat_penalty=options.repeat_penalty, repeat_last_n=options.repeat_last_n,
        )  # fmt: skip
        loop = LoopGuard()
        pieces: list[str] = []
        first = 0.0
        reason = "length"
        try:
            for _ in range(options.max_tokens):
                if cancel.is_set():
                    reason = "cancelled"
                    break
                if len(slot.tokens) + 1 >= self.plan.n_ctx:
                    break
                token = sampler.sample(self.context)
                if self.native.is_end(token):
                    reason = "end"
                    break
                text = decoder.decode(self.native.piece(token))
                if loop.add(token, text):
                    reason = "repetition"
                    break
                if text:
                    first = first or time.perf_counter() - started
                    pieces.append(text)
                    on_event(Token(text))
                self._decode(slot, [token], logits=True)
        finally:
            sampler.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            on_event(Token(tail))
        generated = len(slot.tokens) - prompt_tokens
        total = time.perf_counter() - started
        return AnswerDone("".join(pieces), reason, prompt_tokens, generated, first, total)

    # -- keeping states -----------------------------------------------------------------------

    def _mark(self, slot: Slot) -> None:
        """Save ``slot`` once the request is over, if it holds enough new tokens."""
        slot.label = f"{self.model.path.name}: {len(slot.tokens):,} tokens"
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
        label = f"{self.model.path.name}: {len(slot.tokens):,} tokens"
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
        self.context.copy(source.seq, target.seq)
        self.context.remove(target.seq, length)
        try:
            self.context.decode(source.tokens[length : length + 1], target.seq, length, False)
        except (NoRoom, DecodeError):
            self.context.remove(target.seq)  # no spare this time; the slot stays free
            return
        self.context.remove(target.seq, length)
        target.tokens, target.stored, target.prefix = source.tokens[:length], length, length
        target.label = f"{self.model.path.name}: {length:,} tokens"
        target.repositories, target.checkpoint, target.spare = source.repositories, False, True
        target.touch()
        self.spare_s = time.perf_counter() - started

    def flush(self, on_event: EventSink) -> None:
        self._keep_pending()
        if self.saver is not None:
            self.saver.wait(on_event)
        self._pass_notices(on_event)

    def _pass_notices(self, on_event: EventSink) -> None:
        notices = self._notices + (self.saver.take_notices() if self.saver else [])
        self._notices = []
        for notice in notices:
            on_event(notice)

    def close(self, on_event: EventSink = ignore_events) -> None:
        """Finish the saves (an interrupt drops the one in progress, cleanly), then free
        everything."""
        try:
            self.flush(on_event)
        except KeyboardInterrupt:
            if self.saver is not None:
                self.saver.abort()
            raise
        finally:
            if self.saver is not None:
                self.saver.close(ignore_events)
            self.host.close()
            self.pool.close()
            self.context.close()
            self.native.close()


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


def state_key(model: ModelInfo, plan: Plan) -> StateKey:
    """What a saved state must match besides its tokens to be loaded under ``plan``."""
    version = f"llama-cpp-python {llama_cpp.__version__}"
    return StateKey(model.fingerprint, plan.kv_type, plan.flash_attn, version)


def _host_pool(plan: Plan) -> HostPool:
    return HostPool(plan.host_bytes, pinned_buffer_type() if plan.device != "CPU" else None)


def _latest_state_bytes(store: KVStore, key: StateKey) -> int:
    """The buffer the most recently used state under ``key`` is read into; 0 if none."""
    latest = next((entry for entry in store.entries() if entry.key == key), None)
    return restore_bytes(latest.size) if latest is not None else 0


def _gpu_offload() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def _no_context(model: ModelInfo, plan: Plan, error: Exception) -> str:
    return (
        f"llama.cpp could not load {model.path.name} with {plan.slots} x {plan.n_ctx:,}-token "
        f"{plan.kv_type} contexts on the {plan.device} ({error}); pass a smaller --budget, "
        "--kv-type q4_0, or free memory"
    )
