"""The resident engine's loaded engines: which requests share one, and what a user is told when
one model gives way to another."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from repo_helpers import LLAMA3_VOCAB

from repoctx.engine.base import Engine
from repoctx.engine.fake import FakeEngine
from repoctx.events import Event, EventSink, ModelReady, Notice
from repoctx.model import synth
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.resident.opener import EngineKey
from repoctx.resident.worker import Engines


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One model file at two paths of different folders (same content), and another model
    file of the same name."""
    root = tmp_path_factory.mktemp("models")
    first = synth.write_synthetic_gguf(root / "a" / "tiny.gguf", synth.TINY, LLAMA3_VOCAB)
    (root / "b").mkdir()
    copy = Path(shutil.copy(first, root / "b" / "tiny.gguf"))
    other = synth.write_synthetic_gguf(root / "c" / "tiny.gguf", synth.TINY, LLAMA3_VOCAB, seed=1)
    return first, copy, other


def key(path: Path) -> EngineKey:
    return EngineKey(str(path), read_model_info(path).fingerprint, None, None)


@dataclass
class NamedEngine(FakeEngine):
    """A scripted engine that names its model file as the llama.cpp engine does."""

    name: str = ""

    @property
    def ready(self) -> ModelReady:
        return replace(super().ready, model=self.name)


class Opened:
    def __init__(self) -> None:
        self.models: list[Path] = []

    def __call__(
        self, model: ModelInfo, n_ctx: int, on_event: EventSink, kv: str | None, fa: bool | None
    ) -> Engine:
        self.models.append(model.path)
        return NamedEngine(n_ctx=n_ctx, name=model.path.name)


def test_one_model_file_at_two_paths_is_loaded_once(models: tuple[Path, Path, Path]) -> None:
    first, copy, _ = models
    opened = Opened()
    engines = Engines(opened)
    engine, _ = engines.get(key(first), 1024, lambda event: None)
    again, reported = engines.get(key(copy), 1024, lambda event: None)
    assert again is engine and not reported
    assert opened.models == [first]


def test_two_models_of_one_name_are_told_apart_by_path(models: tuple[Path, Path, Path]) -> None:
    first, _, other = models
    engines = Engines(Opened())
    engines.get(key(first), 1024, lambda event: None)
    events: list[Event] = []
    engines.get(key(other), 1024, events.append)
    (notice,) = [event for event in events if isinstance(event, Notice)]
    assert f"closing {first} to open {other}" in notice.message
