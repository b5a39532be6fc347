"""The input: questions, and slash commands with completion (Tab or → accepts the grey
suggestion); ↑ and ↓ walk through what was typed before."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.suggester import Suggester
from textual.widgets import Input

from tui.commands import BY_NAME, COMMANDS

Candidates = Callable[[str], Sequence[str]]  # completion kind -> what may follow the command


class CommandSuggester(Suggester):
    def __init__(self, candidates: Candidates) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.candidates = candidates

    async def get_suggestion(self, value: str) -> str | None:
        if not value.startswith("/"):
            return None
        name, space, argument = value[1:].partition(" ")
        if not space:
            spec = next((s for s in COMMANDS if s.name.startswith(name.lower())), None)
            return f"/{spec.name}{' ' if spec.argument else ''}" if spec else None
        spec = BY_NAME.get(name)
        if spec is None or not spec.completion or " " in argument:
            return None
        if spec.completion in ("dir", "file"):
            dirs_only = spec.completion == "dir"
            found = await asyncio.to_thread(complete_path, argument, dirs_only)
        else:
            found = next(
                (c for c in self.candidates(spec.completion) if c.startswith(argument)), None
            )
        return f"/{name} {found}" if found and found != argument else None


def complete_path(typed: str, dirs_only: bool) -> str | None:
    """The first entry of the folder ``typed`` points into that starts like its last part, as
    typed (``~`` kept), with ``/`` after folders."""
    head, slash, tail = typed.rpartition("/")
    prefix = head + slash
    folder = Path(os.path.expanduser(prefix)) if prefix else Path(".")
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        hidden = entry.name.startswith(".") and not tail.startswith(".")
        if hidden or not entry.name.startswith(tail):
            continue
        is_dir = entry.is_dir()
        if not dirs_only or is_dir:
            return f"{prefix}{entry.name}{'/' if is_dir else ''}"
    return None


class PromptInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", show=False),
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
    ]

    def __init__(self, candidates: Candidates, *, id: str | None = None) -> None:
        super().__init__(
            placeholder="Ask about the code, or type / for commands",
            suggester=CommandSuggester(candidates),
            id=id,
        )
        self.history: list[str] = []
        self._position = 0

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._position = len(self.history)

    def action_complete(self) -> None:
        if self._suggestion and self.cursor_at_end:
            self.action_cursor_right()
        else:
            self.screen.focus_next()

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self._position = max(0, min(len(self.history), self._position + step))
        self.value = self.history[self._position] if self._position < len(self.history) else ""
        self.cursor_position = len(self.value)
