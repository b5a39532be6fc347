"""At start: offer to resume the last conversation about these repositories."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from repoctx.conversations import Conversation


class ResumeScreen(ModalScreen[bool]):
    """Dismissed with True to resume ``conversation``, False for a new one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "choose(True)", "Resume"),
        Binding("n,escape", "choose(False)", "New conversation"),
    ]

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(id="resume")
        self.conversation = conversation

    def compose(self) -> ComposeResult:
        questions = sum(1 for m in self.conversation.messages if m.role == "user")
        with Vertical(id="resume-body") as body:
            body.border_title = "Resume?"
            yield Static("Continue the last conversation about these repositories?")
            yield Static(f"“{self.conversation.title}”", id="resume-title", markup=False)
            yield Static(f"{questions} question{'s' if questions != 1 else ''}", classes="muted")
            with Horizontal(id="resume-buttons"):
                yield Button("Resume (y)", id="resume-yes", variant="primary")
                yield Button("New (n)", id="resume-no")

    def on_mount(self) -> None:
        self.query_one("#resume-yes", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "resume-yes")

    def action_choose(self, resume: bool) -> None:
        self.dismiss(resume)
