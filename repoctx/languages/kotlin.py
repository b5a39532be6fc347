"""Kotlin: ``package`` header and ``import`` directives (aliases, wildcards, top-level
functions and properties)."""

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

_FUNCTION_TYPES = frozenset(
    {"function_declaration", "secondary_constructor", "anonymous_initializer", "getter", "setter"}
)


def _qualified_name(node: tree_sitter.Node) -> str | None:
    name = next((c for c in node.named_children if c.type == "qualified_identifier"), None)
    if name is None:
        name = next((c for c in node.named_children if c.type == "identifier"), None)
    return None if name is None else jvm.clean_name(node_text(name))


def _top_level(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    """The root's children, with those of top-level ERROR nodes (unparsable code) in place."""
    return [n for c in root.children for n in (c.children if c.type == "ERROR" else [c])]


class KotlinSpec:
    name = "kotlin"
    extensions = extensions_of("kotlin")

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_kotlin")
        # Function bodies are ``function_body`` children (a block or ``= expression``);
        # constructors and ``init`` blocks carry a plain ``block``.
        self._reduce = BodyElider(
            self.language,
            _FUNCTION_TYPES,
            body_field="body",
            extra_body_types=frozenset({"function_body", "block"}),
        )

    def extract(self, source: bytes) -> list[ImportRef]:
        # The package header and imports precede every declaration, at the top level.
        refs: list[ImportRef] = []
        for node in _top_level(parse(self.language, source).root_node):
            if node.type == "import":
                module = _qualified_name(node)
                if module is None:
                    continue
                wildcard = any(c.type == "*" for c in node.children)
                refs.append(ImportRef(module, kind=jvm.KIND_WILDCARD if wildcard else "import"))
            elif node.type == "package_header":
                package = _qualified_name(node)
                if package is not None:
                    refs.append(jvm.package_ref(package, source))
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return jvm.resolve_jvm(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = KotlinSpec()
