"""Rendering core events on a terminal's stderr with rich: progress bars that appear only when
work lasts more than a second, and notices as warning lines."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from repoctx.events import Event, Notice
from repoctx.events import Progress as ProgressEvent

STAGE_LABELS = {"scan": "scanning files", "parse": "parsing imports", "tokens": "counting tokens"}


class StderrEvents:
    """An event sink: ``with StderrEvents() as sink: build_pack(..., on_event=sink)``."""

    def __init__(self, delay_s: float = 1.0, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.delay_s = delay_s
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.notices: list[str] = []

    def __enter__(self) -> StderrEvents:
        self.started = time.monotonic()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.notices.append(event.message)
            self.console.print(f"[yellow]{event.level}:[/] {event.message}", highlight=False)
            return
        if isinstance(event, ProgressEvent):
            self._progress(event)

    def _progress(self, event: ProgressEvent) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < self.delay_s:
                return
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        if event.stage not in self.tasks:
            label = STAGE_LABELS.get(event.stage, event.stage)
            self.tasks[event.stage] = self.progress.add_task(label, total=None, unit=event.unit)
        total = event.total or None
        self.progress.update(self.tasks[event.stage], completed=event.done, total=total)
