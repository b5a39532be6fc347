"""Rendering core events on stderr with rich: progress bars that appear only when work lasts
more than a second (with tokens/s and time left for the prefill), one-line cache outcomes and
files added to the question, and notices as warning lines. When stderr is not a terminal (a
pipe, a log file), progress comes as plain lines instead, a few per stage (``PlainProgress``),
and no line is wrapped."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    Event,
    ModelReady,
    Notice,
    TailAdded,
    added_note,
)
from repoctx.events import Progress as ProgressEvent

if TYPE_CHECKING:  # rich is imported when something shows: a short, quiet run never needs it
    from rich.console import Console
    from rich.progress import Progress, TaskID

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


def describe_outcome(outcome: CacheOutcome) -> str:
    if outcome.source == "none":
        return f"no cached state; evaluated {outcome.evaluated_tokens:,} tokens"
    where = {"disk": "from disk", "host": "from host memory"}.get(outcome.source, "in memory")
    return (
        f"restored {outcome.restored_tokens:,} tokens {where} in {outcome.restore_s:.1f} s; "
        f"evaluated {outcome.evaluated_tokens:,}"
    )


def describe_tail(tail: TailAdded) -> str:
    """``added for this question: a.py, big.py (signatures) (3,120 tokens, left out of the
    pack)``."""
    files = [f"{key} (signatures)" if key in tail.reduced else key for key in tail.files]
    return f"{added_note(files)} ({tail.tokens:,} tokens, left out of the pack)"


STOP_NOTES = {
    "length": "the answer reached its length limit (--max-tokens) or the context",
    "repetition": (
        "the answer was stopped because the model kept repeating itself; ask again in other "
        "words, raise [generation] repeat_penalty (or --repeat-penalty), or use a larger --model"
    ),
}


def describe_stop(done: AnswerDone) -> str | None:
    """A note for an answer that did not end by itself (None: it did, or was cancelled)."""
    return STOP_NOTES.get(done.stop_reason)


def describe_model(ready: ModelReady) -> str:
    flash = ", flash attention" if ready.flash_attn else ""
    return (
        f"{ready.model} on {ready.device}: {ready.n_ctx:,}-token context, {ready.kv_type} KV{flash}"
    )


PLAIN_EVERY_S = 5.0  # a plain progress line at least this often while a stage goes on
PLAIN_STEP_PERCENT = 10  # and whenever this much more of it is done (at most once a second)
PLAIN_MIN_GAP_S = 1.0


def _amount(count: float, unit: str) -> str:
    if unit == "bytes":
        return f"{count / 2**20:,.0f}"
    return f"{count:,.0f}"


def _unit(unit: str) -> str:
    return "MiB" if unit == "bytes" else unit


def _percent(event: ProgressEvent) -> int:
    return 100 * event.done // event.total if event.total else 0


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, seconds_left = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {seconds_left:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class _Stage:
    def __init__(self, event: ProgressEvent, now: float) -> None:
        self.started = now
        self.first_done = event.done
        self.printed_at: float | None = None
        self.printed_percent = 0
        self.finished = False


class PlainProgress:
    """Progress as plain lines, for a stderr that is no terminal: ``line(event)`` is the line
    to print for a Progress event, or None. A stage that lasts ``delay_s`` gets a first line
    then, one every ``PLAIN_EVERY_S`` seconds or each ``PLAIN_STEP_PERCENT`` % more (whichever
    comes first, at most one a second), and a last one when it completes; a shorter stage gets
    none."""

    def __init__(self, delay_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.delay_s = delay_s
        self.stages: dict[str, _Stage] = {}

    def line(self, event: ProgressEvent) -> str | None:
        now = self.clock()
        stage = self.stages.get(event.stage)
        if stage is None or (stage.finished and event.done < event.total):
            stage = self.stages[event.stage] = _Stage(event, now)
        if stage.finished or not self._due(stage, event, now):
            return None
        stage.printed_at = now
        stage.printed_percent = _percent(event)
        stage.finished = bool(event.total) and event.done >= event.total
        return self._describe(stage, event, now)

    def _due(self, stage: _Stage, event: ProgressEvent, now: float) -> bool:
        if stage.printed_at is None:
            return now - stage.started >= self.delay_s
        if event.total and event.done >= event.total:
            return True
        since = now - stage.printed_at
        stepped = _percent(event) - stage.printed_percent >= PLAIN_STEP_PERCENT
        return since >= PLAIN_EVERY_S or (stepped and since >= PLAIN_MIN_GAP_S)

    def _describe(self, stage: _Stage, event: ProgressEvent, now: float) -> str:
        label = STAGE_LABELS.get(event.stage, event.stage)
        unit = _unit(event.unit)
        if event.total:
            amount = f"{_amount(event.done, event.unit)}/{_amount(event.total, event.unit)}"
            parts = [f"{label}: {amount} {unit} ({_percent(event)}%)"]
        else:
            parts = [f"{label}: {_amount(event.done, event.unit)} {unit}"]
        elapsed = now - stage.started
        rate = (event.done - stage.first_done) / elapsed if elapsed > 0 else 0.0
        if stage.finished:
            parts.append(f"done in {_duration(elapsed)}")
        elif rate > 0:
            parts.append(f"{_amount(rate, event.unit)} {unit}/s")
            if event.total:
                parts.append(f"{_duration((event.total - event.done) / rate)} left")
        return ", ".join(parts)


class StderrEvents:
    """An event sink: ``with StderrEvents() as sink: build_pack(..., on_event=sink)``. Leaving
    the ``with`` block (or ``stop()``) removes the progress bar: call it before writing to
    stdout."""

    def __init__(self, delay_s: float = 1.0, console: Console | None = None) -> None:
        self._console = console
        self.delay_s = delay_s
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.plain = PlainProgress(delay_s)
        self.tasks: dict[str, TaskID] = {}
        self.notices: list[str] = []

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, soft_wrap=True)
        return self._console

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
        """Remove the progress bar (a later Progress event starts a new one)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.notices.append(event.message)
            from rich.markup import escape

            self._line(f"[yellow]{event.level}:[/] {escape(event.message)}", markup=True)
        elif isinstance(event, ProgressEvent):
            self._on_progress(event)
        elif isinstance(event, CacheOutcome):
            self.stop()
            self._line(describe_outcome(event), style="dim")
        elif isinstance(event, TailAdded):
            self.stop()
            self._line(describe_tail(event), style="dim")
        elif isinstance(event, ModelReady):
            self._line(describe_model(event), style="dim")

    def note(self, message: str) -> None:
        """A line of the command's own, after the work: ``repoctx: message``."""
        self.stop()
        self._line(f"repoctx: {message}")

    def _line(self, text: str, style: str = "", markup: bool = False) -> None:
        """One line that is never wrapped (a terminal folds it, a log keeps it whole)."""
        self.console.print(text, style=style, highlight=False, markup=markup, soft_wrap=True)

    def _on_progress(self, event: ProgressEvent) -> None:
        """A bar on a terminal, plain lines elsewhere. No bar shows before ``delay_s``, so until
        then the console (rich) is asked which it is only when a plain line is due."""
        early = self.progress is None and time.monotonic() - self.started < self.delay_s
        if not early and self.console.is_terminal:
            self._progress(event)
            return
        line = self.plain.line(event)
        if line is not None and not self.console.is_terminal:
            self._line(line, style="dim")

    def _progress(self, event: ProgressEvent) -> None:
        if self.progress is None:
            from repoctx.cli.progressbar import progress_bar

            self.progress = progress_bar(self.console)
        if event.stage not in self.tasks:
            label = STAGE_LABELS.get(event.stage, event.stage)
            self.tasks[event.stage] = self.progress.add_task(label, total=None, unit=event.unit)
        total = event.total or None
        self.progress.update(self.tasks[event.stage], completed=event.done, total=total)
