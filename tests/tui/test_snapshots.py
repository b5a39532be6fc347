"""Snapshots of the main screens at 80x24 and 160x48 (`pytest --snapshot-update` after a
deliberate change; the repository, the answers and the model are fixed, so the pictures are)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import MakeApp, ask, settle

from repoctx.conversations import ConversationStore
from tui.prompt_input import PromptInput

SnapCompare = Callable[..., bool]
SMALL, LARGE = (80, 24), (160, 48)


def after(
    *questions: str, keys: tuple[str, ...] = (), theme: str = ""
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """What to do before the picture: ask ``questions``, then press ``keys``."""

    async def before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        app.query_one(PromptInput).cursor_blink = False
        if theme:
            app.theme = theme
        await settle(pilot)
        for question in questions:
            await ask(pilot, question)
        if keys:
            await pilot.press(*keys)
        await settle(pilot)

    return before


def test_conversation_80x24(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop])
    assert snap_compare(app, terminal_size=SMALL, run_before=after("What does total do?"))


def test_conversation_and_context_160x48(
    shop: Path, make_app: MakeApp, snap_compare: SnapCompare
) -> None:
    app = make_app([shop], budget=350)
    assert snap_compare(app, terminal_size=LARGE, run_before=after("What does total do?"))


def test_light_theme_160x48(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop], budget=350)
    before = after("What does total do?", theme="textual-light")
    assert snap_compare(app, terminal_size=LARGE, run_before=before)


def test_context_pane_80x24(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop], budget=350)
    before = after(keys=("ctrl+b", "down", "down", "down", "down", "down", "down"))
    assert snap_compare(app, terminal_size=SMALL, run_before=before)


def test_help_80x24(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop])
    assert snap_compare(app, terminal_size=SMALL, run_before=after(keys=("f1",)))


def test_help_160x48(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop])
    assert snap_compare(app, terminal_size=LARGE, run_before=after(keys=("f1",)))


@pytest.mark.usefixtures("utc")
def test_resume_offer_80x24(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    asked = 1_700_000_000.0  # 14 November 2023: shown as a date, whatever day the test runs
    store = ConversationStore(clock=lambda: asked)
    for question in ("Where is Money defined?", "What does total do?"):
        conversation = store.new([shop], "SmolLM2-135M-Instruct.Q4_1.gguf")
        conversation.add_exchange(question, "In money.py.", "end", asked)
        store.save(conversation)
        asked += 3600
    app = make_app([shop], offer_resume=True)
    assert snap_compare(app, terminal_size=SMALL, run_before=after())


def test_code_picker_160x48(shop: Path, make_app: MakeApp, snap_compare: SnapCompare) -> None:
    app = make_app([shop])
    before = after("What does total do?", "How do I call it?", keys=("ctrl+y",))
    assert snap_compare(app, terminal_size=LARGE, run_before=before)
