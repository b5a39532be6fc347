"""Events that the core emits and every front end renders.

The core never prints: long operations take an ``EventSink`` and report through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` are finished (``total`` 0 when unknown)."""

    stage: str
    done: int
    total: int
    unit: str = "files"


@dataclass(frozen=True)
class Notice:
    """Something the user should know that did not stop the work (a cache rebuilt, a file
    that could not be read)."""

    message: str
    level: str = "warning"


Event = Progress | Notice
EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink for callers that do not render progress."""
