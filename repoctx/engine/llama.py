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
from repoctx.engine.hostcache import HostCache
from repoctx.engine.hostmem import HostPool, pinned_buffer_type
from repoctx.engine.image import restore_bytes
from repoctx.engine.native import (
    ContextShape,
    NativeContext,
    NativeModel,
    NoRoom,
    Sampler,
)
from repoctx.engine.plan import Plan, detect_memory, make_plan
from repoctx.engine.repetition import LoopGuard
from repoctx.engine.saver import Saver
from repoctx.engine.slots import Slot, Slots
from repoctx.engine.tiers import SAVE_AFTER_TOKENS, Tiers
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
from repoctx.kv.store import KVStore, StateKey
from repoctx.model.modelfile import ModelInfo
from repoctx.model.prompt import Prompt

__all__ = ["SAVE_AFTER_TOKENS", "LlamaEngine"]


class LlamaEngine(Tiers):
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
