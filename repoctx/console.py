"""Rendering core events on a terminal's stderr with rich: progress bars that appear only when
work lasts more than a second (with tokens/s and time left for the prefill), one-line cache
outcomes, and notices as warning lines."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from repoctx.events import CacheOutcome, Event, ModelReady, Notice
from repoctx.events import Progress as ProgressEvent

STAGE_LABELS = {
    "scan": "scanning files",
    "parse": "parsing imports",
    "tokens": "counting tokens",
    "load": "loading the model",
    "restore": "restoring the KV state",
    "prefill": "prefilling",
    "save": "saving the KV state",
    "download": "downloading",
    "verify": "verifying",
}


class RateColumn(ProgressColumn):
    """Units per second, for token and byte counts."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields.get("unit", ""))
        if task.speed is None or unit not in ("tokens", "bytes"):
            return Text("")
        if unit == "bytes":
            return Text(f"{task.speed / 2**20:,.0f} MiB/s")
        return Text(f"{task.speed:,.0f} tok/s")


def describe_outcome(outcome: CacheOutcome) -> str:
    if outcome.source == "none":
        return f"no cached state; evaluated {outcome.evaluated_tokens:,} tokens"
    where = {"disk": "from disk", "host": "from host memory"}.get(outcome.source, "in memory")
    return (
        f"restored {outcome.restored_tokens:,} tokens {where} in {outcome.restore_s:.1f} s; "
        f"evaluated {outcome.evaluated_tokens:,}"
    )


def describe_model(ready: ModelReady) -> str:
    flash = ", flash attention" if ready.flash_attn else ""
    return (
        f"{ready.model} on {ready.device}: {ready.n_ctx:,}-token context, {ready.kv_type} KV{flash}"
    )


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
        self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.notices.append(event.message)
            self.console.print(f"[yellow]{event.level}:[/] {event.message}", highlight=False)
        elif isinstance(event, ProgressEvent):
            self._progress(event)
        elif isinstance(event, CacheOutcome):
            self.stop()
            self.console.print(describe_outcome(event), style="dim", highlight=False)
        elif isinstance(event, ModelReady):
            self.console.print(describe_model(event), style="dim", highlight=False)

    def _progress(self, event: ProgressEvent) -> None:
        if self.progress is None:
            if not self.console.is_terminal or time.monotonic() - self.started < self.delay_s:
                return
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                RateColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        if event.stage not in self.tasks:
            label = STAGE_LABELS.get(event.stage, event.stage)
            self.tasks[event.stage] = self.progress.add_task(label, total=None, unit=event.unit)
        total = event.total or None
        self.progress.update(self.tasks[event.stage], completed=event.done, total=total)
