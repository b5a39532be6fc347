"""The processes that `repoctx bench engine` measures (see cli/bench_engine.py), and the references
it measures them against: llama.cpp's own state-file API on the same sequence, the disk's
sequential speed with O_DIRECT, and page-locked host<->device copies (the bus's limit).

Each mode runs in a new process and prints one JSON object as its last line.
"""

from __future__ import annotations

import llama_cpp  # isort: skip  # before numpy: on CUDA builds the other order crashes

import ctypes
import ctypes.util
import json
import mmap
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from repoctx.cli.bench_engine import FILE_API_STATE
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.engine.llama import LlamaEngine
from repoctx.events import CacheOutcome, Event, Progress
from repoctx.kv.store import KVStore
from repoctx.model.modelfile import read_model_info
from repoctx.model.prompt import Prompt

EDIT_FROM_END = 2000
FOLLOW_UP_TOKENS = 48
ANSWER = GenerationOptions(max_tokens=8)
_DIRECT_BLOCK = 64 << 20


def prompt_ids(vocab_size: int, count: int, seed: int, edit: bool = False) -> list[int]:
    """``count`` ordinary token ids (no specials: the first 256 ids of a byte-level BPE
    vocabulary are bytes, the last few hundred may be control tokens)."""
    rng = random.Random(seed)
    high = max(300, vocab_size - 300)
    ids = [rng.randrange(256, high) for _ in range(count)]
    if edit:
        cut = max(1, count - EDIT_FROM_END)
        ids[cut:] = [rng.randrange(256, high) for _ in range(count - cut)]
    return ids


class Recorder:
    """An event sink keeping each event with the time it came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []

    def __call__(self, event: Event) -> None:
        self.events.append((time.perf_counter(), event))

    def outcome(self) -> CacheOutcome:
        return [e for _, e in self.events if isinstance(e, CacheOutcome)][-1]

    def points(self, stage: str) -> list[tuple[float, int]]:
        events = self.events
        return [(t, e.done) for t, e in events if isinstance(e, Progress) and e.stage == stage]

    def stage(self, stage: str) -> tuple[float, int]:
        """Seconds between the first and last progress of ``stage``, and its units done."""
        points = self.points(stage)
        if len(points) < 2:
            return 0.0, 0
        return points[-1][0] - points[0][0], points[-1][1]

    def tail_rate(self, stage: str) -> float:
        """Units per second over the last tenth of ``stage`` (the rate at depth)."""
        points = self.points(stage)
        done = points[-1][1]
        tail = [p for p in points if p[1] >= done * 0.9]
        return (tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1e-9)


def child_main(argv: list[str]) -> None:
    """``mode model tokens kv flash scratch deadline``; prints a JSON report."""
    mode, model_path, tokens, kv, flash, scratch, deadline = argv
    count = int(tokens)
    info = read_model_info(model_path)
    if mode.startswith("resident"):
        print(json.dumps(_resident(info, count, kv, flash == "1", mode == "resident-follow")))
        return
    record = Recorder()
    started = time.perf_counter()
    store = KVStore(on_event=record, min_free_bytes=0)  # under REPOCTX_HOME, as a user's
    engine = LlamaEngine.open(
        info, count + 1024, record, kv_type=kv or None, flash_attn=flash == "1", store=store,
        persist=mode != "prefill",
    )  # fmt: skip
    report: dict[str, Any] = {"load_s": time.perf_counter() - started, "slots": engine.plan.slots}
    ids = prompt_ids(info.vocab_size, count, 7, edit=mode == "edit")
    files = Path(scratch) / FILE_API_STATE
    if mode == "prefill":
        report.update(_prefill_only(engine, ids, record, float(deadline)))
        print(json.dumps(report))
        os._exit(0)  # freeing a 1M-token context takes long and measures nothing
    report.update(_MODES[mode](engine, ids, record, files))
    engine.close()
    print(json.dumps(report))


def _answer(engine: Engine, ids: list[int], record: Recorder) -> dict[str, float]:
    done = engine.answer(Prompt(ids, len(ids)), ANSWER, record, threading.Event())
    outcome = record.outcome()
    return {"ttft_s": done.first_token_s, "restore_s": outcome.restore_s,
            "restored": outcome.restored_tokens, "evaluated": outcome.evaluated_tokens}  # fmt: skip


def _fresh(engine: LlamaEngine, ids: list[int], record: Recorder, files: Path) -> dict[str, Any]:
    """Prefill and answer; copy the state to host memory; save it in the background; save it
    with llama.cpp's file API; a follow-up from the live slot; one from host memory."""
    first = _answer(engine, ids, record)
    seconds, done = record.stage("prefill")
    report: dict[str, Any] = {"prefill_tok_s": done / seconds, "fresh_ttft_s": first["ttft_s"]}
    (slot,) = [s for s in engine.slots.holding() if s.tokens[: len(ids)] == ids]
    tokens = list(slot.tokens)
    began, allocating = time.perf_counter(), engine.pool.allocated_s
    engine.housekeep()
    report["capture_s"] = time.perf_counter() - began - engine.spare_s
    report["spare_s"] = engine.spare_s
    report["capture_alloc_s"] = engine.pool.allocated_s - allocating
    (state,) = [s for s in engine.host.states() if s.tokens == tokens]
    report["state_bytes"] = state.image.length
    report["pinned"] = state.image.buffer.pinned
    report["registered"] = state.image.buffer.registered
    began = time.perf_counter()
    engine.flush(lambda event: None)
    report["save_s"] = time.perf_counter() - began
    report["file_save_s"] = _file_api_save(engine, slot.seq, tokens, files)
    follow = [*tokens, *prompt_ids(engine.model.vocab_size, FOLLOW_UP_TOKENS, 8)]
    report["follow_up_ttft_s"] = _answer(engine, follow, record)["ttft_s"]
    report.update(_new_questions(engine, ids, record))
    for held in engine.slots.holding():
        engine._give_up(held, force=held is slot)  # the others hold little of their own
    engine.flush(lambda event: None)  # not measured here: the disk would share the CPU
    host = _answer(engine, ids, record)
    report.update(host_ttft_s=host["ttft_s"], host_restore_s=host["restore_s"])
    return report


