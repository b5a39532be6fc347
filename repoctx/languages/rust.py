"""Rust: ``mod`` declarations and ``use`` paths, resolved through the module tree of each crate.

References (``names`` holds the inline ``mod x { ... }`` blocks that enclose the item, outermost
first, because they shift both file lookup and ``self`` / ``super``):

* ``mod foo;`` -> ``ImportRef("foo", chain, "mod")``; with ``#[path = "x.rs"]`` the path is the
  module: ``ImportRef("x.rs", chain, "mod_path")``. Inline ``mod foo { ... }`` is no reference.
* ``use crate::{a, b::c};`` -> one ``ImportRef("crate::a", chain, "use")`` per leaf path.
* ``extern crate foo;`` -> ``ImportRef("foo", (), "extern_crate")``.

A file's crate root and module path follow Cargo's layout: the nearest ``Cargo.toml`` above it,
``src/lib.rs`` / ``src/main.rs``, ``src/bin/*``, ``tests/``, ``examples/``, ``benches/``,
``build.rs``; outside Cargo the nearest folder with a ``lib.rs`` or ``main.rs``. A ``use`` path
resolves to the file of its longest prefix that is a module; paths starting with the name of a
workspace crate (``[package] name``, ``-`` read as ``_``, or ``[lib] name``) go to that crate.
"""

from __future__ import annotations

import functools
import posixpath
import tomllib
from dataclasses import dataclass
from typing import Any

import tree_sitter

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

_QUERY = """
(mod_item name: (identifier) @mod !body)
(use_declaration argument: (_) @use)
(extern_crate_declaration name: (identifier) @extern)
"""
_ROOT_NAMES = ("lib.rs", "main.rs")
_TARGET_DIRS = ("tests", "examples", "benches")
_SKIPPED = ("line_comment", "block_comment")


def _language() -> tree_sitter.Language:
    return load_language("tree_sitter_rust")


# --- extraction -------------------------------------------------------------------------------


def _inline_chain(node: tree_sitter.Node) -> tuple[str, ...]:
    """Names of the inline ``mod`` blocks around ``node``, outermost first."""
    chain: list[str] = []
    parent = node.parent
    while parent is not None:
        if parent.type == "mod_item" and parent.child_by_field_name("body") is not None:
            name = parent.child_by_field_name("name")
            chain.append(node_text(name) if name is not None else "")
        parent = parent.parent
    return tuple(reversed(chain))


def _path_attribute(mod_item: tree_sitter.Node) -> str | None:
    sibling = mod_item.prev_named_sibling
    while sibling is not None and sibling.type in ("attribute_item", *_SKIPPED):
        attribute = sibling.named_children[0] if sibling.named_children else None
        if attribute is not None and attribute.named_children:
            value = attribute.child_by_field_name("value")
            if value is not None and node_text(attribute.named_children[0]) == "path":
                return unquote(node_text(value))
        sibling = sibling.prev_named_sibling
    return None


def _compact(node: tree_sitter.Node) -> str:
    return "".join(node_text(node).split())


def _join_path(prefix: str, path: str) -> str:
    return f"{prefix}::{path}" if prefix else path


def _use_paths(node: tree_sitter.Node, prefix: str) -> list[str]:
    """The leaf paths of a use tree: ``a::{b, c::d}`` -> ``a::b``, ``a::c::d``."""
    if node.type == "use_as_clause":
        path = node.child_by_field_name("path")
        return _use_paths(path, prefix) if path is not None else []
    if node.type == "scoped_use_list":
        path = node.child_by_field_name("path")
        items = node.child_by_field_name("list")
        inner = _join_path(prefix, _compact(path)) if path is not None else prefix
        return _use_paths(items, inner) if items is not None else []
    if node.type == "use_list":
        return [
            leaf
            for child in node.named_children
            if child.type not in _SKIPPED
            for leaf in _use_paths(child, prefix)
        ]
    return [_join_path(prefix, _compact(node))]


def _mod_ref(name: tree_sitter.Node) -> ImportRef:
    mod_item = name.parent
    chain = _inline_chain(mod_item) if mod_item is not None else ()
    path = _path_attribute(mod_item) if mod_item is not None else None
    if path is not None:
        return ImportRef(path, chain, "mod_path")
    return ImportRef(node_text(name), chain, "mod")


