"""Reading a GGUF model file's metadata fast, and fingerprinting its content.

``ggufread`` parses only the header: magic, version, counts, the typed key/value pairs and the
tensor table. Large arrays (the vocabulary and its merges) are skipped, not decoded, unless a
caller asks for the vocabulary. Nothing here imports numpy or gguf, so a quick ``read_model_info``
stays quick and leaves llama.cpp's import order alone (see ``repoctx.tokens.count``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import mmap
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from repoctx import fsutil, paths
from repoctx.errors import ModelError
from repoctx.model import ggufread
from repoctx.model.ggufread import GGUFError, UnsupportedVersion

_VOCAB_PREFIX = "tokenizer.ggml."
_WANTED_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
# what deriving tiktoken ranks reads (repoctx.tokens.bperanks): these entries whole, and whether
# a file names its fill-in-the-middle tokens (then llama.cpp matches them in raw text)
_RANKS_ENTRIES = frozenset(("tokenizer.ggml.model", "tokenizer.ggml.pre", *_WANTED_ARRAYS))
_FIM_NAMES = ("fim_pre", "prefix", "fim_suf", "suffix", "fim_mid", "middle", "fim_pad", "fim_rep")
FIM_ID_KEYS = frozenset(f"tokenizer.ggml.{name}_token_id" for name in (*_FIM_NAMES, "fim_sep"))
_SAMPLES = 16
_SAMPLE_BYTES = 64 * 1024
_MEMO_LIMIT = 64
_FINGERPRINT_VERSION = b"repoctx-gguf-fingerprint-1\0"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelInfo:
    """What repoctx needs to know about a model file, read without loading the model."""

    path: Path
    architecture: str
    name: str | None
    context_length: int | None  # ``{architecture}.context_length``
    tokenizer_model: str | None  # "gpt2" (byte-level BPE), "llama" (SentencePiece), ...
    pre_tokenizer: str | None  # "llama-bpe", "smollm", "gpt-2", "default", ...
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool | None
    chat_template: str | None
    vocab_size: int
    tensor_count: int
    file_size: int
    fingerprint: str  # content identity of the whole file, see ``fingerprint``
    vocab_fingerprint: str | None  # identity of the ``tokenizer.ggml.*`` metadata alone
    shape: ModelShape | None = None  # None for vocabulary-only files
    # identity of what tiktoken ranks are derived from (tokens, types, merges, pre-tokenizer):
    # the same for every model built on one vocabulary, whatever its special token ids
    ranks_fingerprint: str | None = None


@dataclass(frozen=True)
class ModelShape:
    """What sizes the KV cache and the compute buffers (transformer models)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    weights_bytes: int  # the tensor data: what must fit in memory to offload every layer

    def kv_bytes_per_token(self, k_bytes: float, v_bytes: float) -> float:
        """KV cache bytes per token with ``k_bytes``/``v_bytes`` bytes per element."""
        per_layer = self.n_head_kv * (self.head_dim_k * k_bytes + self.head_dim_v * v_bytes)
        return self.n_layer * per_layer


@dataclass(frozen=True)
class Vocabulary:
    """A GGUF's tokenizer arrays as stored: token texts (byte-level BPE vocabularies keep GPT-2's
    byte-to-unicode alphabet), llama.cpp token types, and BPE merges ("left right")."""

    info: ModelInfo
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    metadata: dict[str, Any]  # every scalar and string key/value of the file


@dataclass(frozen=True)
class _Header:
    values: dict[str, Any]  # scalar and string values; arrays are left out
    array_lengths: dict[str, int]
    vocab_digest: str | None
    ranks_digest: str | None
    data_offset: int
    tensor_count: int
    file_size: int


_Identity = tuple[str, int, int, int, int, int]  # resolved path, size, mtime, ctime, inode, device


def _identity(path: Path) -> _Identity:
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ModelError(
            f"{path}: no such model file; pass --model PATH to a .gguf file "
            "or run `repoctx models list`"
        ) from None
    except OSError as error:
        raise ModelError(
            f"{path}: cannot be read ({error.strerror}); check its permissions"
        ) from None
    if not path.is_file():
        raise ModelError(f"{path}: is not a file; pass --model PATH to a .gguf file")
    return (
        str(path.resolve()),
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
        status.st_ino,
        status.st_dev,
    )


def _not_gguf(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path}: is not a GGUF model file ({why}); pass --model PATH to a .gguf file, "
        "or download the model again if this file was cut short"
    )


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    try:
        with ggufread.mapped(path) as buffer:
            yield buffer
    except GGUFError as error:
        raise _not_gguf(path, str(error)) from None
    except OSError as error:
        raise ModelError(
            f"{path}: cannot be read ({error.strerror}); check its permissions"
        ) from None


