"""Go: import declarations resolved through the ``go.mod`` files of the repository.

Every import spec (single, grouped, aliased, dot or blank) is ``ImportRef(path, kind="import")``.
An import path ``<module>/a/b`` names a package: all non-test ``.go`` files of the folder
``a/b`` under the ``go.mod`` that declares ``<module>``. Nested modules win by longest module
path. Paths vendored under the importer's module (``vendor/<path>``) resolve too; anything else
(the standard library, other modules) resolves to nothing.
"""

from __future__ import annotations

import functools
import posixpath
import re

from repoctx.languages import extensions_of
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    captures,
    load_language,
    node_text,
    parse,
    unquote,
)

_EXTENSIONS = extensions_of("go")

_QUERY = "(import_spec path: (_) @path)"
_MODULE_LINE = re.compile(r"^\s*module\s+(\"[^\"]+\"|`[^`]+`|\S+)", re.M)
_FUNCTION_TYPES = frozenset({"function_declaration", "method_declaration", "func_literal"})


def _extract(source: bytes) -> list[ImportRef]:
    language = load_language("tree_sitter_go")
    tree = parse(language, source)
    paths = captures(language, _QUERY, tree.root_node).get("path", [])
    refs = [ImportRef(unquote(node_text(node)), (), "import") for node in paths]
    return [ref for ref in refs if ref.module]


def _module_path(go_mod: str | None) -> str | None:
    if go_mod is None:
        return None
    match = _MODULE_LINE.search(go_mod)
    return unquote(match.group(1)) if match else None


def _modules(index: RepoIndex) -> dict[str, str]:
    """Module path -> folder of its ``go.mod``."""

    def build() -> dict[str, str]:
        modules: dict[str, str] = {}
        for go_mod in index.by_name.get("go.mod", []):
            if "vendor/" in go_mod:
                continue
            module = _module_path(index.read_text(go_mod))
            if module is not None:
                modules.setdefault(module, posixpath.dirname(go_mod))
        return modules

    modules: dict[str, str] = index.memo("go.modules", build)
    return modules


def _package_files(folder: str, index: RepoIndex) -> list[str]:
    return [
        path
        for path in index.by_dir.get(folder, [])
        if path.endswith(_EXTENSIONS) and not path.endswith("_test.go")
    ]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _owning_module_dir(importer: str, index: RepoIndex) -> str | None:
    folder = posixpath.dirname(importer)
    while True:
        if index.has(_join(folder, "go.mod")):
            return folder
        if not folder:
            return None
        folder = posixpath.dirname(folder)


def _resolve(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    modules = _modules(index)
    parts = ref.module.split("/")
    for size in range(len(parts), 0, -1):
        folder = modules.get("/".join(parts[:size]))
        if folder is not None:
            found = _package_files(_join(folder, *parts[size:]), index)
            if found:
                return [path for path in found if path != importer]
            break
    if importer is None:
        return []
    module_dir = _owning_module_dir(importer, index)
    vendored = _package_files(_join(module_dir or "", "vendor", ref.module), index)
    return [path for path in vendored if path != importer]


@functools.cache
def _elider() -> BodyElider:
    return BodyElider(load_language("tree_sitter_go"), _FUNCTION_TYPES)


class GoSpec:
    name = "go"
    extensions = _EXTENSIONS

    def extract(self, source: bytes) -> list[ImportRef]:
        return _extract(source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return _resolve(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return _elider()(source)


SPEC = GoSpec()
