"""C#: ``using`` directives (plain, ``static``, aliases, ``global``) and the namespaces a file
declares. Namespaces are not tied to folders, so resolution reads every ``.cs`` file once per
index (a regex in the common case, the parser only for files declaring several namespaces)
and maps namespace -> files and (namespace, type) -> files.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    load_language,
    node_text,
    parse,
)

_EXTENSIONS = extensions_of("csharp")

KIND_USING = "using"
KIND_STATIC = "using_static"
KIND_ALIAS = "using_alias"
KIND_NAMESPACE = "namespace"  # the file's own namespace; names are the type-like words it uses

_TYPE_WORD = re.compile(rb"\b[A-Z][A-Za-z0-9_]*")
_GENERIC_ARGS = re.compile(r"<[^<>]*>")
_NAMESPACE_LINE = re.compile(r"^[ \t]*namespace\s+@?([\w.]+)", re.MULTILINE)
_TYPE_DECLARATION = re.compile(
    r"\b(?:class|struct|interface|enum|record(?:\s+(?:class|struct))?)\s+@?(\w+)"
    r"|\bdelegate\s+[\w<>\[\],.?\s]+?\s@?(\w+)\s*[<(]"
)
_NAMESPACE_TYPES = frozenset({"namespace_declaration", "file_scoped_namespace_declaration"})
_TYPE_NODES = frozenset(
    {
        "class_declaration",
        "struct_declaration",
        "interface_declaration",
        "enum_declaration",
        "record_declaration",
        "delegate_declaration",
    }
)
_BODY_TYPES = frozenset(
    {
        "method_declaration",
        "constructor_declaration",
        "destructor_declaration",
        "operator_declaration",
        "conversion_operator_declaration",
        "accessor_declaration",
        "local_function_statement",
    }
)


def _clean(text: str) -> str:
    """``global::A.B.List<int>`` -> ``A.B.List``."""
    text = "".join(text.split()).removeprefix("global::").replace("@", "")
    while "<" in text:
        stripped = _GENERIC_ARGS.sub("", text)
        if stripped == text:
            break
        text = stripped
    return text


def _using_ref(node: tree_sitter.Node, scope: str) -> ImportRef | None:
    """``names`` holds the enclosing namespace of a directive inside a namespace block, where
    the name may also be relative to it."""
    alias = node.child_by_field_name("name")
    target = next(
        (c for c in reversed(node.named_children) if c != alias and c.type != "comment"), None
    )
    if target is None:
        return None
    module = _clean(node_text(target))
    names = (scope,) if scope else ()
    if alias is not None:
        return ImportRef(module, names, KIND_ALIAS)
    is_static = any(c.type == "static" for c in node.children)
    return ImportRef(module, names, KIND_STATIC if is_static else KIND_USING)


def _scopes(node: tree_sitter.Node, prefix: str) -> Iterator[tuple[str, tree_sitter.Node]]:
    """(namespace, node) for the top-level and namespace-level nodes: the namespace a node
    lives in, or for a namespace declaration the full name it declares."""
    for child in node.children:
        if child.type not in _NAMESPACE_TYPES:
            yield prefix, child
            continue
        name = child.child_by_field_name("name")
        own = _clean(node_text(name)) if name is not None else ""
        full = f"{prefix}.{own}" if prefix and own else own or prefix
        yield full, child
        if child.type == "file_scoped_namespace_declaration":
            prefix = full  # applies to the rest of the file
            continue
        body = child.child_by_field_name("body")
        if body is not None:
            yield from _scopes(body, full)


def _namespaces_declared(root: tree_sitter.Node) -> list[str]:
    """The innermost namespaces of a file (their enclosing ones are implied), or ``""``."""
    found: dict[str, None] = {}
    for namespace, node in _scopes(root, ""):
        if node.type in _NAMESPACE_TYPES or node.type in _TYPE_NODES:
            found[namespace] = None
    inner = [n for n in found if not any(o.startswith(n + ".") or (o and not n) for o in found)]
    return inner or [""]


class _CSharpIndex:
    def __init__(self, index: RepoIndex) -> None:
        self.namespaces: dict[str, list[str]] = {}
        self.types: dict[tuple[str, str], list[str]] = {}
        self._language = load_language("tree_sitter_c_sharp")
        for path in sorted(p for p in index.paths if p.endswith(_EXTENSIONS)):
            for namespace, type_name in self._declarations(index.read_text(path) or ""):
                files = self.namespaces.setdefault(namespace, [])
                if not files or files[-1] != path:
                    files.append(path)
                if type_name:
                    files = self.types.setdefault((namespace, type_name), [])
                    if not files or files[-1] != path:
                        files.append(path)

    def _declarations(self, text: str) -> list[tuple[str, str]]:
        """(namespace, type name or "") for what one file declares."""
        namespaces = _NAMESPACE_LINE.findall(text) if "namespace" in text else []
        if len(namespaces) > 1:
            return self._parsed_declarations(text)
        namespace = namespaces[0] if namespaces else ""
        names = [a or b for a, b in _TYPE_DECLARATION.findall(text)]
        return [(namespace, "")] + [(namespace, name) for name in names]

    def _parsed_declarations(self, text: str) -> list[tuple[str, str]]:
        result: list[tuple[str, str]] = []
        for namespace, node in _scopes(parse(self._language, text.encode()).root_node, ""):
            name = node.child_by_field_name("name")
            if node.type in _TYPE_NODES and name is not None:
                result.append((namespace, node_text(name)))
            elif node.type in _NAMESPACE_TYPES:
                result.append((namespace, ""))
        return result

    def type_files(self, qualified: str) -> list[str]:
        """Files declaring the type ``A.B.C`` (or the outer type of nested ``A.B.C.D``)."""
        parts = qualified.split(".")
        for cut in range(len(parts) - 1, -1, -1):
            found = self.types.get((".".join(parts[:cut]), parts[cut]))
            if found:
                return found
        return []

    def lookup(self, module: str, kind: str) -> list[str]:
        if kind == KIND_USING:
            return self.namespaces.get(module, [])
        if kind == KIND_STATIC:
            return self.type_files(module)
        return self.namespaces.get(module) or self.type_files(module)

    def used_types(self, namespace: str, names: tuple[str, ...]) -> list[str]:
        """Files declaring ``names`` in ``namespace`` or an enclosing one (no using needed)."""
        found = {
            path
            for outer in _enclosing(namespace)
            for name in names
            for path in self.types.get((outer, name), ())
        }
        return sorted(found)


def _csharp_index(index: RepoIndex) -> _CSharpIndex:
    result: _CSharpIndex = index.memo("csharp", lambda: _CSharpIndex(index))
    return result


@functools.cache
def _enclosing(namespace: str) -> tuple[str, ...]:
    """``A.B`` -> ``("A.B", "A", "")``: where unqualified type names are looked up."""
    parts = namespace.split(".") if namespace else []
    return tuple(".".join(parts[:n]) for n in range(len(parts), -1, -1))


class CSharpSpec:
    name = "csharp"
    extensions = _EXTENSIONS

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_c_sharp")
        self._reduce = BodyElider(self.language, _BODY_TYPES)

    def extract(self, source: bytes) -> list[ImportRef]:
        # Usings and namespaces live at the top level and inside namespace bodies only.
        refs: list[ImportRef] = []
        root = parse(self.language, source).root_node
        for scope, node in _scopes(root, ""):
            if node.type == "using_directive":
                ref = _using_ref(node, scope)
                if ref is not None:
                    refs.append(ref)
        words = tuple(sorted({w.decode("ascii") for w in _TYPE_WORD.findall(source)}))
        refs.extend(ImportRef(ns, words, KIND_NAMESPACE) for ns in _namespaces_declared(root))
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        table = _csharp_index(index)
        if ref.kind == KIND_NAMESPACE:
            found = table.used_types(ref.module, ref.names) if importer is not None else []
        elif ref.kind in (KIND_USING, KIND_STATIC, KIND_ALIAS):
            scope = ref.names[0] if ref.names else ""
            found = []
            for outer in _enclosing(scope):
                module = f"{outer}.{ref.module}" if outer else ref.module
                found = table.lookup(module, ref.kind)
                if found:
                    break
        else:
            found = []
        return [path for path in found if path != importer]

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = CSharpSpec()
