"""The scanner: which files each root holds, their content, blob ids and last change times.

Listing. In a git work tree the files are exactly what git lists: tracked files (even those a
.gitignore matches) plus untracked files git does not ignore; files deleted from the work tree
are left out. Elsewhere the folder is walked with ``os.scandir``, applying nested .gitignore
files with git's semantics and never entering .git, .hg or .svn. Either way, nested
``.repoctxignore`` files and ``--exclude`` patterns (gitignore semantics, root-relative) then
mark files IGNORED, as does ``--include`` for files it does not match. Whether git tracks a
file reaches the rules: a tracked file in a ``build/``-like folder is demoted, not skipped.

Reading. Only regular files are opened, once each. A symlink whose target lies inside the root
is followed (the link's path, the target's content and that content's blob id); a folder
symlink is NOT_A_FILE, a link leading outside the root OUTSIDE_ROOT, a dangling one
BROKEN_LINK. Text keeps its newlines exactly as on disk (CRLF included), so ``text`` always
matches ``blob_id``; only a byte order mark is dropped.

Blob ids are computed from the bytes read (git's way), so a file's id always matches its text;
a tracked file whose status matches the record of the last scan that found it equal to its
index blob is not hashed again (``_StatusRecords``). Where the id is not the file's index blob
(or the mode differs), git is asked whether the file differs from HEAD, which clean filters
and line-ending conversion can deny; only those files, so an unchanged tree costs no ``git
status`` (which reads every file whose stat data the index does not match). ``last_changed``
is the time of the newest commit touching the file, NEWEST for files that differ from HEAD, 0
outside git or beyond the history limit.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from repoctx.cache import ContentCache
from repoctx.errors import (
    ConfigError,
    EmptyRepositoryError,
    NotADirectoryError_,
    PathNotFoundError,
    PathNotUtf8Error,
    UsageError,
)
from repoctx.events import EventSink, Notice, Progress, ignore_events
from repoctx.languages import language_for_path
from repoctx.paths import user_path
from repoctx.scan import gitinfo, ignore
from repoctx.scan.ignore import compile_patterns
from repoctx.scan.rules import BULK_KINDS, Classifier, PathClass, Rules, decode_text
from repoctx.scan.snapshot import RootSnapshot, SkippedFile, SkipReason, Snapshot, SourceFile

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

NEWEST = gitinfo.NEWEST
PROGRESS_EVERY = 250
STATUS_NAMESPACE = "file-status:v1"
SETTLED_NS = 2_000_000_000  # a file changed more recently may change again unseen in its tick
READ_CHUNK = 1024 * 1024  # what a read asks for beyond the size a file had when it was listed


@dataclass(frozen=True)
class ScanOptions:
    include: tuple[str, ...] = ()  # when given, only files matching one of these are kept
    exclude: tuple[str, ...] = ()  # gitignore patterns against root-relative paths
    rules: Rules = field(default_factory=Rules)
    use_git: bool = True  # False: treat work trees as plain folders (their .gitignore applies)
    history: bool = True  # False: skip ``git log``; every clean file gets last_changed 0
    history_limit: int = gitinfo.HISTORY_LIMIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))


class _Candidate(NamedTuple):
    path: str  # posix, relative to the root
    index_id: str | None = None  # blob id in the index of a tracked file (not in conflict)
    index_mode: str = ""  # its mode there: "100644", "100755" or "120000"
    last_changed: int = 0
    skip: SkipReason | None = None
    detail: str = ""
    tracked: bool = False  # git tracks it: folder patterns of rules.generated only demote it


@dataclass
class _Listing:
    name: str
    given: str
    path: Path
    is_git: bool = False
    head: str | None = None
    prefix: str = ""  # the root's path inside its work tree
    candidates: list[_Candidate] = field(default_factory=list)


def scan(
    roots: Sequence[Path],
    options: ScanOptions = ScanOptions(),
    cache: ContentCache | None = None,
    on_event: EventSink = ignore_events,
    on_fresh: Callable[[SourceFile], None] | None = None,
) -> Snapshot:
    """Scan each root (duplicates once) and return its files sorted by path. ``on_fresh``
    gets each file as soon as it is read, unless a status record vouched for its blob id (as
    for the unchanged files of a repository scanned before): work on new content can start
    while the scan goes on. A file offered is as returned but for ``last_changed``, which the
    end of the scan may still set (changes not committed yet)."""
    started = time.perf_counter()
    classifier = options.rules.classifier()
    filters = _Filters(options)
    listings = [
        _list_root(name, given, path, options, cache, on_event)
        for name, given, path in _resolve_roots(roots)
    ]
    for listing in listings:
        listing.candidates = filters.apply(listing, on_event)
    total = sum(len(listing.candidates) for listing in listings)
    done = 0
    on_event(Progress("scan", 0, total))
    readers = [
        _Reader(listing, classifier, _StatusRecords(cache, listing), on_fresh)
        for listing in listings
    ]
    for reader in readers:
        for candidate in reader.listing.candidates:
            reader.process(candidate)
            done += 1
            if done % PROGRESS_EVERY == 0:
                on_event(Progress("scan", done, total))
    snapshots = tuple(reader.finish(on_event) for reader in readers)
    on_event(Progress("scan", total, total))
    return Snapshot(snapshots, time.perf_counter() - started, _stats(readers))


# -- roots ------------------------------------------------------------------------------------


def _resolve_roots(roots: Sequence[Path]) -> list[tuple[str, str, Path]]:
    """(name, path as given, resolved path) of each distinct root, in the order given."""
    seen: set[Path] = set()
    found: list[tuple[Path, str, Path]] = []
    for given in roots:
        path = user_path(given)
        if not path.exists():
            raise PathNotFoundError(str(given))
        if not path.is_dir():
            raise NotADirectoryError_(str(given))
        real = path.resolve()
        if not _is_utf8(str(real)):
            raise PathNotUtf8Error(_escaped(str(real)))
        if real not in seen:
            seen.add(real)
            found.append((Path(os.path.abspath(path)), str(given), real))
    names = root_names([absolute for absolute, _, _ in found])
    return [(name, given, real) for name, (_, given, real) in zip(names, found, strict=True)]


def root_names(paths: Sequence[Path]) -> list[str]:
    """Each folder's name; where names clash, the shortest parent path that tells them apart
    (``a/proj`` and ``b/proj``)."""
    parts = [path.parts[1:] or ("root",) for path in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashing = {name for name, count in Counter(names).items() if count > 1}
        grew = False
        for index, name in enumerate(names):
            if name in clashing and depth[index] < len(parts[index]):
                depth[index] += 1
                grew = True
        if not grew:
            return names


def _list_root(
    name: str,
    given: str,
    root: Path,
    options: ScanOptions,
    cache: ContentCache | None,
    on_event: EventSink,
) -> _Listing:
    listing = _Listing(name, given, root)
    repo = _find_repo(root, on_event) if options.use_git else None
    if repo is not None:
        try:
            _list_git(listing, repo, options, cache, on_event)
        except gitinfo.GitError as error:
            on_event(Notice(f"{given}: git failed ({error}); scanning it as a plain folder"))
            listing = _Listing(name, given, root)
        if listing.is_git and listing.prefix and not listing.candidates and _has_entries(root):
            on_event(Notice(f"{given}: git ignores this folder; scanning it as a plain folder"))
            listing = _Listing(name, given, root)
    if not listing.is_git:
        listing.candidates = [_Candidate(path) for path in ignore.walk(root, on_event)]
    if not listing.candidates:
        raise EmptyRepositoryError(given)
    listing.candidates = sorted(map(_named, listing.candidates), key=lambda c: c.path)
    return listing


def _named(candidate: _Candidate) -> _Candidate:
    """``candidate``, or, when its name is not UTF-8 (read from bytes as lone surrogates, which
    no text output, cache or hash takes), a skipped one under its name with the bytes escaped."""
    if _is_utf8(candidate.path):
        return candidate
    shown = _escaped(candidate.path)
    return _Candidate(shown, skip=SkipReason.NAME_NOT_UTF8, detail="rename it to pack it")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _find_repo(root: Path, on_event: EventSink) -> gitinfo.GitRepo | None:
    try:
        return gitinfo.find_repo(root)
    except gitinfo.GitUnavailable as error:
        on_event(Notice(f"{error}; scanning {root} as a plain folder"))
        return None


def _has_entries(root: Path) -> bool:
    with os.scandir(root) as entries:
        return any(entry.name not in ignore.VCS_DIRS for entry in entries)


def _list_git(
    listing: _Listing,
    repo: gitinfo.GitRepo,
    options: ScanOptions,
    cache: ContentCache | None,
    on_event: EventSink,
) -> None:
    files = gitinfo.list_files(repo, listing.path)
    times: dict[str, int] = {}
    if repo.head is not None and options.history and files.tracked.keys() - files.staged:
        try:
            times = gitinfo.history(repo, listing.path, repo.head, cache, options.history_limit)
        except gitinfo.GitError as error:
            on_event(Notice(f"{listing.given}: git log failed ({error}); change times unknown"))
    candidates = listing.candidates
    for path, (mode, blob) in files.tracked.items():
        if mode == gitinfo.GITLINK_MODE:
            candidates.append(_Candidate(path, skip=SkipReason.SUBMODULE, detail=blob))
        elif path in files.unmerged:
            candidates.append(_Candidate(path, last_changed=NEWEST, tracked=True))
        else:
            last = NEWEST if path in files.staged else times.get(path, 0)
            candidates.append(_Candidate(path, blob, mode, last, tracked=True))
    candidates += [_Candidate(path, last_changed=NEWEST) for path in files.untracked]
    for path in files.nested:
        candidates.append(_Candidate(path, skip=SkipReason.SUBMODULE, detail="nested repository"))
    listing.is_git, listing.head, listing.prefix = True, repo.head, repo.prefix


# -- .repoctxignore, --exclude, --include -----------------------------------------------------


class _Filters:
    """Marks IGNORED what .repoctxignore files and ``--exclude`` match, or ``--include`` does
    not."""

    def __init__(self, options: ScanOptions) -> None:
        self.exclude = _compile_flag("--exclude", options.exclude) if options.exclude else None
        self.include = _compile_flag("--include", options.include) if options.include else None

    def apply(self, listing: _Listing, on_event: EventSink) -> list[_Candidate]:
        paths = [candidate.path for candidate in listing.candidates]
        layers = ignore.repoctxignore_layers(listing.path, paths, listing.prefix, on_event)
        matchers = [ignore.FlatIgnore(layers)] if layers else []
        if self.exclude is not None and self.exclude.patterns:
            matchers.append(ignore.FlatIgnore([ignore.Layer("", "", self.exclude)]))
        if not matchers and self.include is None:
            return listing.candidates
        result: list[_Candidate] = []
        for candidate in listing.candidates:
            if candidate.skip is None:
                candidate = self._check(candidate, matchers)
            result.append(candidate)
        return result

    def _check(self, candidate: _Candidate, matchers: list[ignore.FlatIgnore]) -> _Candidate:
        if any(matcher.ignored(candidate.path) for matcher in matchers):
            return candidate._replace(skip=SkipReason.IGNORED)
        if self.include is not None and not self.include.match_file(candidate.path):
            return candidate._replace(skip=SkipReason.IGNORED, detail="not matched by --include")
        return candidate


def _compile_flag(flag: str, patterns: Sequence[str]) -> GitIgnoreSpec:
    try:
        return compile_patterns(patterns, flag)
    except ConfigError as error:
        raise UsageError(f"{error}; fix or quote the pattern") from None


# -- reading ----------------------------------------------------------------------------------


class _StatusRecords:
    """Blob ids of a root's tracked files by their status, kept from one scan to the next as
    git's index keeps them, so that unchanged files are not hashed again (the index's own
    status data does not match a copied or freshly checked-out tree, and is git's to refresh).

    A record is trusted when the size, mtime, ctime (which no tool sets back), inode and device
    of the file just read all match, and its id is still the file's index blob; it is written
    only for a file whose bytes hashed to its index blob and that had not changed for a while
    (``SETTLED_NS``), so that a change within the same clock tick cannot go unseen."""

    def __init__(self, cache: ContentCache | None, listing: _Listing) -> None:
        self.cache = cache
        self.key = str(listing.path)
        stored = cache.get(STATUS_NAMESPACE, self.key) if cache is not None else None
        self.stored: dict[str, Any] = stored if isinstance(stored, dict) else {}
        self.kept: dict[str, list[int | str]] = {}
        self.settled_before = time.time_ns() - SETTLED_NS

    def blob_id(
        self, path: str, index_id: str | None, status: os.stat_result, data: bytes
    ) -> tuple[str, bool]:
        """The blob id of ``data``, read from ``path`` and of ``status`` after the read, and
        whether a record vouched for it (else it was hashed)."""
        known: list[int | str] = [
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
            status.st_ino,
            status.st_dev,
        ]
        if index_id is not None and self.stored.get(path) == [*known, index_id]:
            self.kept[path] = [*known, index_id]
            return index_id, True
        blob = gitinfo.blob_id(data)
        changed = max(status.st_mtime_ns, status.st_ctime_ns)
        if blob == index_id and changed < self.settled_before:
            self.kept[path] = [*known, blob]
        return blob, False

    def save(self) -> None:
        if self.cache is not None and self.kept != self.stored:
            self.cache.put(STATUS_NAMESPACE, self.key, self.kept)


class _Reader:
    """Turns the candidates of one root into SourceFile and SkippedFile entries."""

    def __init__(
        self,
        listing: _Listing,
        classifier: Classifier,
        status: _StatusRecords,
        on_fresh: Callable[[SourceFile], None] | None = None,
    ) -> None:
        self.listing = listing
        self.on_fresh = on_fresh
        self.real = str(listing.path)
        self.base = self.real + os.sep
        self.classifier = classifier
        self.status = status
        self.files: list[SourceFile] = []
        self.skipped: list[SkippedFile] = []
        self.unreadable: list[str] = []
        self.unlike_index: list[str] = []  # tracked files whose id or mode is not the index's

    def process(self, candidate: _Candidate) -> None:
        result = self._examine(candidate)
        if isinstance(result, SourceFile):
            self.files.append(result)
        elif result is not None:
            self.skipped.append(result)

    def _skip(self, path: str, reason: SkipReason, size: int = 0, detail: str = "") -> SkippedFile:
        return SkippedFile(self.listing.name, path, reason, size, detail)

    def _examine(self, candidate: _Candidate) -> SourceFile | SkippedFile | None:
        path = candidate.path
        if candidate.skip is not None:
            return self._skip(path, candidate.skip, 0, candidate.detail)
        full = self.base + path
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return None  # gone since git listed it, or not checked out (sparse)
        except OSError as error:
            return self._unreadable(path, error)
        if candidate.tracked and stat.S_ISDIR(info.st_mode):
            return None  # a folder now: git lists the files in it as untracked
        link_id: str | None = None  # a link's blob id as git stores links: its target path's
        if stat.S_ISLNK(info.st_mode):
            if candidate.index_id is not None:
                link_id = _link_id(full)
            followed = self._follow(path, full)
            if isinstance(followed, SkippedFile):
                return followed
            info = followed
        if not stat.S_ISREG(info.st_mode):
            return self._skip(path, SkipReason.NOT_A_FILE, 0, _file_type(info.st_mode))
        verdict = self.classifier.classify(path, candidate.tracked)
        size = info.st_size
        if verdict.skip is not None:
            return self._skip(path, verdict.skip, size, verdict.detail)
        limit = self._size_limit(verdict)
        if size > limit and not verdict.keep:
            return self._skip(path, SkipReason.TOO_LARGE, size, self._limit_detail(limit))
        if size == 0:
            return self._skip(path, SkipReason.EMPTY)
        found = self._read(candidate, full, verdict, size)
        if isinstance(found, SourceFile) and candidate.index_id is not None:
            if link_id is not None:
                as_git_sees = (link_id, gitinfo.SYMLINK_MODE)
            else:
                as_git_sees = (found.blob_id, _file_mode(info))
            if as_git_sees != (candidate.index_id, candidate.index_mode):
                self.unlike_index.append(path)
        return found

    def _size_limit(self, verdict: PathClass) -> int:
        rules = self.classifier.rules
        if verdict.kind in BULK_KINDS:
            return min(rules.max_bulk_file_bytes, rules.max_file_bytes)
        return rules.max_file_bytes

    def _limit_detail(self, limit: int) -> str:
        if limit < self.classifier.rules.max_file_bytes:
            return f"over {limit} bytes (rules.max_bulk_file_bytes)"
        return f"over {limit} bytes (rules.max_file_bytes)"

    def _follow(self, path: str, full: str) -> os.stat_result | SkippedFile:
        """The status of a symlink's target when it is a file inside the root (and not inside
        a .git folder)."""
        try:
            info = os.stat(full)
        except OSError as error:
            return self._skip(path, SkipReason.BROKEN_LINK, 0, error.strerror or str(error))
        target = os.path.realpath(full)
        inside = target.removeprefix(self.base)
        if inside == target or not ignore.VCS_DIRS.isdisjoint(inside.split(os.sep)):
            return self._skip(path, SkipReason.OUTSIDE_ROOT, 0, target)
        if stat.S_ISDIR(info.st_mode):
            return self._skip(path, SkipReason.NOT_A_FILE, 0, "symlink to a folder")
        return info

    def _read(
        self, candidate: _Candidate, full: str, verdict: PathClass, size: int
    ) -> SourceFile | SkippedFile:
        path = candidate.path
        try:
            data, status = _read_file(full, size)
        except OSError as error:
            return self._unreadable(path, error)
        if not data:
            return self._skip(path, SkipReason.EMPTY)
        decoded = decode_text(data)
        if isinstance(decoded, SkipReason):
            return self._skip(path, decoded, len(data))
        text, encoding = decoded
        verdict = self.classifier.refine(verdict, path, len(data), text)
        if verdict.skip is not None:
            return self._skip(path, verdict.skip, len(data), verdict.detail)
        language = language_for_path(path)
        name, size, last = self.listing.name, len(data), candidate.last_changed
        blob, vouched = self.status.blob_id(path, candidate.index_id, status, data)
        found = SourceFile(
            name, path, blob, size, text, language, verdict.kind, last, encoding, verdict.detail
        )
        if not vouched and self.on_fresh is not None:
            self.on_fresh(found)
        return found

    def _unreadable(self, path: str, error: OSError) -> SkippedFile:
        self.unreadable.append(path)
        return self._skip(path, SkipReason.UNREADABLE, 0, error.strerror or str(error))

    def finish(self, on_event: EventSink) -> RootSnapshot:
        self._date_changes(on_event)
        self.status.save()
        if self.unreadable:
            shown = ", ".join(self.unreadable[:5])
            more = f" and {len(self.unreadable) - 5} more" if len(self.unreadable) > 5 else ""
            on_event(Notice(f"{self.listing.given}: cannot read {shown}{more}; left out"))
        listing = self.listing
        files = tuple(sorted(self.files, key=lambda f: f.path))
        skipped = tuple(sorted(self.skipped, key=lambda s: s.path))
        return RootSnapshot(
            listing.name, listing.path, listing.is_git, listing.head, files, skipped
        )

    def _date_changes(self, on_event: EventSink) -> None:
        """NEWEST for the files whose content or mode is not the index's, where git agrees
        that they differ from HEAD (filters and line-ending conversion may say otherwise)."""
        if not self.unlike_index:
            return
        listing = self.listing
        try:
            changed = gitinfo.changed_from_head(listing.path, listing.prefix, self.unlike_index)
        except gitinfo.GitError as error:
            on_event(Notice(f"{listing.given}: git status failed ({error}); taken as changed"))
            changed = set(self.unlike_index)
        self.files = [
            dataclasses.replace(f, last_changed=NEWEST) if f.path in changed else f
            for f in self.files
        ]


def _read_file(full: str, size: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the file at ``full``, of about ``size`` bytes (it may have changed since its
    stat), and its status after the read, so that a change during the read shows. Plain system
    calls: a buffered file object costs more than the read of a small file."""
    fd = os.open(full, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)
        while chunk := os.read(fd, max(size, READ_CHUNK)):
            data += chunk
        return data, os.fstat(fd)
    finally:
        os.close(fd)


def _link_id(full: str) -> str:
    """The blob id git gives the symlink at ``full`` (that of its target path); "" when the
    link cannot be read."""
    try:
        return gitinfo.blob_id(os.fsencode(os.readlink(full)))
    except OSError:
        return ""


def _file_mode(info: os.stat_result) -> str:
    """The mode git records for a regular file with status ``info``."""
    return "100755" if info.st_mode & stat.S_IXUSR else "100644"


def _file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def _stats(readers: Sequence[_Reader]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for reader in readers:
        counts["roots"] += 1
        counts["files"] += len(reader.files)
        counts["skipped"] += len(reader.skipped)
        counts["bytes"] += sum(source.size for source in reader.files)
        counts.update(f"skipped.{s.reason.name.lower()}" for s in reader.skipped)
    return dict(sorted(counts.items()))
