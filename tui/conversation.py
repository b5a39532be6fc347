"""The conversation pane: questions, and answers streamed as Markdown. It stays scrolled to the
newest text until the user scrolls up (and again once they scroll back to the end); clicking a
code block copies it."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence, MarkdownStream

from repoctx.events import AnswerDone
from repoctx.prompt import Message
from tui.transcript import CodeBlock, code_blocks

STOP_NOTES = {
    "cancelled": "stopped — what was written so far is kept",
    "length": "cut at the answer length limit",
}


class QuestionView(Static):
    """One question, as typed."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="question")


class AnswerView(Vertical):
    """One answer: Markdown that grows as tokens arrive, and a note when it did not end well."""

    def __init__(self, text: str = "") -> None:
        super().__init__(classes="answer")
        self.source = text
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Markdown(self.source, open_links=False)
        yield Static("", classes="answer-note", markup=False)

    def begin(self) -> None:
        self._note("…")
        self._stream = Markdown.get_stream(self.query_one(Markdown))

    def _note(self, text: str) -> None:
        self.query_one(".answer-note", Static).update(text)
        self.set_class(bool(text), "-noted")

    async def append(self, text: str) -> None:
        if not self.source:
            self._note("")
        self.source += text
        if self._stream is not None:
            await self._stream.write(text)

    async def finish(self, done: AnswerDone | None, failure: str = "") -> None:
        """End the stream; note a stopped, cut or failed answer under it."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        note = failure or (STOP_NOTES.get(done.stop_reason, "") if done else "")
        if done is not None and not self.source.strip() and not note:
            note = "(the model wrote nothing)"
        self._note(note)


class ConversationView(VerticalScroll):
    """All questions and answers of the conversation, oldest first."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, can_focus=True)
        self.welcome = Static("", id="welcome", markup=False)

    def compose(self) -> ComposeResult:
        yield self.welcome

    def on_mount(self) -> None:
        self.anchor()

    def set_welcome(self, text: str) -> None:
        self.welcome.update(text)

    @property
    def answers(self) -> list[AnswerView]:
        return list(self.query(AnswerView))

    async def ask(self, question: str) -> AnswerView:
        """Show ``question`` and an empty answer that streams from now on."""
        self.welcome.display = False
        answer = AnswerView()
        await self.mount_all([QuestionView(question), answer])
        answer.begin()
        self.anchor()
        return answer

    async def show(self, messages: Sequence[Message]) -> None:
        """Replace what is shown with ``messages`` (a resumed or a new conversation)."""
        await self.query("QuestionView, AnswerView").remove()
        views = [
            QuestionView(m.content) if m.role == "user" else AnswerView(m.content) for m in messages
        ]
        self.welcome.display = not views
        await self.mount_all(views)
        self.anchor()

    def code_blocks(self) -> list[CodeBlock]:
        """The code blocks of every answer, newest last."""
        return [block for answer in self.answers for block in code_blocks(answer.source)]

    def on_click(self, event: events.Click) -> None:
        clicked = event.widget.ancestors_with_self if event.widget is not None else []
        fence = next((node for node in clicked if isinstance(node, MarkdownFence)), None)
        if fence is not None:
            self.app.copy_to_clipboard(fence.code)
            self.notify("code block copied to the clipboard", timeout=3)
