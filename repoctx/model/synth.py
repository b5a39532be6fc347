"""Synthetic GGUF models of llama architecture, written with the ``gguf`` package.

A llama.cpp model's speed and memory depend on its tensor shapes and quantization types, never on
its weight values. ``write_synthetic_gguf`` writes a GGUF of chosen shapes (``synthshape``) with
random but numerically sane weights: ``LLAMA3_8B`` has the exact tensors of a Llama-3-8B Q4_K_M
file and stands in for Llama-3-8B-Instruct-Gradient-1048k in speed and memory benchmarks;
``TINY`` is a model of a few MB that exercises the engine (1M-token context, KV state save and
restore) in seconds on a CPU. Both declare a 1,048,576-token training context.

The vocabulary is copied from another GGUF (``vocab_from``, e.g. llama.cpp's
``ggml-vocab-llama-bpe.gguf``, Llama 3's tokenizer) or is a small built-in byte-level BPE with
Llama 3's special tokens. In a process that loads models, import ``llama_cpp`` before this module
(it imports numpy; numpy first crashes the CUDA build of llama.cpp at model load). The command
line is ``repoctx models synth`` (``repoctx.cli.synth``).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGUFWriter, LlamaFileType
from gguf import GGMLQuantizationType as QType

from repoctx.errors import UsageError
from repoctx.model.synthshape import KV_HEAVY, LLAMA3_8B, PRESETS, TINY, SynthShape
from repoctx.model.synthvocab import (
    BUILTIN_MERGES,
    KV,
    LLAMA3_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    builtin_vocab,
    learn_merges,
    load_vocab,
    read_metadata,
)

__all__ = [
    "BUILTIN_MERGES",
    "KV_HEAVY",
    "LLAMA3_8B",
    "LLAMA3_CHAT_TEMPLATE",
    "PRESETS",
    "SPECIAL_TOKENS",
    "TINY",
    "SynthShape",
    "builtin_vocab",
    "learn_merges",
    "load_vocab",
    "read_metadata",
    "tensor_plan",
    "write_synthetic_gguf",
]

WEIGHT_STD = 0.02
"""Standard deviation of every random weight matrix, whatever its type."""

_FILE_TYPE = {
    "f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0, "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M,
}  # fmt: skip
# (byte offset in the block, f16 value) of each scale field, chosen so weights have mean ~0 and
# std ~WEIGHT_STD: Q8_0 d*q; Q4_K d*sc*q - dmin*m (6-bit sc, m; 4-bit q); Q6_K d*sc*(q-32).
_SCALES: dict[QType, tuple[tuple[int, float], ...]] = {
    QType.Q8_0: ((0, WEIGHT_STD / 73.9),),
    QType.Q4_K: ((0, WEIGHT_STD / 258.3), (2, 7.5 * WEIGHT_STD / 258.3)),
    QType.Q6_K: ((208, WEIGHT_STD / 1365.0),),
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: its GGUF name, shape in numpy order (rows last-but-one), and type."""

    name: str
    shape: tuple[int, ...]
    qtype: QType
    ones: bool = False

    @property
    def byte_shape(self) -> tuple[int, ...]:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return (*self.shape[:-1], self.shape[-1] // block * size)

    @property
    def nbytes(self) -> int:
        return math.prod(self.byte_shape)


def _use_more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's rule for the layers whose attn_v and ffn_down Q4_K_M keeps in Q6_K."""
    eighth = n_layer // 8
    return layer < eighth or layer >= 7 * n_layer // 8 or (layer - eighth) % 3 == 2


def _weight_type(quant: str, name: str, layer: int, n_layer: int) -> QType:
    """Q4_K_M as llama.cpp makes it: Q6_K for output and for attn_v and ffn_down in the layers
    of ``_use_more_bits``, Q4_K for the rest (token_embd included)."""
    if quant != "q4_k_m":
        return {"f32": QType.F32, "f16": QType.F16, "q8_0": QType.Q8_0}[quant]
    more_bits = name.endswith(("attn_v", "ffn_down")) and _use_more_bits(layer, n_layer)
    return QType.Q6_K if name == "output" or more_bits else QType.Q4_K


def tensor_plan(shape: SynthShape, n_vocab: int) -> list[TensorSpec]:
    """The tensors of a llama model in file order, typed as ``shape.quant`` dictates; the 1-D
    ones are the F32 RMS norm weights."""
    q, n_layer, embd, ff = shape.quant, shape.n_layer, shape.n_embd, shape.n_ff
    kv = shape.n_head_kv * shape.head_dim
    layer: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("attn_norm", (embd,)), ("attn_q", (embd, embd)), ("attn_k", (kv, embd)),
        ("attn_v", (kv, embd)), ("attn_output", (embd, embd)), ("ffn_norm", (embd,)),
        ("ffn_gate", (ff, embd)), ("ffn_up", (ff, embd)), ("ffn_down", (embd, ff)),
    )  # fmt: skip
    named: list[tuple[str, tuple[int, ...], int]] = [("token_embd", (n_vocab, embd), -1)]
    named += [(f"blk.{i}.{role}", dims, i) for i in range(n_layer) for role, dims in layer]
    named += [("output_norm", (embd,), -1), ("output", (n_vocab, embd), -1)]
    return [
        TensorSpec(f"{name}.weight", dims, QType.F32, ones=True)
        if len(dims) == 1
        else TensorSpec(f"{name}.weight", dims, _weight_type(q, name, i, n_layer))
        for name, dims, i in named
    ]


