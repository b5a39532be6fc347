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

import hashlib
import os
import re
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from repoctx.errors import TokenizerError
from repoctx.events import Event, EventSink, ignore_events
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.tokens import bperanks
from repoctx.tokens.pretokenizers import PRE_TOKENIZERS, PreTokenizer, for_tiktoken
from repoctx.tokens.ranktable import Ranks

if TYPE_CHECKING:  # a run whose counts all come from the cache imports neither
    from concurrent.futures import Executor, Future

    import tiktoken

_PARALLEL_CHARS = 256 * 1024


class Tokenizer(ABC):
    """Token ids as llama.cpp computes them for one model's vocabulary."""

    name: str  # identity of the tokenization, for keying caches of counts
    # count(a + b) == count(a) + count(b) when ``a`` ends with one "\n" after a non-blank
    # character and ``b`` starts with a non-blank one (byte-level BPE; not SentencePiece)
    additive: bool = False
    # counts on several threads run at once (else they take turns and threads only cost)
    threads_run_together: bool = True
    # a worker process rebuilds it from the model file quickly (from the cached ranks)
    rebuilt_in_workers: bool = False

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
        """``[count(t) for t in texts]``, spread over the CPU cores where threads run together
        (llama.cpp's tokenizer releases the GIL; see ``count_batches`` for tiktoken)."""
        workers = min(os.cpu_count() or 1, len(texts)) if self.threads_run_together else 1
        if workers < 2 or sum(map(len, texts)) < _PARALLEL_CHARS:
            return [self.count(text) for text in texts]
        from concurrent.futures import ThreadPoolExecutor

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


# a text this short is encoded with the ranks of its own substrings only (milliseconds) until
# the whole vocabulary's encoder is built (tens of milliseconds; for Llama 3's, a tenth of a
# second): a follow-up question's prompt adds a few short texts to cached ids. After so many,
# the whole encoder is built after all (it pays for itself).
_SMALL_TEXT_SUBSTRINGS = 64 * 1024
_SMALL_ENCODERS = 16


class _Tables:
    """What a TiktokenTokenizer encodes with, made from its ranks. The encoder of the whole
    vocabulary is built on first need (``encoding``); until then, a short text gets one made of
    the ranks of its substrings (``encoding_for``). That is exact: tiktoken's BPE of a piece
    only looks up byte strings inside the piece, and those the vocabulary holds (no token is
    longer than its longest) are all there, with their ranks."""

    def __init__(self, name: str, pre: PreTokenizer, ranks: Ranks) -> None:
        self._name = name
        self._pattern = for_tiktoken(pre.pattern)
        self._ranks = ranks
        self._full: tiktoken.Encoding | None = None
        self._building = threading.Lock()
        self._small_left = _SMALL_ENCODERS
        self._rank_of: dict[bytes, int] | None = None
        self.longest = max(map(len, ranks.pieces))
        self.id_of_rank: dict[int, int] | None = None
        pairs = zip(ranks.ranks, ranks.ids, strict=True)
        if ranks.ranks != ranks.ids and any(r != t and t >= 0 for r, t in pairs):
            self.id_of_rank = dict(zip(ranks.ranks, ranks.ids, strict=True))
        dropped = [i for i, token in enumerate(ranks.ids[:256]) if token < 0]  # only bytes
        self.dropped_ranks = frozenset(ranks.ranks[i] for i in dropped)
        missing = bytes(ranks.pieces[i][0] for i in dropped)
        self.dropped_chars = _chars_containing(missing)
        self.dropped_ascii = "".join(chr(byte) for byte in missing if byte < 0x80)
        self.control = dict(ranks.control)
        self._control_longest_first = sorted(self.control, key=len, reverse=True)
        self.user_defined = sorted(ranks.user_defined, key=lambda item: -len(item[0]))
        self.user_defined_re = (
            re.compile("|".join(re.escape(text) for text, _ in self.user_defined))
            if self.user_defined
            else None
        )

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The encoder of the whole vocabulary."""
        if self._full is None:
            with self._building:
                if self._full is None:
                    self._full = self._encoder(self.rank_of)
        return self._full

    @property
    def rank_of(self) -> dict[bytes, int]:
        """Each mergeable string's rank."""
        if self._rank_of is None:
            self._rank_of = dict(zip(self._ranks.pieces, self._ranks.ranks, strict=True))
        return self._rank_of

    def encoding_for(self, text: str) -> tiktoken.Encoding:
        """An encoder that encodes ``text`` as ``encoding`` does: that one for a long text, or
        after ``_SMALL_ENCODERS`` others, else one of the ranks of ``text``'s substrings."""
        data = _valid(text).encode("utf-8")
        small = self._full is None and self._small_left > 0
        if not small or len(data) * self.longest > _SMALL_TEXT_SUBSTRINGS:
            return self.encoding
        inside = {
            data[start:end]
            for start in range(len(data))
            for end in range(start + 2, min(len(data), start + self.longest) + 1)
        }
        self._small_left -= 1
        rank_of = self.rank_of
        mergeable = {piece: rank_of[piece] for piece in self._ranks.pieces[:256]}
        mergeable.update((piece, rank_of[piece]) for piece in inside if piece in rank_of)
        return self._encoder(mergeable)

    def _encoder(self, mergeable: dict[bytes, int]) -> tiktoken.Encoding:
        import tiktoken

        return tiktoken.Encoding(
            self._name, pat_str=self._pattern, mergeable_ranks=mergeable, special_tokens={}
        )

    def control_split(self, text: str) -> list[str | int]:
        """``text`` cut at the control tokens in it (leftmost first, longest first where
        several start at one place), as texts and their ids."""
        present = [token for token in self._control_longest_first if token in text]
        if not present:
            return [text]
        found: list[str | int] = []
        position = 0
        for match in re.finditer("|".join(map(re.escape, present)), text):
            found += [text[position : match.start()], self.control[match.group()]]
            position = match.end()
        return [*found, text[position:]]

    def may_drop(self, text: str) -> bool:
        """Whether ``text`` may hold a byte the vocabulary lacks (its ranks are then removed)."""
        if self.dropped_chars is None:
            return False
        if text.isascii():  # known without a scan; then only ASCII bytes can be missing
            return any(char in text for char in self.dropped_ascii)
        return self.dropped_chars.search(text) is not None


