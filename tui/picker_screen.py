"""A modal list to pick one item from (earlier conversations, code blocks to copy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option


class PickerScreen(ModalScreen[int | None]):
    """Dismissed with the index of the chosen line, or None (Escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, lines: Sequence[str], *, start: int = 0) -> None:
        super().__init__(classes="picker")
        self.title_text = title
        self.lines = list(lines)
        self.start = start

    def compose(self) -> ComposeResult:
        options = OptionList(*(Option(Content(line)) for line in self.lines), id="picker-list")
        options.border_title = self.title_text
        options.border_subtitle = "Enter picks · Escape cancels"
        yield options

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self.start
        options.focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)

    def action_cancel(self) -> None:
        self.dismiss(None)
