"""What Java, Kotlin and Scala share: files indexed by declared package and top-level names.

Imports in the JVM languages name a package and a member (``com.x.Y``, ``com.x.*``,
``com.x.Y.Inner``, ``a.b.topLevelFn``); where the file lives is a build convention, not a
rule. Resolution therefore tries the convention first (``.../com/x/Y.java``, no file read) and
falls back to the packages the files declare, read once per index through ``read_text``.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterable

from repoctx.languages import extensions_of
from repoctx.languages.base import ImportRef, RepoIndex

_JAVA, _SCALA = extensions_of("java"), extensions_of("scala")
JVM_EXTENSIONS = (*_JAVA, *extensions_of("kotlin"), *_SCALA)

# Import kinds shared by the three extractors.
KIND_IMPORT = "import"  # module is a fully qualified member: com.x.Y, com.x.Y.Inner, a.b.fn
KIND_STATIC = "static"  # Java ``import static com.x.Y.m``
KIND_WILDCARD = "wildcard"  # module is a package or a class whose members are all imported
KIND_SELECT = "select"  # Scala ``import a.b.{C, D => E}``: module a.b, names C and D
KIND_PACKAGE = "package"  # the file's own package; names are the type-like words it uses

_TYPE_WORD = re.compile(rb"\b[A-Z][A-Za-z0-9_]*")
_PACKAGE_LINE = re.compile(r"^[ \t]*package[ \t]+(?!object\b)([\w.`]+)", re.MULTILINE)
_MAVEN_ROOT = re.compile(r"(?:^|/)src/[^/]+/java/(.+)$")
_MODIFIERS = (
    r"(?:(?:public|private|protected|internal|inline|suspend|operator|infix|tailrec|external"
    r"|const|lateinit|override|implicit|final|lazy|transparent|private\[\w+\]|@[\w.]+"
    r"(?:\([^)\n]*\))?)\s+)*"
)
_DECLARATION = re.compile(
    r"\b(?:class|interface|object|enum|record|trait|typealias|type|@interface)\s+`?(\w+)"
    r"|^" + _MODIFIERS + r"(?:fun|val|var|def|given)\s+(?:<[^>\n]*>\s*)?"
    r"(?:[\w.<>?, ]+?\.)?`?(\w+)",
    re.MULTILINE,
)


def type_words(source: bytes) -> tuple[str, ...]:
    """The capitalised identifiers a file mentions, sorted: candidates for same-package types."""
    return tuple(sorted({w.decode("ascii") for w in _TYPE_WORD.findall(source)}))


def package_ref(package: str, source: bytes) -> ImportRef:
    return ImportRef(package, type_words(source), KIND_PACKAGE)


def clean_name(text: str) -> str:
    """A dotted name without backticks or whitespace: ``a.`in`.b`` -> ``a.in.b``."""
    return "".join(text.split()).replace("`", "")


def is_jvm_path(path: str) -> bool:
    return path.endswith(JVM_EXTENSIONS)


def _under_package_dir(path: str, package_dir: str) -> bool:
    directory = posixpath.dirname(path)
    return directory == package_dir or directory.endswith("/" + package_dir)


class JvmIndex:
    """Per-index tables: package of each file, names each file declares, files by package."""

    def __init__(self, index: RepoIndex) -> None:
        self.index = index
        self._package: dict[str, str | None] = {}
        self._declared: dict[str, frozenset[str]] = {}

    def _read(self, path: str) -> None:
        text = self.index.read_text(path) or ""
        found = [clean_name(m) for m in _PACKAGE_LINE.findall(text)]
        # Scala chains clauses (``package a.b`` then ``package c`` means a.b.c).
        package = ".".join(found) if path.endswith(_SCALA) else "".join(found[:1])
        self._package[path] = package
        self._declared[path] = frozenset(a or b for a, b in _DECLARATION.findall(text))

    def package_of(self, path: str) -> str | None:
        """The package ``path`` declares ("" for the default package)."""
        if path not in self._package:
            maven = _MAVEN_ROOT.search(path) if path.endswith(_JAVA) else None
            if maven is not None:
                self._package[path] = posixpath.dirname(maven.group(1)).replace("/", ".")
            else:
                self._read(path)
        return self._package[path]

    def declares(self, path: str, name: str) -> bool:
        stem = posixpath.splitext(posixpath.basename(path))[0]
        if path.endswith(_JAVA):
            return name == stem  # other top-level Java classes are package-private
        if path not in self._declared:
            self._read(path)
        return name == stem or name in self._declared[path]

    @functools.cached_property
    def packages(self) -> dict[str, list[str]]:
        """Package -> sorted files declaring it (reads the files the layout cannot tell)."""
        result: dict[str, list[str]] = {}
        for path in sorted(p for p in self.index.paths if is_jvm_path(p)):
            package = self.package_of(path)
            if package is not None:
                result.setdefault(package, []).append(path)
        return result

    def _by_layout(self, package: str, name: str) -> list[str]:
        package_dir = package.replace(".", "/")
        found: list[str] = []
        for extension in JVM_EXTENSIONS:
            for path in self.index.by_name.get(name + extension, ()):
                if _under_package_dir(path, package_dir):
                    found.append(path)
        return sorted(found)

    def _by_declaration(self, package: str, name: str) -> list[str]:
        return [p for p in self.packages.get(package, ()) if self.declares(p, name)]

    def member_files(self, qualified: str) -> list[str]:
        """Files declaring ``qualified`` (a class, nested class, or top-level function/value),
        trying the longest package first: ``com.x.Y.Inner`` -> ``com/x/Y.java``."""
        parts = qualified.split(".")
        cuts = range(len(parts) - 1, 0, -1)
        for cut in cuts:
            found = self._by_layout(".".join(parts[:cut]), parts[cut])
            if found:
                return found
        for cut in cuts:
            found = self._by_declaration(".".join(parts[:cut]), parts[cut])
            if found:
                return found
        return []

    def wildcard_files(self, prefix: str) -> list[str]:
        """``prefix.*``: every file of package ``prefix``, else the class ``prefix``'s file."""
        return list(self.packages.get(prefix, ())) or self.member_files(prefix)

    def siblings_named(self, importer: str, package: str, names: Iterable[str]) -> list[str]:
        """Files next to ``importer`` in the same package whose main type is among ``names``."""
        folder = posixpath.dirname(importer)
        found: list[str] = []
        for name in names:
            for extension in JVM_EXTENSIONS:
                path = posixpath.join(folder, name + extension)
                if path != importer and self.index.has(path) and self.package_of(path) == package:
                    found.append(path)
        return sorted(found)


