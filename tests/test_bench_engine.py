"""`repoctx bench engine` end to end on a tiny synthetic model on the CPU: every process it
measures runs (the resident engine too) and every figure and goal line is printed. It asserts
what ran and what was printed, never how fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from repo_helpers import LLAMA3_VOCAB

from repoctx.model import synth

FIGURES = (
    "prefill_tok_s", "state_gb", "save_gb_s", "file_save_gb_s", "save_ratio", "restore_gb_s",
    "file_restore_gb_s", "restore_ratio", "cold_restore_gb_s", "cold_ratio", "host_ttft_s",
    "restored_ttft_s", "edited_ttft_s", "resident_ttft_s", "resident_first_ttft_s",
    "disk_write_gb_s", "disk_read_gb_s", "disk_read_buffered_gb_s", "restore_reserved_s",
    "restore_load_s", "restored_since_start_s",
)  # fmt: skip


def test_the_engine_benchmark_runs_every_case_and_prints_every_figure(tmp_path: Path) -> None:
    model = synth.write_synthetic_gguf(tmp_path / "tiny.gguf", synth.TINY, LLAMA3_VOCAB)
    env = {**os.environ, "REPOCTX_HOME": str(tmp_path / "home"), "COLUMNS": "250",
           "REPOCTX_BENCH_DIR": str(tmp_path)}  # fmt: skip
    command = [sys.executable, "-m", "repoctx", "bench", "engine", "--model", str(model),
               "--tokens", "3000", "--kv-type", "f16"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert report["tokens"] == 3000
    missing = [name for name in FIGURES if not report.get(name, 0) > 0]
    assert not missing, f"figures missing or not positive: {missing}"
    assert report["capture_alloc_s"] >= 0 and report["restore_alloc_s"] >= 0
    assert report["edited_evaluated"] == 2000, "an edit evaluates only what follows it"
    assert report["resident_evaluated"] <= 48 + 1, "the follow-up came from the live context"
    assert report["resident_first_restored"] == 2999, "the resident engine restored the state"
    assert "time to first token" in done.stdout and "cold restore" in done.stdout
    assert not list(tmp_path.glob("repoctx-bench-kv-*")), "the scratch folder was removed"
