"""C++: ``#include`` as in C (same lookup, headers of both languages), bodies of functions,
methods, constructors and templates elided in reductions."""

from __future__ import annotations

from repoctx.languages.base import BodyElider, ImportRef, RepoIndex, load_language
from repoctx.languages.c import extract_includes, resolve_include


class CppSpec:
    name = "cpp"
    extensions = (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".tpp")

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_cpp")
        self._reduce = BodyElider(self.language, frozenset({"function_definition"}))

    def extract(self, source: bytes) -> list[ImportRef]:
        return extract_includes(self.language, source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return resolve_include(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = CppSpec()