class TiktokenTokenizer(Tokenizer):
    """tiktoken over ranks derived from a byte-level BPE vocabulary. The ranks are read and the
    encoder built on first use (tens of milliseconds): a run whose counts all come from the
    cache never needs them."""

    additive = True
    # tiktoken releases the GIL, but with these patterns its threads take turns on the regex
    # engine's match cache: two threads counted no faster than one, with more CPU time
    threads_run_together = False
    rebuilt_in_workers = True

    def __init__(self, name: str, pre: PreTokenizer, ranks: Ranks | Callable[[], Ranks]) -> None:
        self.name = name
        self._pre = pre
        self._ranks = ranks
        self._built: _Tables | None = None
        self._building = threading.Lock()

    @property
    def _tables(self) -> _Tables:
        if self._built is None:
            with self._building:
                if self._built is None:
                    ranks = self._ranks if isinstance(self._ranks, Ranks) else self._ranks()
                    self._built = _Tables(self.name, self._pre, ranks)
        return self._built

    @property
    def _encoding(self) -> tiktoken.Encoding:
        return self._tables.encoding

    def _fragments(self, text: str) -> list[str | int]:
        """Split at user-defined tokens as llama.cpp does: longest token first, each in turn."""
        fragments: list[str | int] = [text]
        for special, token in self._tables.user_defined:
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
        tables = self._tables
        ranks = tables.encoding_for(text).encode_ordinary(text)
        if tables.may_drop(text):
            ranks = [rank for rank in ranks if rank not in tables.dropped_ranks]
        if tables.id_of_rank is None:
            return ranks
        table = tables.id_of_rank
        return [table[rank] for rank in ranks]

    def encode(self, text: str) -> list[int]:  # tiktoken replaces lone surrogates as _valid does
        user_defined = self._tables.user_defined_re
        if user_defined is None or not user_defined.search(text):
            return self._ordinary(text)
        ids: list[int] = []
        for fragment in self._fragments(text):
            ids.extend([fragment] if isinstance(fragment, int) else self._ordinary(fragment))
        return ids

    def special_text(self, token_id: int) -> str | None:
        return next((text for text, i in self._tables.control.items() if i == token_id), None)

    def encode_markup(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self._tables.control_split(text):
            if isinstance(part, int):
                ids.append(part)
            elif part:
                ids += self.encode(part)
        return ids

    def count(self, text: str) -> int:
        tables = self._tables
        if tables.user_defined_re is not None and tables.user_defined_re.search(text):
            return len(self.encode(text))
        ranks = tables.encoding.encode_ordinary(text)
        if not tables.may_drop(text):
            return len(ranks)
        return sum(rank not in tables.dropped_ranks for rank in ranks)


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
        import ctypes

        _LOG_CALLBACK.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
        llama_cpp.llama_log_set(_LOG_CALLBACK[0], ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()


def count_batches(
    tokenizer: Tokenizer,
    batches: Sequence[list[str]],
    model_path: str | os.PathLike[str],
    workers: Executor | None = None,
) -> Iterator[list[int]]:
    """The counts of each batch of texts, in order. With ``workers`` (worker processes, such
    as the import parser's, idle once it is done) and a tokenizer they can rebuild, batches are
    shared: the workers take them from the end, this thread from the start, and a batch that
    no worker has started yet is counted here."""
    shared: dict[int, Future[list[int]]] = {}
    if workers is not None and tokenizer.rebuilt_in_workers and len(batches) > 1:
        for index in reversed(range(1, len(batches))):
            shared[index] = workers.submit(_count_in_worker, os.fspath(model_path), batches[index])
    for index, batch in enumerate(batches):
        future = shared.get(index)
        if future is None or future.cancel():
            yield tokenizer.count_many(batch)
            continue
        try:
            yield future.result()
        except Exception:  # a worker that could not count (or died) leaves the batch here
            yield tokenizer.count_many(batch)


def _count_in_worker(model_path: str, texts: list[str]) -> list[int]:
    return load_tokenizer(model_path).count_many(texts)


_TOKENIZERS: dict[str, Tokenizer] = {}
_LOCK = threading.Lock()

# what a worker process that derived a vocabulary's ranks hands back: the cache body (see
# ``bperanks.body_of``) and the notices it would have emitted
Prepared = tuple[bytes, list[Event]]


def load_tokenizer(
    model_path: str | os.PathLike[str],
    on_event: EventSink = ignore_events,
    prepared: Future[Prepared] | None = None,
) -> Tokenizer:
    """The exact tokenizer of the GGUF at ``model_path``: tiktoken when its vocabulary allows,
    llama.cpp otherwise. Memoized per vocabulary in-process. ``prepared``: ``prepare_in_worker``
    submitted to a worker process (see ``ranks_to_derive``); its ranks are used unless it
    failed."""
    info = read_model_info(model_path)
    if info.vocab_fingerprint is None or info.vocab_size == 0:
        raise TokenizerError(f"{info.path}: the model file has no vocabulary; pass another --model")
    key = _key(info)
    with _LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = _make_tokenizer(info, on_event, prepared)
        return _TOKENIZERS[key]


def ranks_to_derive(model_path: str | os.PathLike[str]) -> bool:
    """Whether ``load_tokenizer`` will derive tiktoken ranks from the model file: the first
    time this machine sees the vocabulary, a fraction of a second that a worker process can
    spend meanwhile (``prepare_in_worker``). Cheap: it reads no cache file."""
    info = read_model_info(model_path)
    if info.vocab_fingerprint is None or info.vocab_size == 0 or not _uses_ranks(info):
        return False
    with _LOCK:
        if _key(info) in _TOKENIZERS:
            return False
    return bperanks.ranks_to_derive(info)


def prepare_in_worker(model_path: str) -> Prepared:
    """In a worker process: the ranks of the model's vocabulary, derived and stored in the
    cache (or read from it); the worker keeps the tokenizer for counts it is sent later."""
    info = read_model_info(model_path)
    events: list[Event] = []
    ranks = bperanks.cached_ranks(info, events.append)
    tokenizer = _bpe_tokenizer(info, ranks)
    if tokenizer is not None:
        with _LOCK:
            _TOKENIZERS.setdefault(_key(info), tokenizer)
    return bperanks.body_of(ranks), events


def prepare_tokenizer(
    model_path: str | os.PathLike[str], on_event: EventSink = ignore_events
) -> None:
    """Derive and store what ``load_tokenizer`` needs from the model file, if anything (when a
    model is pulled), so that the first pack with it does not."""
    if ranks_to_derive(model_path):
        bperanks.cached_ranks(read_model_info(model_path), on_event)


def _key(info: ModelInfo) -> str:
    return f"{info.vocab_fingerprint}\0{info.architecture}\0{info.name}"


def _uses_ranks(info: ModelInfo) -> bool:
    return info.tokenizer_model == "gpt2" and (info.pre_tokenizer or "") in PRE_TOKENIZERS


def _make_tokenizer(
    info: ModelInfo, on_event: EventSink, prepared: Future[Prepared] | None
) -> Tokenizer:
    if _uses_ranks(info):
        tokenizer = _bpe_tokenizer(info, _ranks(info, on_event, prepared))
        if tokenizer is not None:
            return tokenizer
    return LlamaCppTokenizer(info)


def _ranks(
    info: ModelInfo, on_event: EventSink, prepared: Future[Prepared] | None
) -> Callable[[], Ranks] | str:
    if prepared is not None:
        try:
            body, events = prepared.result()
        except Exception:  # a worker that failed (or died): derived here instead
            pass
        else:
            for event in events:
                on_event(event)
            found = bperanks.ranks_from_body(body, info, on_event)
            if found is not None:
                return found
    return bperanks.cached_ranks_later(info, on_event)


def _bpe_tokenizer(
    info: ModelInfo, ranks: Ranks | Callable[[], Ranks] | str
) -> TiktokenTokenizer | None:
    """tiktoken over ``ranks``, or None where llama.cpp must tokenize: the vocabulary has no
    ranks, or it is a Phi-3 one with user-defined tokens (llama.cpp strips the spaces around
    them: not mirrored here)."""
    if isinstance(ranks, str):
        return None
    if re.search("phi-?3", (info.name or "").lower()) is not None:
        ranks = ranks if isinstance(ranks, Ranks) else ranks()
        if ranks.user_defined:
            return None
    pre = PRE_TOKENIZERS[info.pre_tokenizer or ""]
    return TiktokenTokenizer(f"bpe:{info.vocab_fingerprint}", pre, ranks)
