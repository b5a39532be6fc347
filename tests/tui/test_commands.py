"""Every slash command, typed in the input or chosen in the command palette, and completion."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tui_helpers import (
    ANSWER,
    Engines,
    MakeApp,
    ask,
    notifications,
    run,
    settle,
    submit,
    tree_lines,
)

from repoctx.model.choice import EMBEDDED_FILE
from tui.context_pane import ContextPane
from tui.conversation import AnswerView
from tui.help_screen import HelpScreen
from tui.prompt_input import PromptInput
from tui.resume_screen import ResumeScreen
from tui.status_line import StatusLine

SPM_VOCAB = Path(__file__).parents[1] / "data" / "ggml-vocab-llama-spm.gguf"


def test_add_and_drop_repositories(
    shop: Path, make_repo: Callable[..., Path], make_app: MakeApp
) -> None:
    lib = make_repo({"util.py": "def helper() -> int:\n    return 1\n"}, name="lib")
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, f"/add {lib}")
            await settle(pilot)
            assert [r.name for r in app.session.roots] == ["shop", "lib"]
            assert any(line.startswith("lib  ") for line in tree_lines(app))
            await submit(pilot, f"/add {lib}")
            await settle(pilot)
            assert "already in the pack" in notifications(app)[-1]
            await submit(pilot, "/add /no/such/folder")
            await settle(pilot)
            assert "no such file or directory" in notifications(app)[-1]
            await submit(pilot, "/drop lib")
            await settle(pilot)
            assert [r.name for r in app.session.roots] == ["shop"]
            assert not any(line.startswith("lib  ") for line in tree_lines(app))
            await submit(pilot, "/drop shop")
            await settle(pilot)
            assert "only repository" in notifications(app)[-1]
            await submit(pilot, "/drop tests")  # a path inside: left out by a pattern
            await settle(pilot)
            assert app.session.settings.exclude == ("/tests",)
            assert "    tests/test_cart.py  ignored by --exclude/.repoctxignore" in tree_lines(app)

    run(scenario())


def test_rescan_reads_edited_files_again(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            assert "      money.py  44" in tree_lines(app)
            (shop / "src/shop/money.py").write_text("class Money:\n    pass\n", encoding="utf-8")
            await submit(pilot, "/rescan")
            await settle(pilot)
            assert "      money.py  44" not in tree_lines(app)
            (shop / "src/shop/models.py").unlink()
            await pilot.press("ctrl+r")
            await settle(pilot)
            assert not any("models.py" in line for line in tree_lines(app))

    run(scenario())


def test_model_switches_and_a_bad_model_is_refused(shop: Path, make_app: MakeApp) -> None:
    engines = Engines()
    app = make_app([shop], engines=engines)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "/model /no/such/model.gguf")
            await settle(pilot)
            assert "no such model file" in notifications(app)[-1]
            assert app.session.settings.model is None and app.session.result is not None
            await ask(pilot, "still there?")
            assert app.query_one(AnswerView).source == ANSWER
            await submit(pilot, f"/model {SPM_VOCAB}")
            await settle(pilot)
            assert app.session.result is not None
            assert app.session.result.model.path == SPM_VOCAB.resolve()
            status = app.query_one(StatusLine).activity
            assert status.model_file == "ggml-vocab-llama-spm.gguf"
            assert len(engines.made) == 2 and app.session.engine is engines.made[1]  # loaded
            assert status.state.startswith("switched to ggml-vocab-llama-spm.gguf; pack refreshed")

    run(scenario())


def test_clear_save_and_help(shop: Path, tmp_path: Path, make_app: MakeApp) -> None:
    app = make_app([shop])
    target = tmp_path / "notes" / "talk.md"

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, f"/save {target}")
            assert "nothing to save" in notifications(app)[-1]
            await ask(pilot, "What does total do?")
            await submit(pilot, f"/save {target}")
            await settle(pilot)
            assert f"saved the conversation to {target}" in notifications(app)[-1]
            await submit(pilot, "/clear")
            await settle(pilot)
            assert not app.query(AnswerView)
            await submit(pilot, "/help")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    run(scenario())
    saved = target.read_text(encoding="utf-8")
    heading = re.search(r"^## Question · (\d{4}-\d\d-\d\d \d\d:\d\d)$", saved, re.MULTILINE)
    assert heading is not None
    assert saved == (
        f"# What does total do?\n\nRepositories: shop  \nModel: {EMBEDDED_FILE}\n\n"
        f"{heading[0]}\n\nWhat does total do?\n\n## Answer\n\n{ANSWER}\n"
    )


def test_exclude_include_and_mistakes(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "/exclude *.md")
            await settle(pilot)
            assert "    README.md  ignored by --exclude/.repoctxignore" in tree_lines(app)
            assert "  *.md" in tree_lines(app)
            await submit(pilot, "/include *.md")
            await settle(pilot)
            assert "  README.md  25" in tree_lines(app)
            assert app.session.settings.exclude == ()
            await submit(pilot, "/include *.md")
            await settle(pilot)
            assert "is not an exclude pattern" in notifications(app)[-1]
            for typed, error in [
                ("/frobnicate", "/frobnicate is not a command"),
                ("/exclude", "/exclude needs PATTERN"),
                ("/rescan now", "/rescan takes nothing after it"),
            ]:
                await submit(pilot, typed)
                assert error in notifications(app)[-1]

    run(scenario())


def test_quit_stops_a_running_answer(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], engines=Engines(token_s=0.5))

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "What does total do?")
            await submit(pilot, "/quit")
            await pilot.pause()
            assert not app.is_running
        app.jobs.close()  # returns once the answer has stopped
        conversation = app.session.conversation
        assert conversation is not None
        assert conversation.messages[-1].content != ANSWER  # stopped early, kept

    run(scenario())


def test_commands_and_arguments_complete_with_tab(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            prompt = app.query_one(PromptInput)
            await pilot.press("/", "e", "x")
            await pilot.pause()
            await pilot.press("tab")
            assert prompt.value == "/exclude "
            await pilot.press("s", "r")
            await pilot.pause()
            await pilot.press("tab")
            assert prompt.value == "/exclude src/"
            prompt.insert_text_at_cursor("shop/c")
            await pilot.pause()
            await pilot.press("tab")
            assert prompt.value == "/exclude src/shop/cart.py"
            prompt.value = ""
            prompt.insert_text_at_cursor(f"/add {shop.parent}/sh")
            await pilot.pause()
            await pilot.press("tab")
            assert prompt.value == f"/add {shop}/"
            prompt.value = "no command here"
            await pilot.pause()
            await pilot.press("tab")
            assert app.focused is not prompt

    run(scenario())


def test_the_command_palette_runs_commands(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await pilot.press("ctrl+p")
            await pilot.press(*"help")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.press(*"/exclude")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            prompt = app.query_one(PromptInput)
            assert prompt.value == "/exclude " and app.focused is prompt

    run(scenario())


def test_commands_that_do_what_keys_do(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")
            await submit(pilot, "/copy")
            assert app.clipboard.startswith("def total(items):")
            await submit(pilot, "/history")
            await settle(pilot)
            assert isinstance(app.screen, ResumeScreen)
            await pilot.press("escape")
            await submit(pilot, "/context")
            await pilot.pause()
            assert app.query_one(ContextPane).display

    run(scenario())
