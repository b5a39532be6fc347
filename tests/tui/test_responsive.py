"""The UI stays responsive while the engine works: keys are handled during a slow prefill."""

from __future__ import annotations

import time
from pathlib import Path

from tui_helpers import Engines, MakeApp, run, settle, submit, wait_for

from tui.context_pane import ContextPane
from tui.conversation import AnswerView
from tui.prompt_input import PromptInput
from tui.status_line import StatusLine

PREFILL_S = 2.0


def test_keys_are_handled_while_a_slow_prefill_runs(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], engines=Engines(prefill_s=PREFILL_S))

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            status = app.query_one(StatusLine).activity
            await submit(pilot, "What does total do?")
            await wait_for(pilot, lambda: status.state.startswith("prefilling"))
            started = time.monotonic()
            await pilot.press("n", "e", "x", "t")
            await pilot.press("ctrl+b")
            handled = time.monotonic() - started
            assert app.query_one(PromptInput).value == "next"
            assert not app.query_one(ContextPane).display
            assert app.answering and status.state.startswith("prefilling")
            assert handled < PREFILL_S / 2, handled
            await pilot.press("escape")
            await settle(pilot)
            assert not app.answering
            assert app.query_one(AnswerView).source == ""
            assert "stopped" in str(app.query_one(".answer-note").render())

    run(scenario())
