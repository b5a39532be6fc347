"""The contract every language module fulfils, and the tree-sitter plumbing they share.

A language does two separate jobs so that the expensive one can be cached by content:

* ``extract(source) -> list[ImportRef]``: parse with tree-sitter and list what the file imports,
  exactly as written. A pure function of the bytes: cached by git blob id, run in worker
  processes.
* ``resolve(ref, importer, index) -> list[str]``: turn one reference into paths of files of the
  same root, following the language's real rules. Cheap; runs every time.

``reduce(source)`` renders the file as its signatures (bodies elided) for packs over budget.
"""

from __future__ import annotations

import functools
import importlib
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import tree_sitter  # imported where a file is parsed: a warm pack parses none


@dataclass(frozen=True)
class ImportRef:
    """One import as written in a file.

    ``module`` is the imported thing as the language spells it (``..pkg.mod``, ``./x.js``,
    ``github.com/a/b/c``, ``crate::a::b``, ``com.x.Y``, ``"util.h"``); ``names`` are the
    imported members where the language has them (``from m import a, b``); ``kind`` tells forms
    apart that resolve differently (``import`` / ``from`` / ``include_local`` / ``mod`` /
    ``require_relative`` / ``use`` ...). Only plain strings: it is stored as JSON.
    """

    module: str
    names: tuple[str, ...] = ()
    kind: str = "import"

    def to_json(self) -> list[Any]:
        return [self.module, list(self.names), self.kind]

    @classmethod
    def from_json(cls, data: list[Any]) -> ImportRef:
        return cls(str(data[0]), tuple(str(n) for n in data[1]), str(data[2]))


class RepoIndex:
    """The files of one root, as the resolvers see them.

    ``paths`` are posix paths relative to the root: every file the scan saw that is not ignored,
    packed or not (an empty ``__init__.py`` still makes a package), so a resolver may return a
    path the pack leaves out; such edges are dropped afterwards. ``read_text`` returns the
    content of a packed file of the root (for go.mod, tsconfig.json, composer.json, Cargo.toml
    ...) or None.
    ``memo(key, factory)`` keeps one value per index, so each language can build its lookup
    tables once per pack.
    """

    def __init__(self, paths: Iterable[str], read_text: Callable[[str], str | None]) -> None:
        self.paths: frozenset[str] = frozenset(paths)
        self.read_text = read_text
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]

    def has(self, path: str) -> bool:
        return path in self.paths

    @functools.cached_property
    def by_dir(self) -> dict[str, list[str]]:
        """Directory (``""`` for the root) -> sorted files directly in it."""
        result: dict[str, list[str]] = {}
        for path in sorted(self.paths):
            result.setdefault(posixpath.dirname(path), []).append(path)
        return result

    @functools.cached_property
    def by_name(self) -> dict[str, list[str]]:
        """Base name -> sorted paths with that base name."""
        result: dict[str, list[str]] = {}
        for path in sorted(self.paths):
            result.setdefault(posixpath.basename(path), []).append(path)
        return result


class LanguageSpec(Protocol):
    name: str
    extensions: tuple[str, ...]

    def extract(self, source: bytes) -> list[ImportRef]: ...

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        """Paths in ``index`` that ``ref`` means. ``importer`` is the importing file's path in
        the same root, or None when resolving against another root of the pack (then relative
        references resolve to nothing)."""
        ...

    def reduce(self, source: bytes) -> str: ...


@runtime_checkable
class HeadedLanguage(Protocol):
    """A language whose imports all sit in a head of the file found without parsing (Python:
    up to the statement after the last ``import``). Imports can then be cached by the head, so
    that an edit below it costs no parse."""

    def import_head(self, source: bytes) -> bytes | None:
        """The head, or None when the whole file is parsed."""
        ...

    def extract_with_head(self, source: bytes) -> tuple[list[ImportRef], bytes | None]:
        """``extract(source)``, and the head when the imports depend on nothing else (then any
        file with that head has those imports), else None."""
        ...


@functools.cache
def load_language(module: str, function: str = "language") -> tree_sitter.Language:
    """The tree-sitter Language from a grammar wheel, e.g. ``("tree_sitter_python",)``."""
    import tree_sitter

    grammar = importlib.import_module(module)
    return tree_sitter.Language(getattr(grammar, function)())


