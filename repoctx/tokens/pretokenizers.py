"""The pre-tokenizer regexes of llama.cpp (llama-vocab.cpp), each as one regex tiktoken runs."""

from __future__ import annotations

import dataclasses
import re

_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
GPT2_PATTERN = _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp first cuts the text at every \p{N}, then applies GPT2_PATTERN to each piece. As one
# regex: a number is a piece of its own, and whitespace before one ends a piece, so it is
# matched whole (``(?![^\s\p{N}])`` is GPT-2's ``(?!\S)`` with "or a number" added).
DIGITS_GPT2_PATTERN = _CONTRACTIONS + r"| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"
LLAMA3_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


# Letters and numbers of Unicode 16.0, which tiktoken's regex engine knows and llama.cpp's tables
# (unicode-data.cpp, Unicode 15.1) do not: there they are neither. The tests sweep every code point.
_UNICODE_16_LN = (
    "1C89-1C8A A7CB-A7CD A7DA-A7DC 105C0-105F3 10D40-10D65 10D6F-10D85 10EC2-10EC4 11380-11389"
    " 1138B 1138E 11390-113B5 113B7 113D1 113D3 116D0-116E3 11BC0-11BE0 11BF0-11BF9 13460-143FA"
    " 16100-1611D 16130-16139 16D40-16D6C 16D70-16D79 18CFF 1CCF0-1CCF9 1E5D0-1E5ED 1E5F0-1E5FA"
)


def for_tiktoken(pattern: str) -> str:
    """``pattern`` with \\p{L} and \\p{N} narrowed to llama.cpp's Unicode tables, its
    alternatives grouped for speed (see ``group_plain_alternatives``)."""
    return group_plain_alternatives(_narrowed(pattern))


def _narrowed(pattern: str) -> str:
    """``pattern`` with \\p{L} and \\p{N} narrowed to llama.cpp's Unicode tables."""
    newer = "".join(
        "-".join(f"\\U{int(bound, 16):08X}" for bound in span.split("-"))
        for span in _UNICODE_16_LN.split()
    )
    negated = (r"[^\s\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}]", r"[^\s\p{N}]")
    for index, group in enumerate(negated):
        pattern = pattern.replace(group, f"\0{index}")
    pattern = pattern.replace(r"\p{L}", rf"[\p{{L}}--[{newer}]]")
    pattern = pattern.replace(r"\p{N}", rf"[\p{{N}}--[{newer}]]")
    for index, group in enumerate(negated):
        pattern = pattern.replace(f"\0{index}", f"[{group}[{newer}]]")
    return pattern


_LOOKAROUND = re.compile(r"\(\?<?[=!]")


def group_plain_alternatives(pattern: str) -> str:
    """``pattern`` with each run of consecutive top-level alternatives that need no look-around
    wrapped in one group. The matches are the same (alternation is associative), but
    tiktoken's regex engine (fancy-regex) then tries the whole run in one call of its automaton
    instead of alternative by alternative in its backtracking machine: twice as fast on code."""
    grouped: list[str] = []
    plain: list[str] = []
    for alternative in top_level_alternatives(pattern):
        if _LOOKAROUND.search(alternative) is None:
            plain.append(alternative)
            continue
        if plain:
            grouped.append("(?:" + "|".join(plain) + ")")
            plain = []
        grouped.append(alternative)
    if plain:
        grouped.append("(?:" + "|".join(plain) + ")")
    return "|".join(grouped)


def top_level_alternatives(pattern: str) -> list[str]:
    """The alternatives of ``pattern`` split at each ``|`` outside groups and classes."""
    alternatives: list[str] = []
    depth = classes = start = index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            classes += 1
        elif char == "]" and classes:
            classes -= 1
        elif not classes and char in "()":
            depth += 1 if char == "(" else -1
        elif not classes and not depth and char == "|":
            alternatives.append(pattern[start:index])
            start = index + 1
        index += 1
    alternatives.append(pattern[start:])
    return alternatives


@dataclasses.dataclass(frozen=True)
class PreTokenizer:
    pattern: str  # as llama.cpp writes it (one regex equivalent to its sequence of regexes)
    ignore_merges: bool = False


# ``tokenizer.ggml.pre`` values whose llama.cpp pre-tokenizer (llama-vocab.cpp) one regex matches
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    name: pre
    for names, pre in (
        ("gpt-2 phi-2 mpt olmo jais", PreTokenizer(GPT2_PATTERN)),
        ("smollm starcoder refact codeshell command-r exaone", PreTokenizer(DIGITS_GPT2_PATTERN)),
        ("llama3 llama-v3 llama-bpe falcon3 pixtral", PreTokenizer(LLAMA3_PATTERN, True)),
        ("dbrx smaug-bpe", PreTokenizer(LLAMA3_PATTERN)),
        ("qwen2 stablelm2 deepseek-r1-qwen megrez hunyuan", PreTokenizer(QWEN2_PATTERN)),
    )
    for name in names.split()
}
