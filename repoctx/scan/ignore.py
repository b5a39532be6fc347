"""Gitignore-style patterns: compiled lists for the rules, and ignore files with git's
semantics, nested: .gitignore for plain folders, .repoctxignore and ``--exclude`` everywhere.

Patterns of an ignore file are relative to its folder; the deepest file with a matching pattern
decides, and inside one file the last matching pattern wins (so ``!`` re-includes). A file in
an ignored folder stays ignored whatever deeper patterns say, as in git.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from repoctx import fsutil, paths
from repoctx.errors import ConfigError
from repoctx.events import EventSink, Notice

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

VCS_DIRS = frozenset({".git", ".hg", ".svn"})
IGNORE_FILE = ".repoctxignore"


def gitignore_spec(lines: Iterable[str]) -> GitIgnoreSpec:
    """pathspec's matcher of ``lines``; ValueError for a bad pattern. pathspec is imported
    here, on first use: importing it costs more than the rest of a warm pack's rules."""
    from pathspec import GitIgnoreSpec

    return GitIgnoreSpec.from_lines(lines)


def compile_patterns(lines: Sequence[str], what: str) -> GitIgnoreSpec:
    """A gitignore spec, or ConfigError saying which pattern of ``what`` is bad."""
    try:
        return gitignore_spec(lines)
    except ValueError:
        for line in lines:
            try:
                gitignore_spec([line])
            except ValueError as error:
                raise ConfigError(f"{what}: bad pattern {line!r} ({error})") from None
        raise


def _translate(lines: Sequence[str], what: str) -> list[tuple[str, str | None, bool | None]]:
    """Each line, its regex source and whether it includes (False: a ``!`` pattern; None: a
    blank line or comment), with gitignore semantics, without compiling anything."""
    translated = []
    for line in lines:
        try:
            regex, include = _TRANSLATIONS.regex(line)
        except ValueError as error:
            raise ConfigError(f"{what}: bad pattern {line!r} ({error})") from None
        translated.append((line, regex, include))
    _TRANSLATIONS.save()
    return translated


# the files of pathspec whose code turns a gitignore pattern into a regex
_TRANSLATOR_FILES = (
    "_version.py",
    "pattern.py",
    "patterns/gitignore/base.py",
    "patterns/gitignore/spec.py",
)


