"""What a scan returns: the files of each root, and every file left out with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class FileKind(StrEnum):
    """What a file is for; over budget, ``repoctx.pack.fit`` sheds some kinds before others."""

    SOURCE = "source"
    CONFIG = "config"
    TEST = "test"
    DOCS = "docs"
    EXAMPLE = "example"
    GENERATED = "generated"
    DATA = "data"
    VENDORED = "vendored"


class SkipReason(StrEnum):
    """Why a file found by the scan is not in the pack at all."""

    IGNORED = "ignored by --exclude/.repoctxignore"
    BINARY = "binary"
    TOO_LARGE = "too large"
    LOCK_FILE = "lock file"
    GENERATED = "generated"
    VENDORED = "vendored"
    UNREADABLE = "unreadable"
    BROKEN_LINK = "broken symlink"
    OUTSIDE_ROOT = "symlink leads outside the root"
    SUBMODULE = "git submodule"
    NOT_A_FILE = "not a regular file"
    EMPTY = "empty"
    UNDECODABLE = "undecodable text"
    NAME_NOT_UTF8 = "file name is not UTF-8"


@dataclass(frozen=True)
class SourceFile:
    """One text file that can go into the pack."""

    root: str  # display name of its root, the prefix of ``key``
    path: str  # posix path relative to the root
    blob_id: str  # git blob id of the content on disk (computed the git way for any file)
    size: int  # bytes on disk
    text: str  # decoded content, newlines as on disk
    language: str | None  # a key of ``repoctx.languages.LANGUAGES``, or None
    kind: FileKind
    last_changed: int  # unix time of the last commit that touched it; see scan for untracked
    encoding: str = "utf-8"
    kind_detail: str = ""  # the rule that gave it its kind ("rules.docs"), "" for plain source

    @property
    def key(self) -> str:
        """The path the pack shows: ``root/path``."""
        return f"{self.root}/{self.path}"


@dataclass(frozen=True)
class SkippedFile:
    root: str
    path: str
    reason: SkipReason
    size: int = 0
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.root}/{self.path}"


@dataclass(frozen=True)
class RootSnapshot:
    """One scanned root: its name in the pack, where it is, and whether git manages it."""

    name: str
    path: Path
    is_git: bool
    head: str | None  # commit id of HEAD, None for plain folders and unborn branches
    files: tuple[SourceFile, ...]
    skipped: tuple[SkippedFile, ...]


@dataclass(frozen=True)
class Snapshot:
    roots: tuple[RootSnapshot, ...]
    elapsed_s: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def files(self) -> list[SourceFile]:
        return [f for root in self.roots for f in root.files]

    @property
    def skipped(self) -> list[SkippedFile]:
        return [s for root in self.roots for s in root.skipped]
