"""Watching the pack's files for saves, without inotify (so it works the same everywhere:
network and container filesystems included). A thread looks every ``interval`` seconds at the
files of the last scan (their modification time, size and inode) and at the folders that hold
them (the names in them: a file added, deleted or renamed; hidden names such as editors' swap
and lock files do not count). Once changes have been quiet for ``quiet`` seconds, it reports
the changed paths. Stat calls only: thousands of files cost milliseconds.

A file looked at for the first time (the first pack, a new file, watching turned on again) has
nothing to compare with: it counts as changed when it was modified after its scan began, so
that a save during a scan (or while watching was off) is not missed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repoctx.pack.pipeline import PackResult
from repoctx.scan.snapshot import SkipReason

Signatures = dict[Path, Hashable]
WATCH_OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class WatchTimes:
    interval: float = 2.0  # seconds between looks
    quiet: float = 1.0  # seconds without a change before the changes are reported


def watched_paths(result: PackResult) -> tuple[list[Path], list[Path]]:
    """The files a scan found (packed or not, but for those a pattern left out), and every
    folder from each root down to them."""
    files: list[Path] = []
    folders: set[Path] = set()
    for root in result.snapshot.roots:
        folders.add(root.path)
        paths = [f.path for f in root.files]
        paths += [s.path for s in root.skipped if s.reason != SkipReason.IGNORED]
        for path in paths:
            files.append(root.path / path)
            parts = path.split("/")[:-1]
            folders.update(root.path.joinpath(*parts[: i + 1]) for i in range(len(parts)))
    return files, sorted(folders)


def watch_wanted(flags: MutableMapping[str, Any]) -> bool:
    """``--watch/--no-watch`` when given (taken out of ``flags``), else ``REPOCTX_WATCH``
    (``0``, ``off``, ``false`` or ``no`` turn watching off); on by default."""
    flag = flags.pop("watch", None)
    if flag is not None:
        return bool(flag)
    return os.environ.get("REPOCTX_WATCH", "").strip().lower() not in WATCH_OFF


@dataclass(frozen=True)
class Watched:
    files: list[Path]
    folders: list[Path]
    scanned_ns: int  # when their scan began (unix time, nanoseconds)


class PackPaths:
    """What to watch: the files and folders of the last scan that ``result()`` gives (worked
    out again only when it is another pack), and when that scan began (``scanned_ns()``)."""

    def __init__(
        self, result: Callable[[], PackResult | None], scanned_ns: Callable[[], int]
    ) -> None:
        self.result = result
        self.scanned_ns = scanned_ns
        self._for: PackResult | None = None
        self._paths: tuple[list[Path], list[Path]] = ([], [])

    def __call__(self) -> Watched | None:
        result = self.result()
        if result is None:
            return None
        if result is not self._for:
            self._for, self._paths = result, watched_paths(result)
        return Watched(*self._paths, self.scanned_ns())


def file_signature(path: Path) -> Hashable:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _modified_since(signature: Hashable, moment_ns: int) -> bool:
    """Whether a file signature tells of a modification at ``moment_ns`` or later."""
    return isinstance(signature, tuple) and signature[0] >= moment_ns


def _counts(name: str) -> bool:
    """Whether a name in a folder matters: not hidden, not an editor's backup."""
    return not name.startswith(".") and not name.endswith(("~", ".swp", ".swx", ".tmp"))


class FolderNames:
    """The names in folders, listed again only when a folder's modification time changes."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, frozenset[str]]] = {}

    def signature(self, folder: Path) -> Hashable:
        try:
            stamp = os.stat(folder).st_mtime_ns
            known = self._known.get(folder)
            if known is not None and known[0] == stamp:
                return known[1]
            with os.scandir(folder) as entries:
                names = frozenset(e.name for e in entries if _counts(e.name))
        except OSError:
            return None
        self._known[folder] = (stamp, names)
        return names


class ChangeDetector:
    """Compares each look with the one before; reports the paths that changed once nothing
    has changed for ``quiet`` seconds. A file not looked at before counts as changed when it
    was modified at ``scanned_ns`` or later."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._seen: Signatures = {}
        self._pending: set[Path] = set()
        self._last_change = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def look(
        self, signatures: Mapping[Path, Hashable], now: float, scanned_ns: int | None = None
    ) -> list[Path]:
        for path, signature in signatures.items():
            if path in self._seen:
                differs = self._seen[path] != signature
            else:
                differs = scanned_ns is not None and _modified_since(signature, scanned_ns)
            if differs:
                self._pending.add(path)
                self._last_change = now
        self._seen = dict(signatures)
        if not self._pending or now - self._last_change < self.quiet:
            return []
        changed = sorted(self._pending)
        self._pending.clear()
        return changed


class Watcher:
    """The thread: ``paths()`` gives what to watch now (None: nothing yet), ``report`` gets
    the changed paths (from the thread)."""

    def __init__(
        self,
        paths: Callable[[], Watched | None],
        report: Callable[[list[Path]], object],
        times: WatchTimes = WatchTimes(),
    ) -> None:
        self.paths = paths
        self.report = report
        self.times = times
        self.detector = ChangeDetector(times.quiet)
        self.folders = FolderNames()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()
        self.detector = ChangeDetector(self.times.quiet)
        self._thread = threading.Thread(target=self._run, name="repoctx-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._delay()):
            changed = self.look()
            if changed and not self._stop.is_set():
                self.report(changed)

    def _delay(self) -> float:
        """Look more often while changes wait to go quiet, to report soon after they do."""
        if self.detector.pending:
            return min(self.times.interval, self.times.quiet / 2)
        return self.times.interval

    def look(self) -> list[Path]:
        watched = self.paths()
        if watched is None:
            return []
        signatures: Signatures = {path: file_signature(path) for path in watched.files}
        signatures.update((folder, self.folders.signature(folder)) for folder in watched.folders)
        return self.detector.look(signatures, time.monotonic(), watched.scanned_ns)
