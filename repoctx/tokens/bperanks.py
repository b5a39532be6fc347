"""Deriving tiktoken ranks from a GGUF byte-level BPE vocabulary, and caching them on disk.

See ``repoctx.tokens.count`` for why ranks taken from merge order reproduce llama.cpp's BPE.
"""

from __future__ import annotations

import hashlib
import marshal
import re
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise, repeat
from pathlib import Path

from repoctx import fsutil, paths
from repoctx.errors import TokenizerError
from repoctx.events import EventSink, Notice
from repoctx.model.modelfile import ModelInfo, Vocabulary, read_vocabulary
from repoctx.tokens import shippedranks
from repoctx.tokens.pretokenizers import PRE_TOKENIZERS
from repoctx.tokens.ranktable import Ranks

# llama.cpp matches user-defined tokens in raw text even with parse_special off, after overriding
# attributes by text: end-of-generation texts become control tokens, fill-in-the-middle texts too
# when no metadata key names the token, gpt-oss texts become user-defined. Texts whose handling
# changed across llama.cpp versions make the vocabulary go to llama.cpp.
_CONTROL = 3
_USER_DEFINED = 4
_END_TEXTS = frozenset(("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>"))
_FIM_TEXTS = [
    ({f"tokenizer.ggml.{key}_token_id" for key in keys.split()}, frozenset(texts.split()))
    for keys, texts in (
        ("fim_pre prefix", "<|fim_prefix|> <fim-prefix> <fim_prefix> <PRE>"),
        ("fim_suf suffix", "<|fim_suffix|> <fim-suffix> <fim_suffix> <SUF>"),
        ("fim_mid middle", "<|fim_middle|> <fim-middle> <fim_middle> <MID>"),
        ("fim_pad", "<|fim_pad|> <fim-pad> <fim_pad> <PAD>"),
        ("fim_rep", "<|fim_repo|> <|repo_name|> <fim-repo> <REPO> <reponame>"),
        ("fim_sep", "<|file_sep|>"),
    )
]
_FORCED_USER_DEFINED = frozenset(("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"))
_AMBIGUOUS_PATTERN = re.compile(
    r"<\|(end|return|call|calls|flush|tool_response|code_\w+|prefix|suffix|middle|end_of_text)\|>"
    r"|</s>|_?<EOT>|\[(EOT|EOS|PAD)\]|<eos>|<end_of_utterance>|<turn\|>|\[e~\[|.*\uff5c.*"
)

# cached ranks are read back only by the same format, marshal and Python versions
_CACHE_MAGIC = f"repoctx-ranks-2 {marshal.version} {sys.version_info[:2]}\n".encode()


class _Unsupported(Exception):
    """The vocabulary cannot be expressed as tiktoken ranks; llama.cpp tokenizes it."""


def byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the character that stands for each byte in the vocab."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in chars]
    chars.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return [chars[byte] for byte in range(256)]


_BYTE_CHARS = byte_chars()

Rules = dict[tuple[str, str], int]


_FOREIGN = re.compile("[^" + re.escape("".join(_BYTE_CHARS)) + "]")
_TO_LATIN1 = {ord(char): byte for byte, char in enumerate(_BYTE_CHARS)}


def _encoded(text: str) -> bool:
    """Whether ``text`` is written in GPT-2's byte alphabet (so BPE can produce it)."""
    return _FOREIGN.search(text) is None


def _bytes(text: str) -> bytes:
    return text.translate(_TO_LATIN1).encode("latin-1")


def _merge_rules(
    merges: Sequence[str], token_id: dict[str, int]
) -> tuple[Rules, dict[str, int], dict[str, tuple[str, str]]]:
    """Each merge rule's position; the position of the first rule that makes each token, and
    that rule's pair."""
    rules: Rules = {}
    first: dict[str, int] = {}
    split: dict[str, tuple[str, str]] = {}
    previous = ""
    for index, merge in enumerate(merges):
        cut = merge.find(" ", 1)  # where llama.cpp splits a merge
        left, right = (merge[:cut], merge[cut + 1 :]) if cut > 0 else ("", "")
        rules.setdefault((left, right), index)
        made = left + right
        if made == previous or not left or not right:
            continue
        if made in first:
            raise _Unsupported(f"the merges that make {made!r} are not contiguous")
        if made not in token_id:
            raise _Unsupported(f"merge {index} makes {made!r}, which is not a token")
        first[made], split[made], previous = index, (left, right), made
    return rules, first, split