def _extract(source: bytes) -> list[ImportRef]:
    tree = parse(_language(), source)
    found = captures(_language(), _QUERY, tree.root_node)
    nodes = [(n, kind) for kind in ("mod", "use", "extern") for n in found.get(kind, [])]
    nodes.sort(key=lambda item: item[0].start_byte)
    refs: list[ImportRef] = []
    for node, kind in nodes:
        if kind == "mod":
            refs.append(_mod_ref(node))
        elif kind == "extern":
            refs.append(ImportRef(node_text(node), (), "extern_crate"))
        else:
            chain = _inline_chain(node)
            refs.extend(ImportRef(path, chain, "use") for path in _use_paths(node, ""))
    return refs


# --- crates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """Where a file sits in its crate: the folder module paths start from, the crate root file
    (None when unknown) and the file's module path."""

    root_dir: str
    root_file: str | None
    module: tuple[str, ...]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _read_toml(path: str, index: RepoIndex) -> dict[str, Any]:
    try:
        return tomllib.loads(index.read_text(path) or "")
    except tomllib.TOMLDecodeError:
        return {}


def _library(manifest: str, index: RepoIndex) -> tuple[list[str], str] | None:
    """The names a crate is used by and its library root file, if it has a library."""
    data = _read_toml(manifest, index)
    package, lib = data.get("package"), data.get("lib")
    package = package if isinstance(package, dict) else {}
    lib = lib if isinstance(lib, dict) else {}
    folder = posixpath.dirname(manifest)
    lib_path = lib.get("path")
    root = _join(folder, lib_path if isinstance(lib_path, str) else "src/lib.rs")
    root = posixpath.normpath(root) if root else root
    if not index.has(root):
        return None
    names = [
        n.replace("-", "_") for n in (lib.get("name"), package.get("name")) if isinstance(n, str)
    ]
    return names, root


def _crates(index: RepoIndex) -> dict[str, _Context]:
    """Crate name (as ``use`` spells it) -> the context of its library root."""

    def build() -> dict[str, _Context]:
        crates: dict[str, _Context] = {}
        for manifest in index.by_name.get("Cargo.toml", []):
            library = _library(manifest, index)
            if library is not None:
                names, root = library
                for name in names:
                    crates.setdefault(name, _Context(posixpath.dirname(root), root, ()))
        return crates

    crates: dict[str, _Context] = index.memo("rust.crates", build)
    return crates


def _module_of(parts: list[str]) -> tuple[str, ...]:
    """The module path of a file from its path parts below the crate's root folder."""
    if len(parts) == 1 and parts[0] in _ROOT_NAMES:
        return ()
    names = [*parts[:-1], posixpath.splitext(parts[-1])[0]]
    return tuple(names[:-1] if names[-1] == "mod" else names)


def _target_context(folder: str, parts: list[str], index: RepoIndex) -> _Context:
    """Context in a folder of targets (``src/bin``, ``tests`` ...): each file directly in it is
    a crate root, and so is each ``<name>/main.rs``."""
    if len(parts) == 1:
        return _Context(folder, _join(folder, parts[0]), ())
    main = _join(folder, parts[0], "main.rs")
    if index.has(main):
        return _Context(_join(folder, parts[0]), main, _module_of(parts[1:]))
    return _Context(folder, None, _module_of(parts))


def _cargo_context(importer: str, crate: str, index: RepoIndex) -> _Context | None:
    parts = importer[len(crate) + 1 :].split("/") if crate else importer.split("/")
    if parts == ["build.rs"]:
        return _Context(crate, importer, ())
    if parts[0] == "src" and len(parts) >= 3 and parts[1] == "bin":
        return _target_context(_join(crate, "src", "bin"), parts[2:], index)
    if parts[0] in _TARGET_DIRS and len(parts) >= 2:
        return _target_context(_join(crate, parts[0]), parts[1:], index)
    if parts[0] != "src" or len(parts) < 2:
        return None
    src = _join(crate, "src")
    module = _module_of(parts[1:])
    if not module:
        return _Context(src, importer, ())
    root = next((r for n in _ROOT_NAMES if index.has(r := _join(src, n))), None)
    return _Context(src, root, module)


def _ancestors(importer: str) -> list[str]:
    """Folders above ``importer``, nearest first, ending with the root ``""``."""
    folders = [posixpath.dirname(importer)]
    while folders[-1]:
        folders.append(posixpath.dirname(folders[-1]))
    return folders


