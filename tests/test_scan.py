"""The scanner on real git repositories and plain folders built in temporary directories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import git as run_git

from repoctx.cache import ContentCache
from repoctx.errors import (
    EmptyRepositoryError,
    NotADirectoryError_,
    PathNotFoundError,
    PathNotUtf8Error,
    UsageError,
)
from repoctx.events import Event, Notice, Progress
from repoctx.scan import gitinfo, scanner
from repoctx.scan.rules import TRACKED_IN_GENERATED_FOLDER, Rules
from repoctx.scan.scanner import NEWEST, ScanOptions, root_names, scan
from repoctx.scan.snapshot import (
    FileKind,
    RootSnapshot,
    SkippedFile,
    SkipReason,
    Snapshot,
    SourceFile,
)

T0 = 1_600_000_000


def git(repo: Path, *args: str, when: int | None = None) -> str:
    return run_git(repo, *args, when=when).strip()


def write(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")


def commit(repo: Path, files: Mapping[str, str | bytes], when: int = T0) -> None:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"at {when}", when=when)


def new_repo(path: Path, files: Mapping[str, str | bytes], when: int = T0) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    commit(path, files, when)
    return path


def blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files_of(snapshot: Snapshot) -> dict[str, SourceFile]:
    return {f.path: f for f in snapshot.files}


def skipped_of(snapshot: Snapshot) -> dict[str, SkippedFile]:
    return {s.path: s for s in snapshot.skipped}


def reasons(snapshot: Snapshot) -> dict[str, SkipReason]:
    return {s.path: s.reason for s in snapshot.skipped}


# -- what a git repository holds --------------------------------------------------------------


def test_tracked_file_matching_gitignore_is_kept(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"keep.log": "tracked\n", "a.py": "x = 1\n"})
    commit(repo, {".gitignore": "*.log\n"}, T0 + 10)
    write(repo, {"fresh.log": "untracked and ignored\n", "notes.txt": "untracked\n"})
    snapshot = scan([repo])
    paths = set(files_of(snapshot))
    assert paths == {".gitignore", "a.py", "keep.log", "notes.txt"}
    assert "fresh.log" not in skipped_of(snapshot)
    assert snapshot.roots[0].is_git and snapshot.roots[0].head == git(repo, "rev-parse", "HEAD")


def test_untracked_files_are_listed_unless_git_ignores_them(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {".gitignore": "/out/\n*.tmp\n", "a.py": "a\n"})
    write(repo, {"b.py": "b\n", "out/x.py": "x\n", "c.tmp": "t\n", "pkg/d.py": "d\n"})
    found = files_of(scan([repo]))
    assert set(found) == {".gitignore", "a.py", "b.py", "pkg/d.py"}
    assert found["b.py"].last_changed == NEWEST
    assert found["b.py"].blob_id == blob(b"b\n")


def test_nested_gitignore_is_applied_by_git(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"sub/.gitignore": "*.tmp\n!keep.tmp\n", "a.py": "a\n"})
    write(repo, {"top.tmp": "1\n", "sub/x.tmp": "2\n", "sub/keep.tmp": "3\n"})
    assert set(files_of(scan([repo]))) == {"a.py", "sub/.gitignore", "top.tmp", "sub/keep.tmp"}


def test_file_deleted_from_work_tree_is_absent(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"a.py": "a\n", "gone.py": "g\n"})
    (repo / "gone.py").unlink()
    snapshot = scan([repo])
    assert set(files_of(snapshot)) == {"a.py"}
    assert snapshot.skipped == []


def test_blob_ids_come_from_the_index_or_the_disk(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"same.py": "same\n", "edit.py": "old\n"})
    write(repo, {"edit.py": "new content\n", "staged.py": "staged\n"})
    git(repo, "add", "staged.py")
    found = files_of(scan([repo]))
    assert found["same.py"].blob_id == git(repo, "rev-parse", "HEAD:same.py")
    assert found["edit.py"].blob_id == git(repo, "hash-object", "edit.py") == blob(b"new content\n")
    assert found["edit.py"].blob_id != git(repo, "rev-parse", "HEAD:edit.py")
    assert found["edit.py"].text == "new content\n"
    assert found["staged.py"].blob_id == git(repo, "rev-parse", ":staged.py")
    assert found["edit.py"].last_changed == found["staged.py"].last_changed == NEWEST


def test_git_is_asked_only_about_files_unlike_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(tmp_path / "proj", {f"m{i}.py": f"x = {i}\n" for i in range(5)})
    counter = CountingPopen(monkeypatch)
    copy = tmp_path / "copy"  # every stat field the index holds differs from the copy's
    shutil.copytree(repo, copy, symlinks=True)
    assert {f.last_changed for f in scan([copy]).files} == {T0}
    assert "status" not in counter.commands
    write(repo, {"m0.py": "changed\n"})
    (repo / "m1.py").chmod(0o755)
    found = files_of(scan([repo]))
    assert counter.commands.count("status") == 1
    assert {p for p, f in found.items() if f.last_changed == NEWEST} == {"m0.py", "m1.py"}
    assert found["m0.py"].blob_id == blob(b"changed\n") and found["m2.py"].last_changed == T0


def test_a_line_ending_conversion_is_no_change_and_ids_match_the_bytes(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"a.py": "x = 1\ny = 2\n", "b.py": "b\n"})
    git(repo, "config", "core.autocrlf", "true")
    write(repo, {"a.py": "x = 1\r\ny = 2\r\n"})  # as a checkout with autocrlf writes it
    git(repo, "add", "a.py")  # records its stat data, as the checkout would; the blob stays
    assert git(repo, "status", "--porcelain") == ""
    found = files_of(scan([repo]))
    assert git(repo, "rev-parse", ":a.py") == git(repo, "rev-parse", "HEAD:a.py")
    assert found["a.py"].last_changed == T0
    assert found["a.py"].text == "x = 1\r\ny = 2\r\n"
    assert found["a.py"].blob_id == blob(b"x = 1\r\ny = 2\r\n")


def test_submodules_and_nested_repositories_are_reported(tmp_path: Path) -> None:
    lib = new_repo(tmp_path / "lib", {"lib.py": "lib\n"})
    repo = new_repo(tmp_path / "proj", {"a.py": "a\n"})
    git(repo, "submodule", "add", "-q", str(lib), "vendored_lib")
    git(repo, "commit", "-q", "-m", "submodule", when=T0 + 5)
    new_repo(repo / "inner", {"i.py": "i\n"})
    snapshot = scan([repo])
    found = skipped_of(snapshot)
    assert found["vendored_lib"].reason is SkipReason.SUBMODULE
    assert found["vendored_lib"].detail == git(lib, "rev-parse", "HEAD")
    assert found["inner"].reason is SkipReason.SUBMODULE
    assert set(files_of(snapshot)) == {".gitmodules", "a.py"}


def test_subdirectory_root_scans_its_subtree_only(tmp_path: Path) -> None:
    repo = new_repo(
        tmp_path / "repo",
        {"top.py": "t\n", "pkg/a.py": "a\n", "pkg/sub/b.py": "b\n", "pkg/sub/c.py": "c\n"},
    )
    commit(repo, {"pkg/sub/b.py": "b2\n", ".repoctxignore": "/pkg/sub/c.py\n"}, T0 + 100)
    write(repo, {"pkg/new.py": "n\n", "other.py": "o\n"})
    snapshot = scan([repo / "pkg"])
    root = snapshot.roots[0]
    assert root.name == "pkg" and root.is_git
    found = files_of(snapshot)
    assert set(found) == {"a.py", "sub/b.py", "new.py"}
    assert found["a.py"].last_changed == T0
    assert found["sub/b.py"].last_changed == T0 + 100
    assert found["new.py"].last_changed == NEWEST
    assert reasons(snapshot) == {"sub/c.py": SkipReason.IGNORED}
    assert found["a.py"].key == "pkg/a.py"


def test_folder_git_ignores_is_scanned_as_plain_folder(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {".gitignore": "scratch/\n", "a.py": "a\n"})
    write(repo, {"scratch/s.py": "s\n"})
    events: list[Event] = []
    snapshot = scan([repo / "scratch"], on_event=events.append)
    assert set(files_of(snapshot)) == {"s.py"}
    assert not snapshot.roots[0].is_git
    assert any(isinstance(e, Notice) and "ignores" in e.message for e in events)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the repository to another user")
def test_repository_git_refuses_is_scanned_as_plain_folder(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {".gitignore": "*.log\n", "a.py": "a\n"})
    write(repo, {"tracked.log": "x\n"})
    git(repo, "add", "-f", "tracked.log")
    git(repo, "commit", "-q", "-m", "log", when=T0 + 1)
    subprocess.run(["chown", "-R", "65534", str(repo)], check=True)
    events: list[Event] = []
    snapshot = scan([repo], on_event=events.append)
    assert not snapshot.roots[0].is_git
    assert set(files_of(snapshot)) == {".gitignore", "a.py"}  # our walk applied .gitignore
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "safe.directory" in notices[0] and "\n" not in notices[0]


def test_broken_index_falls_back_to_a_plain_walk(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {".gitignore": "*.tmp\n", "a.py": "a\n"})
    write(repo, {"x.tmp": "t\n"})
    (repo / ".git" / "index").write_bytes(b"not an index at all")
    events: list[Event] = []
    snapshot = scan([repo], on_event=events.append)
    assert not snapshot.roots[0].is_git
    assert set(files_of(snapshot)) == {".gitignore", "a.py"}
    assert any(isinstance(e, Notice) and "git failed" in e.message for e in events)


# -- history ----------------------------------------------------------------------------------


class CountingPopen:
    """Counts git subcommands started through subprocess.Popen (subprocess.run uses it too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[str] = []
        real = subprocess.Popen

        def popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
            if isinstance(args, list) and args and args[0] == "git":
                self.commands.append(next(a for a in args[1:] if not a.startswith("-")))
            return real(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", popen)


def test_last_changed_from_history_and_cached_by_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(tmp_path / "proj", {"a.py": "a\n", "b.py": "b\n"}, when=T0)
    commit(repo, {"b.py": "b2\n"}, T0 + 50)
    commit(repo, {"c.py": "c\n"}, T0 + 90)
    cache = ContentCache.memory()
    counter = CountingPopen(monkeypatch)
    first = files_of(scan([repo], cache=cache))
    assert {p: f.last_changed for p, f in first.items()} == {
        "a.py": T0,
        "b.py": T0 + 50,
        "c.py": T0 + 90,
    }
    assert counter.commands.count("log") == 1
    second = scan([repo], cache=cache)
    assert counter.commands.count("log") == 1  # the warm scan read the cache
    assert files_of(second) == first
    assert counter.commands.count("ls-files") == 4  # tracked and untracked files, twice
    assert "status" not in counter.commands
    commit(repo, {"a.py": "a2\n"}, T0 + 200)
    third = files_of(scan([repo], cache=cache))
    assert counter.commands.count("log") == 2  # a new HEAD walks history again
    assert third["a.py"].last_changed == T0 + 200


def test_history_limit_leaves_older_files_at_zero(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "proj", {"old.py": "o\n"}, when=T0)
    commit(repo, {"new.py": "n\n"}, T0 + 10)
    found = files_of(scan([repo], ScanOptions(history_limit=1)))
    assert found["new.py"].last_changed == T0 + 10
    assert found["old.py"].last_changed == 0


def test_unborn_branch_has_no_head_and_newest_times(tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, {"a.py": "a\n"})
    root = scan([repo]).roots[0]
    assert root.is_git and root.head is None
    assert root.files[0].last_changed == NEWEST


# -- .repoctxignore, --include, --exclude -----------------------------------------------------

IGNORE_TREE = {
    ".repoctxignore": "*.txt\n!keep.txt\n/top.md\ncache/\n",
    "a.txt": "a\n",
    "keep.txt": "k\n",
    "sub/keep.txt": "k\n",
    "sub/b.txt": "b\n",
    "top.md": "t\n",
    "sub/top.md": "t\n",
    "cache/x.py": "x\n",
    "sub/cache/y.py": "y\n",
    "sub/cache.py": "c\n",
    "other/cache": "a file named like the folder pattern\n",
    "other/.repoctxignore": "!*.txt\n",
    "other/c.txt": "re-included by the deeper file\n",
    "cache/.repoctxignore": "!x.py\n",
}


@pytest.mark.parametrize("use_git", [True, False])
def test_repoctxignore_negation_anchoring_and_folders(tmp_path: Path, use_git: bool) -> None:
    if use_git:
        root = new_repo(tmp_path / "proj", IGNORE_TREE)
    else:
        root = tmp_path / "proj"
        write(root, IGNORE_TREE)
    snapshot = scan([root])
    assert snapshot.roots[0].is_git is use_git
    assert set(reasons(snapshot)) == {
        *("a.txt", "sub/b.txt", "top.md", "sub/cache/y.py"),
        *("cache/x.py", "cache/.repoctxignore"),  # a folder once ignored stays ignored
    }
    assert set(reasons(snapshot).values()) == {SkipReason.IGNORED}
    kept = set(files_of(snapshot))
    assert {"keep.txt", "sub/keep.txt", "sub/top.md", "sub/cache.py", "other/cache"} <= kept
    assert "other/c.txt" in kept


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    repo = new_repo(
        tmp_path / "proj",
        {
            "src/a.py": "a\n",
            "src/pkg/b.py": "b\n",
            "src/legacy/c.py": "c\n",
            "src/notes.txt": "n\n",
            "README.md": "r\n",
            "docs/guide.md": "g\n",
            "setup.cfg": "[x]\n",
        },
    )
    options = ScanOptions(include=("src/**/*.py", "*.md"), exclude=("legacy/",))
    snapshot = scan([repo], options)
    assert set(files_of(snapshot)) == {"src/a.py", "src/pkg/b.py", "README.md", "docs/guide.md"}
    skipped = skipped_of(snapshot)
    assert {p: s.reason for p, s in skipped.items()} == {
        "src/legacy/c.py": SkipReason.IGNORED,
        "src/notes.txt": SkipReason.IGNORED,
        "setup.cfg": SkipReason.IGNORED,
    }
    assert skipped["setup.cfg"].detail == "not matched by --include"
    assert skipped["src/legacy/c.py"].detail == ""


def test_exclude_is_root_relative_and_anchored(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, {"gen/a.py": "a\n", "lib/gen/b.py": "b\n", "c.py": "c\n"})
    snapshot = scan([root], ScanOptions(exclude=["/gen/"]))  # type: ignore[arg-type]
    assert set(files_of(snapshot)) == {"lib/gen/b.py", "c.py"}
    assert reasons(snapshot) == {"gen/a.py": SkipReason.IGNORED}


def test_bad_exclude_pattern_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path / "proj", {"a.py": "a\n"})
    with pytest.raises(UsageError, match="--exclude"):
        scan([tmp_path / "proj"], ScanOptions(exclude=("\\",)))


# -- plain folders ----------------------------------------------------------------------------


def test_plain_folder_applies_nested_gitignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "plain"
    write(
        root,
        {
            ".gitignore": "*.log\n!important.log\nbuilt/\n/only_top.py\n",
            "a.py": "a\n",
            "x.log": "x\n",
            "important.log": "i\n",
            "only_top.py": "t\n",
            "sub/only_top.py": "s\n",
            "built/out.py": "o\n",
            "sub/.gitignore": "!*.log\nsecret.txt\n",
            "sub/y.log": "y\n",
            "sub/secret.txt": "s\n",
            "secret.txt": "kept at the top\n",
            ".hg/store": "h\n",
            ".svn/entries": "s\n",
            "nested/.git/HEAD": "ref: refs/heads/main\n",
            "nested/n.py": "n\n",
        },
    )
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    snapshot = scan([root])
    found = files_of(snapshot)
    assert set(found) == {
        ".gitignore",
        "a.py",
        "important.log",
        "sub/only_top.py",
        "sub/.gitignore",
        "sub/y.log",
        "secret.txt",
        "nested/n.py",
    }
    assert not any(path.endswith(("built", ".hg", ".svn", ".git")) for path in listed)
    assert found["a.py"].blob_id == blob(b"a\n") and found["a.py"].last_changed == 0
    assert snapshot.roots[0].head is None and not snapshot.roots[0].is_git


# -- several roots ----------------------------------------------------------------------------


def test_roots_with_the_same_name_are_told_apart(tmp_path: Path) -> None:
    one = tmp_path / "a" / "proj"
    two = tmp_path / "b" / "proj"
    write(one, {"x.py": "1\n"})
    write(two, {"x.py": "2\n"})
    snapshot = scan([one, two, one, Path(f"{one}/.")])
    assert [root.name for root in snapshot.roots] == ["a/proj", "b/proj"]
    assert [f.key for f in snapshot.files] == ["a/proj/x.py", "b/proj/x.py"]


def test_root_names_grow_only_as_far_as_needed() -> None:
    paths = [Path("/w/x/a/proj"), Path("/w/y/a/proj"), Path("/w/lib"), Path("/proj")]
    assert root_names(paths) == ["x/a/proj", "y/a/proj", "lib", "proj"]


# -- content ----------------------------------------------------------------------------------


def test_encodings_and_binary_content(tmp_path: Path) -> None:
    japanese = "# 設定ファイルを読み込む\nprint('こんにちは')\n"
    root = tmp_path / "plain"
    write(
        root,
        {
            "latin.py": "# café résumé, naïve\n".encode("latin-1"),
            "sjis.py": japanese.encode("shift_jis"),
            "utf16.txt": "\ufeffhello wörld\n".encode("utf-16-le"),
            "bom.py": b"\xef\xbb\xbfx = 1\n",
            "crlf.py": b"a = 1\r\nb = 2\r\n",
            "blob.dat": b"\x89ABC\x00\x01\x02" * 10,
            "fake.png": "text in an image name\n",
            "empty.py": b"",
        },
    )
    snapshot = scan([root])
    found = files_of(snapshot)
    assert (found["latin.py"].text, found["latin.py"].encoding) == (
        "# café résumé, naïve\n",
        "cp1252",
    )
    assert found["sjis.py"].text == japanese and found["sjis.py"].encoding == "shift_jis"
    assert found["utf16.txt"].text == "hello wörld\n" and found["utf16.txt"].encoding == "utf-16-le"
    assert found["bom.py"].text == "x = 1\n" and found["bom.py"].encoding == "utf-8-sig"
    assert found["crlf.py"].text == "a = 1\r\nb = 2\r\n"
    assert found["bom.py"].blob_id == blob(b"\xef\xbb\xbfx = 1\n")
    assert reasons(snapshot) == {
        "blob.dat": SkipReason.BINARY,
        "fake.png": SkipReason.BINARY,
        "empty.py": SkipReason.EMPTY,
    }


def test_rules_skip_and_demote_and_can_be_overridden(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write(
        root,
        {
            "big.py": "x = 1\n" * 1000,
            "api_pb2.py": "message = 1\n",
            "gen.go": "// Code generated by protoc-gen-go. DO NOT EDIT.\npackage api\n",
            "package-lock.json": "{}\n",
            "vendor/lib/lib.go": "package lib\n",
            "main.go": "package main\n",
            "tests/test_main.py": "def test(): pass\n",
        },
    )
    small = Rules.from_mapping({"max_file_bytes": 1000})
    snapshot = scan([root], ScanOptions(rules=small))
    assert reasons(snapshot) == {
        "big.py": SkipReason.TOO_LARGE,
        "api_pb2.py": SkipReason.GENERATED,
        "gen.go": SkipReason.GENERATED,
        "package-lock.json": SkipReason.LOCK_FILE,
        "vendor/lib/lib.go": SkipReason.VENDORED,
    }
    assert files_of(snapshot)["tests/test_main.py"].kind is FileKind.TEST
    relaxed = Rules.from_mapping(
        {"skip_generated": False, "skip_vendored": False, "lock_files": [], "max_file_bytes": 9000}
    )
    loose = files_of(scan([root], ScanOptions(rules=relaxed)))
    assert loose["gen.go"].kind is loose["api_pb2.py"].kind is FileKind.GENERATED
    assert loose["vendor/lib/lib.go"].kind is FileKind.VENDORED
    assert loose["package-lock.json"].kind is FileKind.CONFIG
    assert loose["big.py"].kind is FileKind.SOURCE and loose["main.go"].language == "go"
    forced = Rules.from_mapping({"max_file_bytes": 1000, "keep": ["big.py", "*.json", "vendor/"]})
    kept = scan([root], ScanOptions(rules=forced))
    assert {"big.py", "package-lock.json", "vendor/lib/lib.go"} <= set(files_of(kept))
    assert set(reasons(kept)) == {"api_pb2.py", "gen.go"}


def test_tracked_files_in_build_folders_are_demoted_not_skipped(tmp_path: Path) -> None:
    sources = {
        "doc/build/conf.py": "project = 'x'\n",
        "doc/build/index.rst": "Welcome\n=======\n",
        "dist/cli.js": "export const run = () => 1\n",
        "build/app.min.js": "var a=1;\n",
        "lib/x.py": "X = 1\n",
    }
    repo = new_repo(tmp_path / "proj", sources)
    write(repo, {"doc/build/new.rst": "untracked\n", "dist/fresh.js": "untracked\n"})
    snapshot = scan([repo])
    found = files_of(snapshot)
    for path in ("doc/build/conf.py", "doc/build/index.rst", "dist/cli.js"):
        assert found[path].kind is FileKind.GENERATED, path
        assert found[path].kind_detail == TRACKED_IN_GENERATED_FOLDER, path
    assert found["lib/x.py"].kind is FileKind.SOURCE and found["lib/x.py"].kind_detail == ""
    assert reasons(snapshot) == {
        "build/app.min.js": SkipReason.GENERATED,  # its name says generated, not its folder
        "doc/build/new.rst": SkipReason.GENERATED,
        "dist/fresh.js": SkipReason.GENERATED,
    }
    plain = tmp_path / "plain"
    write(plain, sources)
    assert reasons(scan([plain])) == dict.fromkeys(
        ["build/app.min.js", "dist/cli.js", "doc/build/conf.py", "doc/build/index.rst"],
        SkipReason.GENERATED,
    )
    assert set(files_of(scan([repo], ScanOptions(use_git=False)))) == {"lib/x.py"}


def test_a_large_source_file_passes_the_default_byte_guard(tmp_path: Path) -> None:
    compiler = "".join(f"def visit_{i}(node):\n    return node.kids[{i}]\n" for i in range(9000))
    assert len(compiler) > 256 * 1024
    repo = new_repo(tmp_path / "proj", {"compiler.py": compiler, "absurd.py": "x = 1\n" * 20})
    snapshot = scan([repo])
    assert files_of(snapshot)["compiler.py"].size == len(compiler)
    capped = scan([repo], ScanOptions(rules=Rules.from_mapping({"max_file_bytes": 100})))
    assert skipped_of(capped)["compiler.py"].reason is SkipReason.TOO_LARGE
    assert skipped_of(capped)["absurd.py"].detail == "over 100 bytes (rules.max_file_bytes)"


def test_symlinks_inside_outside_and_broken(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("outside\n")
    repo = new_repo(tmp_path / "proj", {"real.py": "real\n", "pkg/m.py": "m\n"})
    os.symlink("real.py", repo / "alias.py")
    os.symlink(outside, repo / "escape.txt")
    os.symlink("missing.py", repo / "dangling.py")
    os.symlink("pkg", repo / "pkglink")
    os.symlink(".git/config", repo / "gitconfig")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links", when=T0 + 1)
    snapshot = scan([repo])
    found = files_of(snapshot)
    assert found["alias.py"].text == "real\n"
    assert found["alias.py"].blob_id == blob(b"real\n")
    assert reasons(snapshot) == {
        "escape.txt": SkipReason.OUTSIDE_ROOT,
        "dangling.py": SkipReason.BROKEN_LINK,
        "pkglink": SkipReason.NOT_A_FILE,
        "gitconfig": SkipReason.OUTSIDE_ROOT,
    }
    assert skipped_of(snapshot)["escape.txt"].detail == str(outside.resolve())


def test_fifo_is_reported_and_never_opened(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write(root, {"a.py": "a\n"})
    os.mkfifo(root / "pipe")
    outcome: list[Snapshot] = []
    worker = threading.Thread(target=lambda: outcome.append(scan([root])), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert outcome, "the scan blocked on a named pipe"
    assert skipped_of(outcome[0])["pipe"].reason is SkipReason.NOT_A_FILE
    assert skipped_of(outcome[0])["pipe"].detail == "named pipe"


def test_unreadable_file_is_reported_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(tmp_path / "proj", {"a.py": "a\n", "locked.py": "l\n"})
    real_open: Callable[..., Any] = os.open

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("locked.py"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    events: list[Event] = []
    snapshot = scan([repo], on_event=events.append)
    assert set(files_of(snapshot)) == {"a.py"}
    assert skipped_of(snapshot)["locked.py"].reason is SkipReason.UNREADABLE
    assert any(isinstance(e, Notice) and "locked.py" in e.message for e in events)


@pytest.mark.parametrize("tracked", [True, False], ids=["git", "plain folder"])
def test_a_file_name_that_is_not_utf8_is_skipped_under_its_escaped_name(
    tmp_path: Path, tracked: bool
) -> None:
    root = new_repo(tmp_path / "proj", {"a.py": "a\n"}) if tracked else tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "b.py").write_text("b\n")
    with open(os.fsencode(root) + b"/caf\xe9.py", "wb") as file:
        file.write(b"X = 1\n")
    if tracked:
        git(root, "add", "-A")
        git(root, "commit", "-qm", "a name in latin-1")
    snapshot = scan([root])
    assert "b.py" in files_of(snapshot)
    skipped = skipped_of(snapshot)["caf\\xe9.py"]
    assert skipped.reason is SkipReason.NAME_NOT_UTF8 and "rename" in skipped.detail


def test_a_root_whose_path_is_not_utf8_is_refused_with_what_to_do(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path) + b"/r\xe9po"
    os.mkdir(root)
    with open(root + b"/a.py", "wb") as file:
        file.write(b"a = 1\n")
    with pytest.raises(PathNotUtf8Error, match=r"r\\xe9po: .*not UTF-8.*rename"):
        scan([Path(os.fsdecode(root))])


def test_a_file_is_read_whole_whatever_size_its_stat_gave(tmp_path: Path) -> None:
    path = tmp_path / "grown.py"
    content = b"x = 1\n" * 100_000
    path.write_bytes(content)
    for listed_size in (0, 5, len(content) - 1, len(content), 10 * len(content)):
        data, status = scanner._read_file(str(path), listed_size)
        assert data == content and status.st_size == len(content)


# -- errors, events, determinism --------------------------------------------------------------


def test_errors_for_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="no such file"):
        scan([tmp_path / "missing"])
    (tmp_path / "file.py").write_text("x\n")
    with pytest.raises(NotADirectoryError_, match="not a directory"):
        scan([tmp_path / "file.py"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyRepositoryError, match="no files"):
        scan([tmp_path / "empty"])
    bare = tmp_path / "fresh"
    bare.mkdir()
    git(bare, "init", "-q")
    with pytest.raises(EmptyRepositoryError):
        scan([bare])
    ignored_only = tmp_path / "ignored"
    ignored_only.mkdir()
    git(ignored_only, "init", "-q")
    write(ignored_only, {".gitignore": "*\n", "a.log": "ignored\n"})
    with pytest.raises(EmptyRepositoryError, match="ignored"):
        scan([ignored_only])


def test_everything_skipped_is_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "proj", {"a.png": b"\x89PNG\x00", "b.py": b""})
    snapshot = scan([tmp_path / "proj"])
    assert snapshot.files == [] and len(snapshot.skipped) == 2
    assert snapshot.stats["skipped.binary"] == snapshot.stats["skipped.empty"] == 1


def test_progress_and_deterministic_order(tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i:03}.py": f"v = {i}\n" for i in range(300)}
    repo = new_repo(tmp_path / "proj", files)
    events: list[Event] = []
    first = scan([repo], on_event=events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0] == Progress("scan", 0, 300)
    assert progress[-1] == Progress("scan", 300, 300)
    assert any(0 < p.done < 300 for p in progress)
    paths = [f.path for f in first.files]
    assert paths == sorted(paths) and len(paths) == 300
    second = scan([repo])
    assert second.roots == first.roots


def test_git_environment_of_the_caller_does_not_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = new_repo(tmp_path / "other", {"other.py": "o\n"})
    repo = new_repo(tmp_path / "proj", {"mine.py": "m\n"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    root: RootSnapshot = scan([repo]).roots[0]
    assert [f.path for f in root.files] == ["mine.py"]
    assert gitinfo.NEWEST == NEWEST


def test_bulky_docs_and_data_have_a_lower_ceiling_than_source(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    big = "word " * 60_000  # 300 KB
    write(
        root,
        {
            "core.py": "x = 1\n" * 50_000,
            "docs/searchindex.js": big,
            "data/dump.csv": big,
            "guide.md": big,
        },
    )
    snapshot = scan([root], ScanOptions())
    assert reasons(snapshot) == {
        "docs/searchindex.js": SkipReason.TOO_LARGE,
        "data/dump.csv": SkipReason.TOO_LARGE,
        "guide.md": SkipReason.TOO_LARGE,
    }
    assert files_of(snapshot)["core.py"].kind is FileKind.SOURCE
    skipped = {s.path: s.detail for s in snapshot.skipped}
    assert "rules.max_bulk_file_bytes" in skipped["guide.md"]
    raised = Rules.from_mapping({"max_bulk_file_bytes": 1_000_000})
    assert reasons(scan([root], ScanOptions(rules=raised))) == {}


def test_pattern_translations_are_kept_by_the_pathspec_code_that_made_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    from repoctx.scan import ignore

    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    lines = ["*.py", "/build/", "docs/**/*.md", "!keep.py", "# comment"]
    first = ignore._Translations()
    expected = [first.regex(line) for line in lines]
    assert expected == [GitIgnoreSpecPattern.pattern_to_regex(line) for line in lines]
    first.save()

    def no_pathspec(line: str) -> tuple[str | None, bool | None]:
        raise AssertionError("translated again")

    monkeypatch.setattr(GitIgnoreSpecPattern, "pattern_to_regex", no_pathspec)
    assert [ignore._Translations().regex(line) for line in lines] == expected
    monkeypatch.setattr(ignore, "_translator_digest", lambda: "another pathspec")
    with pytest.raises(AssertionError, match="translated again"):
        ignore._Translations().regex(lines[0])
    monkeypatch.undo()
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    (tmp_path / "cache" / "gitignore-patterns.json").write_bytes(b"{broken")
    rebuilt = ignore._Translations()
    assert [rebuilt.regex(line) for line in lines] == expected
    with pytest.raises(ValueError):
        rebuilt.regex("\\")  # a lone backslash: not a pattern, and not kept


def test_unchanged_tracked_files_are_not_hashed_again_and_changes_are_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repoctx.scan import scanner as scan_module

    repo = new_repo(tmp_path / "proj", {f"m{i}.py": f"x = {i}\n" for i in range(4)})
    write(repo, {"new.py": "untracked\n"})
    cache = ContentCache.memory()
    first = files_of(scan([repo], cache=cache))  # the files are new: nothing recorded
    monkeypatch.setattr(scan_module, "SETTLED_NS", 0)
    assert files_of(scan([repo], cache=cache)) == first
    hashed: list[bytes] = []
    real = gitinfo.blob_id

    def counting(data: bytes) -> str:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(gitinfo, "blob_id", counting)
    assert files_of(scan([repo], cache=cache)) == first
    assert hashed == [b"untracked\n"]  # untracked files have no index blob to confirm
    status = (repo / "m1.py").stat()
    write(repo, {"m1.py": "x = 9\n"})  # same size, and the old mtime put back: ctime tells
    os.utime(repo / "m1.py", ns=(status.st_atime_ns, status.st_mtime_ns))
    found = files_of(scan([repo], cache=cache))
    assert found["m1.py"].text == "x = 9\n" and found["m1.py"].blob_id == blob(b"x = 9\n")
    assert found["m1.py"].last_changed == NEWEST
    assert sorted(hashed[1:]) == [b"untracked\n", b"x = 9\n"]


def test_files_are_offered_fresh_unless_a_record_vouched_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_fresh`` gets each file whose blob id was hashed, as it is read (work on new
    content starts during the scan): every file the first time, then the changed and the
    untracked ones."""
    repo = new_repo(tmp_path / "proj", {f"m{i}.py": f"x = {i}\n" for i in range(4)})
    write(repo, {"new.py": "untracked\n"})
    cache = ContentCache.memory()
    offered: list[SourceFile] = []
    first = files_of(scan([repo], cache=cache, on_fresh=offered.append))
    assert offered == list(first.values())
    monkeypatch.setattr(scanner, "SETTLED_NS", 0)
    scan([repo], cache=cache)  # the files have settled: their records are written
    offered.clear()
    assert files_of(scan([repo], cache=cache, on_fresh=offered.append)) == first
    assert [f.path for f in offered] == ["new.py"]
    write(repo, {"m2.py": "x = 22\n"})
    offered.clear()
    found = files_of(scan([repo], cache=cache, on_fresh=offered.append))
    assert [(f.path, f.blob_id, f.text) for f in offered] == [
        (name, found[name].blob_id, found[name].text) for name in ("m2.py", "new.py")
    ]  # offered before the scan dates the change (``last_changed``)
    assert found["m2.py"].text == "x = 22\n"


def test_a_file_changed_just_before_the_scan_is_not_recorded(tmp_path: Path) -> None:
    from repoctx.scan.scanner import STATUS_NAMESPACE

    repo = new_repo(tmp_path / "proj", {"a.py": "a\n"})
    cache = ContentCache.memory()
    scan([repo], cache=cache)
    assert cache.get(STATUS_NAMESPACE, str(repo.resolve())) in (None, {})