def _read_kvs(
    cursor: ggufread.Cursor, kv_count: int, arrays: dict[str, list[Any]] | None
) -> tuple[dict[str, Any], dict[str, int], str | None, str | None]:
    """Read every key/value; keep scalars and strings, skip arrays unless ``arrays`` asks for
    the vocabulary ones, and hash the raw ``tokenizer.ggml.*`` entries as they go by: all of
    them (the vocabulary's fingerprint), and those ranks are derived from (``_RANKS_ENTRIES``)."""
    values: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    digest = hashlib.sha256(b"repoctx-vocab-1\0")
    ranks = hashlib.sha256(b"repoctx-ranks-1\0")
    fim_keys: list[str] = []
    seen_vocab = False
    wanted = _WANTED_ARRAYS if arrays is not None else ()
    for entry in ggufread.entries(cursor, kv_count, wanted.__contains__):
        if entry.count is None:
            values[entry.key] = entry.value
        else:
            lengths[entry.key] = entry.count
            if arrays is not None and entry.key in wanted:
                arrays[entry.key] = entry.value
        if entry.key.startswith(_VOCAB_PREFIX):
            seen_vocab = True
            digest.update(cursor.buffer[entry.start : entry.end])
            if entry.key in _RANKS_ENTRIES:
                ranks.update(cursor.buffer[entry.start : entry.end])
            elif entry.key in FIM_ID_KEYS:
                fim_keys.append(entry.key)
    if not seen_vocab:
        return values, lengths, None, None
    ranks.update("\0".join(sorted(fim_keys)).encode())
    return values, lengths, digest.hexdigest()[:32], ranks.hexdigest()[:32]


def _parse(path: Path, buffer: mmap.mmap, arrays: dict[str, list[Any]] | None) -> _Header:
    try:
        cursor, tensor_count, kv_count = ggufread.open_cursor(buffer)
        values, lengths, digest, ranks_digest = _read_kvs(cursor, kv_count, arrays)
        data_offset = ggufread.data_offset(cursor, tensor_count, values.get("general.alignment"))
    except UnsupportedVersion as error:
        raise ModelError(
            f"{path}: {error}; convert the model again with a current llama.cpp"
        ) from None
    except GGUFError as error:
        raise _not_gguf(path, str(error)) from None
    return _Header(values, lengths, digest, ranks_digest, data_offset, tensor_count, cursor.size)


def _content_fingerprint(buffer: mmap.mmap, data_offset: int) -> str:
    """sha256 over the size, the whole header and metadata, and evenly spaced samples of the
    tensor data: a changed quantization, vocabulary or weight block changes it."""
    size = len(buffer)
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    digest.update(size.to_bytes(8, "little"))
    digest.update(buffer[:data_offset])
    data_size = size - data_offset
    if data_size <= _SAMPLES * _SAMPLE_BYTES:
        digest.update(buffer[data_offset:])
        return digest.hexdigest()
    for index in range(_SAMPLES):  # the first sample starts the data, the last one ends it
        start = data_offset + index * (data_size - _SAMPLE_BYTES) // (_SAMPLES - 1)
        digest.update(buffer[start : start + _SAMPLE_BYTES])
    return digest.hexdigest()


def _memo(table: dict[Any, _T], key: Any, compute: Callable[[], _T]) -> _T:
    if key not in table:
        if len(table) >= _MEMO_LIMIT:
            table.pop(next(iter(table)))
        table[key] = compute()
    return table[key]


_HEADERS: dict[_Identity, tuple[_Header, str]] = {}


def _header_and_fingerprint(path: Path) -> tuple[_Header, str]:
    def compute() -> tuple[_Header, str]:
        remembered = _remembered(identity)
        if remembered is not None:
            return remembered
        with _mapped(path) as buffer:
            header = _parse(path, buffer, None)
            found = header, _content_fingerprint(buffer, header.data_offset)
        _remember(identity, *found)
        return found

    identity = _identity(path)
    return _memo(_HEADERS, identity, compute)


# The header and fingerprint of a model file are also kept on disk by its status, as git's
# index keeps blob ids: trusted while path, size, mtime, ctime (which no tool sets back),
# inode and device all match, and written only for a file settled for a while, so that a
# change within the same clock tick as the last one cannot go unseen.
_REMEMBERED_VERSION = 2  # 2: the ranks digest
_SETTLED_NS = 2_000_000_000


