"""What the tests share besides fixtures: real git repositories and the test data. (Imported
as a module: ``conftest`` itself is not importable once sub-folders have their own.)"""

from __future__ import annotations

import os
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
