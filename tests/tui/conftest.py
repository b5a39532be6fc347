"""Fixtures for the TUI tests: the shop repository, and the app built the way `repoctx chat`
builds it, with the scripted engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import SHOP, Engines, MakeApp

from repoctx.engine.base import GenerationOptions
from tui.app import RepoctxApp
from tui.factory import build_session
from tui.watch import WatchTimes


@pytest.fixture
def shop(make_repo: Callable[..., Path]) -> Path:
    return make_repo(SHOP, name="shop")


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test (dates on screen and in files do not depend on where the
    tests run)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def make_app() -> MakeApp:
    """``make_app([root], engines=Engines(...), offer_resume=False, watch=None, **flags)``:
    the files are not watched unless ``watch`` gives the watcher's times."""

    def make(
        roots: Sequence[Path],
        engines: Engines | None = None,
        offer_resume: bool = False,
        max_tokens: int = 1024,
        watch: WatchTimes | None = None,
        **flags: Any,
    ) -> RepoctxApp:
        session = build_session(
            roots,
            flags,
            engine_factory=engines or Engines(),
            generation=GenerationOptions(max_tokens=max_tokens),
        )
        return RepoctxApp(session, offer_resume=offer_resume, watch=watch)

    return make
