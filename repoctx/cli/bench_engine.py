"""`repoctx bench engine`: prefill throughput, KV state I/O and time to first token of the
llama.cpp engine at several prompt lengths, each restore in a new process as a user meets it,
measured beside llama.cpp's own state-file API on the same state in the same run, the disk's own
speed and the page-locked copy speed (the limits). Prints figures; asserts nothing.

Per prompt length, the processes of cli/bench_measure.py: ``fresh`` (prefill, answer, copy to host
memory, background save, llama.cpp's file save, a follow-up from the live slot, one from host
memory), ``disk`` (restore from the page cache, then llama.cpp's file load), ``cold`` (the same
with both files evicted from the page cache) and ``edit`` (the last 2,000 tokens changed). With
``--llama-bench``, llama.cpp's llama-bench measures the same prefill with the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoctx.errors import UsageError

FILE_API_STATE = "llama-file-api.state"  # bench_measure's file for llama.cpp's own state API
_IO_SAMPLE_MAX = 8 << 30  # bytes written and read to measure the disk and the bus
GOAL_TOKENS = 131_072  # the first-token goals are set at 128K tokens
GOAL_TTFT_128K_S = 1.0
GOAL_RESIDENT_TTFT_S = 0.2
GOAL_COLD_SHARE = 0.8


@dataclass
class CaseReport:
    tokens: int
    figures: dict[str, float] = field(default_factory=dict)


def _run_child(
    mode: str, model: Path, tokens: int, kv: str, flash: bool, scratch: Path, deadline: float = 0
) -> dict[str, Any]:
    os.sync()  # no write-back of the step before runs during this one
    command = [sys.executable, "-c", "import sys; from repoctx.cli.bench_measure import "
               "child_main; child_main(sys.argv[1:])", mode, str(model), str(tokens), kv,
               "1" if flash else "0", str(scratch), str(deadline)]  # fmt: skip
    env = {**os.environ, "REPOCTX_HOME": str(scratch / "home"), "REPOCTX_ENGINE": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise UsageError(f"benchmark process ({mode}) failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # each process's own figures as it ends, so that a run cut short still shows them
    print(json.dumps({"process": mode, "tokens": tokens, **report}), file=sys.stderr, flush=True)
    return report


def llama_bench(binary: Path, model: Path, tokens: int, kv: str, flash: bool, batch: int) -> float:
    """llama-bench's prompt-processing throughput (tokens/s) for the same prompt length."""
    command = [str(binary), "-m", str(model), "-p", str(tokens), "-n", "0", "-r", "1",
               "-b", str(batch), "-ub", str(batch), "-fa", "1" if flash else "0",
               "-ctk", kv, "-ctv", kv, "-ngl", "99", "-o", "json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise UsageError(f"llama-bench failed:\n{done.stderr[-3000:]}")
    rows = json.loads(done.stdout)
    return float(rows[0]["avg_ts"])


def run_case(model: Path, tokens: int, kv: str, flash: bool, bench: Path | None) -> CaseReport:
    from repoctx.cli.bench_measure import disk_speed, pinned_copy_speed, read_through_page_cache

    case = CaseReport(tokens)
    if bench is not None:  # first: the prefill ratio is the figure a run cut short needs most
        reference = llama_bench(bench, model, tokens, kv, flash, 2048)
        print(json.dumps({"llama_bench_tok_s": reference}), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(
        prefix="repoctx-bench-kv-", dir=os.environ.get("REPOCTX_BENCH_DIR")
    ) as folder:
        scratch = Path(folder)
        fresh = _run_child("fresh", model, tokens, kv, flash, scratch)
        for path in scratch.rglob("*.state"):  # both states in the page cache, read as a file
            read_through_page_cache(path)  # that was just written or read usually is
        disk = _run_child("disk", model, tokens, kv, flash, scratch)
        cold = _run_child("cold", model, tokens, kv, flash, scratch)
        (scratch / FILE_API_STATE).unlink()  # room on the disk for the edited state
        resident = _resident_pair(model, tokens, kv, flash, scratch)
        sample = min(_IO_SAMPLE_MAX, fresh["state_bytes"])
        limits = {**disk_speed(scratch, sample), **pinned_copy_speed(sample)}
        print(json.dumps({"limits": limits}), file=sys.stderr, flush=True)
        edit = _run_child("edit", model, tokens, kv, flash, scratch)
    case.figures.update(_figures(fresh, disk, cold, edit, limits))
    case.figures.update(resident)
    if bench is not None:
        case.figures.update(
            llama_bench_tok_s=reference, prefill_ratio=case.figures["prefill_tok_s"] / reference
        )
    return case


def _resident_pair(
    model: Path, tokens: int, kv: str, flash: bool, scratch: Path
) -> dict[str, float]:
    """A `repoctx ask`-like client asks through a resident engine started for it (which
    restores the state the other processes saved); a new client process then asks another
    question on the same prompt."""
    engine = [sys.executable, "-m", "repoctx", "engine"]
    env = {**os.environ, "REPOCTX_HOME": str(scratch / "home"), "REPOCTX_ENGINE": ""}
    try:
        first = _run_child("resident", model, tokens, kv, flash, scratch)
        follow = _run_child("resident-follow", model, tokens, kv, flash, scratch)
    finally:
        subprocess.run([*engine, "stop"], env=env, capture_output=True, timeout=600)
    return {"resident_ttft_s": follow["ttft_s"], "resident_since_start_s": follow["since_start_s"],
            "resident_evaluated": follow["evaluated"], "resident_first_ttft_s": first["ttft_s"],
            "resident_first_restored": first["restored"]}  # fmt: skip


def _figures(
    fresh: dict[str, Any], disk: dict[str, Any], cold: dict[str, Any], edit: dict[str, Any],
    limits: dict[str, float],
) -> dict[str, float]:  # fmt: skip
    gb = fresh["state_bytes"] / 1e9
    figures = {
        "prefill_tok_s": fresh["prefill_tok_s"], "state_gb": gb, "slots": fresh["slots"],
        "pinned": float(fresh["pinned"]), "load_s": fresh["load_s"],
        "capture_gb_s": gb / fresh["capture_s"],
        "save_gb_s": gb / fresh["save_s"], "file_save_gb_s": gb / fresh["file_save_s"],
        "restore_gb_s": gb / disk["restore_s"], "file_restore_gb_s": gb / disk["file_restore_s"],
        "cold_restore_gb_s": gb / cold["restore_s"],
        "cold_file_restore_gb_s": gb / cold["file_restore_s"],
        "host_restore_gb_s": gb / max(fresh["host_restore_s"], 1e-9),
        "fresh_ttft_s": fresh["fresh_ttft_s"], "follow_up_ttft_s": fresh["follow_up_ttft_s"],
        "host_ttft_s": fresh["host_ttft_s"], "restored_ttft_s": disk["ttft_s"],
        "cold_ttft_s": cold["ttft_s"], "edited_ttft_s": edit["ttft_s"],
        "edited_evaluated": edit["evaluated"], **limits,
        "capture_alloc_s": fresh["capture_alloc_s"], "restore_alloc_s": disk["restore_alloc_s"],
        "restore_reserved_s": disk["reserved_s"], "restore_load_s": disk["load_s"],
        "restored_since_start_s": disk["since_start_s"], "spare_s": fresh["spare_s"],
        "spare_ttft_s": fresh["spare_ttft_s"],
    }  # fmt: skip
    if "copy_ttft_s" in fresh:
        figures["copy_ttft_s"] = fresh["copy_ttft_s"]
    figures["disk_read_best_gb_s"] = max(
        limits.get("disk_read_gb_s", 0.0), limits.get("disk_read_buffered_gb_s", 0.0)
    )
    figures["save_ratio"] = figures["save_gb_s"] / figures["file_save_gb_s"]
    figures["restore_ratio"] = figures["restore_gb_s"] / figures["file_restore_gb_s"]
    figures["cold_ratio"] = figures["cold_restore_gb_s"] / figures["cold_file_restore_gb_s"]
    return figures


def run_prefill_only(model: Path, tokens: int, kv: str, flash: bool, deadline: float) -> None:
    """A prefill of ``tokens`` from memory only (no state file), stopped after ``deadline``
    seconds if it has not finished: for contexts whose state does not fit on the disk."""
    from rich.console import Console

    with tempfile.TemporaryDirectory(prefix="repoctx-bench-kv-") as scratch:
        report = _run_child("prefill", model, tokens, kv, flash, Path(scratch), deadline)
    done, seconds = report["prefill_units"], report["prefill_s"]
    Console().print(
        f"prefill of a {tokens:,}-token prompt ({kv} KV, flash attention "
        f"{'on' if flash else 'off'}): {done:,} tokens in {seconds:,.1f} s = "
        f"{done / seconds:,.0f} tok/s on average, {report['tail_tok_s']:,.0f} tok/s over the "
        f"last tenth; model load {report['load_s']:.1f} s"
        + ("" if done >= tokens else f"; stopped at the {deadline:.0f} s deadline")
    )


_IO_COLUMNS = [
    ("tokens", "tokens"), ("prefill_tok_s", "prefill tok/s"),
    ("llama_bench_tok_s", "llama-bench tok/s"), ("prefill_ratio", "ratio"),
    ("state_gb", "state GB"), ("capture_gb_s", "to host GB/s"),
    ("pinned_d2h_gb_s", "pinned D2H GB/s"), ("host_restore_gb_s", "from host GB/s"),
    ("pinned_h2d_gb_s", "pinned H2D GB/s"), ("capture_alloc_s", "host alloc s"),
    ("restore_alloc_s", "restore alloc s"),
    ("restore_reserved_s", "reserved in load s"), ("save_gb_s", "save GB/s"),
    ("file_save_gb_s", "llama.cpp save GB/s"), ("save_ratio", "ratio"),
    ("disk_write_gb_s", "disk write GB/s"), ("restore_gb_s", "restore GB/s"),
    ("file_restore_gb_s", "llama.cpp restore GB/s"), ("restore_ratio", "ratio"),
    ("cold_restore_gb_s", "cold restore GB/s"), ("cold_file_restore_gb_s", "llama.cpp cold"),
    ("cold_ratio", "ratio"), ("disk_read_gb_s", "disk read GB/s"),
    ("disk_read_buffered_gb_s", "disk read buffered GB/s"),
]  # fmt: skip
_TTFT_COLUMNS = [
    ("tokens", "tokens"), ("fresh_ttft_s", "fresh"), ("follow_up_ttft_s", "follow-up, live"),
    ("spare_ttft_s", "new question, spare"), ("copy_ttft_s", "new question, stream copy"),
    ("spare_s", "readying the spare (idle)"),
    ("host_ttft_s", "from host memory"), ("restored_ttft_s", "from disk (page cache)"),
    ("cold_ttft_s", "from disk (cold)"), ("edited_ttft_s", "after an edit"),
    ("resident_first_ttft_s", "resident engine, from disk"),
    ("resident_ttft_s", "new process, resident engine"),
    ("resident_since_start_s", "same, from process start"),
    ("load_s", "model load"), ("restore_load_s", "model load, restoring process"),
    ("slots", "slots"),
]  # fmt: skip


def run_engine_bench(
    model: Path, sizes: list[int], kv: str, flash: bool, bench: Path | None
) -> None:
    from rich.console import Console

    console = Console()
    cases = []
    for size in sizes:
        case = run_case(model, size, kv, flash, bench)
        cases.append(case)
        console.print(json.dumps({"tokens": size, **case.figures}), soft_wrap=True)
    setting = f"{model.name}, {kv} KV, flash attention {'on' if flash else 'off'}"
    console.print(_table(f"state I/O: {setting}", _IO_COLUMNS, cases))
    console.print(_table(f"time to first token, s: {setting}", _TTFT_COLUMNS, cases))
    for line in goal_lines(cases):
        console.print(line, soft_wrap=True)


def _table(title: str, columns: list[tuple[str, str]], cases: list[CaseReport]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for _, heading in columns:
        table.add_column(heading, justify="right")
    for case in cases:
        figures = {"tokens": float(case.tokens), **case.figures}
        table.add_row(*[_cell(key, figures.get(key)) for key, _ in columns])
    return table


def goal_lines(cases: list[CaseReport]) -> list[str]:
    """The engine's goals, each with the figures it is judged on."""
    lines = []
    for case in cases:
        f = case.figures
        if case.tokens == GOAL_TOKENS and "resident_ttft_s" in f:
            verdict = "met" if f["resident_ttft_s"] <= GOAL_RESIDENT_TTFT_S else "missed"
            lines.append(f"{case.tokens:,} tokens: a follow-up from a new process, first token "
                         f"{f['resident_ttft_s']:.2f} s (goal <= {GOAL_RESIDENT_TTFT_S} s): "
                         f"{verdict}")  # fmt: skip
        if case.tokens == GOAL_TOKENS and "restored_ttft_s" in f:
            verdict = "met" if f["restored_ttft_s"] <= GOAL_TTFT_128K_S else "missed"
            lines.append(f"{case.tokens:,} tokens: first token after a restore from the page "
                         f"cache {f['restored_ttft_s']:.2f} s (goal <= {GOAL_TTFT_128K_S} s): "
                         f"{verdict}")  # fmt: skip
        if "disk_write_gb_s" in f:
            share = f["save_gb_s"] / f["disk_write_gb_s"]
            lines.append(f"{case.tokens:,} tokens: save {f['save_gb_s']:.2f} GB/s = {share:.2f}x "
                         f"the disk's write speed (goal >= 1.0): "
                         f"{'met' if share >= 1.0 else 'missed'}")  # fmt: skip
            share = f["cold_restore_gb_s"] / f["disk_read_best_gb_s"]
            lines.append(f"{case.tokens:,} tokens: cold restore {f['cold_restore_gb_s']:.2f} GB/s "
                         f"= {share:.2f}x the disk's read speed, the better of O_DIRECT and "
                         f"buffered (goal >= {GOAL_COLD_SHARE}): "
                         f"{'met' if share >= GOAL_COLD_SHARE else 'missed'}")  # fmt: skip
    return lines


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in ("tokens", "prefill_tok_s", "llama_bench_tok_s", "slots"):
        return f"{value:,.0f}"
    if "ratio" in key:
        return f"{value:.2f}x"
    return f"{value:.2f}"
