"""The slash commands: one table that the input, its completion, the command palette and the
help screen all read."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from repoctx.errors import UsageError


@dataclass(frozen=True)
class CommandSpec:
    name: str
    argument: str  # what it takes, e.g. "PATH"; "" for nothing
    help: str
    completion: str = ""  # "dir", "file", "packed" (paths in the pack), "excluded" (patterns)

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.argument}".rstrip()


COMMANDS = (
    CommandSpec("add", "PATH", "add a repository folder to the pack", "dir"),
    CommandSpec(
        "drop", "PATH", "drop a repository, or leave out a path inside the repositories", "packed"
    ),
    CommandSpec("rescan", "", "read the files again after edits; only what changed is prefilled"),
    CommandSpec("model", "PATH", "switch to another GGUF model file", "file"),
    CommandSpec("clear", "", "start a new conversation (this one stays on disk)"),
    CommandSpec("save", "FILE.md", "save the conversation as Markdown", "file"),
    CommandSpec(
        "exclude", "PATTERN", "leave out files matching a gitignore-style pattern", "packed"
    ),
    CommandSpec("include", "PATTERN", "bring back what an exclude pattern left out", "excluded"),
    CommandSpec("history", "", "resume or delete an earlier conversation about these repositories"),
    CommandSpec("watch", "", "turn refreshing the pack when files are saved off or on"),
    CommandSpec("copy", "", "copy a code block of the answers to the clipboard"),
    CommandSpec("context", "", "show or hide the context pane"),
    CommandSpec("help", "", "keys and commands"),
    CommandSpec("quit", "", "leave repoctx"),
)
BY_NAME = {spec.name: spec for spec in COMMANDS}


def parse(text: str) -> tuple[CommandSpec, str]:
    """``/name argument`` -> the command and its argument; UsageError saying how otherwise."""
    name, _, argument = text.strip().removeprefix("/").partition(" ")
    argument = argument.strip()
    spec = BY_NAME.get(name.lower())
    if spec is None:
        known = " ".join(f"/{s.name}" for s in COMMANDS)
        raise UsageError(f"/{name} is not a command; the commands are {known} (F1 for help)")
    if spec.argument and not argument:
        raise UsageError(f"/{spec.name} needs {spec.argument}: type {spec.usage}")
    if not spec.argument and argument:
        raise UsageError(f"/{spec.name} takes nothing after it; type /{spec.name}")
    return spec, argument


@runtime_checkable
class CommandHost(Protocol):
    """What the palette needs of the app."""

    def run_command(self, text: str) -> None: ...

    def prefill_command(self, text: str) -> None: ...


class ChatCommands(Provider):
    """The slash commands in the command palette (Ctrl+P). Those that take an argument put
    ``/name `` in the input for it."""

    async def discover(self) -> Hits:
        for spec in COMMANDS:
            yield DiscoveryHit(spec.usage, partial(self._choose, spec), help=spec.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for spec in COMMANDS:
            text = f"{spec.usage} — {spec.help}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(spec.usage),
                    partial(self._choose, spec),
                    help=spec.help,
                )

    def _choose(self, spec: CommandSpec) -> None:
        host = self.app
        if not isinstance(host, CommandHost):
            return
        if spec.argument:
            host.prefill_command(f"/{spec.name} ")
        else:
            host.run_command(f"/{spec.name}")
