"""`repoctx pack` as a user runs it: a separate process, real exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo_helpers import MakeRepo, git

from repoctx.model.choice import MODEL_ENV

FILES = {"app.py": "import util\nprint(util.X)\n", "util.py": "X = 1\n"}


def repoctx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repoctx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=120,
    )


def test_pack_prints_the_exact_model_text(make_repo: MakeRepo) -> None:
    done = repoctx("pack", str(make_repo(FILES)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<repository_pack")
    assert done.stdout.index('path="proj/util.py"') < done.stdout.index('path="proj/app.py"')
    assert done.stderr == ""


def test_a_pack_that_shows_nothing_on_stderr_never_imports_rich(make_repo: MakeRepo) -> None:
    """rich draws what shows on stderr (a bar after a second, notices) and --stats, --graph."""
    repo = make_repo(FILES)
    assert repoctx("pack", str(repo)).returncode == 0  # the tokenizer derived, files counted
    probe = (
        "import sys\n"
        "from repoctx.cli.main import cli\n"
        "cli(['pack', sys.argv[1]], standalone_mode=False)\n"
        "sys.stderr.write(' '.join(m for m in sys.modules if m.split('.')[0] == 'rich'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(repo)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("<repository_pack")
    assert done.stderr == ""


def test_stats_and_output_file(make_repo: MakeRepo, tmp_path: Path) -> None:
    out = tmp_path / "pack.md"
    done = repoctx("pack", str(make_repo(FILES)), "--stats", "--format", "markdown", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "proj/util.py" in done.stdout and "By language" in done.stdout
    assert "2 files packed" in done.stdout and f"written to {out}" in done.stdout
    assert out.read_text().startswith("# Repository pack: proj")


def test_json_format_carries_files_edges_and_omissions(make_repo: MakeRepo) -> None:
    repo = make_repo({**FILES, "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00"})
    done = repoctx("pack", str(repo), "--format", "json")
    document = json.loads(done.stdout)
    assert [f["path"] for f in document["files"]] == ["proj/util.py", "proj/app.py"]
    assert document["edges"] == {"proj/app.py": ["proj/util.py"]}
    assert document["omitted"][0]["key"] == "proj/logo.png"
    assert document["omitted"][0]["reason"] == "binary"


def test_graph_shows_edges_and_cycles(make_repo: MakeRepo) -> None:
    repo = make_repo({**FILES, "a.py": "import b\n", "b.py": "import a\n"})
    done = repoctx("pack", str(repo), "--graph")
    assert done.returncode == 0, done.stderr
    assert "proj/app.py\n    imports proj/util.py" in done.stdout
    assert "cycle 1: proj/a.py <-> proj/b.py" in done.stdout
    assert "every edge points backwards" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["does-not-exist"], 2, "no such file or directory"),
        (["FILE"], 2, "is a file, not a directory"),
        (["EMPTY"], 3, "the repository has no files"),
        (["BINARY"], 3, "none of its 1 files can be packed"),
        (["REPO", "--budget", "5"], 2, "pass --budget"),
        (["REPO", "--budget", "0"], 2, "budget must be a positive number"),
        (["REPO", "--model", "missing.gguf"], 4, "missing.gguf"),
        (["REPO", "--model", "NOTGGUF"], 4, "GGUF"),
    ],
)
def test_bad_input_gets_one_line_that_says_what_to_do(
    make_repo: MakeRepo, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "a-file.txt").write_text("x")
    (tmp_path / "not.gguf").write_text("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    places = {
        "FILE": str(tmp_path / "a-file.txt"),
        "EMPTY": str(empty),
        "BINARY": str(make_repo({"x.bin": b"\x00\x01\x02"}, name="bin")),
        "REPO": str(make_repo(FILES)),
        "NOTGGUF": str(tmp_path / "not.gguf"),
    }
    done = repoctx("pack", *[places.get(a, a) for a in args], cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("repoctx: ") and done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_output_file_is_not_touched_when_the_pack_fails(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    out = tmp_path / "keep.xml"
    out.write_text("precious")
    done = repoctx("pack", str(make_repo(FILES)), "--budget", "5", "-o", str(out))
    assert done.returncode == 2
    assert out.read_text() == "precious"


def test_non_utf8_files_are_decoded(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "latin.txt": "café crème\n".encode("latin-1"),
            "jp.txt": "日本語のテキスト\n".encode("shift_jis"),
        }
    )
    done = repoctx("pack", str(repo))
    assert "café crème" in done.stdout and "日本語のテキスト" in done.stdout


def test_help_is_instant_and_lists_the_commands() -> None:
    done = repoctx("--help")
    assert done.returncode == 0 and "pack" in done.stdout


def test_output_to_a_pipe_or_through_a_symlink_keeps_them(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    done = repoctx("pack", str(make_repo(FILES)), "-o", str(fifo))
    reader.join(30)
    assert done.returncode == 0, done.stderr
    assert received and received[0].startswith(b"<repository_pack")
    assert fifo.is_fifo()

    target = tmp_path / "real.xml"
    target.write_text("old")
    link = tmp_path / "link.xml"
    link.symlink_to(target)
    assert repoctx("pack", str(make_repo(FILES, name="two")), "-o", str(link)).returncode == 0
    assert link.is_symlink() and target.read_text().startswith("<repository_pack")


def test_output_to_a_directory_is_refused(make_repo: MakeRepo, tmp_path: Path) -> None:
    done = repoctx("pack", str(make_repo(FILES)), "-o", str(tmp_path))
    assert done.returncode == 2 and "is a directory" in done.stderr


def test_a_model_name_not_yet_downloaded_says_how_to_get_it(make_repo: MakeRepo) -> None:
    name = "llama-3-8b-instruct-gradient-1048k"
    env = {**os.environ, MODEL_ENV: name}
    done = subprocess.run(
        [sys.executable, "-m", "repoctx", "pack", str(make_repo(FILES))],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 4 and f"run `repoctx models pull {name}`" in done.stderr
