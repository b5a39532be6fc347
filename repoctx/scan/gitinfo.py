"""Git plumbing for the scan, through the ``git`` binary: a handful of calls per root, never one
per file, and none that reads every file (the scan reads them itself anyway).

* ``find_repo``: one ``rev-parse`` tells whether a folder is inside a work tree, where, and its
  HEAD commit.
* ``list_files``: ``ls-files -s`` (tracked paths with their index blob ids), ``ls-files
  --others`` (untracked files git does not ignore) and ``diff-index --cached`` (what is staged),
  run side by side. Unlike ``git status`` none of them compares the work tree with the index,
  which costs a read of every file whose stat data the index does not match (all of them in a
  copied or freshly cloned tree).
* ``changed_from_head``: git's own verdict (filters, line endings, modes) on the few files whose
  bytes differ from their index blob.
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
    head: str | None = None  # commit id of HEAD; None on an unborn branch


@dataclass
class Listing:
    """The files git sees under a root; every path is relative to the root."""

    tracked: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (mode, blob id)
    untracked: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)  # untracked repositories inside the root
    staged: set[str] = field(default_factory=set)  # the index differs from HEAD
    unmerged: set[str] = field(default_factory=set)  # in conflict: several stages in the index


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARIABLES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never write the index behind the user's back
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _run(args: Sequence[str], cwd: Path, success: Sequence[int] = (0,)) -> tuple[int, bytes]:
    """Exit status and output of ``git args``; GitError unless the status is in ``success``."""
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
    if done.returncode not in success:
        subcommand = next((a for a in args if not a.startswith("-")), "")
        raise GitError(_one_line(done.stderr) or f"git {subcommand} failed")
    return done.returncode, done.stdout


def _one_line(stderr: bytes) -> str:
    return " ".join(line.strip() for line in os.fsdecode(stderr).splitlines() if line.strip())


def find_repo(root: Path) -> GitRepo | None:
    """The work tree holding ``root`` (an absolute, resolved folder), or None for a plain folder.

    Raises GitUnavailable when there is a ``.git`` but git refuses it or is not installed."""
    args = ["rev-parse", "--show-toplevel", "--show-prefix", "--git-common-dir"]
    try:  # --verify -q: HEAD's id, or status 1 and no line on an unborn branch
        status, out = _run([*args, "--verify", "-q", "HEAD"], root, success=(0, 1))
    except GitError as error:
        marker = _dot_git_above(root)
        if marker is None or "work tree" in str(error):
            return None
        raise GitUnavailable(f"{marker} cannot be read with git ({error})") from None
    lines = [os.fsdecode(line) for line in out.split(b"\n")]
    if len(lines) < 4 or (status == 0 and len(lines) < 5):
        raise GitUnavailable(f"git rev-parse gave no answer in {root}")
    toplevel, prefix, common = lines[:3]
    head = lines[3] if status == 0 else None
    return GitRepo(Path(toplevel), prefix, root / common, head)


def _dot_git_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate / ".git"
    return None


def list_files(repo: GitRepo, root: Path) -> Listing:
    """Tracked files with their index blob ids, untracked files and staged changes, in
    concurrent git calls that read the index, HEAD's tree and folders, never file contents."""
    commands = [
        ["ls-files", "-z", "-s", "--", "."],
        ["ls-files", "-z", "--others", "--exclude-standard", "--", "."],
    ]
    if repo.head is not None:
        diff = ["diff-index", "--cached", "-z", "--name-only", "--relative", "--no-renames"]
        commands.append([*diff, "--ignore-submodules=all", repo.head, "--", "."])
    outputs = _run_together(commands, root)
    listing = Listing()
    _parse_ls_files(outputs[0], listing)
    _parse_others(outputs[1], listing)
    if repo.head is None:  # nothing committed: every tracked file is staged
        listing.staged.update(listing.tracked)
    else:
        listing.staged.update(os.fsdecode(path) for path in outputs[2].split(b"\0") if path)
    return listing


def _run_together(commands: Sequence[Sequence[str]], cwd: Path) -> list[bytes]:
    """The outputs of several git commands run side by side; GitError if one fails."""
    env = _environment()
    running: list[subprocess.Popen[bytes]] = []
    try:
        for args in commands:
            running.append(
                subprocess.Popen(
                    ["git", *args],
                    cwd=cwd,
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
    return outputs


def _parse_ls_files(out: bytes, listing: Listing) -> None:
    for entry in out.split(b"\0"):
        meta, tab, path = entry.partition(b"\t")
        if not tab:
            continue
        mode, blob, stage = meta.split(b" ")
        name = os.fsdecode(path)
        listing.tracked[name] = (mode.decode(), blob.decode())
        if stage != b"0":
            listing.unmerged.add(name)


def _parse_others(out: bytes, listing: Listing) -> None:
    for entry in out.split(b"\0"):
        if entry:
            path = os.fsdecode(entry)
            (listing.nested if path.endswith("/") else listing.untracked).append(path.rstrip("/"))


_MAX_PATHSPECS = 2000  # beyond this many files, ask about the whole root


def changed_from_head(root: Path, prefix: str, paths: Sequence[str]) -> set[str]:
    """Which of ``paths`` (files relative to ``root``) git sees as differing from HEAD, in the
    index or in the work tree: its own verdict, after clean filters and line-ending
    conversion, for files whose bytes on disk are not their index blob."""
    if not paths:
        return set()
    pathspecs = list(paths) if len(paths) <= _MAX_PATHSPECS else ["."]
    status = ["status", "--porcelain=v2", "-z", "--untracked-files=no", "--no-renames"]
    status += ["--ignore-submodules=all", "--", *pathspecs]
    _, out = _run(["--literal-pathspecs", *status], root)
    return _parse_status(out, prefix) & set(paths)


def _parse_status(out: bytes, prefix: str) -> set[str]:
    """The paths of the changed entries of ``status --porcelain=v2 -z``, relative to the root."""
    changed: set[str] = set()
    entries = iter(out.split(b"\0"))
    for raw in entries:
        entry = os.fsdecode(raw)
        kind = entry[:2]
        if kind in ("1 ", "2 ", "u "):
            fields = {"1 ": 8, "2 ": 9, "u ": 10}[kind]
            changed.add(entry.split(" ", fields)[fields].removeprefix(prefix))
            if kind == "2 ":
                next(entries, None)  # the rename's original path
    return changed


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
    _, out = _run([*args, f"-n{limit}", head, "--", "."], root)
    times = _parse_log(out)
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
