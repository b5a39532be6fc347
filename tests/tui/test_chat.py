"""Asking, streaming, stopping, scrolling, copying, and conversations kept on disk."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownFence
from tui_helpers import (
    ANSWER,
    SECOND_ANSWER,
    Engines,
    MakeApp,
    ask,
    notifications,
    run,
    settle,
    submit,
    wait_for,
)

from tui.conversation import AnswerView, ConversationView, QuestionView
from tui.picker_screen import PickerScreen
from tui.prompt_input import PromptInput
from tui.resume_screen import ResumeScreen
from tui.status_line import StatusLine

LONG = " ".join(f"word{i}" + ("\n\n" if i % 5 == 4 else "") for i in range(80))


def test_an_answer_streams_in_as_markdown_with_highlighted_code(
    shop: Path, make_app: MakeApp
) -> None:
    engines = Engines()
    app = make_app([shop], engines=engines)

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")
            assert [str(q.render()) for q in app.query(QuestionView)] == ["What does total do?"]
            answer = app.query_one(AnswerView)
            assert answer.source == ANSWER
            assert answer.query_one(Markdown).source == ANSWER
            fence = answer.query_one(MarkdownFence)
            assert fence.lexer == "python" and "def total" in fence.code
            assert not app.answering
            status = app.query_one(StatusLine).activity
            assert status.state.startswith("ready · no cache, prefilled ")
            assert status.model is not None and status.model.model == "scripted engine"
            assert len(engines.made[0].prompts) == 1

    run(scenario())


def test_escape_stops_the_answer_and_keeps_what_was_written(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop], engines=Engines(answers=(LONG,), token_s=0.02))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await submit(pilot, "Tell me everything")
            answer = app.query_one(AnswerView)
            await wait_for(pilot, lambda: len(answer.source.split()) >= 5)
            await submit(pilot, "And another thing")  # refused while the answer runs
            assert app.query_one(PromptInput).value == "And another thing"
            assert "an answer is being written" in notifications(app)[-1]
            await pilot.press("escape")
            await settle(pilot)
            assert not app.answering
            written = answer.source
            assert 5 <= len(written.split()) < 80 and LONG.startswith(written)
            assert "stopped" in str(answer.query_one(".answer-note").render())
            conversation = app.session.conversation
            assert conversation is not None
            assert conversation.messages[-1].content == written
            assert len(app.query(QuestionView)) == 1

    run(scenario())


def test_the_pane_follows_the_answer_unless_the_user_scrolls_up(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop], engines=Engines(answers=(LONG, LONG), token_s=0.01))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            view = app.query_one(ConversationView)
            await ask(pilot, "first")
            assert view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y
            await submit(pilot, "second")
            answer = app.query(AnswerView).last()
            await wait_for(pilot, lambda: len(answer.source.split()) >= 10)
            view.focus()
            await pilot.press("home")
            await settle(pilot)
            assert view.scroll_y == 0 < view.max_scroll_y
            await pilot.press("end")
            await pilot.pause()
            assert view.scroll_y == view.max_scroll_y

    run(scenario())


def test_code_blocks_are_copied_from_a_picker_with_ctrl_y_or_by_clicking(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+y")
            assert "no code block" in notifications(app)[-1]
            await ask(pilot, "What does total do?")
            await pilot.press("ctrl+y")
            assert app.clipboard.startswith("def total(items):")
            await ask(pilot, "How do I call it?")
            await pilot.press("ctrl+y")
            assert isinstance(app.screen, PickerScreen)
            await pilot.press("enter")
            assert app.clipboard == "total([])\n"
            await pilot.press("ctrl+y", "up", "enter")
            assert app.clipboard.startswith("def total(items):")
            app.copy_to_clipboard("")
            await pilot.click(MarkdownFence)
            assert app.clipboard.startswith("def total(items):")

    run(scenario())


def test_ctrl_n_starts_a_new_conversation(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")
            first = app.session.conversation
            await pilot.press("ctrl+n")
            await settle(pilot)
            assert not app.query(AnswerView) and not app.query(QuestionView)
            assert app.query_one("#welcome").display
            assert app.session.conversation is not None and app.session.conversation is not first
            assert app.session.conversation.messages == []

    run(scenario())


def test_reopening_the_same_repositories_offers_the_last_conversation(
    shop: Path, make_app: MakeApp
) -> None:
    first = make_app([shop])
    engines = Engines()

    async def talk() -> None:
        async with first.run_test() as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")

    async def reopen(choice: str) -> None:
        app = make_app([shop], engines=engines, offer_resume=True)
        async with app.run_test() as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ResumeScreen)
            assert app.screen.conversation.title == "What does total do?"
            await pilot.press(choice)
            await settle(pilot)
            shown = [str(q.render()) for q in app.query(QuestionView)]
            if choice == "n":
                assert shown == [] and app.session.conversation is None
                return
            assert shown == ["What does total do?"]
            assert app.query_one(AnswerView).source == ANSWER
            await ask(pilot, "And then?")
            assert app.query(AnswerView).last().source == SECOND_ANSWER

    run(talk())
    run(reopen("n"))
    run(reopen("y"))
    prompts = engines.made[-1].prompts
    assert len(prompts[-1]) > len(prompts[0]) if len(prompts) > 1 else prompts


def test_history_lists_earlier_conversations_to_resume(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")
            await pilot.press("ctrl+n")
            await settle(pilot)
            await ask(pilot, "Where is Money?")
            await pilot.press("ctrl+o")
            await settle(pilot)
            assert isinstance(app.screen, PickerScreen)
            await pilot.press("down", "enter")
            await settle(pilot)
            shown = [str(q.render()) for q in app.query(QuestionView)]
            assert shown == ["What does total do?"]

    run(scenario())
