"""`repoctx bench pack`: runs of the packer, each in a fresh process (as a user runs it), with
wall time and peak memory: cold (nothing cached), new repository (what repoctx keeps per model
is there, the tokenizer derived from the model file, but nothing of this repository), warm,
and after a one-file edit; optionally against another packer (``--against repomix``) run in the
same loop, right after each repoctx run, so that both see the same load. Prints figures;
asserts nothing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from repoctx.errors import PackError

_CHILD = """
import json, os, sys, time
from pathlib import Path
start = time.perf_counter()
from repoctx.config import load_settings
from repoctx.pack.pipeline import build_pack
roots = [Path(sys.argv[1])]
model = sys.argv[2] or None
result = build_pack(roots, load_settings(roots, {"model": model, "budget": 10**9}))
from repoctx.cli.pack import write_output
pieces = result.pack.pieces()
write_output(Path(os.devnull), pieces)
print(json.dumps({"files": len(result.pack.segments), "tokens": result.pack.tokens,
                  "chars": sum(map(len, pieces)), "inside_s": time.perf_counter() - start,
                  "stages": result.timings}))
"""
GROUPS = ("cold", "new repository", "warm", "one-file edit")


@dataclass(frozen=True)
class Run:
    wall_s: float
    peak_mib: float  # the process and the children it waited for
    report: dict[str, Any]  # what a repoctx run says about itself; {} for the other packer


@dataclass
class Group:
    """The runs of one kind, repoctx's and the other packer's, taken in turns."""

    repoctx: list[Run]
    other: list[Run]


def measure(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds, peak resident MiB (with the children it waited for) and standard output of
    one run of ``argv``; PackError if it fails."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env
        )
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        if process.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")
            raise PackError(f"benchmark run of {argv[0]} failed:\n{message}")
    return wall, usage.ru_maxrss / 1024, out


def run_child(repo: Path, home: Path, model: str | None) -> Run:
    env = {**os.environ, "REPOCTX_HOME": str(home)}
    wall, peak, out = measure([sys.executable, "-c", _CHILD, str(repo), model or ""], env)
    return Run(wall, peak, json.loads(out))


def run_other(command: str, repo: Path) -> Run:
    """One run of the other packer, as its users run it: ``COMMAND PATH -o /dev/null``."""
    wall, peak, _ = measure([command, str(repo), "-o", os.devnull], dict(os.environ))
    return Run(wall, peak, {})


def run_pack_bench(
    path: Path, runs: int = 3, model: str | None = None, against: str | None = None
) -> None:
    """Measure and print. ``against``: a command (``repomix``) to time after each repoctx run on
    the same copy of the repository, for the ratios."""
    other = _resolve_command(against) if against else None
    other_name = Path(against).name if against else None
    console = Console()
    _compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="repoctx-bench-") as scratch:
        repo = Path(scratch) / path.resolve().name
        shutil.copytree(path, repo, symlinks=True)
        groups = {name: Group([], []) for name in GROUPS}

        def turn(group: str, home: Path) -> None:
            groups[group].repoctx.append(run_child(repo, home, model))
            if other is not None:
                groups[group].other.append(run_other(other, repo))

        model_home = _model_home(scratch, model)
        for number in range(runs):
            turn("cold", _fresh_home(scratch, number))
            known_model = Path(scratch) / f"home-model-{number}"
            shutil.copytree(model_home, known_model)
            turn("new repository", known_model)
        home = _fresh_home(scratch, "warm")
        run_child(repo, home, model)
        for _ in range(runs):
            turn("warm", home)
        edited_file = _edit_one_file(repo)
        for number in range(runs):
            _append_line(edited_file, f"# edit {number}\n")
            turn("one-file edit", home)
    _print(console, path, groups, edited_file, other_name)


def _compile_bytecode() -> None:
    """Write repoctx's bytecode where it is missing or stale, as pip does when it installs a
    package: otherwise, where Python may not write it (PYTHONDONTWRITEBYTECODE, an editable
    install's edited files), each run would compile the modules it imports again."""
    import compileall

    import repoctx

    compileall.compile_dir(Path(repoctx.__file__).parent, quiet=2)


def _resolve_command(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise PackError(f"{command}: not found on PATH; install it or pass its path")
    return found


def _fresh_home(scratch: str, name: object) -> Path:
    home = Path(scratch) / f"home-{name}"
    home.mkdir()
    return home


def _model_home(scratch: str, model: str | None) -> Path:
    """A home where repoctx has packed a one-file repository with ``model``: what it keeps per
    model is there, nothing of the benchmark's repository."""
    tiny = Path(scratch) / "one-file"
    tiny.mkdir()
    (tiny / "main.py").write_text("print('hello')\n", encoding="utf-8")
    home = _fresh_home(scratch, "model")
    run_child(tiny, home, model)
    return home


def _edit_one_file(repo: Path) -> Path:
    """A source file in the middle of the repository: the edit the benchmark repeats."""
    candidates = sorted(p for p in repo.rglob("*.py") if ".git" not in p.parts)
    if not candidates:
        candidates = sorted(p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts)
    return candidates[len(candidates) // 2]


def _append_line(file: Path, line: str) -> None:
    with file.open("a", encoding="utf-8") as handle:
        handle.write(line)


def _median_wall(runs: list[Run]) -> float:
    return statistics.median(r.wall_s for r in runs)


def _print(
    console: Console, path: Path, groups: dict[str, Group], edited: Path, against: str | None
) -> None:
    first = groups["cold"].repoctx[0].report
    table = Table(
        title=f"repoctx pack {path} ({first['files']:,} files packed, "
        f"{first['tokens']:,} tokens, {int(first['chars']) / 1e6:.1f}M characters)"
    )
    columns = ["run", "wall s (median)", "wall s (min)", "in-process s", "peak MiB"]
    if against:
        columns += [f"{against} wall s", "wall ratio", f"{against} peak MiB", "peak ratio"]
    for column in (*columns, "stages s"):
        table.add_column(column, justify="left" if column in ("run", "stages s") else "right")
    for name, group in groups.items():
        runs = group.repoctx
        median_run = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
        stages = median_run.report["stages"]
        assert isinstance(stages, dict)
        peak = max(r.peak_mib for r in runs)
        row = [
            name,
            f"{_median_wall(runs):.3f}",
            f"{min(r.wall_s for r in runs):.3f}",
            f"{float(median_run.report['inside_s']):.3f}",
            f"{peak:.0f}",
        ]
        if group.other:
            other_peak = max(r.peak_mib for r in group.other)
            row += [
                f"{_median_wall(group.other):.3f}",
                f"{_median_wall(runs) / _median_wall(group.other):.2f}x",
                f"{other_peak:.0f}",
                f"{peak / other_peak:.2f}x",
            ]
        stage_text = " ".join(f"{k}={v:.2f}" for k, v in stages.items())
        table.add_row(*row, stage_text)
    console.print(table)
    console.print(
        f"edited file: {edited.name}; cores: {os.cpu_count()}; runs per row: "
        f"{len(groups['cold'].repoctx)}"
        + (f"; {against} ran right after each repoctx run" if against else "")
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m repoctx.cli.bench PATH [--runs N] [--model M] [--against COMMAND]``."""
    parser = argparse.ArgumentParser(prog="python -m repoctx.cli.bench", description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model")
    parser.add_argument("--against", metavar="COMMAND")
    options = parser.parse_args(argv)
    run_pack_bench(options.path, options.runs, options.model, options.against)


if __name__ == "__main__":
    main()
