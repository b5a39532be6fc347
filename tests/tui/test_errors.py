"""Errors become notifications that say what to do, and the app keeps running."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tui_helpers import ANSWER, Engines, MakeApp, ask, notifications, run, settle, submit

from repoctx.engine.base import Engine
from repoctx.errors import ModelError
from repoctx.events import EventSink, Notice
from repoctx.model.modelfile import ModelInfo
from tui.conversation import AnswerView
from tui.messages import CoreEvent
from tui.status_line import StatusLine


class FailingOnce(Engines):
    """The first engine cannot be opened (as when memory runs out); later ones can."""

    def __init__(self, error: Exception, **options: Any) -> None:
        super().__init__(**options)
        self.error: Exception | None = error

    def __call__(self, model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().__call__(model, n_ctx, on_event)


def test_a_missing_model_is_reported_and_can_be_fixed(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], model="/nowhere/model.gguf")

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            assert "/nowhere/model.gguf: no such model file" in notifications(app)[-1]
            assert "Nothing is packed" in str(app.query_one("#welcome").render())
            assert app.query_one(StatusLine).activity.state == "no pack"
            await submit(pilot, "/model /nowhere/else.gguf")
            await settle(pilot)
            assert "/nowhere/else.gguf: no such model file" in notifications(app)[-1]
            from repoctx.model.choice import default_model_path

            await submit(pilot, f"/model {default_model_path()}")
            await settle(pilot)
            assert app.session.result is not None
            assert "Ask anything about shop" in str(app.query_one("#welcome").render())

    run(scenario())


def test_an_engine_that_fails_leaves_a_note_and_the_next_question_works(
    shop: Path, make_app: MakeApp
) -> None:
    error = ModelError("not enough memory for the model; pass a smaller --model")
    app = make_app([shop], engines=FailingOnce(error))

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await ask(pilot, "What does total do?")
            assert notifications(app)[-1] == str(error)
            note = str(app.query_one(AnswerView).query_one(".answer-note").render())
            assert note == f"no answer: {error}"
            assert not app.answering
            await ask(pilot, "What does total do?")
            assert app.query(AnswerView).last().source == ANSWER

    run(scenario())


def test_a_vanished_repository_is_reported(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            shutil.rmtree(shop)
            await submit(pilot, "/rescan")
            await settle(pilot)
            assert "no such file or directory" in notifications(app)[-1]
            assert app.query_one(StatusLine).activity.state == "ready"

    run(scenario())


def test_unexpected_errors_and_notices_do_not_stop_the_app(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], engines=FailingOnce(RuntimeError("boom")))

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            app.post_message(CoreEvent(Notice("the cache was rebuilt"), 0.0))
            await pilot.pause()
            assert notifications(app)[-1] == "the cache was rebuilt"
            await ask(pilot, "What does total do?")
            assert "unexpected error: RuntimeError('boom')" in notifications(app)[-1]
            await ask(pilot, "What does total do?")
            assert app.query(AnswerView).last().source == ANSWER

    run(scenario())
