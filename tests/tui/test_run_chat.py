"""`repoctx chat PATHS` end to end: the command's flags, the session from the environment's
engine (the scripted one here), the app, and the session closed after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from textual.pilot import Pilot
from tui_helpers import ask, settle

from repoctx.cli.main import cli
from tui.app import RepoctxApp
from tui.conversation import AnswerView


def test_repoctx_chat_runs_the_app_on_the_paths(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOCTX_ENGINE", "fake")
    monkeypatch.setenv("REPOCTX_FAKE_ANSWER", "Scripted.")
    seen: dict[str, Any] = {}
    original_run = RepoctxApp.run

    async def drive(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, RepoctxApp)
        await settle(pilot)
        await ask(pilot, "Hello?")
        seen["answer"] = app.query_one(AnswerView).source
        seen["budget"] = app.session.settings.budget
        seen["exclude"] = app.session.settings.exclude
        seen["app"] = app
        app.exit()

    def headless_run(self: RepoctxApp, **options: Any) -> None:
        original_run(self, headless=True, auto_pilot=drive, size=(80, 24))

    monkeypatch.setattr(RepoctxApp, "run", headless_run)
    result = CliRunner().invoke(
        cli, ["chat", str(shop), "--budget", "5000", "--exclude", "*.md"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert seen["answer"] == "Scripted."
    assert (seen["budget"], seen["exclude"]) == (5000, ("*.md",))
    with pytest.raises(RuntimeError):  # closed: the session's thread takes no more jobs
        seen["app"].jobs.call(lambda: None)
