"""Exact token counts for the model in use.

Byte-level BPE vocabularies with a known pre-tokenizer are encoded by tiktoken, with ranks derived
from the GGUF's own tokens and merges; others go through llama.cpp's tokenizer (~10x slower). Both
return exactly what ``llama_tokenize(add_special=False, parse_special=False)`` returns.

llama.cpp merges the adjacent pair whose merge rule comes first; tiktoken the adjacent pair whose
concatenation ranks lowest. Ranking each token at the first rule that makes it, they agree unless
tiktoken joins two tokens along a split that is not a rule. It cannot for a token that llama.cpp
builds from its own bytes (inside a piece its span merges as it does alone); a token llama.cpp
cannot build from its own bytes never comes out of llama.cpp's BPE and is left out of the ranks,
except with ``ignore_merges`` (Llama 3: a piece that is a token is returned whole), where it stays
and the vocabulary is accepted only if tiktoken cannot make it. Bytes missing from the vocabulary
are dropped by llama.cpp: here they get placeholder ranks that are removed after encoding.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tiktoken

from repoctx.bperanks import Ranks, cached_ranks
from repoctx.errors import TokenizerError
from repoctx.events import EventSink, ignore_events
from repoctx.modelfile import ModelInfo, read_model_info
from repoctx.pretokenizers import PRE_TOKENIZERS, PreTokenizer, for_tiktoken

_PARALLEL_CHARS = 256 * 1024


class Tokenizer(ABC):
    """Token ids as llama.cpp computes them for one model's vocabulary."""

    name: str  # identity of the tokenization, for keying caches of counts
    # count(a + b) == count(a) + count(b) when ``a`` ends with one "\n" after a non-blank
    # character and ``b`` starts with a non-blank one (byte-level BPE; not SentencePiece)
    additive: bool = False

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``: no BOS, special-token texts encoded as plain text."""

    def count(self, text: str) -> int:
        return len(self.encode(text))

    @abstractmethod
    def special_text(self, token_id: int) -> str | None:
        """The text of a control token (``<|begin_of_text|>``), None for other tokens."""

    @abstractmethod
    def encode_markup(self, text: str) -> list[int]:
        """Token ids of chat-template text, where special-token texts ("<|im_start|>") are the
        special tokens. Only for text repoctx writes itself, never for the user's content."""

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``, spread over the CPU cores (both tokenizers release
        the GIL while they work)."""
        workers = min(os.cpu_count() or 1, len(texts))
        if workers < 2 or sum(map(len, texts)) < _PARALLEL_CHARS:
            return [self.count(text) for text in texts]
        counts = [0] * len(texts)

        def run(start: int) -> None:
            for index in range(start, len(texts), workers):
                counts[index] = self.count(texts[index])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, range(workers)))
        return counts


def _valid(text: str) -> str:
    """``text`` with lone surrogates replaced, as tiktoken does, so both tokenizers agree."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class TiktokenTokenizer(Tokenizer):
    """tiktoken over ranks derived from a byte-level BPE vocabulary."""

    additive = True

    def __init__(self, name: str, pre: PreTokenizer, ranks: Ranks) -> None:
        self.name = name
        mergeable = dict(zip(ranks.pieces, ranks.ranks, strict=True))
        pattern = for_tiktoken(pre.pattern)
        self._encoding = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=mergeable, special_tokens={}
        )
        self._id_of_rank: dict[int, int] | None = None
        pairs = zip(ranks.ranks, ranks.ids, strict=True)
        if ranks.ranks != ranks.ids and any(r != t and t >= 0 for r, t in pairs):
            self._id_of_rank = dict(zip(ranks.ranks, ranks.ids, strict=True))
        dropped = [i for i, token in enumerate(ranks.ids[:256]) if token < 0]  # only bytes
        self._dropped_ranks = frozenset(ranks.ranks[i] for i in dropped)
        self._dropped_chars = _chars_containing(bytes(ranks.pieces[i][0] for i in dropped))
        self._control = dict(ranks.control)
        self._control_re = (
            re.compile("|".join(re.escape(t) for t in sorted(self._control, key=len, reverse=True)))
            if self._control
            else None
        )
        self._user_defined = sorted(ranks.user_defined, key=lambda item: -len(item[0]))
        self._user_defined_re = (
            re.compile("|".join(re.escape(text) for text, _ in self._user_defined))
            if self._user_defined
            else None
        )

    def _fragments(self, text: str) -> list[str | int]:
        """Split at user-defined tokens as llama.cpp does: longest token first, each in turn."""
        fragments: list[str | int] = [text]
        for special, token in self._user_defined:
            split: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or special not in fragment:
                    split.append(fragment)
                    continue
                for index, piece in enumerate(fragment.split(special)):
                    split.extend(([token] if index else []) + ([piece] if piece else []))
            fragments = split
        return fragments

    def _ordinary(self, text: str) -> list[int]:
        ranks = self._encoding.encode_ordinary(text)
        if self._dropped_chars is not None and self._dropped_chars.search(text):
            ranks = [rank for rank in ranks if rank not in self._dropped_ranks]
        if self._id_of_rank is None:
            return ranks
        table = self._id_of_rank
        return [table[rank] for rank in ranks]

    def encode(self, text: str) -> list[int]:  # tiktoken replaces lone surrogates as _valid does
        if self._user_defined_re is None or not self._user_defined_re.search(text):
            return self._ordinary(text)
        ids: list[int] = []
        for fragment in self._fragments(text):
            ids.extend([fragment] if isinstance(fragment, int) else self._ordinary(fragment))
        return ids

    def special_text(self, token_id: int) -> str | None:
        return next((text for text, i in self._control.items() if i == token_id), None)

    def encode_markup(self, text: str) -> list[int]:
        if self._control_re is None:
            return self.encode(text)
        ids: list[int] = []
        position = 0
        for match in self._control_re.finditer(text):
            ids += [*self.encode(text[position : match.start()]), self._control[match.group()]]
            position = match.end()
        return ids + self.encode(text[position:])

    def count(self, text: str) -> int:
        if self._user_defined_re is not None or self._dropped_chars is not None:
            return len(self.encode(text))
        return len(self._encoding.encode_ordinary(text))