class _Translations:
    """pathspec's regex of each gitignore pattern line, kept on disk under a digest of the
    pathspec code that makes it (a new pathspec starts afresh), so that the rules' hundreds of
    patterns need no pathspec import. An unreadable or corrupt file is rebuilt."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[str | None, bool | None]] | None = None
        self.translator = ""
        self.fresh = False

    def regex(self, line: str) -> tuple[str | None, bool | None]:
        if self.known is None:
            self.known = self._load()
        if line not in self.known:
            from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

            self.known[line] = GitIgnoreSpecPattern.pattern_to_regex(line)
            self.fresh = True
        return self.known[line]

    def _load(self) -> dict[str, tuple[str | None, bool | None]]:
        self.translator = _translator_digest()
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            stored = json.loads(_translations_path().read_bytes())
            if self.translator and stored["translator"] == self.translator:
                return {
                    str(line): (None if r is None else str(r), None if i is None else bool(i))
                    for line, (r, i) in stored["patterns"].items()
                }
        return {}

    def save(self) -> None:
        if not self.fresh or not self.translator or self.known is None:
            return
        record = {"translator": self.translator, "patterns": self.known}
        with contextlib.suppress(OSError):
            location = _translations_path()
            paths.ensure_private_dir(location.parent)
            fsutil.atomic_write(location, json.dumps(record).encode())
            self.fresh = False


def _translations_path() -> Path:
    return paths.cache_dir() / "gitignore-patterns.json"


def _translator_digest() -> str:
    """sha1 of pathspec's pattern-translating code, found without importing it; "" when it
    cannot be read (then nothing is kept)."""
    found = importlib.util.find_spec("pathspec")
    if found is None or not found.submodule_search_locations:
        return ""
    base = Path(next(iter(found.submodule_search_locations)))
    digest = hashlib.sha1(usedforsecurity=False)
    try:
        for name in _TRANSLATOR_FILES:
            digest.update((base / name).read_bytes())
    except OSError:
        return ""
    return digest.hexdigest()


_TRANSLATIONS = _Translations()


class FirstMatch:
    """Which of several pattern lists is the first to match a path, for the rules.

    A pattern with no "/" inside (``*.py``, ``tests/``, ``Makefile``) matches one path
    component: it is tried on the file name and, once per folder, on the folder names, through
    ``_Names``. Other patterns are merged into one regex of named alternatives tried on the
    whole path, in list order. A list with ``!`` patterns keeps its own spec, so "the last
    matching pattern wins" holds exactly.
    """

    def __init__(self, lists: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._slow: list[tuple[int, GitIgnoreSpec]] = []
        names: list[tuple[int, str, str]] = []
        paths: list[tuple[int, str]] = []
        for index, (what, lines) in enumerate(lists):
            translated = _translate(lines, what)  # regex sources only: compiled once, merged
            if any(include is False for _, _, include in translated):
                self._slow.append((index, compile_patterns(lines, what)))
                continue
            for line, regex, include in translated:
                if not include or regex is None:
                    continue
                if _one_component(line):
                    names.append((index, line, regex))
                else:
                    paths.append((index, regex))
        self._names = _Names(names)
        self._paths = _merged(paths)
        self._folders: dict[str, int | None] = {}

    def first(self, path: str) -> int | None:
        """The index of the first list with a pattern matching ``path``, or None."""
        folder, _, name = path.rpartition("/")
        found = self._names.match(name, False)
        if folder:
            found = _lower(found, self._folder(folder))
        if self._paths is not None:
            found = _lower(found, _group(self._paths.match(path)))
        for index, spec in self._slow:
            if found is not None and index > found:
                break
            if spec.match_file(path):
                return index
        return found

    def _folder(self, folder: str) -> int | None:
        if folder not in self._folders:
            parent, _, name = folder.rpartition("/")
            own = self._names.match(name, True)
            self._folders[folder] = _lower(self._folder(parent), own) if parent else own
        return self._folders[folder]


_GLOB = re.compile(r"[*?\[\\]")
_ANY_FOLDERS = "^(?:.+/)?"


class _Names:
    """Patterns of one path component: plain names and ``*suffix`` globs as dictionary
    lookups (most rules are these), the rest in one regex."""

    def __init__(self, items: Sequence[tuple[int, str, str]]) -> None:
        self.exact: tuple[dict[str, int], dict[str, int]] = ({}, {})  # (files, folders)
        self.suffix: tuple[dict[str, int], dict[str, int]] = ({}, {})
        rest: list[tuple[int, str]] = []
        for index, line, regex in items:
            folder_only = line.endswith("/")
            body = line.removesuffix("/")
            if body in ("", "*") or body != body.strip() or _GLOB.search(body.removeprefix("*")):
                rest.append((index, "^" + regex.removeprefix(_ANY_FOLDERS)))
                continue
            table = self.suffix if body.startswith("*") else self.exact
            key = body.removeprefix("*")
            table[1].setdefault(key, index)
            if not folder_only:
                table[0].setdefault(key, index)
        self.lengths = sorted({len(key) for table in self.suffix for key in table})
        self.regex = _merged(rest)

    def match(self, name: str, folder: bool) -> int | None:
        found = self.exact[folder].get(name)
        suffixes = self.suffix[folder]
        for length in self.lengths:
            found = _lower(found, suffixes.get(name[-length:]))
        if self.regex is not None:
            found = _lower(found, _group(self.regex.match(name + "/" if folder else name)))
        return found


def _one_component(line: str) -> bool:
    body = line.strip().removesuffix("/")
    return "/" not in body and "**" not in body and "\\" not in body


def _merged(regexes: Sequence[tuple[int, str]]) -> re.Pattern[str] | None:
    """One regex with a group ``c<index>`` per list; ``regexes`` come in list order."""
    groups: dict[int, list[str]] = {}
    for index, regex in regexes:
        groups.setdefault(index, []).append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", regex) + ")")
    parts = [f"(?P<c{index}>{'|'.join(bodies)})" for index, bodies in groups.items()]
    return re.compile("|".join(parts)) if parts else None


def _group(match: re.Match[str] | None) -> int | None:
    return None if match is None else int(str(match.lastgroup)[1:])


def _lower(one: int | None, other: int | None) -> int | None:
    if one is None:
        return other
    return one if other is None else min(one, other)


class Layer(NamedTuple):
    """One ignore file."""

    base: str  # its folder relative to the root: "" or "a/b/"
    lead: str  # for a file above the root: the root's path relative to its folder, "x/y/"
    spec: GitIgnoreSpec


def verdict(layers: Sequence[Layer], probe: str) -> bool | None:
    """Ignored (True), re-included (False) or unmentioned (None) by the deepest layer with a
    matching pattern. ``probe`` is root-relative and ends with "/" for a folder; ``layers`` go
    from the shallowest to the deepest."""
    for layer in reversed(layers):
        if len(probe) > len(layer.base) and probe.startswith(layer.base):
            hit: bool | None = layer.spec.check_file(layer.lead + probe[len(layer.base) :]).include
            if hit is not None:
                return hit
    return None


class FlatIgnore:
    """Layers applied to a flat list of files (what git lists): each folder is decided once,
    and a file in an ignored folder is ignored."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = sorted(layers, key=lambda layer: len(layer.base))  # stable: above first
        self._folders: dict[str, bool] = {"": False}

    def ignored(self, path: str) -> bool:
        return self._folder(path.rpartition("/")[0]) or bool(verdict(self.layers, path))

    def _folder(self, folder: str) -> bool:
        known = self._folders.get(folder)
        if known is None:
            parent = folder.rpartition("/")[0]
            known = self._folder(parent) or bool(verdict(self.layers, folder + "/"))
            self._folders[folder] = known
        return known


