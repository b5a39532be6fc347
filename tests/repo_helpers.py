"""What the tests share besides fixtures: real git repositories and the test data. (Imported
as a module: ``conftest`` itself is not importable once sub-folders have their own.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from repoctx.events import CacheOutcome, Event, Notice

DATA = Path(__file__).parent / "data"
LLAMA3_VOCAB = DATA / "ggml-vocab-llama-bpe.gguf"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, when: int | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    done = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-C", str(repo), *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


MakeRepo = Callable[..., Path]


class Events:
    """An event sink that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def outcome(self) -> CacheOutcome:
        (outcome,) = self.of(CacheOutcome)
        return outcome

    def notices(self) -> list[Notice]:
        return self.of(Notice)

    def warnings(self) -> list[str]:
        return [n.message for n in self.of(Notice) if n.level == "warning"]


def stop_resident_engine(home: Path) -> None:
    """Stop the resident engine of REPOCTX_HOME=``home`` if one runs (it finishes its request
    and saves); kill it when it does not stop, so that no server outlives the tests."""
    from repoctx.errors import RepoctxError
    from repoctx.resident.channel import try_connect
    from repoctx.resident.sockets import lock_is_held
    from repoctx.resident.spawn import stop_server

    previous = os.environ.get("REPOCTX_HOME")
    os.environ["REPOCTX_HOME"] = str(home)
    try:
        with contextlib.suppress(RepoctxError, OSError):
            connection = try_connect()
            if connection is not None:
                stop_server(connection, timeout=60)
        lock = home / "run" / "engine.lock"
        if lock_is_held(lock):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(lock.read_text()), signal.SIGKILL)
    finally:
        if previous is None:
            os.environ.pop("REPOCTX_HOME", None)
        else:
            os.environ["REPOCTX_HOME"] = previous


def stop_resident_engines_under(folder: Path) -> None:
    """Every resident engine whose REPOCTX_HOME is somewhere under ``folder``."""
    from repoctx.resident.sockets import lock_is_held

    for lock in folder.rglob("run/engine.lock"):
        if lock_is_held(lock):
            stop_resident_engine(lock.parent.parent)