_NO_RULE = 1 << 62  # ranks above every rule's


def _made_alone(text: str, rules: Rules) -> bool:
    """Whether llama.cpp's BPE of ``text`` (two or more characters) makes it whole: merge the
    adjacent pair whose rule comes first (leftmost on ties) until no pair has a rule. Run on
    every token of a vocabulary, so kept lean: the ranks of adjacent pairs stay in a list, only
    the two beside a merge are looked up again, and ``min`` and ``index`` find the first lowest."""
    get = rules.get
    ranks = list(map(get, pairwise(text), repeat(_NO_RULE)))
    if len(ranks) == 1:
        return ranks[0] != _NO_RULE
    symbols = list(text)
    for _ in range(len(ranks) - 1):
        best = min(ranks)
        if best == _NO_RULE:
            return False
        at = ranks.index(best)
        merged = symbols[at] + symbols.pop(at + 1)
        symbols[at] = merged
        del ranks[at]
        if at:
            ranks[at - 1] = get((symbols[at - 1], merged), _NO_RULE)
        if at < len(ranks):
            ranks[at] = get((merged, symbols[at + 1]), _NO_RULE)
    return ranks[0] != _NO_RULE


# How BPE makes a token alone, in rank order: the symbols its left end holds, from its first
# character to the token, with the ranks of the merges that made them; the same for its right
# end; the highest rank of its merges.
_Ends = tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[int, ...], int]


def _made_alone_all(
    formed: list[str], split: dict[str, tuple[str, str]], rules: Rules
) -> list[str]:
    """The tokens of ``formed`` (in the order of their first rules) that ``_made_alone`` keeps,
    most of them decided without running BPE. If BPE makes both parts of ``t = L + R`` (its first
    rule) alone, merging in rank order, then inside ``t`` each part merges as it does alone
    until a pair across the boundary is merged: such a pair (a symbol L's right end holds, one
    R's left end holds) stands until either symbol merges on, and goes first if its rank is
    lower than that merge's (the left one's; not higher than the right one's: ties go to the
    leftmost pair). If no such pair goes first, ``(L, R)`` is the last merge and BPE makes
    ``t``. Walking the symbols of the two ends decides that; other tokens run BPE."""
    ends: dict[str, _Ends] = {char: ((char,), (-1,), (char,), (-1,), -1) for char in _BYTE_CHARS}
    kept = []
    for text in formed:
        left, right = split[text]
        first, second = ends.get(left), ends.get(right)
        if first is not None and second is not None and not _crossed(first, second, rules):
            kept.append(text)
            rank = rules[left, right]
            if rank >= first[4] and rank >= second[4]:  # still in rank order: usable as a part
                ends[text] = (
                    (*first[0], text), (*first[1], rank), (*second[2], text), (*second[3], rank),
                    rank,
                )  # fmt: skip
        elif _made_alone(text, rules):
            kept.append(text)
    return kept


def _crossed(first: _Ends, second: _Ends, rules: Rules) -> bool:
    """Whether a pair across the boundary between two parts made alone in rank order is merged
    before the parts are whole (see ``_made_alone_all``)."""
    symbols, made_at, starts, started_at = first[2], first[3], second[0], second[1]
    i = j = 0
    last_i, last_j = len(symbols) - 1, len(starts) - 1
    while i < last_i or j < last_j:
        left_next = made_at[i + 1] if i < last_i else _NO_RULE
        right_next = started_at[j + 1] if j < last_j else _NO_RULE
        rank = rules.get((symbols[i], starts[j]), _NO_RULE)
        if left_next <= right_next:
            if rank < left_next:
                return True
            i += 1
        elif rank <= right_next:
            return True
        else:
            j += 1
    return False


def _unsafe(text: str, kept: set[str], rules: Rules) -> bool:
    """Whether tiktoken could make ``text`` by joining two kept tokens along a split that is not
    a merge rule while llama.cpp's BPE of ``text`` does not make it."""
    for cut in range(1, len(text)):
        left = text[:cut]
        if left in kept:
            right = text[cut:]
            if right in kept and (left, right) not in rules:
                return not _made_alone(text, rules)
    return False


