"""Checking a method's named parameters (each wrong one is an Invalid Params error that names
it), and how the editor's context becomes part of the question."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repoctx.protocol.rpc import INVALID_PARAMS, RequestId, RpcError, valid_id


class Params:
    """The ``params`` of one message: an object, or absent. A member that is null counts as
    absent; members a method does not know are ignored."""

    def __init__(self, raw: Any, method: str, prefix: str = "") -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            where = f"parameter {prefix.rstrip('.')!r}" if prefix else "params"
            raise RpcError(INVALID_PARAMS, f"{method}: {where} must be an object")
        self.raw: dict[str, Any] = raw
        self.method = method
        self.prefix = prefix

    def _fail(self, name: str, wanted: str) -> RpcError:
        got = json.dumps(self.raw[name])
        got = got if len(got) <= 40 else got[:37] + "..."
        return RpcError(
            INVALID_PARAMS,
            f"{self.method}: parameter {self.prefix + name!r} must be {wanted}, got {got}",
            {"parameter": self.prefix + name},
        )

    def _missing(self, name: str, wanted: str) -> RpcError:
        return RpcError(
            INVALID_PARAMS,
            f"{self.method}: parameter {self.prefix + name!r} ({wanted}) is required",
            {"parameter": self.prefix + name},
        )

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self._missing(name, "a non-empty string")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise self._fail(name, "a non-empty string")
        return value

    def strings(self, name: str, *, required: bool = False) -> list[str]:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self._missing(name, "a non-empty list of strings")
            return []
        wanted = "a non-empty list of non-empty strings" if required else "a list of strings"
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._fail(name, wanted)
        if required and not value:
            raise self._fail(name, wanted)
        return list(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self.raw.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(name, "true or false")
        return value

    def integer(self, name: str, *, minimum: int) -> int | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(name, f"an integer of at least {minimum}")
        return value

    def request_id(self, name: str) -> RequestId:
        value = self.raw.get(name)
        if value is None:
            raise self._missing(name, "the id of a request")
        if not valid_id(value):
            raise self._fail(name, "a string or an integer")
        result: RequestId = value
        return result

    def nested(self, name: str) -> Params | None:
        value = self.raw.get(name)
        if value is None:
            return None
        return Params(value, self.method, f"{self.prefix}{name}.")


@dataclass(frozen=True)
class EditorContext:
    """What the editor shows: a file, and optionally the selected text and its lines."""

    path: str | None = None
    selection: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    language: str | None = None

    @classmethod
    def from_params(cls, params: Params | None) -> EditorContext | None:
        if params is None:
            return None
        context = cls(
            path=params.string("path"),
            selection=params.string("selection"),
            start_line=params.integer("startLine", minimum=1),
            end_line=params.integer("endLine", minimum=1),
            language=params.string("language"),
        )
        if context.language is not None and not re.fullmatch(r"[\w+#.-]*", context.language):
            raise RpcError(
                INVALID_PARAMS,
                f"{params.method}: parameter 'context.language' must be a word such as 'python'",
                {"parameter": "context.language"},
            )
        return context


def display_path(path: str, roots: Sequence[Path]) -> str:
    """An absolute ``path`` inside a root as the pack names it (``root-name/relative/path``);
    any other path as given."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    try:
        full = candidate.resolve()
        for root in roots:
            base = root.resolve()
            if full.is_relative_to(base):
                return f"{base.name}/{full.relative_to(base).as_posix()}".rstrip("/")
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        return path
    return path


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _lines(context: EditorContext) -> str:
    start, end = context.start_line, context.end_line
    if start is None:
        return ""
    if end is None or end == start:
        return f" (line {start})"
    return f" (lines {start}-{end})"


def compose_question(question: str, context: EditorContext | None, roots: Sequence[Path]) -> str:
    """The question the model sees: the user's question first (it titles the conversation),
    then the editor's context. With a selection::

        <question>

        Selected in `proj/src/app.py` (lines 12-20):

        ```python
        <the selection>
        ```

    With a file and no selection, the question, a blank line and
    ``The file open in the editor: `proj/src/app.py` (line 12).``; with no context, the
    question alone."""
    if context is None or (context.path is None and not context.selection):
        return question
    where = f"`{display_path(context.path, roots)}`" if context.path else "the editor"
    if not context.selection:
        return f"{question}\n\nThe file open in the editor: {where}{_lines(context)}."
    selection = context.selection.rstrip("\n")
    fence = _fence(selection)
    return (
        f"{question}\n\nSelected in {where}{_lines(context)}:\n\n"
        f"{fence}{context.language or ''}\n{selection}\n{fence}"
    )