def _remembered_path(identity: _Identity) -> Path:
    digest = hashlib.sha256(identity[0].encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return paths.cache_dir() / "models" / f"{digest}.json"


def _remembered(identity: _Identity) -> tuple[_Header, str] | None:
    try:
        record = json.loads(_remembered_path(identity).read_bytes())
        if record["version"] != _REMEMBERED_VERSION or record["identity"] != list(identity):
            return None
        return _Header(**record["header"]), str(record["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: parsed again, and written again


def _remember(identity: _Identity, header: _Header, content_fingerprint: str) -> None:
    _, _, mtime, ctime, _, _ = identity
    if time.time_ns() - max(mtime, ctime) < _SETTLED_NS:
        return
    record = {
        "version": _REMEMBERED_VERSION,
        "identity": list(identity),
        "header": dataclasses.asdict(header),
        "fingerprint": content_fingerprint,
    }
    location = _remembered_path(identity)
    with contextlib.suppress(OSError, ValueError):
        paths.ensure_private_dir(location.parent)
        fsutil.atomic_write(location, json.dumps(record).encode())


def fingerprint(path: str | os.PathLike[str]) -> str:
    """Content identity of a GGUF file, fast on multi-GB files (see ``_content_fingerprint``);
    memoized per path, size, mtime, ctime, inode and device (on disk too). llama.cpp does not
    check that a saved state came from the same model, so caches of model state are keyed by
    this."""
    return _header_and_fingerprint(Path(path))[1]


def _optional(values: dict[str, Any], key: str, kind: type[_T]) -> _T | None:
    value = values.get(key)
    return value if isinstance(value, kind) else None


def _model_info(path: Path, header: _Header, content_fingerprint: str) -> ModelInfo:
    values = header.values
    architecture = _optional(values, "general.architecture", str) or "unknown"
    context_length = _optional(values, f"{architecture}.context_length", int)
    return ModelInfo(
        path=path,
        architecture=architecture,
        name=_optional(values, "general.name", str),
        context_length=context_length,
        tokenizer_model=_optional(values, "tokenizer.ggml.model", str),
        pre_tokenizer=_optional(values, "tokenizer.ggml.pre", str),
        bos_id=_optional(values, "tokenizer.ggml.bos_token_id", int),
        eos_id=_optional(values, "tokenizer.ggml.eos_token_id", int),
        eot_id=_optional(values, "tokenizer.ggml.eot_token_id", int),
        add_bos=_optional(values, "tokenizer.ggml.add_bos_token", bool),
        chat_template=_optional(values, "tokenizer.chat_template", str),
        vocab_size=header.array_lengths.get("tokenizer.ggml.tokens", 0),
        tensor_count=header.tensor_count,
        file_size=header.file_size,
        fingerprint=content_fingerprint,
        vocab_fingerprint=header.vocab_digest,
        shape=_shape(values, architecture, header),
        ranks_fingerprint=header.ranks_digest,
    )


def _shape(values: dict[str, Any], arch: str, header: _Header) -> ModelShape | None:
    def number(key: str) -> int | None:
        value = values.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer arrays (some architectures): take the largest
            value = max(value) if value else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    n_layer, n_embd, n_head = (
        number("block_count"),
        number("embedding_length"),
        number("attention.head_count"),
    )
    if not n_layer or not n_embd or not n_head or header.tensor_count == 0:
        return None
    head_dim = n_embd // n_head
    return ModelShape(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=number("attention.head_count_kv") or n_head,
        head_dim_k=number("attention.key_length") or head_dim,
        head_dim_v=number("attention.value_length") or head_dim,
        n_ff=number("feed_forward_length") or 4 * n_embd,
        weights_bytes=max(0, header.file_size - header.data_offset),
    )


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The metadata of the GGUF at ``path``. Raises ``ModelError`` saying what to do when the
    file is missing, unreadable, not a GGUF, or truncated."""
    model_path = Path(path)
    header, content_fingerprint = _header_and_fingerprint(model_path)
    return _model_info(model_path, header, content_fingerprint)


def read_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """The tokenizer arrays of the GGUF at ``path`` (slow on large vocabularies: decodes every
    token and merge; callers cache what they derive from it)."""
    model_path = Path(path)
    info = read_model_info(model_path)
    arrays: dict[str, list[Any]] = {}
    with _mapped(model_path) as buffer:
        header = _parse(model_path, buffer, arrays)
    tokens = arrays.get("tokenizer.ggml.tokens", [])
    if not tokens or not isinstance(tokens[0], str):
        raise ModelError(f"{model_path}: the model file has no vocabulary; pass another --model")
    token_types = arrays.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = arrays.get("tokenizer.ggml.merges", [])
    return Vocabulary(info, tokens, token_types, merges, header.values)
