"""The languages repoctx understands: which files they cover and where their modules live.

Each language is a module of this package exposing ``SPEC``, a ``LanguageSpec``. Modules are
imported on first use so that start-up stays fast.
"""

from __future__ import annotations

import functools
import importlib
import posixpath

from repoctx.languages.base import ImportRef, LanguageSpec, RepoIndex

# language name -> (module in this package, file extensions): the one list of extensions, which
# the specs and the scanner take from here
LANGUAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "python": ("python", (".py", ".pyi")),
    "javascript": ("javascript", (".js", ".jsx", ".mjs", ".cjs")),
    "typescript": ("typescript", (".ts", ".mts", ".cts")),
    "tsx": ("typescript", (".tsx",)),
    "go": ("go", (".go",)),
    "rust": ("rust", (".rs",)),
    "java": ("java", (".java",)),
    "kotlin": ("kotlin", (".kt", ".kts")),
    "c": ("c", (".c", ".h")),
    "cpp": ("cpp", (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".tpp")),
    "csharp": ("csharp", (".cs",)),
    "ruby": ("ruby", (".rb", ".rake", ".gemspec")),
    "php": ("php", (".php",)),
    "swift": ("swift", (".swift",)),
    "scala": ("scala", (".scala", ".sc")),
}

_BY_EXTENSION = {ext: name for name, (_, exts) in LANGUAGES.items() for ext in exts}
_BY_FILENAME = {"Rakefile": "ruby", "Gemfile": "ruby"}


def extensions_of(name: str) -> tuple[str, ...]:
    """The file extensions of the language ``name`` (a key of ``LANGUAGES``), for its spec and
    wherever its module picks out its files."""
    return LANGUAGES[name][1]


def language_for_path(path: str) -> str | None:
    """The language of a file by its name, or None for files repoctx only packs."""
    name = posixpath.basename(path)
    if name in _BY_FILENAME:
        return _BY_FILENAME[name]
    return _BY_EXTENSION.get(posixpath.splitext(name)[1].lower())


@functools.cache
def get_language(name: str) -> LanguageSpec:
    module_name, _ = LANGUAGES[name]
    module = importlib.import_module(f"repoctx.languages.{module_name}")
    spec: LanguageSpec = module.SPECS[name] if hasattr(module, "SPECS") else module.SPEC
    return spec


__all__ = [
    "LANGUAGES",
    "ImportRef",
    "LanguageSpec",
    "RepoIndex",
    "extensions_of",
    "get_language",
    "language_for_path",
]
