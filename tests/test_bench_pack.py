"""`repoctx bench pack` runs every case in fresh processes, and the other packer after each
repoctx run, and prints the figures with the ratios (it asserts nothing about timings)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from repo_helpers import MakeRepo

from repoctx.cli.bench import main, measure
from repoctx.errors import PackError


def test_measure_reports_the_peak_memory_of_the_process_it_ran() -> None:
    grow = "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); print('done')"
    wall, peak_mib, out = measure(["python3", "-c", grow], dict(os.environ))
    assert out == b"done\n" and wall > 0 and peak_mib >= 64
    with pytest.raises(PackError, match="boom"):
        measure(["python3", "-c", "import sys; sys.exit('boom')"], dict(os.environ))


def test_the_pack_benchmark_times_another_packer_in_the_same_loop(
    make_repo: MakeRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    repo = make_repo({"app/main.py": "from app import util\n", "app/util.py": "x = 1\n"})
    calls = tmp_path / "calls"
    other = tmp_path / "otherpack"
    other.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    other.chmod(0o755)
    main([str(repo), "--runs", "2", "--against", str(other)])
    printed = capsys.readouterr().out
    for figure in ("cold", "new repository", "warm", "one-file edit", "otherpack wall s"):
        assert figure in printed
    lines = calls.read_text().splitlines()
    assert len(lines) == 8 and all(line.endswith(f"-o {os.devnull}") for line in lines)
    assert (repo / "app" / "util.py").read_text() == "x = 1\n"  # edits went to a copy


def test_an_other_packer_that_is_not_installed_is_named(make_repo: MakeRepo) -> None:
    repo = make_repo({"a.py": "x = 1\n"})
    assert shutil.which("no-such-packer") is None
    with pytest.raises(PackError, match="no-such-packer: not found"):
        main([str(repo), "--runs", "1", "--against", "no-such-packer"])
