"""`repoctx bench pack`: cold, warm and after-one-edit runs of the packer, each in a fresh
process (as a user runs it), with wall time and peak memory. Prints figures; asserts nothing."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from repoctx.errors import PackError

_CHILD = """
import json, os, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from repoctx.config import load_settings
from repoctx.pipeline import build_pack
roots = [Path(sys.argv[1])]
model = sys.argv[2] or None
result = build_pack(roots, load_settings(roots, {"model": model, "budget": 10**9}))
from repoctx.cli_pack import write_output
pieces = result.pack.pieces()
write_output(Path(os.devnull), pieces)
print(json.dumps({"files": len(result.pack.segments), "tokens": result.pack.tokens,
                  "chars": sum(map(len, pieces)), "inside_s": time.perf_counter() - start,
                  "stages": result.timings,
                  "peak_kib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}))
"""


@dataclass(frozen=True)
class Run:
    wall_s: float
    peak_mib: float
    report: dict[str, Any]


def run_child(repo: Path, home: Path, model: str | None) -> Run:
    env = {**os.environ, "REPOCTX_HOME": str(home)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(repo), model or ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise PackError(f"benchmark run failed:\n{stderr.decode(errors='replace')}")
    report = json.loads(stdout)
    return Run(wall, float(report["peak_kib"]) / 1024, report)


def run_pack_bench(path: Path, runs: int = 3, model: str | None = None) -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="repoctx-bench-") as scratch:
        repo = Path(scratch) / path.resolve().name
        shutil.copytree(path, repo, symlinks=True)
        cold = [run_child(repo, _fresh_home(scratch, n), model) for n in range(runs)]
        home = _fresh_home(scratch, "warm")
        run_child(repo, home, model)
        warm = [run_child(repo, home, model) for _ in range(runs)]
        edited_file = _edit_one_file(repo)
        edited = []
        for number in range(runs):
            _append_line(edited_file, f"# edit {number}\n")
            edited.append(run_child(repo, home, model))
        _print(console, path, {"cold": cold, "warm": warm, "one-file edit": edited}, edited_file)


def _fresh_home(scratch: str, name: object) -> Path:
    home = Path(scratch) / f"home-{name}"
    home.mkdir()
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


def _print(console: Console, path: Path, groups: dict[str, list[Run]], edited: Path) -> None:
    first = next(iter(groups.values()))[0].report
    table = Table(
        title=f"repoctx pack {path} ({first['files']:,} files packed, "
        f"{first['tokens']:,} tokens, {int(first['chars']) / 1e6:.1f}M characters)"
    )
    for column in (
        "run",
        "wall s (median)",
        "wall s (min)",
        "in-process s",
        "peak MiB",
        "stages s",
    ):
        table.add_column(column, justify="left" if column in ("run", "stages s") else "right")
    for name, runs in groups.items():
        walls = [r.wall_s for r in runs]
        median_run = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
        stages = median_run.report["stages"]
        assert isinstance(stages, dict)
        table.add_row(
            name,
            f"{statistics.median(walls):.3f}",
            f"{min(walls):.3f}",
            f"{float(median_run.report['inside_s']):.3f}",
            f"{max(r.peak_mib for r in runs):.0f}",
            " ".join(f"{k}={v:.2f}" for k, v in stages.items()),
        )
    console.print(table)
    console.print(
        f"edited file: {edited.name}; cores: {os.cpu_count()}; runs per row: "
        f"{len(next(iter(groups.values())))}"
    )
