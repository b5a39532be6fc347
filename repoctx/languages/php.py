"""PHP: ``use`` (classes, ``function``, ``const``, grouped, aliased), the file's namespace, and
``require``/``include`` (``_once`` too) of literal paths, ``__DIR__ . '/x.php'`` and
``dirname(__FILE__) . '/x.php'``.

Class names resolve through the PSR-4 (and PSR-0) maps of every ``composer.json`` in the
repository (``autoload`` and ``autoload-dev``, longest prefix first), then by a path ending in
the namespaced name (``A\\B\\C`` -> ``.../A/B/C.php``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    find_nodes,
    join_relative,
    load_language,
    node_text,
    parse,
)

_EXTENSIONS = extensions_of("php")

KIND_USE = "use"
KIND_NAMESPACE = "namespace"  # the file's namespace; names are the type-like words it uses
KIND_REQUIRE = "require"  # a literal path: the file's folder, then the root (include_path)
KIND_REQUIRE_DIR = "require_dir"  # ``__DIR__ . '/x.php'``: relative to the file's folder

_WANTED = frozenset(
    {
        "namespace_definition",
        "namespace_use_declaration",
        "require_expression",
        "require_once_expression",
        "include_expression",
        "include_once_expression",
    }
)
# Uses sit at the top level or in a namespace block; requires there too, maybe under an ``if``
# or in an assignment. Requires inside functions and methods are left out.
_CONTAINERS = frozenset(
    {
        "namespace_definition",
        "compound_statement",
        "if_statement",
        "else_clause",
        "else_if_clause",
        "colon_block",
        "expression_statement",
        "assignment_expression",
        "parenthesized_expression",
        "ERROR",  # code the grammar could not parse may still hold them
    }
)
_TYPE_WORD = re.compile(rb"\b[A-Z][A-Za-z0-9_]*")
_NAMESPACE_LINE = re.compile(r"^\s*namespace\s+([\w\\]+)", re.MULTILINE)
_FUNCTION = re.compile(r"^\s*function\s+&?\s*(\w+)\s*\(", re.MULTILINE)
_CONST = re.compile(r"\bconst\s+(\w+)\s*=|\bdefine\(\s*['\"](?:[\w\\]*\\)?(\w+)['\"]")


def _string(node: tree_sitter.Node) -> str | None:
    if node.type not in ("string", "encapsed_string"):
        return None
    if any(c.type not in ("string_content", "escape_sequence") for c in node.named_children):
        return None  # interpolated
    return "".join(node_text(c) for c in node.named_children)


def _dir_levels(node: tree_sitter.Node) -> int | None:
    """How many folders above the file's folder ``node`` names: ``__DIR__`` and
    ``dirname(__FILE__)`` -> 0, ``dirname(__DIR__)`` -> 1, ``dirname(__FILE__, 3)`` -> 2."""
    if node.type == "name" and node_text(node) == "__DIR__":
        return 0
    function, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
    if node.type != "function_call_expression" or function is None or args is None:
        return None
    values = [node_text(a) for a in args.named_children if a.type == "argument"]
    if node_text(function) != "dirname" or not 1 <= len(values) <= 2:
        return None
    if len(values) == 2 and not values[1].isdigit():
        return None
    levels = int(values[1]) if len(values) == 2 else 1
    if values[0] == "__FILE__":
        return levels - 1
    return levels if values[0] == "__DIR__" else None


def _require_ref(expression: tree_sitter.Node) -> ImportRef | None:
    while expression.type == "parenthesized_expression" and expression.named_child_count:
        expression = expression.named_children[0]
    literal = _string(expression)
    if literal is not None:
        return ImportRef(literal, kind=KIND_REQUIRE) if literal else None
    left, right = expression.child_by_field_name("left"), expression.child_by_field_name("right")
    if expression.type != "binary_expression" or left is None or right is None:
        return None
    levels, tail = _dir_levels(left), _string(right)
    if levels is None or levels < 0 or not tail or not tail.startswith("/"):
        return None
    path = posixpath.normpath("./" + "../" * levels + tail.lstrip("/"))
    return ImportRef(path, kind=KIND_REQUIRE_DIR)


def _use_kind(node: tree_sitter.Node, default: str) -> str:
    kind = node.child_by_field_name("type")
    return f"use_{node_text(kind)}" if kind is not None else default


def _use_refs(declaration: tree_sitter.Node) -> Iterator[ImportRef]:
    kind = _use_kind(declaration, KIND_USE)
    prefix = ""
    for child in declaration.named_children:
        if child.type == "namespace_name":
            prefix = node_text(child).strip("\\") + "\\"
        elif child.type == "namespace_use_group":
            for clause in child.named_children:
                if clause.type == "namespace_use_clause":
                    yield from _clause_ref(clause, prefix, _use_kind(clause, kind))
        elif child.type == "namespace_use_clause":
            yield from _clause_ref(child, "", _use_kind(child, kind))


def _clause_ref(clause: tree_sitter.Node, prefix: str, kind: str) -> Iterator[ImportRef]:
    name = next((c for c in clause.named_children if c.type in ("qualified_name", "name")), None)
    if name is not None:
        yield ImportRef(prefix + "".join(node_text(name).split()).strip("\\"), kind=kind)


def _composer_dirs(base: str, mapping: Any) -> Iterator[tuple[str, list[str]]]:
    if not isinstance(mapping, dict):
        return
    for prefix, dirs in mapping.items():
        listed = dirs if isinstance(dirs, list) else [dirs]
        paths = [posixpath.normpath(posixpath.join(base, d)) for d in listed if isinstance(d, str)]
        yield str(prefix).strip("\\"), [p.removeprefix("./") if p != "." else "" for p in paths]


class _Autoload:
    """The PSR-4 / PSR-0 prefixes and autoloaded files of every composer.json of a root."""

    def __init__(self, index: RepoIndex) -> None:
        self.index = index
        self.psr4: dict[str, list[str]] = {}  # namespace prefix ("" for all) -> folders
        self.psr0: list[tuple[str, list[str]]] = []
        self.files: list[str] = []
        self._texts: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {}
        for path in index.by_name.get("composer.json", ()):
            self._load(path)
        self.psr0.sort(key=lambda entry: -len(entry[0]))  # stable: the first file wins ties

    def _load(self, path: str) -> None:
        try:
            data = json.loads(self.index.read_text(path) or "{}")
        except ValueError:
            return
        base = posixpath.dirname(path)
        for section in ("autoload", "autoload-dev"):
            autoload = data.get(section) if isinstance(data, dict) else None
            if not isinstance(autoload, dict):
                continue
            for prefix, dirs in _composer_dirs(base, autoload.get("psr-4")):
                self.psr4.setdefault(prefix, []).extend(dirs)
            self.psr0.extend(_composer_dirs(base, autoload.get("psr-0")))
            files = autoload.get("files")
            for file in files if isinstance(files, list) else []:
                if isinstance(file, str):
                    self.files.append(posixpath.normpath(posixpath.join(base, file)))

    def _candidates(self, name: str) -> Iterator[str]:
        parts = name.split("\\")
        for cut in range(len(parts) - 1, -1, -1):  # the longest namespace prefix first
            dirs = self.psr4.get("\\".join(parts[:cut]), [])
            relative = "/".join(parts[cut:]) + ".php"
            yield from (posixpath.join(d, relative) for d in dirs)
        for prefix, dirs in self.psr0:
            if name.startswith(prefix):
                namespace, _, short = name.rpartition("\\")
                relative = posixpath.join(namespace.replace("\\", "/"), short.replace("_", "/"))
                yield from (posixpath.join(d, relative + ".php") for d in dirs)

    def class_file(self, name: str) -> list[str]:
        """The file autoloading class ``A\\B\\C``: composer maps, else ``.../A/B/C.php``."""
        for candidate in self._candidates(name):
            if self.index.has(candidate):
                return [candidate]
        tail = name.replace("\\", "/") + ".php"
        found = [
            path
            for path in self.index.by_name.get(posixpath.basename(tail), ())
            if path == tail or path.endswith("/" + tail)
        ]
        return [min(found, key=lambda p: (p.count("/"), p))] if found else []

    def _declarations(self, path: str) -> tuple[str, frozenset[str], frozenset[str]]:
        """(namespace, functions, constants) a file declares."""
        if path not in self._texts:
            text = self.index.read_text(path) or ""
            namespace = _NAMESPACE_LINE.search(text)
            functions = frozenset(_FUNCTION.findall(text))
            constants = frozenset(a or b for a, b in _CONST.findall(text))
            self._texts[path] = (namespace.group(1) if namespace else "", functions, constants)
        return self._texts[path]

    def member_files(self, name: str, constant: bool) -> list[str]:
        """Files declaring function (or constant) ``A\\b\\fn`` in namespace ``A\\b``: files
        of the namespace's autoload folders and composer's autoloaded ``files``."""
        namespace, _, short = name.rpartition("\\")
        # The folder a class of the namespace would be autoloaded from.
        folders = {posixpath.dirname(p) for p in self._candidates(namespace + "\\_")}
        listed = (p for d in folders for p in self.index.by_dir.get(d, ()))
        paths = {p for p in listed if p.endswith(_EXTENSIONS)}
        paths.update(p for p in self.files if self.index.has(p))
        found = []
        for path in sorted(paths):
            declared_namespace, functions, constants = self._declarations(path)
            if declared_namespace == namespace and short in (constants if constant else functions):
                found.append(path)
        return found


def _required_file(ref: ImportRef, importer: str, index: RepoIndex) -> list[str]:
    candidates = [join_relative(importer, ref.module)]
    if ref.kind == KIND_REQUIRE and not ref.module.startswith(("/", "../")):
        candidates.append(posixpath.normpath(ref.module))
    return next(([c] for c in candidates if c and index.has(c)), [])


def _autoload(index: RepoIndex) -> _Autoload:
    result: _Autoload = index.memo("php", lambda: _Autoload(index))
    return result


class PhpSpec:
    name = "php"
    extensions = _EXTENSIONS

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_php", "language_php")
        self._reduce = BodyElider(
            self.language, frozenset({"function_definition", "method_declaration"})
        )

    def extract(self, source: bytes) -> list[ImportRef]:
        refs: list[ImportRef] = []
        words: tuple[str, ...] = ()
        for node in find_nodes(parse(self.language, source).root_node, _WANTED, _CONTAINERS):
            if node.type == "namespace_use_declaration":
                refs.extend(_use_refs(node))
            elif node.type == "namespace_definition":
                name = node.child_by_field_name("name")
                if name is not None:
                    words = words or tuple(sorted({w.decode() for w in _TYPE_WORD.findall(source)}))
                    refs.append(ImportRef(node_text(name).strip("\\"), words, KIND_NAMESPACE))
            else:
                expression = next((c for c in node.named_children if c.type != "comment"), None)
                ref = _require_ref(expression) if expression is not None else None
                if ref is not None:
                    refs.append(ref)
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        autoload = _autoload(index)
        if ref.kind == KIND_USE:
            found = autoload.class_file(ref.module)
        elif ref.kind in ("use_function", "use_const"):
            found = autoload.member_files(ref.module, ref.kind == "use_const")
        elif ref.kind == KIND_NAMESPACE and importer is not None:
            hits = {p for n in ref.names for p in autoload.class_file(f"{ref.module}\\{n}")}
            found = sorted(hits)
        elif ref.kind in (KIND_REQUIRE, KIND_REQUIRE_DIR) and importer is not None:
            found = _required_file(ref, importer, index)
        else:
            found = []
        return [path for path in found if path != importer]

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = PhpSpec()