def _chars_containing(missing: bytes) -> re.Pattern[str] | None:
    """A pattern matching (at least) the characters whose UTF-8 form holds a ``missing`` byte."""
    if any(0x80 <= byte < 0xC0 for byte in missing):
        return re.compile(r"[^\x00-\x7f]|[" + re.escape(missing.decode("latin-1")) + "]")
    ranges = []
    for byte in missing:
        if byte < 0x80:
            ranges.append(re.escape(chr(byte)))
        elif 0xC2 <= byte < 0xF5:  # a lead byte: its block of code points
            width = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            shift = 6 * (width - 1)
            low = (byte & (0x7F >> width)) << shift
            ranges.append(f"{re.escape(chr(low))}-{re.escape(chr(low + (1 << shift) - 1))}")
    return re.compile("[" + "".join(ranges) + "]") if ranges else None


class LlamaCppTokenizer(Tokenizer):
    """llama.cpp's own tokenizer, for vocabularies tiktoken cannot express (SentencePiece,
    other pre-tokenizers). Loads only the vocabulary."""

    def __init__(self, info: ModelInfo) -> None:
        import llama_cpp  # first: on CUDA builds, numpy imported before it crashes the load

        quiet_llama_cpp(llama_cpp)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only, params.n_gpu_layers = True, 0
        model = llama_cpp.llama_model_load_from_file(os.fsencode(info.path), params)
        if not model:
            raise TokenizerError(
                f"{info.path}: llama.cpp cannot load this model's vocabulary; check that the "
                "file is complete and that llama-cpp-python is recent enough for this model"
            )
        self._finalizer = weakref.finalize(self, llama_cpp.llama_model_free, model)
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._tokenize = llama_cpp.llama_tokenize
        self._token_type = llama_cpp.llama_token
        identity = f"{info.vocab_fingerprint}\0{info.architecture}\0{info.name}"
        self.name = "llama.cpp:" + hashlib.sha256(identity.encode()).hexdigest()[:32]

    def encode(self, text: str) -> list[int]:
        return self._llama_tokenize(text, special=False)

    def encode_markup(self, text: str) -> list[int]:
        return self._llama_tokenize(text, special=True)

    def special_text(self, token_id: int) -> str | None:
        import llama_cpp

        if not 0 <= token_id < llama_cpp.llama_vocab_n_tokens(self._vocab):
            return None
        if not llama_cpp.llama_vocab_is_control(self._vocab, token_id):
            return None
        text = llama_cpp.llama_vocab_get_text(self._vocab, token_id)
        return text.decode("utf-8", "replace") if text else None

    def _llama_tokenize(self, text: str, special: bool) -> list[int]:
        data = _valid(text).encode("utf-8")
        capacity = len(data) + 16
        for _ in range(2):
            buffer = (self._token_type * capacity)()
            count = self._tokenize(self._vocab, data, len(data), buffer, capacity, False, special)
            if int(count) >= 0:
                return list(buffer[: int(count)])
            capacity = -count
        raise TokenizerError("llama.cpp could not tokenize a text; please report this as a bug")


_LOG_CALLBACK: list[Any] = []  # llama.cpp calls it for the life of the process


def quiet_llama_cpp(llama_cpp: Any) -> None:
    """Initialize llama.cpp once, sending its log lines nowhere: the core never prints."""
    if not _LOG_CALLBACK:
        _LOG_CALLBACK.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
        llama_cpp.llama_log_set(_LOG_CALLBACK[0], ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()


_TOKENIZERS: dict[str, Tokenizer] = {}
_LOCK = threading.Lock()


def load_tokenizer(
    model_path: str | os.PathLike[str], on_event: EventSink = ignore_events
) -> Tokenizer:
    """The exact tokenizer of the GGUF at ``model_path``: tiktoken when its vocabulary allows,
    llama.cpp otherwise. Memoized per vocabulary in-process."""
    info = read_model_info(model_path)
    if info.vocab_fingerprint is None or info.vocab_size == 0:
        raise TokenizerError(f"{info.path}: the model file has no vocabulary; pass another --model")
    key = f"{info.vocab_fingerprint}\0{info.architecture}\0{info.name}"
    with _LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = _make_tokenizer(info, on_event)
        return _TOKENIZERS[key]


def _make_tokenizer(info: ModelInfo, on_event: EventSink) -> Tokenizer:
    if info.tokenizer_model == "gpt2" and (info.pre_tokenizer or "") in PRE_TOKENIZERS:
        ranks = cached_ranks(info, on_event)
        # llama.cpp strips spaces around the special tokens of Phi-3 models: not mirrored here
        phi3 = re.search("phi-?3", (info.name or "").lower()) is not None
        if isinstance(ranks, Ranks) and not (phi3 and ranks.user_defined):
            pre = PRE_TOKENIZERS[info.pre_tokenizer or ""]
            return TiktokenTokenizer(f"bpe:{info.vocab_fingerprint}", pre, ranks)
    return LlamaCppTokenizer(info)