def _new_questions(engine: LlamaEngine, ids: list[int], record: Recorder) -> dict[str, float]:
    """A new question on the prompt, from the spare readied after the first answer; then
    another with no spare ready, while a slot is free: llama.cpp copies the stream first."""
    vocab = engine.model.vocab_size
    spare = _answer(engine, [*ids, *prompt_ids(vocab, FOLLOW_UP_TOKENS, 9)], record)
    figures = {"spare_ttft_s": spare["ttft_s"]}
    if engine.slots.free() is not None:
        copied = _answer(engine, [*ids, *prompt_ids(vocab, FOLLOW_UP_TOKENS, 10)], record)
        figures["copy_ttft_s"] = copied["ttft_s"]
    return figures


def _disk(engine: LlamaEngine, ids: list[int], record: Recorder, files: Path) -> dict[str, Any]:
    """A new process: restore from disk (the page cache holds the file), then llama.cpp's file
    API on its own file."""
    allocating = engine.pool.allocated_s
    restored = _answer(engine, ids, record)
    restored["restore_alloc_s"] = engine.pool.allocated_s - allocating
    restored["reserved_s"] = engine.pool.reserved_s  # in the background, while the model loaded
    restored["since_start_s"] = time.time() - _PROCESS_START  # the load included
    return {**restored, "file_restore_s": _file_api_load(engine, files)}


def _cold(engine: LlamaEngine, ids: list[int], record: Recorder, files: Path) -> dict[str, Any]:
    """As ``_disk``, with both files dropped from the page cache first."""
    assert engine.store is not None
    for entry in engine.store.entries():
        drop_cached(entry.data_path)
    restored = _answer(engine, ids, record)
    drop_cached(files)
    return {**restored, "file_restore_s": _file_api_load(engine, files)}