def _context(importer: str, index: RepoIndex) -> _Context | None:
    """The crate context of ``importer``: Cargo's layout under the nearest ``Cargo.toml``,
    else the nearest folder (inside that package) with a crate root file."""
    folders = _ancestors(importer)
    crate = next((f for f in folders if index.has(_join(f, "Cargo.toml"))), None)
    if crate is not None:
        context = _cargo_context(importer, crate, index)
        if context is not None:
            return context
        folders = folders[: folders.index(crate) + 1]
    for folder in folders:
        root = next((r for n in _ROOT_NAMES if index.has(r := _join(folder, n))), None)
        if root is not None:
            below = importer[len(folder) + 1 :] if folder else importer
            return _Context(folder, root, _module_of(below.split("/")))
    return None


def _module_file(context: _Context, module: tuple[str, ...], index: RepoIndex) -> str | None:
    if not module:
        return context.root_file
    base = _join(context.root_dir, *module)
    return next((f for f in (base + ".rs", base + "/mod.rs") if index.has(f)), None)


# --- resolution -------------------------------------------------------------------------------


def _child_dir(importer: str, index: RepoIndex) -> str:
    """The folder where the modules that ``importer`` declares live."""
    folder, name = posixpath.split(importer)
    if name in (*_ROOT_NAMES, "mod.rs"):
        return folder
    context = _context(importer, index)
    if context is not None and context.root_file == importer:
        return folder
    return _join(folder, posixpath.splitext(name)[0])


def _resolve_mod(ref: ImportRef, importer: str, index: RepoIndex) -> list[str]:
    if ref.kind == "mod_path":
        base = _join(_child_dir(importer, index), *ref.names) if ref.names else None
        joined = posixpath.normpath(_join(base or posixpath.dirname(importer), ref.module))
        return [joined] if index.has(joined) else []
    folder = _join(_child_dir(importer, index), *ref.names)
    for candidate in (_join(folder, ref.module + ".rs"), _join(folder, ref.module, "mod.rs")):
        if index.has(candidate):
            return [candidate]
    return []


def _crate_start(
    segments: list[str], index: RepoIndex
) -> tuple[_Context, tuple[str, ...], list[str]] | None:
    crate = _crates(index).get(segments[0]) if segments else None
    return (crate, (), segments[1:]) if crate is not None else None


def _use_start(
    segments: list[str], chain: tuple[str, ...], importer: str | None, index: RepoIndex
) -> tuple[_Context, tuple[str, ...], list[str]] | None:
    """Where a use path starts: the crate context, the base module and the segments left."""
    first = segments[0]
    if not first:  # ``::name``: an external crate
        return _crate_start(segments[1:], index)
    context = _context(importer, index) if importer is not None else None
    if context is None:
        return (
            None if first in ("crate", "$crate", "self", "super") else _crate_start(segments, index)
        )
    if first in ("crate", "$crate"):
        return context, (), segments[1:]
    current = (*context.module, *chain)
    if first in ("self", "super"):
        while segments and segments[0] in ("self", "super"):
            if segments.pop(0) == "super":
                if not current:
                    return None
                current = current[:-1]
        return context, current, segments
    if _module_file(context, (*current, first), index) is not None:
        return context, current, segments
    return _crate_start(segments, index)


def _resolve_use(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    segments = [s.removeprefix("r#") for s in ref.module.split("::")]
    while len(segments) > 1 and segments[-1] in ("*", "self"):
        segments.pop()
    start = _use_start(segments, ref.names, importer, index)
    if start is None:
        return []
    context, base, rest = start
    for size in range(len(rest), -1, -1):
        found = _module_file(context, (*base, *rest[:size]), index)
        if found is not None:
            return [found]
    return []


def _resolve(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    if ref.kind == "extern_crate":
        crate = _crates(index).get(ref.module)
        found = [crate.root_file] if crate is not None and crate.root_file else []
    elif ref.kind in ("mod", "mod_path"):
        found = _resolve_mod(ref, importer, index) if importer is not None else []
    else:
        found = _resolve_use(ref, importer, index)
    return [path for path in found if path != importer]


@functools.cache
def _elider() -> BodyElider:
    return BodyElider(load_language("tree_sitter_rust"), frozenset({"function_item"}))


class RustSpec:
    name = "rust"
    extensions = extensions_of("rust")

    def extract(self, source: bytes) -> list[ImportRef]:
        return _extract(source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return _resolve(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return _elider()(source)


SPEC = RustSpec()
