"""Engines run prompts: ``llama`` (llama.cpp with persistent KV state) and ``fake`` (a scripted
engine for UI and protocol tests and demos)."""

from repoctx.engine.base import Engine, GenerationOptions

__all__ = ["Engine", "GenerationOptions"]
