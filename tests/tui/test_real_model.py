"""The app with the real engine and the embedded model (SmolLM2-135M): a tiny question on a
two-file repository, then the same repositories reopened, the conversation resumed and its KV
state restored from disk. Runs once `repoctx.engine.llama` exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tui_helpers import run, settle, submit

from repoctx.engine.base import GenerationOptions
from repoctx.session import llama_engine
from tui.app import RepoctxApp
from tui.conversation import AnswerView
from tui.factory import build_session
from tui.resume_screen import ResumeScreen
from tui.status_line import StatusLine

pytest.importorskip("repoctx.engine.llama")

# Long enough (about 1,150 tokens) that the engine keeps its state on disk after the prefill.
GREETINGS = "".join(f"    {n}: 'Hello number {n}, {chr(97 + n % 26) * 3}',\n" for n in range(72))
TINY = {
    "greet.py": f"GREETINGS = {{\n{GREETINGS}}}\n\n\ndef greet(name: str) -> str:\n"
    "    return f'Hello, {name}!'\n",
    "main.py": "from greet import greet\n\nprint(greet('world'))\n",
}


def test_the_embedded_model_answers_and_its_state_is_restored(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo(TINY, name="tiny")

    def app(offer_resume: bool) -> RepoctxApp:
        session = build_session(
            [repo],
            {},
            engine_factory=llama_engine,
            generation=GenerationOptions(max_tokens=16),
        )
        return RepoctxApp(session, offer_resume=offer_resume)

    async def first() -> None:
        chat = app(offer_resume=False)
        async with chat.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await submit(pilot, "What does greet return?")
            await settle(pilot)
            assert chat.query_one(AnswerView).source.strip()
            assert chat.query_one(StatusLine).activity.model is not None
            chat.jobs.close()

    async def again() -> None:
        chat = app(offer_resume=True)
        async with chat.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert isinstance(chat.screen, ResumeScreen)
            await pilot.press("y")
            await settle(pilot)
            state = chat.query_one(StatusLine).activity.state
            assert "from disk" in state, f"the resumed prompt was not restored from disk: {state}"
            await submit(pilot, "And main.py?")
            await settle(pilot)
            assert len(chat.query(AnswerView)) == 2
            state = chat.query_one(StatusLine).activity.state
            assert "cached" in state, f"the question did not start from the restored state: {state}"
            chat.jobs.close()

    run(first())
    run(again())
