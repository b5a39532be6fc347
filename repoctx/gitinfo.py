"""Git plumbing for the scan, through the ``git`` binary: a handful of calls per root, never one
per file.

* ``find_repo``: one ``rev-parse`` tells whether a folder is inside a work tree and where.
* ``list_files``: ``ls-files -s`` (tracked paths with their index blob ids) and ``status
  --porcelain=v2`` (what differs from the index and from HEAD, and the untracked files git does
  not ignore), run side by side.
* ``history``: one ``log --name-only`` over the last ``HISTORY_LIMIT`` commits that touch the
  root, cached by HEAD commit id so a warm run does not walk history at all.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoctx.cache import ContentCache

NEWEST = 2**62  # last_changed of files that differ from HEAD: newer than any commit
HISTORY_LIMIT = 5000
HISTORY_NAMESPACE = "git-history-v1"
GITLINK_MODE = "160000"
SYMLINK_MODE = "120000"
# Variables that would point git at another repository than the folder being scanned.
_REPO_VARIABLES = (
    *("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR"),
    *("GIT_OBJECT_DIRECTORY", "GIT_NAMESPACE", "GIT_ALTERNATE_OBJECT_DIRECTORIES"),
)


class GitError(Exception):
    """A git command failed; the message is git's own."""


class GitUnavailable(Exception):
    """The folder is in a git work tree that git cannot be used on; scan it as a plain folder."""


@dataclass(frozen=True)
class GitRepo:
    toplevel: Path
    prefix: str  # the scanned root relative to the top of the work tree: "" or "sub/dir/"
    common_dir: Path


@dataclass
class Listing:
    """The files git sees under a root; every path is relative to the root."""

    head: str | None = None  # None on an unborn branch
    tracked: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (mode, blob id)
    untracked: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)  # untracked repositories inside the root
    changed: set[str] = field(default_factory=set)  # on disk differs from the index
    dirty: set[str] = field(default_factory=set)  # differs from HEAD, staged or not
    deleted: set[str] = field(default_factory=set)  # in the index, gone from the work tree


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARIABLES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never write the index behind the user's back
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _run(args: Sequence[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except OSError as error:
        raise GitError(f"git cannot be run: {error}") from error
    if done.returncode != 0:
        raise GitError(_one_line(done.stderr) or f"git {args[0]} failed")
    return done.stdout


def _one_line(stderr: bytes) -> str:
    return " ".join(line.strip() for line in os.fsdecode(stderr).splitlines() if line.strip())


def find_repo(root: Path) -> GitRepo | None:
    """The work tree holding ``root`` (an absolute, resolved folder), or None for a plain folder.

    Raises GitUnavailable when there is a ``.git`` but git refuses it or is not installed."""
    try:
        out = _run(["rev-parse", "--show-toplevel", "--show-prefix", "--git-common-dir"], root)
    except GitError as error:
        marker = _dot_git_above(root)
        if marker is None or "work tree" in str(error):
            return None
        raise GitUnavailable(f"{marker} cannot be read with git ({error})") from None
    toplevel, prefix, common = (os.fsdecode(line) for line in out.split(b"\n")[:3])
    return GitRepo(Path(toplevel), prefix, root / common)


def _dot_git_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate / ".git"
    return None


def list_files(repo: GitRepo, root: Path) -> Listing:
    """Tracked files with their index blob ids, and the work tree's differences, in two
    concurrent git calls."""
    status_args = ["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all"]
    status_args += ["--ignore-submodules=all", "--no-renames", "--", "."]
    commands = (["ls-files", "-z", "-s", "--", "."], status_args)
    env = _environment()
    running: list[subprocess.Popen[bytes]] = []
    try:
        for args in commands:
            running.append(
                subprocess.Popen(
                    ["git", *args],
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
    except OSError as error:
        for process in running:
            process.kill()
            process.communicate()
        raise GitError(f"git cannot be run: {error}") from error
    outputs: list[bytes] = []
    failure = ""
    for args, process in zip(commands, running, strict=True):
        out, err = process.communicate()  # every process is waited for, even after a failure
        if process.returncode != 0 and not failure:
            failure = _one_line(err) or f"git {args[0]} failed"
        outputs.append(out)
    if failure:
        raise GitError(failure)
    listing = Listing()
    _parse_ls_files(outputs[0], listing)
    _parse_status(outputs[1], repo.prefix, listing)
    return listing


def _parse_ls_files(out: bytes, listing: Listing) -> None:
    for entry in out.split(b"\0"):
        meta, tab, path = entry.partition(b"\t")
        if not tab:
            continue
        mode, blob, _stage = meta.split(b" ")
        listing.tracked[os.fsdecode(path)] = (mode.decode(), blob.decode())


def _parse_status(out: bytes, prefix: str, listing: Listing) -> None:
    entries = iter(out.split(b"\0"))
    for raw in entries:
        entry = os.fsdecode(raw)
        kind = entry[:2]
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            listing.head = None if oid == "(initial)" else oid
        elif kind == "? ":
            path = entry[2:].removeprefix(prefix)
            (listing.nested if path.endswith("/") else listing.untracked).append(path.rstrip("/"))
        elif kind in ("1 ", "2 ", "u "):
            fields = {"1 ": 8, "2 ": 9, "u ": 10}[kind]
            parts = entry.split(" ", fields)
            _record_change(listing, parts[1], parts[fields].removeprefix(prefix), kind == "u ")
            if kind == "2 ":
                next(entries, None)  # the rename's original path


def _record_change(listing: Listing, xy: str, path: str, unmerged: bool) -> None:
    listing.dirty.add(path)
    if xy[1] == "D":
        listing.deleted.add(path)
    elif xy[1] != "." or unmerged:
        listing.changed.add(path)


def history(
    repo: GitRepo,
    root: Path,
    head: str,
    cache: ContentCache | None,
    limit: int = HISTORY_LIMIT,
) -> dict[str, int]:
    """Path (relative to the root) -> unix time of the newest of the last ``limit`` commits
    that touched it. Cached by HEAD commit id and the root's place in the repository."""
    key = f"{head}:{limit}:{_shallow_marker(repo)}:{repo.prefix}"
    if cache is not None:
        cached = cache.get(HISTORY_NAMESPACE, key)
        if isinstance(cached, dict) and _valid_history(cached):
            return {str(path): int(when) for path, when in cached.items()}
    args = ["log", "-z", "--relative", "--no-renames", "--name-only", "--format=%x1e%ct"]
    times = _parse_log(_run([*args, f"-n{limit}", head, "--", "."], root))
    if cache is not None:
        cache.put(HISTORY_NAMESPACE, key, times)
    return times


def _shallow_marker(repo: GitRepo) -> str:
    """A shallow clone's history deepens without HEAD moving: key it by the shallow file."""
    try:
        shallow = (repo.common_dir / "shallow").read_bytes()
        return hashlib.sha1(shallow, usedforsecurity=False).hexdigest()[:12]
    except OSError:
        return "full"


def _valid_history(value: dict[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, int) for k, v in value.items())


def _parse_log(out: bytes) -> dict[str, int]:
    times: dict[str, int] = {}
    for commit in out.split(b"\x1e"):
        stamp, _, names = commit.partition(b"\0")
        if not stamp.strip():
            continue
        when = int(stamp)
        for name in names.removeprefix(b"\n").split(b"\0"):
            if name:
                path = os.fsdecode(name)
                if when > times.get(path, -1):
                    times[path] = when
    return times


def blob_id(data: bytes) -> str:
    """The git blob id of ``data``: sha1 of ``b"blob <size>\\0"`` and the bytes."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()
