"""C (and the include resolution C++ shares): ``#include "x.h"`` and ``#include <x.h>``.

Quoted includes are looked up next to the including file, then in its ancestor folders, then
in ``include/`` and ``src/`` folders up the tree, then in any folder whose tail matches the
path (build systems add many ``-I`` folders). Angle includes only resolve under an
``include/`` folder of the repository, so system and third-party headers resolve to nothing.
Against another root (``importer`` None) quoted includes too resolve only under its
``include/`` folders (and a top-level ``src/``).
Headers of either language resolve for both: ``.h`` is C, ``.hpp``/``.hh`` are C++.
"""

from __future__ import annotations

import posixpath

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    find_nodes,
    load_language,
    node_text,
    parse,
    unquote,
)

KIND_LOCAL = "include_local"
KIND_SYSTEM = "include_system"
_INCLUDE = frozenset({"preproc_include"})
# Includes sit at the top level, in #if/#ifdef nests, extern "C" and namespace blocks.
_CONTAINERS = frozenset(
    {
        "preproc_if",
        "preproc_ifdef",
        "preproc_else",
        "preproc_elif",
        "preproc_elifdef",
        "linkage_specification",
        "namespace_definition",
        "declaration_list",
        "ERROR",  # code the grammar could not parse may still hold them
    }
)


def extract_includes(language: tree_sitter.Language, source: bytes) -> list[ImportRef]:
    refs: list[ImportRef] = []
    for include in find_nodes(parse(language, source).root_node, _INCLUDE, _CONTAINERS):
        node = include.child_by_field_name("path")
        if node is None:
            continue
        if node.type == "string_literal":
            refs.append(ImportRef(unquote(node_text(node)), kind=KIND_LOCAL))
        elif node.type == "system_lib_string":
            refs.append(ImportRef(unquote(node_text(node)), kind=KIND_SYSTEM))
    return refs


def _ancestors(directory: str) -> list[str]:
    """``a/b`` -> ``["a/b", "a", ""]``."""
    result = [directory]
    while directory:
        directory = posixpath.dirname(directory)
        result.append(directory)
    return result


def _proximity(importer: str | None, path: str) -> tuple[int, int, str]:
    """Sort key: most folders shared with the importer, then shallowest, then by name."""
    shared = 0
    if importer is not None:
        for mine, theirs in zip(importer.split("/")[:-1], path.split("/")[:-1], strict=False):
            if mine != theirs:
                break
            shared += 1
    return (-shared, path.count("/"), path)


def _join(folder: str, target: str) -> str | None:
    joined = posixpath.normpath(posixpath.join(folder, target))
    return None if joined == ".." or joined.startswith(("../", "/")) else joined


def _first_existing(index: RepoIndex, candidates: list[str | None]) -> list[str]:
    for candidate in candidates:
        if candidate is not None and index.has(candidate):
            return [candidate]
    return []


def _nearest_tail_match(index: RepoIndex, tail: str, importer: str | None) -> list[str]:
    """The path ending in ``/tail`` nearest to the importer, if any."""
    found = [
        path
        for path in index.by_name.get(posixpath.basename(tail), ())
        if (path == tail or path.endswith("/" + tail)) and path != importer
    ]
    return [min(found, key=lambda path: _proximity(importer, path))] if found else []


def resolve_include(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    target = posixpath.normpath(ref.module.strip().replace("\\", "/"))
    if target.startswith("/") or ref.kind not in (KIND_LOCAL, KIND_SYSTEM):
        return []
    climbs = target == ".." or target.startswith("../")
    if climbs and importer is None:
        return []
    folders = _ancestors(posixpath.dirname(importer)) if importer is not None else [""]
    if ref.kind == KIND_LOCAL:
        # Next to the importer, then up its ancestors (only with an importer of this root).
        candidates = [_join(d, target) for d in folders] if importer is not None else []
        subfolders: tuple[str, ...] = ("include", "src")
    else:
        candidates, subfolders = [], ("include",)
    candidates += [_join(posixpath.join(d, sub), target) for d in folders for sub in subfolders]
    found = _first_existing(index, candidates)
    if found or climbs:
        return found
    # Any folder may be on the include path of the importer's own root; in another root only
    # its include/ folders are.
    local = ref.kind == KIND_LOCAL and importer is not None
    return _nearest_tail_match(index, target if local else f"include/{target}", importer)


class IncludeSpec:
    """C and C++: the same include rules over each language's grammar."""

    def __init__(self, name: str, grammar: str) -> None:
        self.name = name
        self.extensions = extensions_of(name)
        self.language = load_language(grammar)
        self._reduce = BodyElider(self.language, frozenset({"function_definition"}))

    def extract(self, source: bytes) -> list[ImportRef]:
        return extract_includes(self.language, source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return resolve_include(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = IncludeSpec("c", "tree_sitter_c")
