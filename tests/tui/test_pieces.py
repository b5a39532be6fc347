"""The pure parts: command parsing, code blocks, transcripts, completion, patterns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from repoctx.conversations import Exchange
from repoctx.errors import UsageError
from tui.budget_bar import cells, legend
from tui.commands import COMMANDS, parse
from tui.context_pane import matching_patterns
from tui.controller import path_pattern
from tui.dates import when
from tui.help_screen import help_markdown
from tui.messages import Usage
from tui.pack_change import moved_keys
from tui.prompt_input import complete_path
from tui.transcript import CodeBlock, close_fences, code_blocks, stop_mark, transcript


def test_commands_parse_with_their_arguments() -> None:
    assert parse("/add  ~/code/lib ")[1] == "~/code/lib"
    assert parse("/RESCAN")[0].name == "rescan"
    with pytest.raises(UsageError, match="/nope is not a command"):
        parse("/nope")
    with pytest.raises(UsageError, match=re.escape("type /save FILE.md")):
        parse("/save")
    assert all(f"`{spec.usage}`" in help_markdown([]) for spec in COMMANDS)


def test_code_blocks_fenced_and_indented() -> None:
    text = "Text\n\n```python\nx = 1\n\ny = 2\n```\n\n    indented()\n\n~~~\nplain\n~~~\n"
    assert code_blocks(text) == [
        CodeBlock("python", "x = 1\n\ny = 2\n"),
        CodeBlock("", "indented()\n"),
        CodeBlock("", "plain\n"),
    ]
    assert code_blocks(text)[0].preview == "x = 1 (+1 lines)"
    assert code_blocks("no code") == []


def test_transcript() -> None:
    exchanges = [Exchange("Why?", "Because.\n", None, "end")]
    assert transcript("Why?", ["a", "b"], "m.gguf", exchanges) == (
        "# Why?\n\nRepositories: a, b  \nModel: m.gguf\n\n"
        "## Question\n\nWhy?\n\n## Answer\n\nBecause.\n"
    )


@pytest.mark.usefixtures("utc")
def test_a_stopped_answer_is_saved_with_its_code_fence_closed_and_marked() -> None:
    stopped = "Like this:\n\n```python\ndef total(items):\n    return sum("
    exchanges = [
        Exchange("How?", stopped, 1_700_000_000.0, "cancelled"),
        Exchange("And?", "- a list\n\n  ~~~~\n  code", 1_700_000_060.0, "length"),
        Exchange("Loop?", "again again", None, "repetition"),
    ]
    saved = transcript("How?", ["shop"], "m.gguf", exchanges)
    assert saved == (
        "# How?\n\nRepositories: shop  \nModel: m.gguf\n\n"
        "## Question · 2023-11-14 22:13\n\nHow?\n\n## Answer\n\n"
        f"{stopped}\n```\n\n[stopped]\n\n"
        "## Question · 2023-11-14 22:14\n\nAnd?\n\n## Answer\n\n"
        "- a list\n\n  ~~~~\n  code\n  ~~~~\n\n[cut at the length limit]\n\n"
        "## Question\n\nLoop?\n\n## Answer\n\nagain again\n\n"
        "[stopped: the model kept repeating itself]\n"
    )
    # the marks are outside the code: every block ends where the answer ends
    assert [b.code for b in code_blocks(saved)] == [
        "def total(items):\n    return sum(\n",
        "code\n",
    ]


def test_open_fences_are_closed_at_their_own_indentation() -> None:
    assert close_fences("text\n\n```\nclosed\n```\n") == "text\n\n```\nclosed\n```\n"
    assert close_fences("no code") == "no code"
    assert close_fences("```py") == "```py\n```\n"
    assert close_fences("> ````sh\n> ls ``` x") == "> ````sh\n> ls ``` x\n> ````\n"
    assert (
        close_fences("1. step\n\n   ```\n   run()\n\n") == "1. step\n\n   ```\n   run()\n   ```\n"
    )
    closed = close_fences("1. ```js\n   f()")
    assert closed == "1. ```js\n   f()\n   ```\n"
    assert [b.code for b in code_blocks(closed + "\n2. next\n")] == ["f()\n"]


def test_stop_marks() -> None:
    assert stop_mark("end") == stop_mark("") == ""
    assert stop_mark("cancelled") == "[stopped]"
    assert stop_mark("something new") == "[stopped: something new]"


def test_path_completion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "projects.md").write_text("x")
    (tmp_path / ".hidden").mkdir()
    assert complete_path(f"{tmp_path}/pro", dirs_only=False) == f"{tmp_path}/project/"
    assert complete_path(f"{tmp_path}/projects", dirs_only=False) == f"{tmp_path}/projects.md"
    assert complete_path(f"{tmp_path}/projects", dirs_only=True) is None
    assert complete_path(f"{tmp_path}/.h", dirs_only=True) == f"{tmp_path}/.hidden/"
    assert complete_path(f"{tmp_path}/missing/x", dirs_only=True) is None
    monkeypatch.chdir(tmp_path)
    assert complete_path("pro", dirs_only=True) == "project/"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_path("~/pro", dirs_only=True) == "~/project/"


def test_patterns() -> None:
    assert path_pattern(" src/legacy/ ") == "/src/legacy"
    patterns = ("/src/shop/", "*.md", "/tests/test_cart.py")
    assert matching_patterns("src/shop/cart.py", patterns) == ("/src/shop/",)
    assert matching_patterns("docs/README.md", patterns) == ("*.md",)
    assert matching_patterns("lib/src/shop/x.py", patterns) == ()


def test_budget_bar_cells() -> None:
    assert cells(Usage(8192, 348, 69), 50) == (2, 1, 47)
    assert cells(Usage(8192, 4096, 0), 50) == (25, 0, 25)
    assert cells(Usage(1000, 900, 300), 10) == (9, 1, 0)
    assert legend(Usage(8192, 348, 69)) == "pack 348 · chat 69 · free 7,775 of 8,192"


@pytest.mark.usefixtures("utc")
def test_dates_read_relative_to_now() -> None:
    now = 1_700_000_000.0  # Tuesday 14 November 2023, 22:13 UTC
    day = 24 * 3600
    assert when(now - 3600, now) == "today 21:13"
    assert when(now - day, now) == "yesterday 22:13"
    assert when(now - 3 * day, now) == "Sat 22:13"
    assert when(now - 7 * day, now) == "7 Nov 22:13"
    assert when(now - 400 * day, now) == "10 Oct 2022"


def test_moved_keys_are_those_out_of_their_old_order() -> None:
    assert moved_keys(["a", "b", "c"], ["a", "b", "c"]) == ()
    assert moved_keys(["a", "b", "c", "d"], ["a", "c", "d"]) == ()  # one left out
    assert moved_keys(["a", "b", "c", "d"], ["d", "a", "b", "c"]) == ("d",)
    assert moved_keys(["a", "b", "c", "d", "e"], ["b", "a", "c", "e", "d"]) in {
        ("b", "e"),
        ("a", "d"),
        ("b", "d"),
        ("a", "e"),
    }
