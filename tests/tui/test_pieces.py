"""The pure parts: command parsing, code blocks, transcripts, completion, patterns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from repoctx.errors import UsageError
from repoctx.prompt import Message
from tui.budget_bar import cells, legend
from tui.commands import COMMANDS, parse
from tui.context_pane import matching_patterns
from tui.controller import path_pattern
from tui.help_screen import help_markdown
from tui.messages import Usage
from tui.prompt_input import complete_path
from tui.transcript import CodeBlock, code_blocks, transcript


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
    messages = [Message("user", "Why?"), Message("assistant", "Because.\n")]
    assert transcript("Why?", ["a", "b"], "m.gguf", messages) == (
        "# Why?\n\nRepositories: a, b  \nModel: m.gguf\n\n"
        "## Question\n\nWhy?\n\n## Answer\n\nBecause.\n"
    )


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
