"""The progress bar on a terminal (rich's), for work that lasts more than a second: imported by
``repoctx.cli.console`` only when one shows, so that a short run never loads rich's progress."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Units per second, for token and byte counts."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields.get("unit", ""))
        if task.speed is None or unit not in ("tokens", "bytes"):
            return Text("")
        if unit == "bytes":
            return Text(f"{task.speed / 2**20:,.0f} MiB/s")
        return Text(f"{task.speed:,.0f} tok/s")


def progress_bar(console: Console) -> Progress:
    """A started bar, one line per stage, removed when stopped."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    bar.start()
    return bar
