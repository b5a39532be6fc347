"""How the CLI renders events on stderr: plain progress lines when stderr is not a terminal (a
pipe, a log), lines that are never wrapped, and no progress bar left under the answer."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from repoctx.cli.ask import _StreamSink
from repoctx.cli.console import PlainProgress, StderrEvents, describe_stop
from repoctx.events import AnswerDone, ModelReady, Notice, Progress, Token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prefill_lines(seconds: int, total: int) -> list[str]:
    """The lines of a prefill evaluating ``total`` tokens at an even rate over ``seconds``,
    reported each second, as the engine reports each batch."""
    clock = Clock()
    plain = PlainProgress(delay_s=1.0, clock=clock)
    lines = []
    for second in range(seconds + 1):
        clock.now = 1000.0 + second
        line = plain.line(Progress("prefill", total * second // seconds, total, "tokens"))
        if line is not None:
            lines.append(line)
    return lines


def test_a_long_prefill_gets_a_line_every_few_seconds_with_its_rate_and_time_left() -> None:
    lines = prefill_lines(73, 73_000)
    assert lines[0] == "prefilling: 1,000/73,000 tokens (1%), 1,000 tokens/s, 1 min 12 s left"
    assert lines[1] == "prefilling: 6,000/73,000 tokens (8%), 1,000 tokens/s, 1 min 07 s left"
    assert lines[-1] == "prefilling: 73,000/73,000 tokens (100%), done in 1 min 13 s"
    assert 14 <= len(lines) <= 17, "one line every 5 s, and the last"


def test_a_short_stage_gets_a_line_each_tenth_and_one_of_a_second_gets_none() -> None:
    lines = prefill_lines(10, 10_000)
    assert len(lines) == 10 and lines[4] == (
        "prefilling: 5,000/10,000 tokens (50%), 1,000 tokens/s, 5 s left"
    )
    clock = Clock()
    plain = PlainProgress(delay_s=1.0, clock=clock)
    for done in range(0, 101, 10):
        clock.now += 0.05
        assert plain.line(Progress("tokens", done, 100, "files")) is None


def test_bytes_are_counted_in_mib_and_an_unknown_total_has_no_time_left() -> None:
    clock = Clock()
    plain = PlainProgress(delay_s=0.0, clock=clock)
    assert (
        plain.line(Progress("save", 0, 512 << 20, "bytes")) == "saving the KV state: 0/512 MiB (0%)"
    )
    clock.now += 2
    assert plain.line(Progress("save", 256 << 20, 512 << 20, "bytes")) == (
        "saving the KV state: 256/512 MiB (50%), 128 MiB/s, 2 s left"
    )
    clock.now += 10
    assert plain.line(Progress("scan", 0, 0)) == "scanning files: 0 files"
    clock.now += 6
    assert plain.line(Progress("scan", 3_000, 0)) == "scanning files: 3,000 files, 500 files/s"


def piped_stderr() -> tuple[StderrEvents, io.StringIO]:
    text = io.StringIO()
    return StderrEvents(delay_s=0.0, console=Console(file=text, width=80, soft_wrap=True)), text


def test_piped_stderr_is_never_wrapped_nor_read_as_markup() -> None:
    events, text = piped_stderr()
    assert not events.console.is_terminal
    long_name = "SmolLM2-135M-Instruct-with-a-much-longer-file-name-than-usual.Q4_1.gguf"
    events(ModelReady(long_name, 8192, "f16", "CPU", True, 0))
    events(Notice("[rules] in " + "x" * 150))
    lines = text.getvalue().splitlines()
    assert lines == [
        f"{long_name} on CPU: 8,192-token context, f16 KV, flash attention",
        "warning: [rules] in " + "x" * 150,  # a notice is text, not markup
    ]


def test_piped_stderr_shows_progress_as_lines_and_never_as_a_bar() -> None:
    events, text = piped_stderr()
    events(Progress("save", 0, 64 << 20, "bytes"))
    assert events.progress is None
    assert text.getvalue() == "saving the KV state: 0/64 MiB (0%)\n"


def test_the_progress_bar_is_removed_before_the_answer_and_when_the_command_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = _StreamSink()
    terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
    sink.stderr = StderrEvents(delay_s=0.0, console=terminal)
    sink(Progress("prefill", 10, 100, "tokens"))
    assert sink.stderr.progress is not None and sink.stderr.progress.live.is_started
    sink(Token("The answer."))
    assert sink.stderr.progress is None
    sink(AnswerDone("The answer.", "end", 100, 3, 0.1, 0.2))
    sink(Progress("save", 1, 10, "bytes"))  # the engine saves after the answer
    assert sink.stderr.progress is not None
    sink.close()
    assert sink.stderr.progress is None
    assert capsys.readouterr().out == "The answer.\n"


@pytest.mark.parametrize(
    ("reason", "note"),
    [("end", None), ("cancelled", None), ("length", "length limit"), ("repetition", "repeating")],
)
def test_an_answer_cut_short_says_why(reason: str, note: str | None) -> None:
    described = describe_stop(AnswerDone("x", reason, 1, 1, 0.0, 0.0))
    assert (described is None) if note is None else (note in str(described))
