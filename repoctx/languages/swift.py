"""Swift: ``import Module`` (``@testable``, ``@_exported``, ``import struct M.Type``) resolves
to the files of the SwiftPM target of that name (``Package.swift`` targets and their ``path:``,
else ``Sources/<Name>``/``Tests/<Name>``, else a folder named so). Files of one module see
each other without imports: a file's type-like words resolve to the files of its own target
that declare those types.
"""

from __future__ import annotations

import posixpath
import re

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

_EXTENSIONS = extensions_of("swift")

KIND_IMPORT = "import"
KIND_MODULE = "module"  # same-module references; names are the type-like words the file uses

_TYPE_WORD = re.compile(rb"\b[A-Z][A-Za-z0-9_]*")
_TARGET = re.compile(
    r"\.(?:target|executableTarget|testTarget|macro)\s*\(\s*name\s*:\s*\"([^\"]+)\""
)
_PATH_ARGUMENT = re.compile(r"\bpath\s*:\s*\"([^\"]+)\"")
_TYPE_DECLARATION = re.compile(r"\b(?:class|struct|enum|protocol|actor|typealias)\s+(\w+)")
_SOURCE_FOLDERS = ("Sources", "Source", "src", "srcs", "Tests")


def _package_targets(text: str, base: str) -> list[tuple[str, list[str]]]:
    """(target name, candidate folders) declared by one Package.swift."""
    found = list(_TARGET.finditer(text))
    result: list[tuple[str, list[str]]] = []
    for number, match in enumerate(found):
        end = found[number + 1].start() if number + 1 < len(found) else len(text)
        explicit = _PATH_ARGUMENT.search(text, match.end(), end)
        if explicit is not None:
            folders = [explicit.group(1)]
        else:
            folders = [posixpath.join(f, match.group(1)) for f in _SOURCE_FOLDERS]
        folders = [posixpath.normpath(posixpath.join(base, f)) for f in folders]
        result.append((match.group(1), folders))
    return result


def _top_level(root: tree_sitter.Node) -> list[tree_sitter.Node]:
    """The root's children, with those of top-level ERROR nodes (unparsable code) in place."""
    return [n for c in root.children for n in (c.children if c.type == "ERROR" else [c])]


class _SwiftIndex:
    def __init__(self, index: RepoIndex) -> None:
        self.index = index
        self.under: dict[str, list[str]] = {}  # folder -> Swift files anywhere below it
        for path in sorted(p for p in index.paths if p.endswith(_EXTENSIONS)):
            folder = posixpath.dirname(path)
            while folder:
                self.under.setdefault(folder, []).append(path)
                folder = posixpath.dirname(folder)
        self.targets = self._targets()  # module name -> target folders
        self.named: dict[str, list[str]] = {}  # folder name -> folders, shallowest first
        for folder in sorted(self.under, key=lambda f: (f.count("/"), f)):
            self.named.setdefault(posixpath.basename(folder), []).append(folder)
        self._types: dict[str, dict[str, list[str]]] = {}

    def _targets(self) -> dict[str, list[str]]:
        targets: dict[str, list[str]] = {}
        for manifest in self.index.by_name.get("Package.swift", ()):
            base = posixpath.dirname(manifest)
            for name, folders in _package_targets(self.index.read_text(manifest) or "", base):
                found = next((f for f in folders if f in self.under), None)
                if found is not None:
                    targets.setdefault(name, []).append(found)
        for folder in self.under:  # ``Sources/<Name>`` folders no manifest lists
            parent, name = posixpath.split(folder)
            if posixpath.basename(parent) in _SOURCE_FOLDERS:
                known = targets.setdefault(name, [])
                if folder not in known:
                    known.append(folder)
        return targets

    def module_folder(self, name: str, importer: str | None) -> str | None:
        folders = self.targets.get(name) or self.named.get(name, [])[:1]
        if not folders:
            return None
        return min(folders, key=lambda f: (-_shared(importer, f), f.count("/"), f))

    def own_folder(self, importer: str) -> str:
        """The target folder holding ``importer`` (else its own folder)."""
        best = posixpath.dirname(importer)
        best_depth = -1
        for folders in self.targets.values():
            for folder in folders:
                if importer.startswith(folder + "/") and folder.count("/") > best_depth:
                    best, best_depth = folder, folder.count("/")
        return best

    def files(self, folder: str) -> list[str]:
        if folder:
            return self.under.get(folder, [])
        return [p for p in self.index.by_dir.get("", ()) if p.endswith(_EXTENSIONS)]

    def declared_types(self, folder: str) -> dict[str, list[str]]:
        if folder not in self._types:
            table: dict[str, list[str]] = {}
            for path in self.files(folder):
                text = self.index.read_text(path) or ""
                for name in dict.fromkeys(_TYPE_DECLARATION.findall(text)):
                    table.setdefault(name, []).append(path)
            self._types[folder] = table
        return self._types[folder]


def _shared(importer: str | None, folder: str) -> int:
    if importer is None:
        return 0
    parts = folder.split("/")
    mine = importer.split("/")[:-1]
    return next((n for n in range(len(parts)) if n >= len(mine) or mine[n] != parts[n]), len(parts))


def _swift_index(index: RepoIndex) -> _SwiftIndex:
    result: _SwiftIndex = index.memo("swift", lambda: _SwiftIndex(index))
    return result


class SwiftSpec:
    name = "swift"
    extensions = _EXTENSIONS

    def __init__(self) -> None:
        self.language = load_language("tree_sitter_swift")
        # Subscripts and computed properties carry their accessors in a computed_property.
        self._reduce = BodyElider(
            self.language,
            frozenset(
                {
                    "function_declaration",
                    "init_declaration",
                    "deinit_declaration",
                    "subscript_declaration",
                    "property_declaration",
                }
            ),
            extra_body_types=frozenset({"computed_property"}),
        )

    def extract(self, source: bytes) -> list[ImportRef]:
        # Imports are top-level declarations.
        refs: list[ImportRef] = []
        for node in _top_level(parse(self.language, source).root_node):
            if node.type != "import_declaration":
                continue
            path = next((c for c in node.named_children if c.type == "identifier"), None)
            if path is None:
                continue
            parts = [node_text(c).strip("`") for c in path.named_children]
            if parts:
                members = (".".join(parts[1:]),) if len(parts) > 1 else ()
                refs.append(ImportRef(parts[0], members, KIND_IMPORT))
        words = tuple(sorted({w.decode() for w in _TYPE_WORD.findall(source)}))
        refs.append(ImportRef("", words, KIND_MODULE))
        return refs

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        table = _swift_index(index)
        if ref.kind == KIND_IMPORT:
            folder = table.module_folder(ref.module, importer)
            found = table.files(folder) if folder is not None else []
        elif ref.kind == KIND_MODULE and importer is not None:
            types = table.declared_types(table.own_folder(importer))
            found = sorted({p for name in ref.names for p in types.get(name, ())})
        else:
            found = []
        return [path for path in found if path != importer]

    def reduce(self, source: bytes) -> str:
        return self._reduce(source)


SPEC = SwiftSpec()