def load_spec(path: str, on_event: EventSink) -> GitIgnoreSpec:
    """The patterns of an ignore file. A bad line is dropped with a notice (git skips it too);
    an unreadable file counts as empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        on_event(Notice(f"{path}: cannot be read ({error.strerror}); its patterns are not used"))
        return gitignore_spec([])
    try:
        return compile_patterns(lines, path)
    except ConfigError as error:
        on_event(Notice(f"{error}; that line is not used"))
        return gitignore_spec([line for line in lines if _valid(line)])


def _valid(line: str) -> bool:
    try:
        gitignore_spec([line])
    except ValueError:
        return False
    return True


def repoctxignore_layers(
    root: Path, paths: Iterable[str], prefix: str, on_event: EventSink
) -> list[Layer]:
    """The .repoctxignore files that apply to ``paths``: in the root and any of their folders,
    and, for a root ``prefix`` deep inside a work tree, in the folders above it up to the top."""
    folders = {""}
    for path in paths:
        end = path.rfind("/")
        while end > 0 and path[: end + 1] not in folders:
            folders.add(path[: end + 1])
            end = path.rfind("/", 0, end)
    layers: list[Layer] = []
    parts = prefix.split("/")[:-1]
    for depth in range(len(parts), 0, -1):  # the top of the work tree first
        above = root.parents[depth - 1] / IGNORE_FILE
        if above.is_file():
            layers.append(
                Layer("", "/".join(parts[-depth:]) + "/", load_spec(str(above), on_event))
            )
    for folder in sorted(folders):
        candidate = f"{root}/{folder}{IGNORE_FILE}"
        if os.path.isfile(candidate):
            layers.append(Layer(folder, "", load_spec(candidate, on_event)))
    return layers


def walk(root: Path, on_event: EventSink) -> list[str]:
    """Root-relative paths of the files of a plain folder, leaving out what nested .gitignore
    files ignore (ignored folders are not entered) and version-control folders."""
    found: list[str] = []
    _walk_folder(str(root), "", [], found, on_event)
    return found


def _walk_folder(
    folder: str, rel: str, layers: list[Layer], found: list[str], on_event: EventSink
) -> None:
    try:
        with os.scandir(folder) as scanner:
            entries = sorted(scanner, key=lambda entry: entry.name)
    except OSError as error:
        on_event(Notice(f"{folder}: cannot be listed ({error.strerror}); its files are left out"))
        return
    has_gitignore = any(entry.name == ".gitignore" for entry in entries)
    if has_gitignore:
        layers.append(Layer(rel, "", load_spec(f"{folder}/.gitignore", on_event)))
    for entry in entries:
        if entry.name in VCS_DIRS:
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        path = rel + entry.name
        if verdict(layers, path + "/" if is_dir else path):
            continue
        if is_dir:
            _walk_folder(entry.path, path + "/", layers, found, on_event)
        else:
            found.append(path)
    if has_gitignore:
        layers.pop()
