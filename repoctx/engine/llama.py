"""The engine: llama.cpp through llama-cpp-python, with the KV state kept on disk by content.

A prompt is evaluated from the longest prefix already known: the live context of this process,
else the stored state (``repoctx.kvstore``) sharing the most leading tokens with it. Only what
follows is evaluated; after a large prefill, the state is saved for the next process.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from pathlib import Path

import llama_cpp  # before anything imports numpy: on CUDA builds that order crashes

from repoctx.engine.base import GenerationOptions
from repoctx.engine.plan import Plan, detect_memory, make_plan
from repoctx.errors import ModelError, StateLoadError
from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    EventSink,
    ModelReady,
    Progress,
    Token,
    ignore_events,
)
from repoctx.kvstore import KVStore, StateKey
from repoctx.modelfile import ModelInfo
from repoctx.prompt import Prompt, common_prefix
from repoctx.tokens import quiet_llama_cpp

GGML_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
SAVE_AFTER_TOKENS = 1024  # prefills shorter than this are cheaper to redo than to store


class LlamaEngine:
    def __init__(self, model: ModelInfo, plan: Plan, llm: llama_cpp.Llama, store: KVStore | None):
        self.model = model
        self.plan = plan
        self.llm = llm
        self.store = store
        self.key = StateKey(
            model.fingerprint,
            plan.kv_type,
            plan.flash_attn,
            f"llama-cpp-python {llama_cpp.__version__}",
        )
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._ready = ModelReady(
            model.path.name, plan.n_ctx, plan.kv_type, plan.device, plan.flash_attn,
            model.shape.n_layer if model.shape and plan.device != "CPU" else 0,
        )  # fmt: skip

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
        state is read from or written to disk (the live context is still reused)."""
        quiet_llama_cpp(llama_cpp)
        memory = detect_memory(bool(llama_cpp.llama_supports_gpu_offload()))
        plan = make_plan(model, n_ctx, memory, kv_type, flash_attn)
        on_event(Progress("load", 0, 1, "model"))
        llm = _load(model, plan)
        on_event(Progress("load", 1, 1, "model"))
        if persist and store is None:
            store = KVStore(on_event=on_event)
        engine = cls(model, plan, llm, store if persist else None)
        on_event(engine.ready)
        return engine

    @property
    def ready(self) -> ModelReady:
        return self._ready

    # -- answering ----------------------------------------------------------------------------

    def answer(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
    ) -> AnswerDone:
        started = time.perf_counter()
        outcome = self._evaluate(prompt.ids, on_event, cancel)
        if outcome is None:
            return AnswerDone("", "cancelled", len(prompt), 0, 0.0, time.perf_counter() - started)
        done = self._generate(len(prompt), options, on_event, cancel, started)
        if outcome.evaluated_tokens >= SAVE_AFTER_TOKENS:
            self._save(on_event)
        return done

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        """Bring ``prompt`` into the context (restoring what can be restored) and save it
        when that took a long prefill: the next question then starts at once."""
        outcome = self._evaluate(prompt.ids, on_event, cancel)
        if outcome is not None and outcome.evaluated_tokens >= SAVE_AFTER_TOKENS:
            self._save(on_event)
        return outcome

    def _evaluate(
        self, ids: list[int], on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        """Restore, then evaluate the rest of ``ids``; None when cancelled (a checkpoint of
        a long prefill is kept)."""
        if len(ids) + 1 >= self.plan.n_ctx:
            raise ModelError(
                f"the prompt has {len(ids):,} tokens and the context {self.plan.n_ctx:,}; "
                "start a new conversation or pass a smaller --budget"
            )
        if self.store is not None:
            self.store.on_event = on_event  # what the store finds concerns this answer
        source, kept, restore_s = self._restore(ids, on_event)
        evaluated = self._prefill(ids, kept, on_event, cancel)
        if evaluated < len(ids) - kept:
            return None
        outcome = CacheOutcome(source, kept, evaluated, restore_s, len(ids))
        on_event(outcome)
        return outcome

    def _live_prefix(self, ids: list[int]) -> int:
        live = self.llm.input_ids[: self.llm.n_tokens].tolist()
        return common_prefix(live, ids)

    def _restore(self, ids: list[int], on_event: EventSink) -> tuple[str, int, float]:
        """Keep the live context's prefix, or restore a longer one from disk."""
        live = min(self._live_prefix(ids), len(ids) - 1)
        match = self.store.find(self.key, ids, max_tokens=self.plan.n_ctx) if self.store else None
        if self.store is None or match is None or min(match.prefix, len(ids) - 1) <= live:
            self._truncate(live)
            return ("memory" if live else "none"), live, 0.0
        started = time.perf_counter()
        on_event(Progress("restore", 0, match.entry.n_tokens, "tokens"))
        self._truncate(0)
        kept = self.store.load(match, self._read_state)
        self._truncate(kept, ids)
        on_event(Progress("restore", match.entry.n_tokens, match.entry.n_tokens, "tokens"))
        return ("disk" if kept else "none"), kept, time.perf_counter() - started

    def _read_state(self, path: Path) -> int:
        capacity = self.plan.n_ctx
        tokens = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        size = llama_cpp.llama_state_seq_load_file(
            self.llm.ctx, os.fsencode(path), 0, tokens, capacity, ctypes.byref(count)
        )
        if size == 0:
            raise StateLoadError("llama.cpp rejected the state file")
        return int(count.value)

    def _truncate(self, keep: int, ids: list[int] | None = None) -> None:
        """Drop every position from ``keep`` on; ``ids`` are the tokens the kept cells hold."""
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        if keep == 0:
            llama_cpp.llama_memory_clear(memory, True)
        else:
            llama_cpp.llama_memory_seq_rm(memory, -1, keep, -1)
        if ids is not None and keep:
            self.llm.input_ids[:keep] = ids[:keep]
        self.llm.n_tokens = keep

    def _prefill(
        self, ids: list[int], start: int, on_event: EventSink, cancel: threading.Event
    ) -> int:
        """Evaluate ``ids[start:]`` in batches with progress; on cancel or Ctrl-C, save what
        was evaluated so that the next run resumes there. Returns the tokens evaluated."""
        total = len(ids) - start
        position = start
        on_event(Progress("prefill", 0, total, "tokens"))
        try:
            while position < len(ids):
                if cancel.is_set():
                    self._checkpoint(position - start, on_event)
                    return position - start
                end = min(len(ids), position + self.plan.n_batch)
                self.llm.eval(ids[position:end])
                position = end
                on_event(Progress("prefill", position - start, total, "tokens"))
        except KeyboardInterrupt:
            self._checkpoint(self.llm.n_tokens - start, on_event)
            raise
        return total

    def _checkpoint(self, evaluated: int, on_event: EventSink) -> None:
        if evaluated >= SAVE_AFTER_TOKENS:
            self._truncate(self.llm.n_tokens)
            self._save(on_event)

    def _generate(
        self,
        prompt_tokens: int,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
        started: float,
    ) -> AnswerDone:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        first = 0.0
        reason = "length"
        for _ in range(options.max_tokens):
            if cancel.is_set():
                reason = "cancelled"
                break
            if self.llm.n_tokens + 1 >= self.plan.n_ctx:
                break
            token = self.llm.sample(temp=options.temperature, repeat_penalty=1.0)
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                reason = "end"
                break
            text = decoder.decode(self._piece(token))
            if text:
                first = first or time.perf_counter() - started
                pieces.append(text)
                on_event(Token(text))
            self.llm.eval([token])
        tail = decoder.decode(b"", final=True)
        if tail:
            pieces.append(tail)
            on_event(Token(tail))
        generated = self.llm.n_tokens - prompt_tokens
        answer = "".join(pieces)
        return AnswerDone(
            answer, reason, prompt_tokens, generated, first, time.perf_counter() - started
        )

    def _piece(self, token: int) -> bytes:
        """The bytes of one generated token (llama-cpp-python's helper pads them to 32)."""
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if length >= 0:
                return buffer.raw[:length]
            size = -length

    def _save(self, on_event: EventSink) -> None:
        if self.store is None or self.llm.n_tokens == 0:
            return
        tokens = self.llm.input_ids[: self.llm.n_tokens].tolist()
        expected = int(llama_cpp.llama_state_seq_get_size(self.llm.ctx, 0))
        array = (llama_cpp.llama_token * len(tokens))(*tokens)

        def write(path: Path) -> None:
            written = llama_cpp.llama_state_seq_save_file(
                self.llm.ctx, os.fsencode(path), 0, array, len(tokens)
            )
            if written == 0:
                raise OSError(f"llama.cpp could not write the state to {path}")
            size = os.stat(path).st_size
            if size != written:  # llama.cpp does not check the fclose that flushes its last write
                raise OSError(f"llama.cpp wrote {size:,} of {written:,} bytes of the state")

        on_event(Progress("save", 0, expected, "bytes"))
        label = f"{self.model.path.name}: {len(tokens):,} tokens"
        self.store.save(self.key, tokens, write, label=label, expected_bytes=expected)
        on_event(Progress("save", expected, expected, "bytes"))

    def close(self) -> None:
        self.llm.close()


def _load(model: ModelInfo, plan: Plan) -> llama_cpp.Llama:
    threads = os.cpu_count() or 1
    try:
        return llama_cpp.Llama(
            model_path=str(model.path),
            n_ctx=plan.n_ctx,
            n_batch=plan.n_batch,
            n_ubatch=plan.n_ubatch,
            n_gpu_layers=plan.gpu_layers,
            flash_attn=plan.flash_attn,
            type_k=GGML_TYPES[plan.kv_type],
            type_v=GGML_TYPES[plan.kv_type],
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
    except (ValueError, RuntimeError) as error:
        raise ModelError(
            f"llama.cpp could not load {model.path.name} with a {plan.n_ctx:,}-token "
            f"{plan.kv_type} context on the {plan.device} ({error}); pass a smaller --budget, "
            "--kv-type q4_0, or free memory"
        ) from error