def jvm_index(index: RepoIndex) -> JvmIndex:
    result: JvmIndex = index.memo("jvm", lambda: JvmIndex(index))
    return result


def _enclosing_packages(package: str | None) -> list[str]:
    parts = package.split(".") if package else []
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def resolve_jvm(
    ref: ImportRef, importer: str | None, index: RepoIndex, *, relative: bool = False
) -> list[str]:
    """Resolve one JVM import. ``relative`` (Scala) also tries ``ref.module`` inside the
    importer's enclosing packages when it names nothing absolutely."""
    jvm = jvm_index(index)
    if ref.kind == KIND_PACKAGE:
        if importer is None:
            return []
        return jvm.siblings_named(importer, ref.module, ref.names)
    found = _resolve_absolute(jvm, ref, ref.module)
    if not found and relative and importer is not None:
        for package in _enclosing_packages(jvm.package_of(importer)):
            found = _resolve_absolute(jvm, ref, f"{package}.{ref.module}")
            if found:
                break
    return [p for p in found if p != importer]


def _resolve_absolute(jvm: JvmIndex, ref: ImportRef, module: str) -> list[str]:
    if ref.kind == KIND_WILDCARD:
        return jvm.wildcard_files(module)
    if ref.kind == KIND_SELECT:
        found: set[str] = set()
        for name in ref.names:
            found.update(jvm.member_files(f"{module}.{name}"))
        return sorted(found)
    return jvm.member_files(module)