def _edit(engine: LlamaEngine, ids: list[int], record: Recorder, files: Path) -> dict[str, Any]:
    return _answer(engine, ids, record)


_MODES = {"fresh": _fresh, "disk": _disk, "cold": _cold, "edit": _edit}


def _resident(info: Any, count: int, kv: str, flash: bool, follow: bool) -> dict[str, float]:
    """A client process of the resident engine (REPOCTX_HOME set by the parent): the prompt,
    or (``follow``) another question on it, as a second `repoctx ask` sends it."""
    from repoctx.resident.client import ResidentEngineFactory

    record = Recorder()
    ids = prompt_ids(info.vocab_size, count, 7)
    if follow:
        ids += prompt_ids(info.vocab_size, FOLLOW_UP_TOKENS, 8)
    engine = ResidentEngineFactory(kv or None, flash)(info, count + 1024, record)
    try:
        figures = _answer(engine, ids, record)
    finally:
        engine.close()
    figures["since_start_s"] = time.time() - _PROCESS_START
    return figures


_PROCESS_START = time.time()


def _prefill_only(
    engine: LlamaEngine, ids: list[int], record: Recorder, deadline: float
) -> dict[str, float]:
    cancel = threading.Event()
    if deadline > 0:
        threading.Timer(deadline, cancel.set).start()
    engine.answer(Prompt(ids, len(ids)), ANSWER, record, cancel)
    seconds, done = record.stage("prefill")
    return {"prefill_units": done, "prefill_s": seconds, "tail_tok_s": record.tail_rate("prefill")}


def _file_api_save(engine: LlamaEngine, seq: int, tokens: list[int], path: Path) -> float:
    array = (llama_cpp.llama_token * len(tokens))(*tokens)
    began = time.perf_counter()
    written = llama_cpp.llama_state_seq_save_file(
        engine.context.pointer, os.fsencode(path), seq, array, len(tokens)
    )
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)  # as the store does: a save is done when it is on the disk
    os.close(fd)
    seconds = time.perf_counter() - began
    if not written:
        raise RuntimeError("llama_state_seq_save_file failed")
    return seconds


def _file_api_load(engine: LlamaEngine, path: Path) -> float:
    """llama_state_seq_load_file into a free slot (the last one is emptied for it)."""
    seq = engine.slots.all[-1].seq
    engine._truncate(engine.slots.all[-1], 0)
    capacity = engine.plan.n_ctx
    tokens = (llama_cpp.llama_token * capacity)()
    count = ctypes.c_size_t(0)
    began = time.perf_counter()
    loaded = llama_cpp.llama_state_seq_load_file(
        engine.context.pointer, os.fsencode(path), seq, tokens, capacity, ctypes.byref(count)
    )
    seconds = time.perf_counter() - began
    engine.context.remove(seq)
    if not loaded:
        raise RuntimeError("llama_state_seq_load_file failed")
    return seconds


def read_through_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


def drop_cached(path: Path) -> None:
    """Evict ``path`` from the page cache (its pages are clean: it was fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_speed(folder: Path, size: int) -> dict[str, float]:
    """Sequential write (to the disk: O_DIRECT, then fsync) and read of ``size`` bytes in 64 MiB
    blocks, four at a time, in GB/s: what the disk itself does. Reads are measured both ways:
    O_DIRECT, and through the page cache (evicted first) with one sequential stream per thread,
    where the kernel's read-ahead can beat direct reads."""
    size = max(_DIRECT_BLOCK, size // _DIRECT_BLOCK * _DIRECT_BLOCK)
    path = folder / "disk-speed.bin"
    buffers = [mmap.mmap(-1, _DIRECT_BLOCK) for _ in range(4)]
    for index, buffer in enumerate(buffers):
        buffer.write(random.Random(index).randbytes(_DIRECT_BLOCK))
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0)
    fd = os.open(path, flags, 0o600)
    try:
        starts = range(0, size, _DIRECT_BLOCK)
        began = time.perf_counter()
        _blocks(starts, lambda i, at: os.pwrite(fd, buffers[i % 4], at))
        os.fsync(fd)
        write = time.perf_counter() - began
        began = time.perf_counter()
        _blocks(starts, lambda i, at: os.preadv(fd, [buffers[i % 4]], at))
        read = time.perf_counter() - began
    finally:
        os.close(fd)
    try:
        drop_cached(path)
        buffered = _buffered_read(path, size, buffers)
    finally:
        path.unlink()
    return {"disk_write_gb_s": size / write / 1e9, "disk_read_gb_s": size / read / 1e9,
            "disk_read_buffered_gb_s": size / buffered / 1e9}  # fmt: skip