def _user_defined_tokens(vocab: Vocabulary, token_id: dict[str, int]) -> list[tuple[str, int]]:
    """The tokens llama.cpp matches in raw text before BPE (see ``_USER_DEFINED``)."""
    chosen = [(text, token_id[text]) for text in sorted(_FORCED_USER_DEFINED & token_id.keys())]
    for index, (text, kind) in enumerate(zip(vocab.tokens, vocab.token_types, strict=False)):
        if kind != _USER_DEFINED or text in _END_TEXTS or text in _FORCED_USER_DEFINED:
            continue
        if _AMBIGUOUS_PATTERN.fullmatch(text):
            raise _Unsupported(f"user-defined token {text!r}")
        keys, texts = next((fim for fim in _FIM_TEXTS if text in fim[1]), (set(), frozenset()))
        if texts and not keys & vocab.metadata.keys():
            if len(texts & token_id.keys()) > 1:
                raise _Unsupported(f"several fill-in-the-middle tokens like {text!r}")
            continue  # llama.cpp makes it a control token
        chosen.append((text, index))
    return chosen


def derive_ranks(vocab: Vocabulary) -> Ranks:
    """tiktoken ranks that reproduce llama.cpp's BPE of ``vocab``; raises ``_Unsupported``."""
    pre = PRE_TOKENIZERS.get(vocab.info.pre_tokenizer or "")
    if vocab.info.tokenizer_model != "gpt2" or pre is None:
        raise _Unsupported("not a byte-level BPE vocabulary with a known pre-tokenizer")
    token_id = {text: index for index, text in enumerate(vocab.tokens)}
    rules, first, split = _merge_rules(vocab.merges, token_id)
    formed = [text for text in first if _encoded(text)]
    formed.sort(key=first.__getitem__)
    extras: list[str] = []
    if pre.ignore_merges:  # a piece that is a token stays whole: keep every token
        others = [t for t in vocab.tokens if len(t) > 1 and t not in first and _encoded(t)]
        kept = {*formed, *others, *(char for char in _BYTE_CHARS if char in token_id)}
        if any(_unsafe(text, kept, rules) for text in formed):
            raise _Unsupported("a token can be made along a split that is not its merge rule")
        extras = others
        if any(_unsafe(text, kept, rules) for text in others):
            raise _Unsupported("a token no merge makes could be made by tiktoken")
    else:
        formed = _made_alone_all(formed, split, rules)
    identity = all(a < b for a, b in pairwise(token_id[text] for text in formed))
    singles = [token_id.get(char, -1) for char in _BYTE_CHARS]
    ranks = [
        (token if token >= 0 else len(token_id) + byte) if identity else byte
        for byte, token in enumerate(singles)
    ]
    ranks += [token_id[t] if identity else 256 + i for i, t in enumerate(formed + extras)]
    pieces = [bytes([byte]) for byte in range(256)]
    pieces += [_bytes(text) for text in formed + extras]
    ids = singles + [token_id[text] for text in formed + extras]
    control = [
        (text, index)
        for index, (text, kind) in enumerate(zip(vocab.tokens, vocab.token_types, strict=False))
        if kind == _CONTROL and text
    ]
    return Ranks(pieces, ranks, ids, _user_defined_tokens(vocab, token_id), control)


class _CorruptCache(Exception):
    pass


def body_of(result: Ranks | str) -> bytes:
    """``result`` in marshal's format, which is fast to load: the body of a cache file, and what
    a worker process that derived the ranks hands back (see ``ranks_from_body``)."""
    if isinstance(result, str):
        return marshal.dumps(result)
    # the fields as they are: dataclasses.astuple would deep-copy every list first
    return marshal.dumps(
        (result.pieces, result.ranks, result.ids, result.user_defined, result.control)
    )


def _pack(body: bytes) -> bytes:
    """A cache file: a magic string naming the format, sha256 of the body, and the body."""
    return _CACHE_MAGIC + hashlib.sha256(body).digest() + body


def _body(data: bytes) -> bytes:
    """The marshalled value of a cache file whose magic and digest are right."""
    body = data[len(_CACHE_MAGIC) + 32 :]
    if data[: len(_CACHE_MAGIC)] != _CACHE_MAGIC or len(data) < len(_CACHE_MAGIC) + 32:
        raise _CorruptCache
    if hashlib.sha256(body).digest() != data[len(_CACHE_MAGIC) : len(_CACHE_MAGIC) + 32]:
        raise _CorruptCache
    return body


