"""Scala: package clauses and ``import`` clauses (selectors, renames, hiding, ``_``, ``*``,
``given``), wherever they appear; relative imports resolve inside the enclosing packages."""

from __future__ import annotations

import tree_sitter

from repoctx.languages import extensions_of, jvm
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    find_nodes,
    load_language,
    node_text,
    parse,
)

_IMPORT = frozenset({"import_declaration"})
# Imports sit at the top, in package blocks and in templates. Those inside method bodies are
# left out: finding them means walking every body, and they seldom name files of the repo.
_CONTAINERS = frozenset(
    {
        "package_clause",
        "package_object",
        "object_definition",
        "class_definition",
        "trait_definition",
        "enum_definition",
        "given_definition",
        "template_body",
        "enum_body",
        "ERROR",  # code the grammar could not parse may still hold them
    }
)
_RENAMES = frozenset({"arrow_renamed_identifier", "as_renamed_identifier"})


def _selector_refs(base: str, selectors: tree_sitter.Node) -> list[ImportRef]:
    names: list[str] = []
    wildcard = False
    for child in selectors.children:
        if child.type in ("namespace_wildcard", "given"):
            wildcard = True
        elif child.type == "identifier":
            names.append(jvm.clean_name(node_text(child)))
        elif child.type in _RENAMES:
            name, alias = child.child_by_field_name("name"), child.child_by_field_name("alias")
            if name is not None and (alias is None or alias.type != "wildcard"):
                names.append(jvm.clean_name(node_text(name)))  # ``C => _`` hides C
    refs = [ImportRef(base, tuple(names), jvm.KIND_SELECT)] if names else []
    if wildcard:
        refs.append(ImportRef(base, kind=jvm.KIND_WILDCARD))
    return refs


def _group_refs(path: list[str], tail: tree_sitter.Node | None) -> list[ImportRef]:
    base = ".".join(path)
    if not base:
        return []
    if tail is None:
        return [ImportRef(base, kind=jvm.KIND_IMPORT)]
    if tail.type == "namespace_wildcard":
        return [ImportRef(base, kind=jvm.KIND_WILDCARD)]
    if tail.type == "namespace_selectors":
        return _selector_refs(base, tail)
    name = tail.child_by_field_name("name")  # Scala 3 ``import a.b.C as D``
    return [] if name is None else [ImportRef(f"{base}.{jvm.clean_name(node_text(name))}")]


def _import_refs(node: tree_sitter.Node) -> list[ImportRef]:
    """``import a.b.C, d.e._`` holds several comma-separated groups."""
    refs: list[ImportRef] = []
    path: list[str] = []
    tail: tree_sitter.Node | None = None
    for child in node.children:
        if child.type == ",":
            refs.extend(_group_refs(path, tail))
            path, tail = [], None
        elif child.type == "identifier":
            path.append(jvm.clean_name(node_text(child)))
        elif child.type in ("namespace_wildcard", "namespace_selectors", *_RENAMES):
            tail = child
    refs.extend(_group_refs(path, tail))
    return refs


def _package(root: tree_sitter.Node) -> str | None:
    """``package a.b`` then ``package c`` (or ``package c { ... }``) means ``a.b.c``."""
    parts: list[str] = []
    nodes = root.children
    while True:
        clauses = [n for n in nodes if n.type == "package_clause"]
        for clause in clauses:
            name = clause.child_by_field_name("name")
            if name is not None:
                parts.append(jvm.clean_name(node_text(name)))
        body = clauses[-1].child_by_field_name("body") if clauses else None
        if body is None:
            return ".".join(parts) if parts else None
        nodes = body.children


class ScalaSpec:
    name = "scala"
    extensions = extensions_of("scala")

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_scala")
        self._reduce = BodyElider(self.language, frozenset({"function_definition"}))

    def extract(self, source: bytes) -> list[ImportRef]:
        root = parse(self.language, source).root_node
        refs: list[ImportRef] = []
        package = _package(root)
        if package is not None:
            refs.append(jvm.package_ref(package, source))
        for node in find_nodes(root, _IMPORT, _CONTAINERS):
            refs.extend(_import_refs(node))
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return jvm.resolve_jvm(ref, importer, index, relative=True)

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = ScalaSpec()
