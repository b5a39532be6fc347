"""Where repoctx keeps its files: platformdirs locations, all under REPOCTX_HOME when set."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import platformdirs

APP = "repoctx"


def _home() -> Path | None:
    value = os.environ.get("REPOCTX_HOME")
    return user_path(value) if value else None


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP))


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP))


def runtime_dir() -> Path:
    """Where the resident engine's socket and locks live: owner-only, cleared at logout where
    the system has a per-user runtime folder."""
    home = _home()
    if home:
        return home / "run"
    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs warns, then uses /tmp
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(APP))


def engine_socket() -> Path:
    return runtime_dir() / "engine.sock"


def engine_log() -> Path:
    home = _home()
    folder = home / "run" if home else Path(platformdirs.user_log_dir(APP))
    return folder / "engine.log"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` readable by its owner only: caches hold the user's code."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def user_path(text: str | os.PathLike[str]) -> Path:
    """A path the user typed, with ``~`` expanded; ``~name`` of an unknown user stays literal,
    as in the shell (then it simply does not exist)."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        return path
