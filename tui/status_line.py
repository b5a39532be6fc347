"""The status line: what the engine is doing (packing, loading, restoring, prefilling with its
rate and time left, answering, ready) on the left; the model and how it runs on the right."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from repoctx.events import AnswerDone, CacheOutcome, Event, ModelReady, Progress, Token
from tui.messages import Refreshed

PACK_STAGES = {"scan": "scanning", "parse": "reading imports", "tokens": "counting tokens"}


@dataclass
class _Prefill:
    started: float
    first_done: int
    done: int = 0
    total: int = 0
    now: float = 0.0

    def rate(self) -> float | None:
        elapsed = self.now - self.started
        if elapsed <= 0 or self.done <= self.first_done:
            return None
        return (self.done - self.first_done) / elapsed


class Activity:
    """The engine's state as the events tell it; ``describe()`` is the status text."""

    def __init__(self) -> None:
        self.state = "starting"
        self.model: ModelReady | None = None
        self.model_file = ""
        self.cache = ""
        self._prefill: _Prefill | None = None
        self._tokens = 0

    def apply(self, event: Event, at: float) -> None:
        if isinstance(event, Progress):
            self._progress(event, at)
        elif isinstance(event, ModelReady):
            self.model = event
            self.state = "model loaded"
        elif isinstance(event, CacheOutcome):
            self.cache = cache_summary(event)
            self._prefill = None
            self.state = f"prompt ready · {self.cache}"
        elif isinstance(event, Token):
            self._tokens += 1
            plural = "" if self._tokens == 1 else "s"
            self.state = f"answering · {self._tokens:,} token{plural}"
        elif isinstance(event, AnswerDone):
            self.finished()

    def _progress(self, event: Progress, at: float) -> None:
        stage, done, total = event.stage, event.done, event.total
        if stage == "prefill":
            self.state = self._prefilling(done, total, at)
            return
        self._prefill = None
        of = _amount(done, total, event.unit)
        if stage in PACK_STAGES:
            self.state = f"packing · {PACK_STAGES[stage]}{of}"
        elif stage == "load":
            self.state = f"loading the model{of}"
        elif stage == "restore":
            self.state = f"restoring the cache from disk{of}"
        elif stage == "save" and total > 0 and done >= total:
            self.finished()  # a save ends a prefill or an answer: back to what the cache gave
        elif stage == "save":
            self.state = f"saving the cache{of}"
        else:
            self.state = f"{stage}{of}"

    def _prefilling(self, done: int, total: int, at: float) -> str:
        if self._prefill is None or done < self._prefill.done:
            self._prefill = _Prefill(at, done)
        prefill = self._prefill
        prefill.done, prefill.total, prefill.now = done, total, at
        text = f"prefilling {done:,}/{total:,} tokens"
        rate = prefill.rate()
        if rate:
            text += f" · {rate:,.0f} tok/s · {duration((total - done) / rate)} left"
        return text

    def asking(self) -> None:
        self._tokens = 0
        self.cache = ""
        self.state = "preparing the prompt"

    def finished(self) -> None:
        self._prefill = None
        self.state = f"ready · {self.cache}" if self.cache else "ready"

    def describe_model(self) -> str:
        if self.model is None:
            return f"{self.model_file} · not loaded" if self.model_file else "no model yet"
        ready = self.model
        return f"{ready.model} · ctx {ready.n_ctx:,} · KV {ready.kv_type} · {ready.device}"


def _amount(done: int, total: int, unit: str) -> str:
    """`` 3/10 files``, `` 12/31 MiB``; nothing when there is no count worth showing."""
    if total <= 1:
        return ""
    if unit == "bytes":
        return f" {done / 2**20:,.0f}/{total / 2**20:,.0f} MiB"
    return f" {done:,}/{total:,} {unit}"


def cache_summary(outcome: CacheOutcome) -> str:
    """Where the prompt came from: restored or reused tokens, and the tokens evaluated anew."""
    prefilled = f"{outcome.evaluated_tokens:,} prefilled"
    if outcome.source in ("disk", "host"):
        where = "disk" if outcome.source == "disk" else "host memory"
        restored = f"{outcome.restored_tokens:,} from {where} in {outcome.restore_s:.1f} s"
        return f"{restored} + {prefilled}"
    if outcome.source == "memory":
        return f"{outcome.restored_tokens:,} cached + {prefilled}"
    return f"{prefilled}, no cache"


def refreshed_state(message: Refreshed) -> str:
    """``3 files changed; pack refreshed, 1,204 tokens evaluated``, and the like."""
    if not message.prefilled:
        return f"{message.what}; the pack reads as before"
    if message.outcome is None:
        return f"{message.what}; prefill stopped: the next question evaluates the rest"
    return f"{message.what}; pack refreshed, {message.outcome.evaluated_tokens:,} tokens evaluated"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class StatusLine(Horizontal):
    """One line under the input; ``apply`` each core event, then it redraws itself."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.activity = Activity()

    def compose(self) -> ComposeResult:
        yield Static(self.activity.state, id="status-activity", markup=False)
        yield Static(self.activity.describe_model(), id="status-model", markup=False)

    def apply(self, event: Event, at: float) -> None:
        self.activity.apply(event, at)
        self.show()

    def set_state(self, state: str) -> None:
        self.activity.state = state
        self.show()

    def set_model_file(self, name: str) -> None:
        self.activity.model_file = name
        self.show()

    def show(self) -> None:
        self.query_one("#status-activity", Static).update(self.activity.state)
        self.query_one("#status-model", Static).update(self.activity.describe_model())
