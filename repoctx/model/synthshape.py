"""The shapes of synthetic llama models (``repoctx.model.synth`` writes them): hyperparameters,
their checks, and the presets. Free of numpy and gguf, so that the command line can offer the
preset and quant names without loading either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from repoctx.errors import UsageError

Quant = Literal["f32", "f16", "q8_0", "q4_k_m"]
QUANTS: tuple[str, ...] = get_args(Quant)
_BLOCK = {"f32": 1, "f16": 1, "q8_0": 32, "q4_k_m": 256}  # weights per quant block

__all__ = ["KV_HEAVY", "LLAMA3_8B", "PRESETS", "QUANTS", "TINY", "Quant", "SynthShape"]


@dataclass(frozen=True)
class SynthShape:
    """Hyperparameters of a synthetic llama model (the vocabulary comes from its source).

    Raises ``UsageError`` on construction when the values cannot make a valid model."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int = 1_048_576
    rope_freq_base: float = 3580165449.0
    rms_eps: float = 1e-5
    quant: Quant = "f32"
    name: str = "synthetic-llama"
    vocab_size: int | None = None
    """None: the vocabulary source's size. A number: the built-in vocabulary is padded to it
    with reserved special tokens, and a copied vocabulary must have exactly that many tokens."""

    def __post_init__(self) -> None:
        problem = _shape_problem(self)
        if problem is not None:
            raise UsageError(f"invalid synthetic model: {problem}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _shape_problem(shape: SynthShape) -> str | None:
    if shape.quant not in QUANTS:
        return f"unknown quant {shape.quant!r}; choose one of {', '.join(QUANTS)}"
    for field in ("n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "context_length"):
        value = getattr(shape, field)
        if not isinstance(value, int) or value < 1:
            return f"{field} must be a positive integer, not {value!r}"
    if shape.vocab_size is not None and shape.vocab_size < 1:
        return f"vocab_size must be None or a positive integer, not {shape.vocab_size!r}"
    if shape.n_embd % shape.n_head or shape.head_dim % 2:
        return f"n_embd {shape.n_embd} must split into n_head {shape.n_head} heads of even size"
    if shape.n_head % shape.n_head_kv:
        return f"n_head {shape.n_head} must be a multiple of n_head_kv {shape.n_head_kv}"
    block = _BLOCK[shape.quant]
    if shape.n_embd % block or shape.n_ff % block:
        return f"quant {shape.quant} needs n_embd and n_ff to be multiples of {block}"
    if not (shape.rope_freq_base > 0 and shape.rms_eps > 0):
        return "rope_freq_base and rms_eps must be positive"
    return None


LLAMA3_8B = SynthShape(
    n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, quant="q4_k_m",
    vocab_size=128256, name="synthetic-llama3-8b-gradient-1048k",
)  # fmt: skip
TINY = SynthShape(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, name="synthetic-tiny")
# The KV cache of Llama-3-8B (32 layers, 8 KV heads of 128) around little compute: state I/O
# benchmarks of GB-sized states on a CPU.
KV_HEAVY = SynthShape(
    n_layer=32, n_embd=1024, n_head=8, n_head_kv=8, n_ff=256, quant="q8_0",
    name="synthetic-kv-heavy",
)  # fmt: skip
PRESETS = {"llama3-8b": LLAMA3_8B, "tiny": TINY, "kv-heavy": KV_HEAVY}
