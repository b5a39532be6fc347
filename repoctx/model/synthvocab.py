"""The vocabulary side of synthetic GGUFs: a real tokenizer's typed metadata (read with
``ggufread``, to be copied) and a small built-in byte-level BPE vocabulary with Llama 3's special
tokens."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from repoctx.errors import ModelError, TokenizerError, UsageError
from repoctx.model.ggufread import typed_metadata
from repoctx.tokens.bperanks import byte_chars

KV = tuple[Any, GGUFValueType, GGUFValueType | None]
"""One metadata entry: value (strings as raw UTF-8 bytes or str), type, array element type."""


LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>",
)  # fmt: skip
BUILTIN_MERGES = 256
_PRETOKEN = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+")
_CORPUS = """hello world! Hello, World. The repository context tool reads a whole repository,
orders its files by their dependencies and packs them into one prompt for a long context model.
def main(argv: list[str]) -> int:\n    return run(parse_args(argv))
import os, sys, json; from pathlib import Path; class Config: name: str = "default"
for (int i = 0; i < n; i++) { total += values[i]; } function render(files) { return files; }
The model answers questions about the code: where is this function defined, which tests cover
that module, and how should the error handling change? It keeps its key and value cache.
"""


def read_metadata(path: Path) -> dict[str, KV]:
    """Every metadata entry of a GGUF file, read without its tensors (fast even for a 128k
    vocabulary). Raises ``ModelError`` when the file is missing or is not a GGUF."""
    try:
        found = typed_metadata(path)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file; pass the path of a GGUF file") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not a readable GGUF file ({error}); pass a GGUF file") from None
    return {
        key: (value, GGUFValueType(kind), None if item is None else GGUFValueType(item))
        for key, (value, kind, item) in found.items()
    }


def load_vocab(path: Path) -> dict[str, KV]:
    """All ``tokenizer.*`` entries of a GGUF, plus Llama 3's chat template when it is a Llama 3
    ("llama-bpe") vocabulary without one."""
    vocab = {k: v for k, v in read_metadata(path).items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in vocab:
        raise TokenizerError(f"{path}: has no tokenizer.ggml.tokens; pass a GGUF with a vocabulary")
    pre = vocab.get("tokenizer.ggml.pre", (b"", GGUFValueType.STRING, None))[0]
    if "tokenizer.chat_template" not in vocab and pre == b"llama-bpe":
        vocab["tokenizer.chat_template"] = (LLAMA3_CHAT_TEMPLATE, GGUFValueType.STRING, None)
    return vocab


def learn_merges(text: str, count: int) -> list[tuple[str, str]]:
    """Up to ``count`` byte-level BPE merges learnt from ``text``; ties break by the pair's
    characters, so the result is deterministic."""
    table = dict(
        enumerate(byte_chars())
    )  # its characters are never spaces: words are space-separated
    words = Counter(" ".join(table[b] for b in p.encode()) for p in _PRETOKEN.findall(text))
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word.split(" ")):
                pairs[pair] += n
        if not pairs:
            break
        left, right = best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        pattern = re.compile(rf"(?<!\S){re.escape(left)} {re.escape(right)}(?!\S)")
        joined = (left + right).replace("\\", "\\\\")  # a replacement string, not text
        merged: Counter[str] = Counter()
        for word, n in words.items():
            merged[pattern.sub(joined, word)] += n
        words = merged
    return merges


def builtin_vocab(size: int | None = None, n_merges: int = BUILTIN_MERGES) -> dict[str, KV]:
    """A small byte-level BPE vocabulary (gpt2 model, llama-bpe pre-tokenizer) with Llama 3's
    special tokens and chat template, padded to ``size`` tokens with reserved special tokens."""
    merges = learn_merges(_CORPUS, n_merges)
    tokens = list(dict(enumerate(byte_chars())).values())
    known = set(tokens)
    for left, right in merges:
        if left + right not in known:
            tokens.append(left + right)
            known.add(left + right)
    special = {text: len(tokens) + i for i, text in enumerate(SPECIAL_TOKENS)}
    base = len(tokens) + len(SPECIAL_TOKENS)
    if size is not None and size < base:
        raise UsageError(f"vocab_size {size} is below the built-in vocabulary's {base} tokens")
    reserved = [f"<|reserved_special_token_{i}|>" for i in range((size or base) - base)]
    controls = [*SPECIAL_TOKENS, *reserved]
    types = [1] * len(tokens) + [3] * len(controls)  # gguf TokenType NORMAL, CONTROL
    s, a, u32 = GGUFValueType.STRING, GGUFValueType.ARRAY, GGUFValueType.UINT32
    return {
        "tokenizer.ggml.model": ("gpt2", s, None),
        "tokenizer.ggml.pre": ("llama-bpe", s, None),
        "tokenizer.ggml.tokens": (tokens + controls, a, s),
        "tokenizer.ggml.token_type": (types, a, GGUFValueType.INT32),
        "tokenizer.ggml.merges": ([f"{left} {right}" for left, right in merges], a, s),
        "tokenizer.ggml.bos_token_id": (special["<|begin_of_text|>"], u32, None),
        "tokenizer.ggml.eos_token_id": (special["<|end_of_text|>"], u32, None),
        "tokenizer.ggml.eot_token_id": (special["<|eot_id|>"], u32, None),
        "tokenizer.ggml.add_bos_token": (True, GGUFValueType.BOOL, None),
        "tokenizer.chat_template": (LLAMA3_CHAT_TEMPLATE, s, None),
    }
