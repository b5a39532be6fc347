"""Shared fixtures: a private REPOCTX_HOME for the whole run, and real git repositories built
in temporary folders."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MakeRepo, git, stop_resident_engines_under, write_files

from repoctx.model.choice import MODEL_ENV

ENGINE_IDLE_S = "20"  # a resident engine that a test leaves behind exits soon by itself


@pytest.fixture(autouse=True, scope="session")
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """REPOCTX_HOME for the whole run. At its end, every resident engine started under this
    run's temporary folders (this home and the tests' own homes) is stopped."""
    home = tmp_path_factory.mktemp("repoctx-home")
    previous = os.environ.get("REPOCTX_HOME")
    os.environ["REPOCTX_HOME"] = str(home)
    os.environ.pop(MODEL_ENV, None)
    os.environ.pop("REPOCTX_BUDGET", None)
    idle_was_set = "REPOCTX_ENGINE_IDLE" in os.environ
    os.environ.setdefault("REPOCTX_ENGINE_IDLE", ENGINE_IDLE_S)
    yield home
    stop_resident_engines_under(tmp_path_factory.getbasetemp())
    if not idle_was_set:
        os.environ.pop("REPOCTX_ENGINE_IDLE", None)
    if previous is None:
        os.environ.pop("REPOCTX_HOME", None)
    else:
        os.environ["REPOCTX_HOME"] = previous


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """``make_repo({"a.py": "..."}, name="proj", commits=[({...}, when), ...])``: a git
    repository whose first commit holds ``files``; each later commit writes its files at its
    unix time."""

    def make(
        files: Mapping[str, str | bytes],
        name: str = "proj",
        commits: list[tuple[Mapping[str, str | bytes], int]] | None = None,
        when: int = 1_600_000_000,
        parent: Path | None = None,
    ) -> Path:
        repo = (parent or tmp_path) / name
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        write_files(repo, files)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial", when=when)
        for changed, stamp in commits or []:
            write_files(repo, changed)
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"change at {stamp}", when=stamp)
        return repo

    return make


@pytest.fixture
def host_allocations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that allocate host buffers for KV states from now on."""
    from repoctx.engine import hostmem

    made: list[str] = []
    real = hostmem.allocate

    def counted(size: int, buffer_type: int | None) -> Any:
        made.append(threading.current_thread().name)
        return real(size, buffer_type)

    monkeypatch.setattr(hostmem, "allocate", counted)
    return made


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names of the vocabularies whose ranks this process derives from now on; no
    tokenizer is memoized in-process at the start."""
    # imported here: the model modules import numpy, which test modules import after llama_cpp
    from repoctx.model.modelfile import Vocabulary
    from repoctx.tokens import bperanks
    from repoctx.tokens import count as tokens

    calls: list[str] = []
    derive = bperanks.derive_ranks

    def spy(vocab: Vocabulary) -> bperanks.Ranks:
        calls.append(vocab.info.path.name)
        return derive(vocab)

    monkeypatch.setattr(bperanks, "derive_ranks", spy)
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    return calls