@functools.cache
def compile_query(language: tree_sitter.Language, source: str) -> tree_sitter.Query:
    import tree_sitter

    return tree_sitter.Query(language, source)


def parse(language: tree_sitter.Language, source: bytes) -> tree_sitter.Tree:
    import tree_sitter

    return tree_sitter.Parser(language).parse(source)


def captures(
    language: tree_sitter.Language, query_source: str, node: tree_sitter.Node
) -> dict[str, list[tree_sitter.Node]]:
    """All captures of ``query_source`` under ``node``, by capture name, in document order."""
    import tree_sitter

    cursor = tree_sitter.QueryCursor(compile_query(language, query_source))
    found = cursor.captures(node)
    return {name: sorted(nodes, key=lambda n: n.start_byte) for name, nodes in found.items()}


def matches(
    language: tree_sitter.Language, query_source: str, node: tree_sitter.Node
) -> list[dict[str, list[tree_sitter.Node]]]:
    """Each match of ``query_source`` under ``node`` as capture name -> nodes, in document order."""
    import tree_sitter

    cursor = tree_sitter.QueryCursor(compile_query(language, query_source))
    found = cursor.matches(node)
    ordered = sorted(found, key=lambda m: min(n.start_byte for ns in m[1].values() for n in ns))
    return [dict(m[1]) for m in ordered]


def find_nodes(
    root: tree_sitter.Node, wanted: frozenset[str], containers: frozenset[str]
) -> Iterator[tree_sitter.Node]:
    """Nodes of the ``wanted`` types in document order, descending only into ``containers``:
    a few hundred nodes per file instead of the whole tree."""
    cursor = root.walk()
    if not cursor.goto_first_child():
        return
    depth = 1
    while True:
        node = cursor.node
        if node is not None:
            if node.type in wanted:
                yield node
            if node.type in containers and cursor.goto_first_child():
                depth += 1
                continue
        while not cursor.goto_next_sibling():
            depth -= 1
            if depth == 0:
                return
            cursor.goto_parent()


def node_text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def unquote(text: str) -> str:
    """A string literal's content: strips one layer of matching quotes or angle brackets."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1]
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":
        return text[1:-1]
    return text


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Every node under ``node`` (itself included), in document order, without recursion."""
    cursor = node.walk()
    while True:
        assert cursor.node is not None
        yield cursor.node
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return


@dataclass(frozen=True)
class BodyElider:
    """Renders a file as its signatures: the ``body`` field of every node whose type is in
    ``function_types`` is replaced by ``placeholder`` when it spans more than one line.
    Everything else (imports, class and type declarations, fields, comments) is kept."""

    language: tree_sitter.Language
    function_types: frozenset[str]
    placeholder: str = "{ ... }"
    body_field: str = "body"
    extra_body_types: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, source: bytes) -> str:
        tree = parse(self.language, source)
        cuts: list[tuple[int, int]] = []
        for node in walk(tree.root_node):
            if node.type not in self.function_types:
                continue
            body = node.child_by_field_name(self.body_field)
            if body is None:
                body = next((c for c in node.children if c.type in self.extra_body_types), None)
            if body is None or body.start_point[0] == body.end_point[0]:
                continue
            if cuts and body.start_byte < cuts[-1][1]:
                continue  # nested inside a body that is already elided
            cuts.append((body.start_byte, body.end_byte))
        return _apply_cuts(source, cuts, self.placeholder)


def _apply_cuts(source: bytes, cuts: list[tuple[int, int]], placeholder: str) -> str:
    out: list[bytes] = []
    position = 0
    marker = placeholder.encode()
    for start, end in cuts:
        out.append(source[position:start])
        out.append(marker)
        position = end
    out.append(source[position:])
    return b"".join(out).decode("utf-8", errors="replace")


def join_relative(importer: str, specifier: str) -> str | None:
    """``specifier`` (``./a``, ``../b``) taken relative to the importer's folder, normalised;
    None if it climbs above the root."""
    base = posixpath.dirname(importer)
    joined = posixpath.normpath(posixpath.join(base, specifier))
    if joined == ".." or joined.startswith("../"):
        return None
    return "" if joined == "." else joined
