"""Text made from a conversation: its code blocks (to copy), answers made whole (a code fence
left open by a stopped answer is closed), and its transcript as Markdown, stopped answers
marked."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt

from repoctx.conversations import Exchange
from repoctx.events import added_note

STOP_MARKS = {
    "cancelled": "[stopped]",
    "length": "[cut at the length limit]",
    "repetition": "[stopped: the model kept repeating itself]",
}


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


def stop_mark(stop_reason: str) -> str:
    """``[stopped]`` and the like for an answer that did not end by itself; "" otherwise."""
    if stop_reason in ("", "end"):
        return ""
    return STOP_MARKS.get(stop_reason, f"[stopped: {stop_reason}]")


def close_fences(markdown: str) -> str:
    """``markdown`` with the code fence that is still open at its end (an answer stopped in
    the middle of a code block) closed, at the fence's own indentation."""
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    fences = [t for t in MarkdownIt("commonmark").parse(text) if t.type == "fence" and t.map]
    if not fences:
        return markdown
    last = fences[-1]
    assert last.map is not None
    start, end = last.map
    if end < len(lines) or (end - 1 > start and _closes(lines[end - 1], last.markup)):
        return markdown
    opening = lines[start]
    before = opening[: opening.find(last.markup)]
    indent = re.sub(r"[^>\s]", " ", before)  # list markers become spaces; quote marks stay
    return text.rstrip("\n") + "\n" + indent + last.markup + "\n"


def _closes(line: str, markup: str) -> bool:
    bare = line.strip().lstrip(">").strip()
    return len(bare) >= len(markup) and bare == markup[0] * len(bare)


def clock_time(stamp: float) -> str:
    """A unix time as local ``2026-12-05 14:02``."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def transcript(
    title: str, repositories: Sequence[str], model: str, exchanges: Sequence[Exchange]
) -> str:
    """The conversation as a Markdown document: questions and answers under headings, with
    the time of each question and the files the pack left out that were added to it (named,
    not copied); a stopped answer has its open code fence closed and is marked."""
    lines = [f"# {title}", "", f"Repositories: {', '.join(repositories)}  ", f"Model: {model}", ""]
    for exchange in exchanges:
        asked = f" · {clock_time(exchange.asked)}" if exchange.asked is not None else ""
        lines += [f"## Question{asked}", "", exchange.question.strip(), ""]
        if exchange.added:
            lines += [f"*{added_note(exchange.added)}*", ""]
        if exchange.answer is None:
            continue
        answer = close_fences(exchange.answer.strip())
        lines += ["## Answer", ""] + ([answer.rstrip("\n"), ""] if answer else [])
        mark = stop_mark(exchange.stop_reason)
        if mark:
            lines += [mark, ""]
    return "\n".join(lines)
