"""TypeScript and TSX: the JavaScript forms plus ``import x = require("x")``.

``import type`` and ``export type ... from`` are ordinary ``import`` / ``export`` references.
Resolution is JavaScript's (see ``javascript.py``): TypeScript's own extension order, the
``./x.js`` -> ``x.ts`` ESM convention and tsconfig ``baseUrl`` / ``paths``.
"""

from __future__ import annotations

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import ImportRef, RepoIndex, load_language
from repoctx.languages.javascript import (
    JS_QUERY,
    elider,
    extract_imports,
    resolve_specifier,
)

TS_QUERY = JS_QUERY + "(import_require_clause source: (string) @require)\n"


class TypeScriptSpec:
    """One dialect of TypeScript; ``function`` picks the grammar in ``tree_sitter_typescript``."""

    def __init__(self, name: str, function: str) -> None:
        self.name = name
        self.extensions = extensions_of(name)
        self._function = function

    def _language(self) -> tree_sitter.Language:
        return load_language("tree_sitter_typescript", self._function)

    def extract(self, source: bytes) -> list[ImportRef]:
        return extract_imports(self._language(), TS_QUERY, source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return resolve_specifier(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return elider("tree_sitter_typescript", self._function)(source)


SPECS = {
    "typescript": TypeScriptSpec("typescript", "language_typescript"),
    "tsx": TypeScriptSpec("tsx", "language_tsx"),
}
