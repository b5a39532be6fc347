"""`repoctx ask`: one answer, streamed to stdout; progress and the cache outcome on stderr."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repoctx.cli.console import StderrEvents, describe_stop
from repoctx.config import load_settings
from repoctx.errors import UsageError
from repoctx.events import AnswerDone, Event, Token, event_to_json
from repoctx.paths import user_path

EXIT_INTERRUPTED = 130


STDIN = "-"
HOW_TO_ASK = (
    'pass the question last, repoctx ask PATH... "question", or on stdin, '
    "echo question | repoctx ask PATH..."
)
_NO_ARGUMENTS = f"pass a repository path and a question: {HOW_TO_ASK}"


def split_question(arguments: tuple[str, ...], stdin_is_tty: bool) -> tuple[list[Path], str | None]:
    """The roots and the question (None: read it from stdin). The last argument is the
    question, unless it is ``-`` or an existing folder (or the only argument): then every
    argument before ``-``, or every argument, is a repository and the question comes on stdin.
    A question that names a folder can only be piped."""
    if not arguments or arguments == (STDIN,):
        raise UsageError(_NO_ARGUMENTS)
    last = arguments[-1]
    if last == STDIN:
        return [user_path(a) for a in arguments[:-1]], None
    last_is_folder = user_path(last).is_dir()
    if len(arguments) > 1 and not last_is_folder:
        return [user_path(a) for a in arguments[:-1]], last
    if stdin_is_tty:
        raise UsageError(_no_question(last) if last_is_folder else _NO_ARGUMENTS)
    return [user_path(a) for a in arguments], None


def _no_question(folder: str) -> str:
    return (
        f"no question: {folder} is a folder, so it was taken as a repository, and stdin gave no "
        f"question; {HOW_TO_ASK}"
    )


def read_question(question: str | None, arguments: tuple[str, ...] = ()) -> str:
    """``question``, or stdin's text when None; a UsageError saying how to ask when empty."""
    text = sys.stdin.read() if question is None else question
    if text.strip():
        return text.strip()
    if question is None and arguments and user_path(arguments[-1]).is_dir():
        raise UsageError(_no_question(arguments[-1]))
    raise UsageError(f"the question is empty; {HOW_TO_ASK}")


@contextmanager
def ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the engine to stop cleanly (it keeps a checkpoint of the prefill);
    a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_ask(
    arguments: tuple[str, ...],
    *,
    as_json: bool,
    flags: dict[str, Any],
    continue_latest: bool = False,
) -> int:
    """Returns the exit code. ``continue_latest``: ask in the latest conversation about these
    repositories (as ``llm -c`` does), with its history and exclude patterns."""
    roots, question = split_question(arguments, sys.stdin.isatty())
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root}: no such directory; pass the repository's folder")
    if os.environ.get("REPOCTX_ENGINE") == "local":  # the model runs in this process
        import llama_cpp  # noqa: F401 - before anything imports numpy (CUDA builds crash)

    from repoctx.session import open_session

    text = read_question(question, arguments)
    settings = load_settings(roots, flags)
    session = open_session(roots, settings)
    if continue_latest and session.resume(patterns=True) is None:
        raise UsageError(
            "no conversation about these repositories yet; ask once without --continue"
        )
    cancel = threading.Event()
    sink = _json_sink if as_json else _StreamSink()
    try:
        with ctrl_c_cancels(cancel):
            done = session.ask(text, sink, cancel, last=True)
    finally:
        try:
            session.close(sink)  # in-process: the save ends here, with progress; Ctrl-C skips it
        finally:
            if isinstance(sink, _StreamSink):
                sink.close()  # no progress bar may outlive the command
    if done.stop_reason == "cancelled":
        print("repoctx: interrupted; what was evaluated is saved for the next run", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


class _StreamSink:
    """Answer text to stdout as it comes (the progress bar removed first); everything else to
    stderr, and a note there when the answer was cut short."""

    def __init__(self) -> None:
        self.stderr = StderrEvents()
        self.wrote = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Token):
            self.stderr.stop()
            sys.stdout.write(event.text)
            sys.stdout.flush()
            self.wrote = True
        elif isinstance(event, AnswerDone):
            if self.wrote and not event.text.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
            if (note := describe_stop(event)) is not None:
                self.stderr.note(note)
        else:
            self.stderr(event)

    def close(self) -> None:
        self.stderr.stop()


def _json_sink(event: Event) -> None:
    sys.stdout.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")
    sys.stdout.flush()
