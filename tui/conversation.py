"""The conversation pane: questions, and answers streamed as Markdown. It stays scrolled to the
newest text until the user scrolls up (and again once they scroll back to the end); clicking a
code block copies it. An answer that did not end by itself is marked ([stopped], ...), also when
the conversation is resumed, and a code fence it left open is closed. A question that got files
the pack left out says which under it."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence, MarkdownStream

from repoctx.conversations import Exchange
from repoctx.events import AnswerDone, added_note
from tui.transcript import CodeBlock, close_fences, code_blocks, stop_mark

STOP_NOTES = {"cancelled": "what was written so far is kept"}


def stop_note(stop_reason: str) -> str:
    """What is said under an answer that ended this way ("" for one that ended by itself)."""
    mark = stop_mark(stop_reason)
    more = STOP_NOTES.get(stop_reason, "")
    return f"{mark} {more}" if mark and more else mark


class QuestionView(Static):
    """One question, as typed."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="question")


class AddedView(Static):
    """The files the pack left out that were added to the question above."""

    def __init__(self, files: Sequence[str]) -> None:
        super().__init__(added_note(files), markup=False, classes="question-added")


class AnswerView(Vertical):
    """One answer: Markdown that grows as tokens arrive, and a note when it did not end well."""

    def __init__(self, text: str = "", stop_reason: str = "") -> None:
        super().__init__(classes="answer")
        self.source = text
        self.stop_reason = stop_reason
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        note = stop_note(self.stop_reason)
        yield Markdown(close_fences(self.source), open_links=False)
        yield Static(note, classes="answer-note", markup=False)
        self.set_class(bool(note), "-noted")

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
        self.stop_reason = done.stop_reason if done else ""
        closed = close_fences(self.source)
        if closed != self.source:
            await self.query_one(Markdown).update(closed)
        note = failure or stop_note(self.stop_reason)
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

    async def added(self, files: Sequence[str]) -> None:
        """Say under the latest question which files were added to it."""
        answers = self.answers
        if answers:
            await self.mount(AddedView(files), before=answers[-1])

    async def show(self, exchanges: Sequence[Exchange]) -> None:
        """Replace what is shown with ``exchanges`` (a resumed or a new conversation)."""
        await self.query("QuestionView, AddedView, AnswerView").remove()
        views: list[QuestionView | AddedView | AnswerView] = []
        for exchange in exchanges:
            views.append(QuestionView(exchange.question))
            if exchange.added:
                views.append(AddedView(exchange.added))
            if exchange.answer is not None:
                views.append(AnswerView(exchange.answer, exchange.stop_reason))
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
