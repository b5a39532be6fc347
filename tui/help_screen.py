"""The help screen: every key and command, from the same tables that drive them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from tui.commands import COMMANDS

PANE_KEYS = (
    ("Enter", "ask the question, or run the /command"),
    ("Tab / →", "accept the completion shown in grey (commands, paths, patterns)"),
    ("↑ / ↓", "earlier questions and commands"),
    ("x", "in the context tree: leave the file or folder out, or bring it back"),
    ("click a code block", "copy it to the clipboard"),
)


def help_markdown(keys: Sequence[tuple[str, str]]) -> str:
    lines = ["## Keys", ""]
    lines += [f"- **{key}** · {what}" for key, what in [*keys, *PANE_KEYS]]
    lines += ["", "## Commands", ""]
    lines += [f"- `{spec.usage}` · {spec.help}" for spec in COMMANDS]
    lines += [
        "",
        "Conversations are kept per set of repositories, with their dates: opening the same "
        "repositories again lists them to resume (**d** twice deletes one), and the cache is "
        "restored from disk. Asking the question of the last conversation again at once "
        "replaces its answer rather than adding a conversation.",
        "",
        "Saving a file refreshes the pack in the background: only what follows the first "
        "changed file is prefilled again (**Escape** stops that; `/watch` turns watching off).",
        "",
        "Themes: Ctrl+P, then *theme*; `TEXTUAL_THEME=textual-ansi` follows the terminal's own "
        "colours, light or dark.",
    ]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__(id="help")
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "repoctx chat · help"
            body.border_subtitle = "Escape closes"
            yield Markdown(help_markdown(self.keys))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
