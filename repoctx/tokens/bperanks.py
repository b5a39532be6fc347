"""Deriving tiktoken ranks from a GGUF byte-level BPE vocabulary, and caching them on disk.

See ``repoctx.tokens.count`` for why ranks taken from merge order reproduce llama.cpp's BPE.
"""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import re
import sys
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

from repoctx import fsutil, paths
from repoctx.errors import TokenizerError
from repoctx.events import EventSink, Notice
from repoctx.model.modelfile import ModelInfo, Vocabulary, read_vocabulary
from repoctx.tokens.pretokenizers import PRE_TOKENIZERS

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


@dataclasses.dataclass(frozen=True)
class Ranks:
    """What tiktoken needs for one vocabulary; derived once and cached on disk."""

    pieces: list[bytes]  # the 256 single bytes in order, then every other mergeable string
    ranks: list[int]  # its tiktoken rank
    ids: list[int]  # its GGUF token id; -1 for a byte the vocabulary lacks (dropped)
    user_defined: list[tuple[str, int]]  # texts matched before BPE, and their ids
    control: list[tuple[str, int]]  # control tokens (chat template markers), and their ids


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


def _merge_rules(merges: Sequence[str], token_id: dict[str, int]) -> tuple[Rules, dict[str, int]]:
    """Each merge rule's position, and the position of the first rule that makes each token."""
    rules: Rules = {}
    first: dict[str, int] = {}
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
        first[made], previous = index, made
    return rules, first


def _pair_bpe(text: str, rules: Rules) -> list[str]:
    """llama.cpp's BPE of one piece: merge the adjacent pair whose rule comes first (leftmost
    on ties) until no adjacent pair has a rule."""
    symbols = list(text)
    while len(symbols) > 1:
        best, at = -1, 0
        for index, pair in enumerate(pairwise(symbols)):
            rank = rules.get(pair, -1)
            if rank >= 0 and (best < 0 or rank < best):
                best, at = rank, index
        if best < 0:
            break
        symbols[at : at + 2] = [symbols[at] + symbols[at + 1]]
    return symbols


def _unsafe(text: str, kept: set[str], rules: Rules) -> bool:
    """Whether tiktoken could make ``text`` by joining two kept tokens along a split that is not
    a merge rule while llama.cpp's BPE of ``text`` does not make it."""
    for cut in range(1, len(text)):
        left = text[:cut]
        if left in kept:
            right = text[cut:]
            if right in kept and (left, right) not in rules:
                return _pair_bpe(text, rules) != [text]
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
    rules, first = _merge_rules(vocab.merges, token_id)
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
        formed = [text for text in formed if _pair_bpe(text, rules) == [text]]
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


def _pack(result: Ranks | str) -> bytes:
    """A cache file: a magic string naming the format, sha256 of the body, and the body: ``Ranks``
    (or why the vocabulary has none) in marshal's format, which is fast to load."""
    if isinstance(result, str):
        body = marshal.dumps(result)
    else:  # the fields as they are: dataclasses.astuple would deep-copy every list first
        fields = (result.pieces, result.ranks, result.ids, result.user_defined, result.control)
        body = marshal.dumps(fields)
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


def _unpack(data: bytes) -> Ranks | str:
    return _value(_body(data))


_TUPLES = frozenset(b"()")  # marshal's type codes of a tuple (with its reference flag off)


def cached_ranks_later(info: ModelInfo, on_event: EventSink) -> Callable[[], Ranks] | str:
    """As ``cached_ranks``, but ranks found in the cache are only checked here (digest, and
    that the file holds ranks); reading them out (milliseconds of unmarshalling, and memory)
    waits for the first call, which a run that counts nothing never makes."""
    path = _cache_path(info)
    try:
        body = _body(path.read_bytes())
    except (OSError, _CorruptCache):
        return _at_once(cached_ranks(info, on_event))  # derives, or rebuilds with a notice
    if not body or body[0] & 0x7F not in _TUPLES:
        return _at_once(cached_ranks(info, on_event))

    def load() -> Ranks:
        try:
            value = _value(body)
        except _CorruptCache:
            value = cached_ranks(info, on_event)
        if isinstance(value, str):
            raise TokenizerError(f"{path}: holds no ranks after all ({value})")
        return value

    return load


def _at_once(found: Ranks | str) -> Callable[[], Ranks] | str:
    if isinstance(found, str):
        return found
    return lambda: found


def _cache_path(info: ModelInfo) -> Path:
    return paths.cache_dir() / "tokenizers" / f"{info.vocab_fingerprint}.ranks"


def cached_ranks(info: ModelInfo, on_event: EventSink) -> Ranks | str:
    """The ranks of ``info``'s vocabulary or why it has none: cached under
    ``cache_dir()/tokenizers``, else derived and cached. A corrupt cache file is rebuilt with a
    notice; one that cannot be written is left alone with a notice."""
    path = _cache_path(info)
    try:
        return _unpack(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, _CorruptCache):
        on_event(Notice(f"tokenizer cache {path} was unreadable or corrupt; rebuilt it"))
    try:
        result: Ranks | str = derive_ranks(read_vocabulary(info.path))
    except _Unsupported as reason:
        result = str(reason)
    try:
        paths.ensure_private_dir(path.parent)
        fsutil.atomic_write(path, _pack(result))
    except OSError as error:
        on_event(Notice(f"cannot write tokenizer cache {path} ({error.strerror}); continuing"))
    return result
