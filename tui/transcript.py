"""Text made from a conversation: its code blocks (to copy) and its transcript as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt

from repoctx.prompt import Message


@dataclass(frozen=True)
class CodeBlock:
    language: str
    code: str

    @property
    def preview(self) -> str:
        """The first line that says something, for pickers."""
        lines = [line.strip() for line in self.code.splitlines() if line.strip()]
        first = lines[0] if lines else "(empty)"
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        return f"{first[:60]}{more}"


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced and indented code blocks of ``markdown``, in order."""
    blocks = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type in ("fence", "code_block"):
            language = token.info.split()[0] if token.info.strip() else ""
            blocks.append(CodeBlock(language, token.content))
    return blocks


def transcript(
    title: str, repositories: Sequence[str], model: str, messages: Sequence[Message]
) -> str:
    """The conversation as a Markdown document: questions and answers under headings."""
    lines = [f"# {title}", "", f"Repositories: {', '.join(repositories)}  ", f"Model: {model}", ""]
    for message in messages:
        heading = "Question" if message.role == "user" else "Answer"
        lines += [f"## {heading}", "", message.content.strip(), ""]
    return "\n".join(lines)
