"""How a pack reads: the text formats the model sees.

Every piece (header, one file, one footer line) ends with a newline after a non-blank character
and the next piece starts with a non-blank character. Byte-level BPE pre-tokenizers (Llama 3,
GPT-2, SmolLM) never join characters across such a boundary, so the token count of the pack is
exactly the sum of the counts of its pieces: each file's count is cached on its own.
"""

from __future__ import annotations

import re
from typing import Protocol

from repoctx.scan.snapshot import SourceFile

INSTRUCTIONS = (
    "These are the files of the repositories {names}, packed by repoctx. Each file appears "
    "once; files come in dependency order, so what a file imports appears before it. A file "
    "marked as reduced shows its declarations only, with bodies elided."
)

_FENCE_LANGUAGES = {"csharp": "cs", "cpp": "cpp", "tsx": "tsx"}


class Renderer(Protocol):
    name: str

    def header(self, root_names: list[str]) -> str: ...

    def file(self, file: SourceFile, text: str, reduced: bool) -> str: ...

    def footer_open(self) -> str:
        """Text before the list of files dropped for the budget ("" if nothing was dropped)."""
        ...

    def footer_line(self, key: str) -> str: ...

    def footer_more(self, count: int) -> str:
        """The line that stands for ``count`` dropped files the footer has no room to name."""
        ...

    def footer_close(self, dropped_any: bool) -> str: ...


def quoteattr(value: str) -> str:
    """``value`` as a double-quoted XML attribute."""
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return '"' + escaped.replace('"', "&quot;").replace("\n", "&#10;") + '"'


def _closed(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _names(root_names: list[str]) -> str:
    return ", ".join(root_names)


class XmlRenderer:
    name = "xml"

    def header(self, root_names: list[str]) -> str:
        return (
            f"<repository_pack roots={quoteattr(_names(root_names))}>\n"
            f"<instructions>{INSTRUCTIONS.format(names=_names(root_names))}</instructions>\n"
        )

    def file(self, file: SourceFile, text: str, reduced: bool) -> str:
        mark = ' reduced="signatures"' if reduced else ""
        return f"<file path={quoteattr(file.key)}{mark}>\n{_closed(text)}</file>\n"

    def footer_open(self) -> str:
        return '<omitted reason="over the token budget">\n'

    def footer_line(self, key: str) -> str:
        return f"{key}\n"

    def footer_more(self, count: int) -> str:
        return f"and {count:,} more files\n"

    def footer_close(self, dropped_any: bool) -> str:
        return ("</omitted>\n" if dropped_any else "") + "</repository_pack>\n"


class MarkdownRenderer:
    name = "markdown"

    def header(self, root_names: list[str]) -> str:
        names = _names(root_names)
        return f"# Repository pack: {names}\n\n{INSTRUCTIONS.format(names=names)}\n"

    def file(self, file: SourceFile, text: str, reduced: bool) -> str:
        fence = "`" * max(3, _longest_backtick_run(text) + 1)
        language = _FENCE_LANGUAGES.get(file.language or "", file.language or "")
        title = f"## `{file.key}`" + (" (signatures only)" if reduced else "")
        return f"{title}\n{fence}{language}\n{_closed(text)}{fence}\n"

    def footer_open(self) -> str:
        return "## Omitted: over the token budget\n"

    def footer_line(self, key: str) -> str:
        return f"- `{key}`\n"

    def footer_more(self, count: int) -> str:
        return f"- and {count:,} more files\n"

    def footer_close(self, dropped_any: bool) -> str:
        return ""


_BACKTICKS = re.compile(r"`+")


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)


RENDERERS: dict[str, Renderer] = {"xml": XmlRenderer(), "markdown": MarkdownRenderer()}
