"""Settings, layered: defaults < user config.toml < each root's .repoctx.toml < environment <
command-line flags. Every layer is a plain mapping; the result is frozen."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoctx import paths
from repoctx.errors import ConfigError
from repoctx.kv.kvtypes import KV_TYPES, kv_types_text
from repoctx.model.choice import MODEL_ENV

DEFAULT_REPEAT_PENALTY = 1.1  # on the answer's last tokens: small models loop without it
DEFAULT_TAIL_TOKENS = 8192  # for files the pack left out, picked for each question

REPO_CONFIG = ".repoctx.toml"
FORMATS = ("xml", "markdown", "json")


__all__ = [
    "DEFAULT_REPEAT_PENALTY", "DEFAULT_TAIL_TOKENS", "FORMATS", "Settings", "load_settings",
    "user_config_path",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Everything a command runs with, from ``load_settings``: the model and how to run it
    (``model``, ``kv_type``, ``flash_attn``), the pack (``budget``, ``reserve``, ``include``,
    ``exclude``, ``format``, the file rules), the tail of files the pack left out that each
    question gets (``tail_tokens``, 0: none) and the answer (``max_tokens``, ``temperature``,
    ``repeat_penalty``). Frozen: change it with ``dataclasses.replace``."""

    model: str | None = None
    budget: int | None = None
    reserve: int | None = None
    format: str = "xml"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rules: Mapping[str, Any] = field(default_factory=dict)
    kv_type: str | None = None  # one of kvtypes.KV_TYPES; None: the largest that fits
    flash_attn: bool | None = None  # None: on wherever the backend has it
    max_tokens: int = 1024
    temperature: float = 0.0
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY  # 1.0: off
    tail_tokens: int = DEFAULT_TAIL_TOKENS  # at most; less where the context has no room
    sources: tuple[str, ...] = ()  # the files that contributed, for `--stats` and errors


def user_config_path() -> Path:
    return paths.config_dir() / "config.toml"


def load_settings(roots: Sequence[Path], flags: Mapping[str, Any]) -> Settings:
    layers: list[tuple[str, Mapping[str, Any]]] = []
    for path in [user_config_path(), *(root / REPO_CONFIG for root in roots)]:
        if path.is_file():
            layers.append((str(path), _read_toml(path)))
    layers.append(("environment", _from_environment()))
    layers.append(("flags", {k: v for k, v in flags.items() if v not in (None, ())}))
    merged: dict[str, Any] = {"rules": {}}
    for source, layer in layers:
        _merge(merged, _flatten(source, layer))
    settings = Settings(
        model=_optional(merged, "model", str),
        budget=_optional(merged, "budget", int),
        reserve=_optional(merged, "reserve", int),
        format=str(merged.get("format", "xml")),
        include=tuple(merged.get("include", ())),
        exclude=tuple(merged.get("exclude", ())),
        rules=merged["rules"],
        kv_type=_optional(merged, "kv_type", str),
        flash_attn=_optional(merged, "flash_attn", bool),
        max_tokens=_optional(merged, "max_tokens", int) or 1024,
        temperature=float(_optional(merged, "temperature", float) or 0.0),
        repeat_penalty=_float_or(merged, "repeat_penalty", DEFAULT_REPEAT_PENALTY),
        tail_tokens=_int_or(merged, "tail_tokens", DEFAULT_TAIL_TOKENS),
        sources=tuple(source for source, _ in layers if source not in ("environment", "flags")),
    )
    _validate(settings)
    return settings


def _read_toml(path: Path) -> Mapping[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read as TOML ({error}); fix or remove it") from error


def _flatten(source: str, layer: Mapping[str, Any]) -> dict[str, Any]:
    """``[pack]`` and ``[model]`` tables and top-level keys become one flat mapping; the
    ``[rules]`` table is kept whole."""
    flat: dict[str, Any] = {}
    for key, value in layer.items():
        if key == "rules":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [rules] must be a table")
            flat["rules"] = dict(value)
        elif key in ("pack", "model", "generation") and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                flat["model" if (key, inner) == ("model", "path") else inner] = inner_value
        else:
            flat[key] = value
    known = {"model", "budget", "reserve", "format", "include", "exclude", "rules", "kv_type",
             "flash_attn", "max_tokens", "temperature", "repeat_penalty",
             "tail_tokens"}  # fmt: skip
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown setting {unknown[0]!r}; known: {sorted(known)}")
    return flat


def _merge(merged: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if key == "rules":
            merged["rules"] = {**merged["rules"], **value}
        elif key in ("include", "exclude"):
            merged[key] = (*merged.get(key, ()), *_strings(key, value))
        else:
            merged[key] = value


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key} must be a list of glob patterns, got {value!r}")


def _from_environment() -> dict[str, Any]:
    env: dict[str, Any] = {}
    if os.environ.get(MODEL_ENV):
        env["model"] = os.environ[MODEL_ENV]
    if os.environ.get("REPOCTX_BUDGET"):
        try:
            env["budget"] = int(os.environ["REPOCTX_BUDGET"].replace("_", "").replace(",", ""))
        except ValueError as error:
            raise ConfigError("REPOCTX_BUDGET must be a whole number of tokens") from error
    return env


def _optional(merged: Mapping[str, Any], key: str, kind: type) -> Any:
    value = merged.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _float_or(merged: Mapping[str, Any], key: str, default: float) -> float:
    value = _optional(merged, key, float)
    return default if value is None else float(value)


def _int_or(merged: Mapping[str, Any], key: str, default: int) -> int:
    value = _optional(merged, key, int)
    return default if value is None else int(value)


def _validate(settings: Settings) -> None:
    if settings.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {settings.format!r}")
    if settings.budget is not None and settings.budget <= 0:
        raise ConfigError(f"budget must be a positive number of tokens, got {settings.budget}")
    if settings.kv_type is not None and settings.kv_type not in KV_TYPES:
        raise ConfigError(f"kv_type must be {kv_types_text()}, got {settings.kv_type!r}")
    if settings.max_tokens <= 0:
        raise ConfigError(f"max_tokens must be a positive number, got {settings.max_tokens}")
    if not 0.0 <= settings.temperature <= 5.0:
        raise ConfigError(f"temperature must be between 0 and 5, got {settings.temperature}")
    if not 1.0 <= settings.repeat_penalty <= 2.0:
        raise ConfigError(
            f"repeat_penalty must be between 1.0 (off) and 2.0, got {settings.repeat_penalty}"
        )
    if settings.tail_tokens < 0:
        raise ConfigError(
            f"tail_tokens must be zero (no files added to questions) or more tokens, got "
            f"{settings.tail_tokens}"
        )
    if settings.reserve is not None and settings.reserve < 0:
        raise ConfigError(f"reserve must be zero or more tokens, got {settings.reserve}")
