"""llama.cpp's C API as the engine uses it, through llama-cpp-python's ctypes bindings: one
model, a context whose unified KV cache holds several sequences, batched decoding into any of
them, sampling, and a sequence's state copied to and from memory that the caller owns.

Nothing here knows about prompts, stores or events; ``repoctx.engine.llama`` composes it.
"""

from __future__ import annotations

import ctypes
import os
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp  # before anything imports numpy: on CUDA builds that order crashes

from repoctx.kv.kvtypes import GGML_TYPES
from repoctx.tokens.count import quiet_llama_cpp

DECODE_NO_ROOM = 1  # llama_decode: no free cells for the batch; nothing was computed


class DecodeError(Exception):
    """llama_decode failed for another reason than a full context."""


class NoRoom(Exception):
    """The context has too few free cells for the batch (nothing was evaluated)."""


class NativeModel:
    """A loaded model file. ``on_progress(fraction)`` follows the load."""

    def __init__(
        self, path: Path, gpu_layers: int, on_progress: Callable[[float], None] | None = None
    ) -> None:
        quiet_llama_cpp(llama_cpp)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.use_mmap = True
        callback = None
        if on_progress is not None:

            def report(fraction: float, data: ctypes.c_void_p) -> bool:
                on_progress(float(fraction))
                return True

            callback = llama_cpp.llama_progress_callback(report)
            params.progress_callback = callback
        pointer = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not pointer:
            raise OSError(f"llama.cpp could not load {path}")
        self.pointer = pointer
        self.vocab = llama_cpp.llama_model_get_vocab(pointer)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self._piece_buffer = ctypes.create_string_buffer(256)

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        """The bytes of one generated token (special tokens render as nothing)."""
        buffer = self._piece_buffer
        while True:
            length = llama_cpp.llama_token_to_piece(
                self.vocab, token, buffer, len(buffer), 0, False
            )
            if length >= 0:
                return buffer.raw[:length]
            buffer = self._piece_buffer = ctypes.create_string_buffer(-length)

    def close(self) -> None:
        if self.pointer:
            llama_cpp.llama_model_free(self.pointer)
            self.pointer = None


@dataclass(frozen=True)
class ContextShape:
    n_ctx: int  # cells of each sequence
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    kv_type: str
    flash_attn: bool
    threads: int


