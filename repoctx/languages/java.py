"""Java: ``package`` and ``import`` declarations (single-type, on-demand, static)."""

from __future__ import annotations

import tree_sitter

from repoctx.languages import extensions_of, jvm
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    load_language,
    node_text,
    parse,
)

_NAME_TYPES = frozenset({"identifier", "scoped_identifier"})


def _import_ref(node: tree_sitter.Node) -> ImportRef | None:
    name = next((c for c in node.named_children if c.type in _NAME_TYPES), None)
    if name is None:
        return None
    module = jvm.clean_name(node_text(name))
    if any(c.type == "asterisk" for c in node.children):
        return ImportRef(module, kind=jvm.KIND_WILDCARD)
    is_static = any(c.type == "static" for c in node.children)
    return ImportRef(module, kind=jvm.KIND_STATIC if is_static else jvm.KIND_IMPORT)


def _top_level(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    """The root's children, with those of top-level ERROR nodes (unparsable code) in place."""
    return [n for c in root.children for n in (c.children if c.type == "ERROR" else [c])]


class JavaSpec:
    name = "java"
    extensions = extensions_of("java")

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_java")
        self._reduce = BodyElider(
            self.language,
            frozenset(
                {"method_declaration", "constructor_declaration", "compact_constructor_declaration"}
            ),
        )

    def extract(self, source: bytes) -> list[ImportRef]:
        # Package and imports are top-level declarations: no need to look deeper.
        refs: list[ImportRef] = []
        for node in _top_level(parse(self.language, source).root_node):
            if node.type == "import_declaration":
                ref = _import_ref(node)
                if ref is not None:
                    refs.append(ref)
            elif node.type == "package_declaration":
                name = next((c for c in node.named_children if c.type in _NAME_TYPES), None)
                if name is not None:
                    refs.append(jvm.package_ref(jvm.clean_name(node_text(name)), source))
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return jvm.resolve_jvm(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = JavaSpec()
