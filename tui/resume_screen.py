"""The conversations about these repositories, latest first, with their dates: offered at start
(resume one, or start a new one) and listed by /history. ``d`` pressed twice deletes the
highlighted conversation from disk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from repoctx.conversations import Conversation
from tui.dates import same_day, when


def describe(conversation: Conversation, now: float | None = None) -> str:
    """``3 questions · today 14:02`` (when it was last saved), and when it was started if
    that was another day."""
    count = conversation.questions
    text = f"{count} question{'' if count == 1 else 's'} · {when(conversation.updated, now)}"
    if not same_day(conversation.created, conversation.updated):
        text += f" · started {when(conversation.created, now)}"
    return text


class ResumeScreen(ModalScreen[str | None]):
    """Dismissed with the id of the conversation to resume, or None: a new conversation when
    ``offer`` (at start), nothing otherwise. ``current`` (the open one) cannot be deleted."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "resume", "Resume", show=False),
        Binding("n,escape", "close", "New conversation"),
        Binding("d,delete", "delete", "Delete"),
    ]

    class DeleteAsked(Message):
        """Delete ``conversation`` from disk (it is gone from the list already)."""

        def __init__(self, conversation: Conversation) -> None:
            super().__init__()
            self.conversation = conversation

    def __init__(
        self,
        conversations: Sequence[Conversation],
        *,
        offer: bool = True,
        current: str | None = None,
        now: float | None = None,
    ) -> None:
        super().__init__(id="resume")
        self.conversations = list(conversations)
        self.offer = offer
        self.current = current
        self.now = now
        self._armed: str | None = None  # the conversation that the next d deletes

    @property
    def conversation(self) -> Conversation:
        """The highlighted conversation."""
        highlighted = self.query_one(OptionList).highlighted
        return self.conversations[highlighted or 0]

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-body") as body:
            body.border_title = "Resume?" if self.offer else "Conversations"
            question = "Continue a conversation" if self.offer else "Earlier conversations"
            yield Static(f"{question} about these repositories, latest first:")
            yield OptionList(*(self._option(c) for c in self.conversations), id="resume-list")
            yield Static("Enter resumes · d d deletes", id="resume-keys", classes="muted")
            with Horizontal(id="resume-buttons"):
                yield Button("Resume (y)", id="resume-yes", variant="primary")
                yield Button("New (n)" if self.offer else "Cancel (Esc)", id="resume-no")

    def _option(self, conversation: Conversation, armed: bool = False) -> Option:
        prompt = Text(conversation.title, style="bold")
        if armed:
            prompt.append("\nd again deletes it from disk; any other key keeps it", "italic")
        else:
            open_now = " · open now" if conversation.id == self.current else ""
            prompt.append(f"\n{describe(conversation, self.now)}{open_now}", style="dim")
        return Option(prompt, id=conversation.id)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.conversations[event.option_index].id)

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._disarm()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "resume-yes":
            self.action_resume()
        else:
            self.action_close()

    def action_resume(self) -> None:
        self.dismiss(self.conversation.id)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_delete(self) -> None:
        conversation = self.conversation
        if conversation.id == self.current:
            self.notify("this conversation is open: Ctrl+N starts another, then delete this one")
            return
        if self._armed != conversation.id:
            self._disarm()
            self._armed = conversation.id
            self._replace(conversation, armed=True)
            return
        self._armed = None
        self._remove(conversation)
        self.post_message(self.DeleteAsked(conversation))

    def _replace(self, conversation: Conversation, armed: bool) -> None:
        options = self.query_one(OptionList)
        options.replace_option_prompt(conversation.id, self._option(conversation, armed).prompt)

    def _disarm(self) -> None:
        armed = next((c for c in self.conversations if c.id == self._armed), None)
        self._armed = None
        if armed is not None:
            self._replace(armed, armed=False)

    def _remove(self, conversation: Conversation) -> None:
        index = self.conversations.index(conversation)
        self.conversations.remove(conversation)
        options = self.query_one(OptionList)
        options.remove_option(conversation.id)
        if not self.conversations:
            self.dismiss(None)
            return
        options.highlighted = min(index, len(self.conversations) - 1)

    def on_key(self, event: events.Key) -> None:
        if self._armed is not None and event.key not in ("d", "delete"):
            self._disarm()
