"""The prompt as token ids: the model's own chat template, with the pack in the system turn so
that it is a prefix shared by every question of every conversation.

Template markup is tokenized with special tokens parsed; the user's content (the pack, the
questions, earlier answers) never is, so a file that contains "<|eot_id|>" stays plain text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from repoctx.errors import ModelError
from repoctx.model.modelfile import ModelInfo
from repoctx.tokens.count import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SENTINEL = "\x00repoctx-content-{}\x00"


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

    def __init__(self, info: ModelInfo, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
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
            self._system_cache = (text, self.tokenizer.encode(text))
        return list(self._system_cache[1])


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