def random_weights(spec: TensorSpec, rng: np.random.Generator) -> npt.NDArray[Any]:
    """The data of one tensor: ones for norms, N(0, WEIGHT_STD) for float types, and random
    quant blocks (uint8, ``spec.byte_shape``) with small fixed scales for quantized types."""
    if spec.ones:
        return np.ones(spec.shape, dtype=np.float32)
    if spec.qtype in (QType.F32, QType.F16):
        dtype = np.float32 if spec.qtype == QType.F32 else np.float16
        return (rng.standard_normal(spec.shape, dtype=np.float32) * WEIGHT_STD).astype(dtype)
    block, size = GGML_QUANT_SIZES[spec.qtype]
    blocks = rng.integers(0, 256, (math.prod(spec.shape) // block, size), dtype=np.uint8)
    for offset, scale in _SCALES[spec.qtype]:
        blocks[:, offset : offset + 2].view(np.float16)[:] = scale
    return blocks.reshape(spec.byte_shape)


def _add_metadata(writer: GGUFWriter, shape: SynthShape, vocab: dict[str, KV]) -> None:
    writer.add_name(shape.name)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_vocab_size(len(vocab["tokenizer.ggml.tokens"][0]))
    writer.add_file_type(_FILE_TYPE[shape.quant])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    for key, (value, vtype, sub_type) in vocab.items():
        writer.add_key_value(key, value, vtype, sub_type)


def _write_file(path: Path, shape: SynthShape, vocab: dict[str, KV], seed: int) -> None:
    """Header, metadata and tensor infos, then the tensors one by one: a worker thread makes
    the next tensor while this one is written, and at most two are in memory at a time."""
    specs = tensor_plan(shape, len(vocab["tokenizer.ggml.tokens"][0]))
    writer = GGUFWriter(path, "llama")
    _add_metadata(writer, shape, vocab)
    raw = np.dtype(np.uint8)
    for spec in specs:
        writer.add_tensor_info(spec.name, spec.byte_shape, raw, spec.nbytes, spec.qtype)

    def make(index: int) -> npt.NDArray[Any]:
        return random_weights(specs[index], np.random.default_rng([seed, index]))

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future[npt.NDArray[Any]] = pool.submit(make, 0)
            for index in range(len(specs)):
                data = pending.result()
                if index + 1 < len(specs):
                    pending = pool.submit(make, index + 1)
                writer.write_tensor_data(data)
                del data
        writer.flush()
        assert writer.fout is not None
        os.fsync(writer.fout[0].fileno())
    finally:
        writer.close()


def write_synthetic_gguf(
    path: Path | str, shape: SynthShape, vocab_from: Path | str | None = None, seed: int = 0
) -> Path:
    """Write a llama GGUF of ``shape`` with random weights to ``path``, atomically (through a
    temporary file in the same folder, renamed at the end). The vocabulary is copied from the
    GGUF ``vocab_from`` or, without one, is ``builtin_vocab(shape.vocab_size)``. Raises
    ``UsageError`` when a copied vocabulary's size differs from ``shape.vocab_size`` and
    ``ModelError`` when ``vocab_from`` cannot be read. Same arguments, same bytes."""
    target = Path(path)
    vocab = builtin_vocab(shape.vocab_size) if vocab_from is None else load_vocab(Path(vocab_from))
    n_vocab = len(vocab["tokenizer.ggml.tokens"][0])
    if shape.vocab_size not in (None, n_vocab):
        raise UsageError(
            f"{vocab_from}: has {n_vocab:,} tokens, not the {shape.vocab_size:,} of "
            f"{shape.name}; pass a vocabulary with that many tokens"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        _write_file(Path(temporary), shape, vocab, seed)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target
