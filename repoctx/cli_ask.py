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

from repoctx.config import load_settings
from repoctx.console import StderrEvents
from repoctx.errors import UsageError
from repoctx.events import AnswerDone, Event, Token, event_to_json
from repoctx.paths import user_path

EXIT_INTERRUPTED = 130


def split_question(arguments: tuple[str, ...], stdin_is_tty: bool) -> tuple[list[Path], str | None]:
    """PATH... QUESTION, PATH... - (question on stdin), or PATH... alone with stdin piped.
    Returns the roots and the question (None: read it from stdin)."""
    if not arguments:
        raise UsageError("pass a repository path and a question: repoctx ask PATH 'question'")
    if arguments[-1] == "-":
        return [user_path(a) for a in arguments[:-1]], None
    if len(arguments) == 1:
        if stdin_is_tty:
            raise UsageError("pass a question after the path, or '-' to read it from stdin")
        return [user_path(arguments[0])], None
    return [user_path(a) for a in arguments[:-1]], arguments[-1]


def read_question(question: str | None) -> str:
    text = sys.stdin.read() if question is None else question
    if not text.strip():
        raise UsageError("the question is empty; pass it as the last argument or on stdin")
    return text.strip()


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


def run_ask(arguments: tuple[str, ...], *, as_json: bool, flags: dict[str, Any]) -> int:
    """Returns the exit code."""
    roots, question = split_question(arguments, sys.stdin.isatty())
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root}: no such directory; pass the repository's folder")
    if os.environ.get("REPOCTX_ENGINE") == "local":  # the model runs in this process
        import llama_cpp  # noqa: F401 - before anything imports numpy (CUDA builds crash)

    from repoctx.session import Session, engine_factory_from_env

    text = read_question(question)
    settings = load_settings(roots, flags)
    session = Session(roots, settings, engine_factory=engine_factory_from_env(settings))
    cancel = threading.Event()
    sink = _json_sink if as_json else _StreamSink()
    try:
        with ctrl_c_cancels(cancel):
            done = session.ask(text, sink, cancel)
    finally:
        session.close(sink)  # in-process: the save ends here, with progress; Ctrl-C skips it
    if done.stop_reason == "cancelled":
        print("repoctx: interrupted; what was evaluated is saved for the next run", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


class _StreamSink:
    """Answer text to stdout as it comes; everything else to stderr."""

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
        else:
            self.stderr(event)


def _json_sink(event: Event) -> None:
    sys.stdout.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")
    sys.stdout.flush()
