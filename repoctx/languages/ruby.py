"""Ruby: ``require``, ``require_relative``, ``load`` and ``autoload`` with literal paths,
including the ``File.expand_path("../x", __FILE__)`` and ``File.join(__dir__, "x")`` idioms.

``require`` searches the load path: ``lib/`` folders (of the repository and of the gems it
holds), ``test/`` and ``spec/``, then the root; nearest to the requiring file first.
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
    join_relative,
    load_language,
    node_text,
    parse,
)

_METHODS = frozenset({"require", "require_relative", "load", "autoload"})
_CALL = frozenset({"call"})
# Requires sit at the top level (maybe under a condition or begin/rescue), autoloads in module
# and class bodies. Requires inside methods load lazily and are left out.
_CONTAINERS = frozenset(
    {
        "module",
        "class",
        "singleton_class",
        "body_statement",
        "if",
        "unless",
        "elsif",
        "else",
        "then",
        "begin",
        "rescue",
        "ensure",
        "if_modifier",
        "unless_modifier",
        "rescue_modifier",
        "ERROR",  # code the grammar could not parse may still hold them
    }
)
_LOAD_DIRS = frozenset({"lib", "test", "spec"})
_FILE_DIR = "__FILE__"


def _string(node: tree_sitter.Node) -> str | None:
    """The value of a string literal without interpolation."""
    if node.type != "string" or any(c.type == "interpolation" for c in node.named_children):
        return None
    return "".join(node_text(c) for c in node.named_children if c.type == "string_content")


def _is_file_dir(node: tree_sitter.Node) -> bool:
    """``__dir__`` or ``File.dirname(__FILE__)``."""
    if node.type == "identifier":
        return node_text(node) == "__dir__"
    if node.type != "call" or node_text(node.child_by_field_name("method") or node) != "dirname":
        return False
    args = node.child_by_field_name("arguments")
    return args is not None and [node_text(a) for a in args.named_children] == [_FILE_DIR]


def _relative_path(call: tree_sitter.Node) -> str | None:
    """``File.expand_path("../x", __FILE__)``, ``File.expand_path("x", __dir__)`` or
    ``File.join(__dir__, "x")`` as a path relative to the file's folder."""
    receiver, method = call.child_by_field_name("receiver"), call.child_by_field_name("method")
    args = call.child_by_field_name("arguments")
    if receiver is None or method is None or args is None or node_text(receiver) != "File":
        return None
    values = [a for a in args.named_children if a.type != "comment"]
    if node_text(method) == "expand_path" and len(values) == 2:
        path = _string(values[0])
        if path is None or node_text(values[1]) not in (_FILE_DIR, "__dir__"):
            return None
        if node_text(values[1]) == _FILE_DIR:
            path = posixpath.normpath(posixpath.join(_FILE_DIR, path))
            return None if path.startswith(_FILE_DIR) else path  # expand_path("x", __FILE__)
        return path
    if node_text(method) == "join" and len(values) >= 2 and _is_file_dir(values[0]):
        parts = [_string(v) for v in values[1:]]
        return None if None in parts else posixpath.join(*[p for p in parts if p is not None])
    return None


def _ref(method: str, args: tree_sitter.Node) -> ImportRef | None:
    values = [a for a in args.named_children if a.type != "comment"]
    if method == "autoload":
        path = _string(values[1]) if len(values) == 2 else None
        return None if not path else ImportRef(path, kind="autoload")
    if not values:
        return None
    if values[0].type == "call" and method != "load":
        relative = _relative_path(values[0])
        return None if not relative else ImportRef(relative, kind="require_relative")
    path = _string(values[0])
    return None if not path else ImportRef(path, kind=method)


def _with_extension(path: str) -> str:
    return path if path.endswith((".rb", ".rake")) else path + ".rb"


def _shared_folders(importer: str | None, path: str) -> int:
    shared = 0
    if importer is not None:
        for mine, theirs in zip(importer.split("/")[:-1], path.split("/")[:-1], strict=False):
            if mine != theirs:
                break
            shared += 1
    return shared


def _on_load_path(index: RepoIndex, target: str, importer: str | None) -> list[str]:
    """The file ``target`` found under a load-path folder, nearest to the importer first."""
    found: list[tuple[int, int, int, str]] = []
    for path in index.by_name.get(posixpath.basename(target), ()):
        if path != target and not path.endswith("/" + target):
            continue
        folder = path[: len(path) - len(target)].rstrip("/")
        if folder and posixpath.basename(folder) not in _LOAD_DIRS:
            continue
        rank = 1 if folder == "" else 0  # the root only after the load-path folders
        found.append((rank, -_shared_folders(importer, path), path.count("/"), path))
    return [min(found)[3]] if found else []


class RubySpec:
    name = "ruby"
    extensions = extensions_of("ruby")

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_ruby")
        # ``def ... end`` bodies are ``body_statement`` children; endless ``def x = expr``
        # methods have none and stay whole.
        self._reduce = BodyElider(
            self.language,
            frozenset({"method", "singleton_method"}),
            placeholder="# ...",
            body_field="_",
            extra_body_types=frozenset({"body_statement"}),
        )

    def extract(self, source: bytes) -> list[ImportRef]:
        refs: list[ImportRef] = []
        for call in find_nodes(parse(self.language, source).root_node, _CALL, _CONTAINERS):
            method = call.child_by_field_name("method")
            args = call.child_by_field_name("arguments")
            if method is None or args is None or call.child_by_field_name("receiver") is not None:
                continue
            name = node_text(method)
            ref = _ref(name, args) if name in _METHODS else None
            if ref is not None:
                refs.append(ref)
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        if ref.kind == "require_relative":
            if importer is None:
                return []
            target = join_relative(importer, _with_extension(ref.module))
            return [target] if target and index.has(target) and target != importer else []
        if ref.kind in ("require", "autoload"):
            return _on_load_path(index, _with_extension(ref.module), importer)
        if ref.kind == "load":
            target = posixpath.normpath(ref.module)
            if index.has(target):
                return [target]
            return _on_load_path(index, target, importer)
        return []

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = RubySpec()
