"""Files the pack left out that a question got (``repoctx.pack.tail``): named under the
question as it is answered, in the saved transcript (named, not copied), and again when the
conversation is resumed."""

from __future__ import annotations

from pathlib import Path

from repo_helpers import MakeRepo
from textual.widgets import Static
from tui_helpers import SHOP, MakeApp, ask, run, settle, submit

from tui.conversation import AddedView, AnswerView, QuestionView

REPORT = "".join(f"def report_line_{i}(s):\n    return s[{i}] * {i}\n\n\n" for i in range(40))
ADDED = "added for this question: shop/src/shop/report.py"


def shown(app: object) -> list[str]:
    """The conversation pane, widget by widget: Q (question), + (files added), A (answer)."""
    from tui.app import RepoctxApp

    assert isinstance(app, RepoctxApp)
    marks = {QuestionView: "Q", AddedView: "+", AnswerView: "A"}
    pane = app.query_one("#conversation")
    return [marks[type(w)] for w in pane.children if type(w) in marks]


def test_files_added_to_a_question_are_named_under_it_saved_and_resumed(
    make_repo: MakeRepo, make_app: MakeApp, tmp_path: Path
) -> None:
    repo = make_repo({**SHOP, "src/shop/report.py": REPORT}, name="shop")
    app = make_app([repo], budget=300, max_tokens=64)
    target = tmp_path / "talk.md"

    async def talk() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await ask(pilot, "What does src/shop/report.py compute?")
            await ask(pilot, "Thanks, that helps.")
            assert shown(app) == ["Q", "+", "A", "Q", "A"]
            assert str(app.query_one(AddedView).render()) == ADDED
            await submit(pilot, f"/save {target}")
            await settle(pilot)

    run(talk())
    saved = target.read_text(encoding="utf-8")
    assert f"What does src/shop/report.py compute?\n\n*{ADDED}*\n" in saved
    assert "report_line_3" not in saved, "the files are named, not copied"

    resumed = make_app([repo], offer_resume=True, budget=300, max_tokens=64)

    async def resume() -> None:
        async with resumed.run_test() as pilot:
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            assert shown(resumed) == ["Q", "+", "A", "Q", "A"]
            assert isinstance(resumed.query_one(AddedView), Static)

    run(resume())