def _buffered_read(path: Path, size: int, buffers: list[mmap.mmap]) -> float:
    """Seconds to read ``path`` through the page cache: four threads, each a contiguous
    quarter in order through a descriptor of its own."""
    quarter = -(-size // (4 * _DIRECT_BLOCK)) * _DIRECT_BLOCK

    def stream(index: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, index * quarter, quarter, os.POSIX_FADV_SEQUENTIAL)
            for at in range(index * quarter, min(size, (index + 1) * quarter), _DIRECT_BLOCK):
                os.preadv(fd, [buffers[index]], at)
        finally:
            os.close(fd)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(stream, range(4)))
    return time.perf_counter() - began


def _blocks(starts: range, move: Any) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda pair: move(*pair), enumerate(starts)))


_CUDA_RUNTIMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
_H2D, _D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost


def _cuda_runtime() -> ctypes.CDLL | None:
    """The CUDA runtime that llama.cpp's CUDA backend links against, if this machine has one."""
    names = [ctypes.util.find_library("cudart"), *_CUDA_RUNTIMES]
    names += [str(p) for p in Path("/usr/local/cuda/lib64").glob("libcudart.so*")]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def pinned_copy_speed(size: int) -> dict[str, float]:
    """Host<->device copies of ``size`` bytes from page-locked memory, measured in a process of
    its own (the CUDA context it creates goes with it): the bus's limit for moving a state in
    and out of the context. Empty without a CUDA runtime or a GPU."""
    import subprocess

    code = (
        "import sys; from repoctx.cli.bench_measure import copy_main; copy_main(int(sys.argv[1]))"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code, str(size)], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0 or not done.stdout.strip():
        return {}
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def copy_main(size: int) -> None:
    print(json.dumps(_pinned_copies(size)))


def _pinned_copies(size: int) -> dict[str, float]:
    """cudaMallocHost and cudaMemcpy of ``size`` bytes each way, best of three."""
    cuda = _cuda_runtime()
    if cuda is None:
        return {}
    host, device = ctypes.c_void_p(), ctypes.c_void_p()
    if cuda.cudaMallocHost(ctypes.byref(host), ctypes.c_size_t(size)) != 0:
        return {}
    try:
        if cuda.cudaMalloc(ctypes.byref(device), ctypes.c_size_t(size)) != 0:
            return {}
        try:
            ctypes.memset(host, 1, size)  # touched, as a state's image is
            return {f"pinned_{name}_gb_s": size / _best_copy(cuda, kind, host, device, size) / 1e9
                    for name, kind in (("h2d", _H2D), ("d2h", _D2H))}  # fmt: skip
        finally:
            cuda.cudaFree(device)
    finally:
        cuda.cudaFreeHost(host)


def _best_copy(
    cuda: ctypes.CDLL, kind: int, host: ctypes.c_void_p, device: ctypes.c_void_p, size: int
) -> float:
    target, source = (device, host) if kind == _H2D else (host, device)
    times = []
    for _ in range(3):
        began = time.perf_counter()
        if cuda.cudaMemcpy(target, source, ctypes.c_size_t(size), kind) != 0:
            raise RuntimeError("cudaMemcpy failed")
        times.append(time.perf_counter() - began)
    return min(times)
