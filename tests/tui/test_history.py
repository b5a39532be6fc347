"""Conversations over time: stopped answers marked (on screen, when saved, when resumed), exclude
patterns that come back with their conversation, and the list of conversations with their dates,
to resume or delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Markdown, OptionList
from tui_helpers import (
    Engines,
    MakeApp,
    ask,
    notifications,
    run,
    settle,
    submit,
    tree_lines,
    wait_for,
)

from repoctx.conversations import ConversationStore
from tui.conversation import AnswerView
from tui.resume_screen import ResumeScreen
from tui.transcript import code_blocks

CODE_ANSWER = "Like this:\n\n```python\n" + "".join(f"step_{i} = {i}\n" for i in range(40)) + "```"
NOV_14_2023 = 1_700_000_000.0  # 22:13 UTC


def note(answer: AnswerView) -> str:
    return str(answer.query_one(".answer-note").render())


def test_an_answer_stopped_in_a_code_block_is_closed_marked_saved_and_resumed_so(
    shop: Path, tmp_path: Path, make_app: MakeApp
) -> None:
    app = make_app([shop], engines=Engines(answers=(CODE_ANSWER,), token_s=0.02))
    target = tmp_path / "talk.md"

    async def talk() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "Show me the steps")
            answer = app.query_one(AnswerView)
            await wait_for(pilot, lambda: "step_3 = 3" in answer.source)
            await pilot.press("escape")
            await settle(pilot)
            assert "step_39" not in answer.source and answer.source.count("```") == 1
            assert note(answer).startswith("[stopped]")
            shown = answer.query_one(Markdown).source
            assert shown.startswith(answer.source) and shown.endswith("\n```\n")
            await submit(pilot, f"/save {target}")
            await settle(pilot)

    run(talk())
    saved = target.read_text(encoding="utf-8")
    assert saved.endswith("```\n\n[stopped]\n")
    (block,) = code_blocks(saved)
    assert block.code.startswith("step_0 = 0\n") and "[stopped]" not in block.code

    resumed = make_app([shop], offer_resume=True)

    async def resume() -> None:
        async with resumed.run_test() as pilot:
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            answer = resumed.query_one(AnswerView)
            assert note(answer).startswith("[stopped]")
            assert answer.query_one(Markdown).source.endswith("\n```\n")

    run(resume())


def test_exclude_patterns_come_back_with_their_conversation(shop: Path, make_app: MakeApp) -> None:
    first = make_app([shop])

    async def talk() -> None:
        async with first.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "/exclude *.md")
            await settle(pilot)
            await ask(pilot, "What does total do?")
            await submit(pilot, "/exclude /tests/")  # after the question: saved at once
            await settle(pilot)

    async def reopen(choice: str) -> tuple[str, ...]:
        app = make_app([shop], offer_resume=True)
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press(choice)
            await settle(pilot)
            if choice == "y":
                assert "  *.md" in tree_lines(app) and "  /tests/" in tree_lines(app)
                assert (
                    "exclude patterns as when this conversation was saved: *.md, /tests/"
                    in notifications(app)[-1]
                )
                assert not any("README.md  25" in line for line in tree_lines(app))
            return app.session.settings.exclude

    run(talk())
    assert run(reopen("n")) == ()
    assert run(reopen("y")) == ("*.md", "/tests/")


@pytest.mark.usefixtures("utc")
def test_conversations_are_listed_with_their_dates_and_deleted_from_the_list(
    shop: Path, make_app: MakeApp
) -> None:
    now = [NOV_14_2023]
    store = ConversationStore(clock=lambda: now[0])
    for hours, question in [(0, "Where is Money defined?"), (30, "What does total do?")]:
        now[0] = NOV_14_2023 + hours * 3600
        conversation = store.new([shop], "SmolLM2-135M-Instruct.Q4_1.gguf")
        conversation.add_exchange(question, "In money.py.", "end", now[0])
        store.save(conversation)
    app = make_app([shop], offer_resume=True)

    def listed() -> list[str]:
        options = app.screen.query_one(OptionList)
        return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ResumeScreen)
            assert listed() == [
                "What does total do?\n1 question · 16 Nov 2023",
                "Where is Money defined?\n1 question · 14 Nov 2023",
            ]
            await pilot.press("down", "d")
            assert listed()[1].endswith("d again deletes it from disk; any other key keeps it")
            await pilot.press("up")  # moving on keeps it
            assert listed()[1] == "Where is Money defined?\n1 question · 14 Nov 2023"
            await pilot.press("down", "d", "d")
            await settle(pilot)
            assert listed() == ["What does total do?\n1 question · 16 Nov 2023"]
            assert [c.title for c in store.list([shop])] == ["What does total do?"]
            assert "deleted the conversation “Where is Money defined?”" in notifications(app)
            await pilot.press("y")
            await settle(pilot)
            assert app.session.conversation is not None
            assert app.session.conversation.title == "What does total do?"
            await pilot.press("ctrl+o")
            await settle(pilot)
            assert listed()[0].endswith("· open now")
            await pilot.press("d", "d")
            assert "this conversation is open" in notifications(app)[-1]
            assert len(store.list([shop])) == 1

    run(scenario())


def test_asking_the_same_again_in_a_new_conversation_does_not_pile_up(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            for _ in range(3):
                await ask(pilot, "What does total do?")
                await pilot.press("ctrl+n")
                await settle(pilot)
            await ask(pilot, "Where is Money?")
            titles = [c.title for c in app.session.conversations()]
            assert titles == ["Where is Money?", "What does total do?"]

    run(scenario())
