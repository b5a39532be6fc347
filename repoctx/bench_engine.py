"""`repoctx bench engine`: prefill throughput, state save and restore, and time to first token
of the llama.cpp engine at several prompt lengths, each restore in a fresh process as a user
meets it. Prints figures; asserts nothing.

Each case: a fresh prefill of N tokens (then the state is saved); a new process restoring the
same prompt; a new process after an edit 2,000 tokens before the end; and a follow-up question
in the first process. With ``--llama-bench``, llama.cpp's own llama-bench measures the same
prompt length with the same batch, KV and flash-attention settings, for comparison.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repoctx.errors import UsageError

EDIT_FROM_END = 2000
FOLLOW_UP_TOKENS = 48


@dataclass
class CaseReport:
    tokens: int
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prompt_ids(vocab_size: int, count: int, seed: int, edit: bool = False) -> list[int]:
    """``count`` ordinary token ids (no specials: the first 256 ids of a byte-level BPE
    vocabulary are bytes, the last few hundred may be control tokens)."""
    rng = random.Random(seed)
    high = max(300, vocab_size - 300)
    ids = [rng.randrange(256, high) for _ in range(count)]
    if edit:
        cut = count - EDIT_FROM_END
        ids[cut:] = [rng.randrange(256, high) for _ in range(count - cut)]
    return ids


def child_main(argv: list[str]) -> None:
    """One measured process: ``mode model tokens kv flash store seed``; prints a JSON report."""
    import llama_cpp  # noqa: F401 - before numpy

    from repoctx.engine.base import GenerationOptions
    from repoctx.engine.llama import LlamaEngine
    from repoctx.events import CacheOutcome, Event
    from repoctx.kvstore import KVStore
    from repoctx.modelfile import read_model_info
    from repoctx.prompt import Prompt

    mode, model_path, tokens, kv, flash, store_dir, seed, deadline = argv
    count = int(tokens)
    info = read_model_info(model_path)
    events: list[tuple[float, Event]] = []

    def sink(event: Event) -> None:
        events.append((time.perf_counter(), event))

    started = time.perf_counter()
    store = KVStore(Path(store_dir), on_event=sink)
    persist = mode != "prefill"
    engine = LlamaEngine.open(info, count + 1024, sink, kv_type=kv or None,
                              flash_attn=flash == "1", store=store, persist=persist)  # fmt: skip
    loaded = time.perf_counter()
    ids = prompt_ids(info.vocab_size, count, int(seed), edit=(mode == "edit"))
    options = GenerationOptions(max_tokens=8)
    cancel = threading.Event()
    if float(deadline) > 0:
        threading.Timer(float(deadline), cancel.set).start()
    done = engine.answer(Prompt(ids, count), options, sink, cancel)
    if mode == "prefill":
        print(json.dumps({"load_s": loaded - started, **_prefill_curve(events)}))
        os._exit(0)
    report: dict[str, Any] = {"load_s": loaded - started, "ttft_s": done.first_token_s}
    outcome = next(e for _, e in events if isinstance(e, CacheOutcome))
    report.update(restored=outcome.restored_tokens, evaluated=outcome.evaluated_tokens,
                  restore_s=outcome.restore_s)  # fmt: skip
    report.update(_prefill_and_save(events))
    if mode == "fresh":
        follow = [*ids, *engine.llm.input_ids[count : engine.llm.n_tokens].tolist()]
        follow += prompt_ids(info.vocab_size, FOLLOW_UP_TOKENS, int(seed) + 1)
        again = engine.answer(Prompt(follow, count), options, lambda e: None, threading.Event())
        report["follow_up_ttft_s"] = again.first_token_s
    report["state_bytes"] = max((e.disk_bytes for e in store.entries()), default=0)
    engine.close()
    print(json.dumps(report))


def _prefill_curve(events: list[tuple[float, Any]]) -> dict[str, float]:
    """Tokens reached, average rate, and the rate over the last tenth (throughput at depth)."""
    from repoctx.events import Progress

    points = [(t, e.done) for t, e in events if isinstance(e, Progress) and e.stage == "prefill"]
    (t0, _), (t1, done) = points[0], points[-1]
    tail = [p for p in points if p[1] >= done * 0.9]
    tail_rate = (tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1e-9)
    return {"prefill_units": done, "prefill_s": t1 - t0, "tail_tok_s": tail_rate}


def _prefill_and_save(events: list[tuple[float, Any]]) -> dict[str, float]:
    from repoctx.events import Progress

    figures: dict[str, float] = {}
    for stage in ("prefill", "save"):
        times = [t for t, e in events if isinstance(e, Progress) and e.stage == stage]
        done = [e for _, e in events if isinstance(e, Progress) and e.stage == stage]
        if len(times) >= 2:
            figures[f"{stage}_s"] = times[-1] - times[0]
            figures[f"{stage}_units"] = done[-1].done
    return figures


def _run_child(
    mode: str, model: Path, tokens: int, kv: str, flash: bool, store: Path, deadline: float = 0
) -> dict[str, Any]:
    command = [sys.executable, "-c", "import sys; from repoctx.bench_engine import child_main; "
               "child_main(sys.argv[1:])", mode, str(model), str(tokens), kv,
               "1" if flash else "0", str(store), "7", str(deadline)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise UsageError(f"benchmark process failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
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
    case = CaseReport(tokens)
    with tempfile.TemporaryDirectory(
        prefix="repoctx-bench-kv-", dir=os.environ.get("REPOCTX_BENCH_DIR")
    ) as scratch:
        store = Path(scratch)
        fresh = _run_child("fresh", model, tokens, kv, flash, store)
        case.figures.update(
            prefill_tok_s=fresh["prefill_units"] / fresh["prefill_s"],
            fresh_ttft_s=fresh["ttft_s"],
            follow_up_ttft_s=fresh["follow_up_ttft_s"],
            load_s=fresh["load_s"],
            state_gb=fresh["state_bytes"] / 1e9,
        )
        if "save_s" in fresh:
            case.figures.update(
                save_s=fresh["save_s"], save_gb_s=fresh["state_bytes"] / 1e9 / fresh["save_s"]
            )
        same = _run_child("same", model, tokens, kv, flash, store)
        edit = _run_child("edit", model, tokens, kv, flash, store)
        case.figures.update(
            restore_s=same["restore_s"],
            restore_gb_s=fresh["state_bytes"] / 1e9 / max(same["restore_s"], 1e-9),
            restored_ttft_s=same["ttft_s"],
            edited_ttft_s=edit["ttft_s"],
            edited_evaluated=edit["evaluated"],
        )
    if bench is not None:
        reference = llama_bench(bench, model, tokens, kv, flash, 2048)
        case.figures.update(
            llama_bench_tok_s=reference, ratio=case.figures["prefill_tok_s"] / reference
        )
    return case


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


def run_engine_bench(
    model: Path, sizes: list[int], kv: str, flash: bool, bench: Path | None
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    columns = [("tokens", "tokens"), ("prefill_tok_s", "prefill tok/s"),
               ("llama_bench_tok_s", "llama-bench tok/s"), ("ratio", "ratio"),
               ("fresh_ttft_s", "fresh TTFT s"), ("state_gb", "state GB"), ("save_s", "save s"),
               ("save_gb_s", "save GB/s"), ("restore_s", "restore s"),
               ("restore_gb_s", "restore GB/s"),
               ("restored_ttft_s", "restored TTFT s"), ("edited_ttft_s", "edit TTFT s"),
               ("follow_up_ttft_s", "follow-up TTFT s"), ("load_s", "model load s")]  # fmt: skip
    table = Table(
        title=f"repoctx bench engine: {model.name}, {kv} KV, flash attention "
        + ("on" if flash else "off")
    )
    for _, title in columns:
        table.add_column(title, justify="right")
    for size in sizes:
        case = run_case(model, size, kv, flash, bench)
        figures = {"tokens": float(size), **case.figures}
        table.add_row(*[_cell(key, figures.get(key)) for key, _ in columns])
        console.print(json.dumps({"tokens": size, **case.figures}))
    console.print(table)


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in ("tokens", "prefill_tok_s", "llama_bench_tok_s"):
        return f"{value:,.0f}"
    if key == "ratio":
        return f"{value:.3f}"
    return f"{value:.2f}"