def _value(body: bytes) -> Ranks | str:
    try:
        value = marshal.loads(body)
        return value if isinstance(value, str) else Ranks(*value)
    except (EOFError, ValueError, TypeError) as error:
        raise _CorruptCache from error


_TUPLES = frozenset(b"()")  # marshal's type codes of a tuple (with its reference flag off)


def _cache_path(info: ModelInfo) -> Path:
    return paths.cache_dir() / "tokenizers" / f"{info.vocab_fingerprint}.ranks"


def _cached_body(info: ModelInfo) -> tuple[bytes | None, bool]:
    """The body of the cache file of ``info``'s vocabulary if its magic and digest are right,
    else None; and whether a file was there that could not be used (unreadable or corrupt)."""
    try:
        return _body(_cache_path(info).read_bytes()), False
    except (FileNotFoundError, NotADirectoryError):
        return None, False
    except (OSError, _CorruptCache):
        return None, True


def ranks_from_body(
    body: bytes, info: ModelInfo, on_event: EventSink
) -> Callable[[], Ranks] | str | None:
    """The ranks in ``body`` (see ``body_of``), read out on the first call (milliseconds of
    unmarshalling, and memory, that a run which counts nothing never spends), or why the
    vocabulary has none; None when ``body`` holds neither. Should the ranks not read out after
    all, they are derived again."""
    if not body or body[0] & 0x7F not in _TUPLES:
        try:
            value = _value(body)
        except _CorruptCache:
            return None
        return value if isinstance(value, str) else _at_once(value)

    def load() -> Ranks:
        try:
            value = _value(body)
        except _CorruptCache:
            value = _derive_and_store(info, on_event, replacing=True)
        if isinstance(value, str):
            raise TokenizerError(f"{_cache_path(info)}: holds no ranks after all ({value})")
        return value

    return load


def _at_once(found: Ranks) -> Callable[[], Ranks]:
    return lambda: found


def ranks_to_derive(info: ModelInfo) -> bool:
    """Whether the cache has no file for ``info``'s vocabulary, so that ``cached_ranks`` will
    derive its ranks from the model file, or read the ones repoctx ships (up to a second, the
    first time this machine sees the vocabulary). A stat, no read: a file there is checked
    when it is read."""
    try:
        return not _cache_path(info).is_file()
    except OSError:
        return True


def cached_ranks_later(info: ModelInfo, on_event: EventSink) -> Callable[[], Ranks] | str:
    """As ``cached_ranks``, but ranks found in the cache are only checked here (digest, and
    that the file holds ranks); reading them out waits for the first call (``ranks_from_body``)."""
    body, damaged = _cached_body(info)
    found = None if body is None else ranks_from_body(body, info, on_event)
    if found is not None:
        return found
    derived = _derive_and_store(info, on_event, replacing=damaged or body is not None)
    return derived if isinstance(derived, str) else _at_once(derived)


def cached_ranks(info: ModelInfo, on_event: EventSink) -> Ranks | str:
    """The ranks of ``info``'s vocabulary or why it has none: cached under
    ``cache_dir()/tokenizers``, else derived and cached. A corrupt cache file is rebuilt with a
    notice; one that cannot be written is left alone with a notice."""
    body, damaged = _cached_body(info)
    if body is not None:
        try:
            return _value(body)
        except _CorruptCache:
            damaged = True
    return _derive_and_store(info, on_event, replacing=damaged)


def _derive_and_store(info: ModelInfo, on_event: EventSink, replacing: bool) -> Ranks | str:
    """Derive the ranks of ``info``'s vocabulary (or why it has none) from the model file, or
    read those repoctx ships for it (``shippedranks``), and store them in the cache,
    atomically. ``replacing``: the cache file there could not be used (a notice says it was
    rebuilt)."""
    path = _cache_path(info)
    if replacing:
        on_event(Notice(f"tokenizer cache {path} was unreadable or corrupt; rebuilt it"))
    result: Ranks | str | None = shippedranks.shipped_ranks(info, on_event)
    if result is None:
        try:
            result = derive_ranks(read_vocabulary(info.path))
        except _Unsupported as reason:
            result = str(reason)
    try:
        paths.ensure_private_dir(path.parent)
        fsutil.atomic_write(path, _pack(body_of(result)))
    except OSError as error:
        on_event(Notice(f"cannot write tokenizer cache {path} ({error.strerror}); continuing"))
    return result
