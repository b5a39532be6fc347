"""Asking, streaming, stopping, scrolling, copying, and conversations kept on disk."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownFence
from tui_helpers import (
    ANSWER,
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

LONG = " ".join(f"word{i}" + ("\n\n" if i % 5 == 4 else "") for i in range(100))


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
            assert status.state.startswith("ready · ") and status.state.endswith(
                " prefilled, no cache"
            )
            assert status.model is not None and status.model.model == "scripted engine"
            assert len(engines.made[0].prompts) == 1

    run(scenario())


def test_escape_stops_the_answer_and_keeps_what_was_written(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], engines=Engines(answers=(LONG,), token_s=0.04))

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
            assert 5 <= len(written.split()) < 100 and LONG.startswith(written)
            assert "stopped" in str(answer.query_one(".answer-note").render())
            conversation = app.session.conversation
            assert conversation is not None
            assert conversation.messages[-1].content == written
            assert len(app.query(QuestionView)) == 1

    run(scenario())


def test_the_pane_follows_the_answer_unless_the_user_scrolls_up(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop], engines=Engines(answers=(LONG,), token_s=0.02))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            view = app.query_one(ConversationView)
            await submit(pilot, "Tell me everything")
            answer = app.query_one(AnswerView)
            await wait_for(pilot, lambda: len(answer.source.split()) >= 50)
            await pilot.pause(0.05)
            assert 0 < view.max_scroll_y == view.scroll_y
            view.action_scroll_home()  # what Home (or the mouse wheel) does
            await pilot.pause(0.05)
            assert app.answering
            await settle(pilot)
            assert view.scroll_y == 0 < view.max_scroll_y
            view.focus()
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
    before, engines = Engines(), Engines()
    first = make_app([shop], engines=before)

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
            assert len(app.query(AnswerView)) == 2

    run(talk())
    run(reopen("n"))
    run(reopen("y"))
    first_prompt, resumed_prompt = before.made[0].prompts[0], engines.made[-1].prompts[0]
    assert resumed_prompt.ids[: len(first_prompt) - 8] == first_prompt.ids[: len(first_prompt) - 8]
    assert len(resumed_prompt) > len(first_prompt) + 20  # the earlier exchange is in it


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
            assert isinstance(app.screen, ResumeScreen)
            await pilot.press("down", "enter")
            await settle(pilot)
            shown = [str(q.render()) for q in app.query(QuestionView)]
            assert shown == ["What does total do?"]

    run(scenario())


def test_the_pack_is_prefilled_while_the_user_types(shop: Path, make_app: MakeApp) -> None:
    """With nothing to resume, the app brings the pack into the model's context at once; the
    first question then starts from it (the live context) instead of prefilling the pack."""
    engines = Engines()
    app = make_app([shop], engines=engines, offer_resume=True)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await wait_for(pilot, lambda: bool(engines.made) and bool(engines.made[0]._live))
            warmed = len(engines.made[0]._live)
            assert engines.made[0].prompts == []  # prefilled, nothing asked yet
            assert app.query_one(StatusLine).activity.state.startswith("ready")
            await ask(pilot, "What does total do?")
            state = app.query_one(StatusLine).activity.state
            assert f"{warmed:,} cached" in state, state  # the question started from the pack
            assert len(engines.made) == 1

    run(scenario())
