"""The prompt as token ids: the model's own chat template, with the pack in the system turn so
that it is a prefix shared by every question of every conversation.

Template markup is tokenized with special tokens parsed; the user's content (the pack, the
questions, earlier answers) never is, so a file that contains "<|eot_id|>" stays plain text.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xxhash

from repoctx.errors import ModelError
from repoctx.kv.files import token_bytes, token_ids
from repoctx.model.modelfile import ModelInfo
from repoctx.tokens.count import Tokenizer

if TYPE_CHECKING:
    from repoctx.cache import ContentCache

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SENTINEL = "\x00repoctx-content-{}\x00"
# a system turn this long is encoded once per machine, not once per process (a 1M-token pack
# takes 0.4 s to encode, 0.03 s to read back); shorter ones are quicker to encode than to look up
CACHED_SYSTEM_CHARS = 64 * 1024


@dataclass(frozen=True)
class Message:
    """One turn. ``context`` is text the model reads before ``content`` in the same turn (the
    files picked for a question: ``repoctx.pack.tail``), not what the user wrote."""

    role: str  # "user" or "assistant"
    content: str
    context: str = ""


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    prefix_tokens: int  # ids[:prefix_tokens] is the system turn with the pack, shared by all
    # the roots packed, as absolute paths: what the KV states saved of it are about
    repositories: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


class ChatFormat:
    """Builds prompts for one model: ``build(pack_text, messages)``."""

    def __init__(
        self, info: ModelInfo, tokenizer: Tokenizer, cache: ContentCache | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.cache = cache  # keeps the ids of long system turns, keyed by their text
        self._template = _compile(info.chat_template or CHATML_TEMPLATE)
        self._bos_id = info.bos_id
        self._bos_text = tokenizer.special_text(info.bos_id) if info.bos_id is not None else None
        self._add_bos = bool(info.add_bos) and info.bos_id is not None
        self._trims = " x " not in self._render([{"role": "user", "content": " x "}], False)
        self._system_cache: tuple[str, list[int]] | None = None

    def _render(self, messages: list[dict[str, str]], generation: bool) -> str:
        try:
            text = self._template.render(
                messages=messages,
                add_generation_prompt=generation,
                bos_token=self._bos_text or "",
                eos_token="",
            )
        except ModelError:
            raise
        except Exception as error:  # a template's code can raise anything
            raise ModelError(
                f"the model's chat template failed ({error}); pass another --model"
            ) from error
        return str(text)

    def build(self, pack_text: str, messages: Sequence[Message]) -> Prompt:
        """Token ids of the system turn holding ``pack_text``, then ``messages``, then the
        assistant's header (the last message is the user's question)."""
        contents = [pack_text, *(m.context + m.content for m in messages)]
        shaped = [
            {"role": role, "content": _SENTINEL.format(i)}
            for i, role in enumerate(["system", *(m.role for m in messages)])
        ]
        pieces = _split(self._render(shaped, True), len(contents))
        closing = _split(self._render(shaped[:1], False), 1)[1]
        ids = self._start(pieces[0])
        ids += self._content(contents[0], system=True)
        if pieces[1].startswith(closing):
            ids += self.tokenizer.encode_markup(closing)
            pieces[1] = pieces[1][len(closing) :]
        prefix_tokens = len(ids)
        for markup, content in zip(pieces[1:], contents[1:], strict=False):
            ids += self.tokenizer.encode_markup(markup) + self._content(content, system=False)
        ids += self.tokenizer.encode_markup(pieces[-1])
        return Prompt(ids, prefix_tokens)

    def _start(self, markup: str) -> list[int]:
        ids = self.tokenizer.encode_markup(markup)
        if self._add_bos and self._bos_id is not None and ids[:1] != [self._bos_id]:
            ids.insert(0, self._bos_id)
        return ids

    def _content(self, content: str, system: bool) -> list[int]:
        text = content.strip() if self._trims else content
        if not system:
            return self.tokenizer.encode(text)
        if self._system_cache is None or self._system_cache[0] != text:
            self._system_cache = (text, self._system_ids(text))
        return list(self._system_cache[1])

    def _system_ids(self, text: str) -> list[int]:
        """The ids of a system turn's content, from the cache when it is long enough to be
        kept there; an unreadable entry is encoded again and replaced."""
        if self.cache is None or len(text) < CACHED_SYSTEM_CHARS:
            return self.tokenizer.encode(text)
        namespace = f"system-ids:{self.tokenizer.name}"
        encoded = text.encode("utf-8", "surrogatepass")
        key = xxhash.xxh3_128_hexdigest(encoded)
        stored = self.cache.get(namespace, key)
        if isinstance(stored, str):
            try:
                data = base64.b64decode(stored, validate=True)
            except (binascii.Error, ValueError):
                data = b""
            if data and len(data) % 4 == 0 and len(data) // 4 <= len(encoded):
                return token_ids(data)  # (a token is at least a byte of the text)
        ids = self.tokenizer.encode(text)
        self.cache.put(namespace, key, base64.b64encode(token_bytes(ids)).decode("ascii"))
        return ids


def _split(rendered: str, count: int) -> list[str]:
    """The markup around ``count`` sentinels: ``count + 1`` pieces."""
    pieces = []
    for index in range(count):
        before, found, rendered = rendered.partition(_SENTINEL.format(index))
        if not found:
            raise ModelError("the model's chat template drops messages; pass another --model")
        pieces.append(before)
    return [*pieces, rendered]


@functools.cache
def _compile(source: str) -> Any:
    import jinja2.sandbox

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = _raise
    return environment.from_string(source)


def _raise(message: str) -> None:
    raise ModelError(f"the model's chat template refused the conversation: {message}")


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix, at C speed and in one pass: equal chunks are compared as
    slices, and the first unequal one is searched by halving. (Halving the whole range instead
    slices it ~17 times at 128K tokens: 40 ms a call, several calls a question.)"""
    limit = min(len(a), len(b))
    for start in range(0, limit, _PREFIX_CHUNK):
        end = min(start + _PREFIX_CHUNK, limit)
        if a[start:end] != b[start:end]:
            return start + halving_prefix(a[start:end], b[start:end])
    return limit


_PREFIX_CHUNK = 4096


def halving_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix by halving the range, slicing both lists at each step:
    quick on a chunk, slow on a long context (``common_prefix`` uses it inside one chunk)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
