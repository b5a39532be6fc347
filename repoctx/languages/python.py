"""Python: ``import`` and ``from ... import`` statements, resolved like the import system does.

References are ``ImportRef("a.b.c", kind="import")`` for ``import a.b.c`` and
``ImportRef("..pkg", ("x", "y"), kind="from")`` for ``from ..pkg import x, y``. Imports nested in
functions and ``if TYPE_CHECKING:`` blocks count like any other.

Absolute imports are looked up under candidate package roots: the repository root, ``src/``,
every folder that holds a top-level package (``D/x/__init__.py`` exists, ``D/__init__.py`` does
not) and, for scripts outside any package, the importer's own folder. Importing ``a.b.c`` also
depends on ``a/__init__.py`` and ``a/b/__init__.py``, which Python executes first.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import ImportRef, RepoIndex, captures, load_language, node_text, parse

_QUERY = "(import_statement) @import (import_from_statement) @from"
_BODY_QUERY = "(function_definition body: (block) @body)"
_SOURCE_SUFFIXES = extensions_of("python")
_INIT_NAMES = ("__init__.py", "__init__.pyi")


def _language() -> tree_sitter.Language:
    return load_language("tree_sitter_python")


# --- extraction -------------------------------------------------------------------------------


def _dotted(node: tree_sitter.Node) -> str:
    """The dotted name of a ``dotted_name`` or ``aliased_import`` node, whitespace removed."""
    if node.type == "aliased_import":
        name = node.child_by_field_name("name")
        node = name if name is not None else node
    return "".join(node_text(node).split())


def _from_ref(statement: tree_sitter.Node) -> ImportRef | None:
    module = statement.child_by_field_name("module_name")
    if module is None:
        return None
    names = [_dotted(n) for n in statement.children_by_field_name("name")]
    if any(child.type == "wildcard_import" for child in statement.children):
        names.append("*")
    return ImportRef(_dotted(module), tuple(names), "from")


# a line at column 0 that no backslash continues and that starts a statement or a comment
_TOP_LEVEL_LINE = re.compile(rb"(?<!\\)(?<!\\\r)\n(?=[A-Za-z_@#])")


# what an import statement's keyword follows on its logical line: nothing, or the ':' of a
# compound statement or a ';', then whitespace, then for a from-import its module
_BEFORE_IMPORT = re.compile(rb"(?:^|[:;])[ \t\f\v]*(?:from[ \t\f\v]+[.\w]+[ \t\f\v]+)?\Z")
_CONTINUED = re.compile(rb"\\\r?\n")  # a backslash ending a physical line


def import_head(source: bytes) -> bytes | None:
    """The start of ``source`` up to the first line at column 0 after its last ``import``
    keyword that can begin an import statement (one in a docstring or comment mostly cannot):
    nothing after that can be an import, so only the head is parsed (under a third of a typical
    file). None when nothing follows it, or the file has no such keyword."""
    last = _last_import_keyword(source)
    cut = _TOP_LEVEL_LINE.search(source, last) if last >= 0 else None
    return None if cut is None else source[: cut.end()]


def _last_import_keyword(source: bytes) -> int:
    """Where the last ``import`` keyword that may be a statement's starts, or -1. Every import
    statement's keyword is found (it follows what ``_BEFORE_IMPORT`` allows on its physical
    line, or on its logical line where backslashes join lines); some keywords in strings and
    comments are too, which only makes the head longer."""
    end = len(source)
    while (at := source.rfind(b"import", 0, end)) >= 0:
        end = at
        after = source[at + 6 : at + 7]
        if not (after.isalnum() or after == b"_") and _may_begin_statement(source, at):
            return at
    return -1


def _may_begin_statement(source: bytes, at: int) -> bool:
    start = source.rfind(b"\n", 0, at) + 1
    while True:
        if _BEFORE_IMPORT.search(_CONTINUED.sub(b" ", source[start:at])):
            return True
        # the line before may end in a backslash that joins it to this one (unless it is in a
        # comment: both readings are tried)
        if not (source.endswith(b"\\\n", 0, start) or source.endswith(b"\\\r\n", 0, start)):
            return False
        start = source.rfind(b"\n", 0, start - 1) + 1


def _extract_with_head(source: bytes) -> tuple[list[ImportRef], bytes | None]:
    """The imports of ``source``, and the head they were read from when the head alone decides
    them: it parsed cleanly, so another file with the same head has the same imports. When it
    does not (the cut fell in a string, or the file has errors), the whole source is parsed,
    so the statements found are always those of the whole file."""
    if b"import" not in source:
        return [], None  # both statements have the keyword
    head = import_head(source)
    if head is not None:
        tree = parse(_language(), head)
        if not tree.root_node.has_error:
            return _refs(tree), head
    return _refs(parse(_language(), source)), None


def _refs(tree: tree_sitter.Tree) -> list[ImportRef]:
    found = captures(_language(), _QUERY, tree.root_node)
    statements = sorted(
        [*found.get("import", []), *found.get("from", [])], key=lambda n: n.start_byte
    )
    refs: list[ImportRef] = []
    for statement in statements:
        if statement.type == "import_statement":
            refs.extend(
                ImportRef(_dotted(n), (), "import")
                for n in statement.children_by_field_name("name")
            )
        else:
            ref = _from_ref(statement)
            if ref is not None:
                refs.append(ref)
    return refs


# --- resolution -------------------------------------------------------------------------------


def _join(*parts: str) -> str:
    return "/".join(filter(None, parts))


def _init_file(directory: str, index: RepoIndex) -> str | None:
    """The ``__init__`` of the package at ``directory``, if it is a regular package."""
    prefix = directory + "/" if directory else ""
    for name in _INIT_NAMES:
        if index.has(prefix + name):
            return prefix + name
    return None


def _module_file(path: str, index: RepoIndex) -> str | None:
    """The file of the module at ``path`` (``a/b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    for suffix in _SOURCE_SUFFIXES:
        if index.has(path + suffix):
            return path + suffix
    return _init_file(path, index)


def _module_chain(base: str, parts: list[str], index: RepoIndex) -> tuple[list[str], bool]:
    """Files executed to import ``parts`` under ``base``: the ``__init__`` of each enclosing
    package, then the module itself. The flag says whether the module itself was found."""
    files: list[str] = []
    for depth in range(1, len(parts)):
        init = _init_file(_join(base, *parts[:depth]), index)
        if init is not None:
            files.append(init)
    target = _module_file(_join(base, *parts), index) if parts else None
    if target is not None:
        files.append(target)
    return files, target is not None


def _submodules(base: str, names: Iterable[str], index: RepoIndex) -> tuple[list[str], bool]:
    """Files of the ``names`` that are submodules of the package at ``base``; the flag says
    whether some name is not a submodule (so it comes from the package's ``__init__``)."""
    files: list[str] = []
    missing = False
    for name in names:
        found = None if name == "*" else _module_file(_join(base, *name.split(".")), index)
        if found is None:
            missing = True
        else:
            files.append(found)
    return files, missing


def _top_level_roots(index: RepoIndex) -> dict[str, list[str]]:
    """Top-level module or package name -> package roots that hold it."""
    sources = [p for p in index.paths if p.endswith(_SOURCE_SUFFIXES)]
    package_dirs = {posixpath.dirname(p) for p in sources if posixpath.basename(p) in _INIT_NAMES}
    roots = {"", "src"}
    roots.update(
        posixpath.dirname(d) for d in package_dirs if posixpath.dirname(d) not in package_dirs
    )
    tops: dict[str, set[str]] = {}
    for path in sources:
        parts = path.split("/")
        for depth in range(len(parts)):
            root = "/".join(parts[:depth])
            if root in roots:
                top = parts[depth]
                if depth == len(parts) - 1:
                    top = posixpath.splitext(top)[0]
                tops.setdefault(top, set()).add(root)
    return {top: sorted(found) for top, found in tops.items()}


def _candidate_roots(top: str, importer: str | None, index: RepoIndex) -> list[str]:
    """Roots to try for a top-level name: the script's own folder when the importer is not in a
    package, then roots that contain the importer (deepest first), then the others."""
    tops: dict[str, list[str]] = index.memo("python.roots", lambda: _top_level_roots(index))
    roots = list(tops.get(top, ()))
    if importer is None:
        return roots
    folder = posixpath.dirname(importer)
    contains = [r for r in roots if r == "" or importer.startswith(r + "/")]
    contains.sort(key=len, reverse=True)
    ordered = contains + [r for r in roots if r not in contains]
    if _init_file(folder, index) is None and folder not in ordered:
        ordered.insert(0, folder)
    return ordered


def _resolve_absolute(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    parts = ref.module.split(".")
    for root in _candidate_roots(parts[0], importer, index):
        files, found = _module_chain(root, parts, index)
        if ref.kind == "from":
            found_names, _ = _submodules(_join(root, *parts), ref.names, index)
            files += found_names
        if found or files:
            return files
    return []


def _resolve_relative(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    if importer is None:
        return []
    rest = ref.module.lstrip(".")
    base = posixpath.dirname(importer)
    for _ in range(len(ref.module) - len(rest) - 1):
        if not base:
            return []
        base = posixpath.dirname(base)
    parts = rest.split(".") if rest else []
    files, _ = _module_chain(base, parts, index)
    found_names, missing = _submodules(_join(base, *parts), ref.names, index)
    if not parts and (missing or not ref.names):
        init = _init_file(base, index)
        files += [init] if init is not None else []
    return files + found_names


def _resolve(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    if ref.module.startswith("."):
        files = _resolve_relative(ref, importer, index)
    else:
        files = _resolve_absolute(ref, importer, index)
    return [f for f in dict.fromkeys(files) if f != importer]


# --- reduction --------------------------------------------------------------------------------


def _docstring_end(body: tree_sitter.Node) -> int | None:
    first = body.named_children[0] if body.named_children else None
    if first is None or first.type != "expression_statement" or first.named_child_count != 1:
        return None
    string = first.named_children[0]
    return first.end_byte if string.type in ("string", "concatenated_string") else None


def _indent_before(source: bytes, position: int) -> str:
    line_start = source.rfind(b"\n", 0, position) + 1
    prefix = source[line_start:position]
    return prefix.decode() if not prefix.strip() else "    "


def _reduce(source: bytes) -> str:
    """Function bodies become ``...``; a leading docstring is kept."""
    tree = parse(_language(), source)
    bodies = captures(_language(), _BODY_QUERY, tree.root_node).get("body", [])
    out: list[bytes] = []
    position = 0
    for body in bodies:
        if body.start_point[0] == body.end_point[0] or body.start_byte < position:
            continue
        indent = _indent_before(source, body.start_byte)
        start = _docstring_end(body)
        if start is None:
            start, marker = body.start_byte, "..."
        elif start >= body.end_byte:
            continue
        else:
            marker = "\n" + indent + "..."
        out += [source[position:start], marker.encode()]
        position = body.end_byte
    out.append(source[position:])
    return b"".join(out).decode("utf-8", errors="replace")


class PythonSpec:
    name = "python"
    extensions = _SOURCE_SUFFIXES

    def extract(self, source: bytes) -> list[ImportRef]:
        return _extract_with_head(source)[0]

    def extract_with_head(self, source: bytes) -> tuple[list[ImportRef], bytes | None]:
        return _extract_with_head(source)

    def import_head(self, source: bytes) -> bytes | None:
        return import_head(source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return _resolve(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return _reduce(source)


SPEC = PythonSpec()