class NativeContext:
    """A context whose KV cache has a stream of ``n_ctx`` cells for each of ``n_seq_max``
    sequences. A sequence attends to its own stream only: with one cache shared by all (llama.cpp's
    "unified" cache), the cells of other sequences change the order of the sums and, at a near
    tie, a greedy answer (measured on the embedded model)."""

    def __init__(self, model: NativeModel, shape: ContextShape) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = shape.n_ctx * shape.n_seq_max
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_ubatch
        params.n_seq_max = shape.n_seq_max
        params.kv_unified = False  # a KV stream per sequence: no answer depends on another
        params.n_threads = params.n_threads_batch = shape.threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if shape.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.type_k = params.type_v = GGML_TYPES[shape.kv_type]
        params.no_perf = True
        pointer = llama_cpp.llama_init_from_model(model.pointer, params)
        if not pointer:
            raise OSError("llama.cpp could not create the context (out of memory?)")
        self.pointer = pointer
        self.model = model
        self.shape = shape
        self.memory = llama_cpp.llama_get_memory(pointer)
        self._batch = _Batch(shape.n_batch)

    def decode(self, ids: Sequence[int], seq: int, position: int, logits: bool) -> None:
        """Evaluate ``ids`` (at most n_batch) at ``position`` onwards of sequence ``seq``;
        ``logits``: keep the last token's logits for sampling."""
        batch = self._batch.fill(ids, seq, position, logits)
        status = llama_cpp.llama_decode(self.pointer, batch)
        if status == DECODE_NO_ROOM:
            raise NoRoom
        if status != 0:
            raise DecodeError(f"llama_decode returned {status}")

    def remove(self, seq: int, start: int = 0) -> None:
        """Drop positions ``start``.. of ``seq`` (cells no other sequence holds are freed)."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1)

    def copy(self, source: int, target: int) -> None:
        """Make ``target`` a copy of ``source`` (its whole stream, copied on the device at the
        next decode). llama.cpp aborts the process on a partial copy between streams: copy
        whole, then drop what is not wanted."""
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def state_size(self, seq: int) -> int:
        return int(llama_cpp.llama_state_seq_get_size(self.pointer, seq))

    def get_state(self, seq: int, address: int, size: int) -> int:
        """Copy ``seq``'s state into the ``size`` bytes at ``address``; bytes written (0:
        failed)."""
        target = ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8))
        return int(llama_cpp.llama_state_seq_get_data(self.pointer, target, size, seq))

    def set_state(self, seq: int, address: int, size: int) -> int:
        """Load a state from the ``size`` bytes at ``address`` into ``seq`` (which must be
        empty); bytes read (0: rejected, nothing kept)."""
        source = ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8))
        return int(llama_cpp.llama_state_seq_set_data(self.pointer, source, size, seq))

    def close(self) -> None:
        if self.pointer:
            self._batch.close()
            llama_cpp.llama_free(self.pointer)
            self.pointer = None


class _Batch:
    """A reusable llama_batch, filled with bulk copies rather than per-token assignments."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        ctypes.memset(self.batch.logits, 0, capacity)
        for index in range(capacity):
            self.batch.n_seq_id[index] = 1
        self._seq = 0
        self._filled = 0  # entries whose seq_id is self._seq

    def fill(
        self, ids: Sequence[int], seq: int, position: int, logits: bool
    ) -> llama_cpp.llama_batch:
        count = len(ids)
        if not 0 < count <= self.capacity:
            raise ValueError(f"a batch holds 1 to {self.capacity} tokens, not {count}")
        tokens = array("i", ids)
        positions = array("i", range(position, position + count))
        ctypes.memmove(self.batch.token, tokens.buffer_info()[0], 4 * count)
        ctypes.memmove(self.batch.pos, positions.buffer_info()[0], 4 * count)
        if seq != self._seq:
            self._seq, self._filled = seq, 0
        for index in range(self._filled, count):
            self.batch.seq_id[index][0] = seq
        self._filled = max(self._filled, count)
        ctypes.memset(self.batch.logits, 0, count)
        self.batch.logits[count - 1] = 1 if logits else 0
        self.batch.n_tokens = count
        batch: llama_cpp.llama_batch = self.batch
        return batch

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


class Sampler:
    """Greedy at temperature 0 (the same answer every time); otherwise llama-cpp-python's
    defaults: top-k 40, top-p 0.95, min-p 0.05, then the temperature and a seeded draw. Either
    way, a ``repeat_penalty`` other than 1 first lowers the logits of the tokens among the last
    ``repeat_last_n`` sampled (llama.cpp's penalties sampler: it sees the answer's tokens only,
    as the chain accepts each one it samples, so the answer does not depend on the prompt's
    repetitions nor on how its KV state was obtained)."""

    def __init__(
        self,
        temperature: float,
        seed: int,
        *,
        n_vocab: int,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 0,
    ) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        stages = []
        if repeat_penalty != 1.0 and repeat_last_n > 0:
            # this llama.cpp still takes n_vocab first (see its llama.h)
            stages.append(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, repeat_last_n, repeat_penalty, 0.0, 0.0
                )
            )
        if temperature <= 0:
            stages.append(llama_cpp.llama_sampler_init_greedy())
        else:
            stages += [
                llama_cpp.llama_sampler_init_top_k(40),
                llama_cpp.llama_sampler_init_top_p(0.95, 1),
                llama_cpp.llama_sampler_init_min_p(0.05, 1),
                llama_cpp.llama_sampler_init_temp(temperature),
                llama_cpp.llama_sampler_init_dist(seed),
            ]
        for stage in stages:
            llama_cpp.llama_sampler_chain_add(chain, stage)
        self.chain = chain

    def sample(self, context: NativeContext) -> int:
        """The next token from the logits of the last token decoded."""
        return int(llama_cpp.llama_sampler_sample(self.chain, context.pointer, -1))

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


def gpu_offload() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())
