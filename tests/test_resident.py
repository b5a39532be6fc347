"""The resident engine as users meet it: real server processes and real Unix sockets in private
REPOCTX_HOMEs, the scripted engine inside the server (``REPOCTX_ENGINE=fake``) wherever the
model is not the point, and the embedded model for the live context of a new process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import Events, git, stop_resident_engine, write_files

from repoctx import __version__
from repoctx.engine.base import GenerationOptions
from repoctx.errors import EngineError, EngineVersionError, ModelError
from repoctx.events import ModelReady, Notice, Token
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.model.prompt import Prompt
from repoctx.resident.channel import EngineConnection, try_connect
from repoctx.resident.client import RemoteEngine, ResidentEngineFactory, connect
from repoctx.resident.sockets import MAX_UNIX_PATH, lock_is_held
from repoctx.resident.wire import FrameReader, encode_frame, event_of, ids_payload

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
SCRIPTED = "This is a scripted answer."
LONG_ANSWER = " ".join(f"word{n}" for n in range(2000))  # 100 s at 0.05 s a word: never finishes
PROMPT = Prompt(list(range(100, 400)), 50)
QUICK = GenerationOptions(max_tokens=64)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A REPOCTX_HOME of this test, its server scripted and quick to leave when idle; whatever
    server runs there at the end is stopped."""
    home = tmp_path / "home"
    monkeypatch.setenv("REPOCTX_HOME", str(home))
    monkeypatch.setenv("REPOCTX_ENGINE", "fake")
    monkeypatch.setenv("REPOCTX_ENGINE_IDLE", "30")
    monkeypatch.delenv("REPOCTX_FAKE_ANSWER", raising=False)
    monkeypatch.delenv("REPOCTX_FAKE_TOKEN_S", raising=False)
    yield home
    stop_resident_engine(home)


@pytest.fixture(scope="module")
def model() -> ModelInfo:
    return read_model_info(default_model_path())


def slow_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next server started answers LONG_ANSWER at 0.05 s a word."""
    monkeypatch.setenv("REPOCTX_FAKE_ANSWER", LONG_ANSWER)
    monkeypatch.setenv("REPOCTX_FAKE_TOKEN_S", "0.05")


def repoctx(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repoctx", *args], cwd=ROOT, env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def status() -> dict[str, Any]:
    """The server's status (asked without ``hello``: it answers whatever its version)."""
    connection = try_connect()
    assert connection is not None, "no resident engine listens"
    try:
        return connection.request("status")
    finally:
        connection.close()


def running_version() -> str | None:
    """The version of the server that listens; None when none does."""
    connection = try_connect()
    if connection is None:
        return None
    try:
        return str(connection.request("status")["repoctx"])
    finally:
        connection.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def open_engine(model: ModelInfo, events: Events | None = None) -> RemoteEngine:
    engine = ResidentEngineFactory()(model, 4096, events or Events())
    assert isinstance(engine, RemoteEngine)
    return engine


def answer_in_thread(
    engine: RemoteEngine, events: Events, cancel: threading.Event | None = None
) -> threading.Thread:
    def run() -> None:
        engine.answer(PROMPT, QUICK, events, cancel or threading.Event())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: bool(events.of(Token)), "the first answer streams")
    return thread


# -- starting and stopping ----------------------------------------------------------------------


def test_the_first_client_starts_the_engine_and_a_second_reuses_it(
    home: Path, model: ModelInfo
) -> None:
    assert try_connect() is None
    events = Events()
    engine = open_engine(model, events)
    assert engine.ready.model == "scripted engine" and events.of(ModelReady) == [engine.ready]
    done = engine.answer(PROMPT, QUICK, events, threading.Event())
    assert (done.text, done.stop_reason) == (SCRIPTED, "end")
    assert "".join(t.text for t in events.of(Token)) == SCRIPTED
    assert events.outcome().source == "none"
    engine.close()  # the connection, not the server

    again = Events()
    second = open_engine(model, again)
    assert again.of(ModelReady) == [second.ready], "a loaded engine is reported as it is"
    second.answer(PROMPT, QUICK, again, threading.Event())
    assert (again.outcome().source, again.outcome().restored_tokens) == ("memory", len(PROMPT))
    second.close()
    state = status()
    assert state["pid"] != os.getpid() and state["requests_served"] == 4
    (loaded,) = state["engines"]
    assert loaded["model_path"] == str(model.path.absolute())
    assert loaded["ready"]["model"] == "scripted engine"


def test_two_clients_starting_at_once_start_one_server(home: Path) -> None:
    command = [sys.executable, "-m", "repoctx", "engine", "start"]
    starting = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=TIMEOUT) for process in starting]
    assert [process.returncode for process in starting] == [0, 0], outputs
    pids = {int(re.findall(r"\(pid (\d+)\)", stdout)[0]) for stdout, _ in outputs}
    assert pids == {status()["pid"]}
    log = (home / "run" / "engine.log").read_text()
    assert log.count("listening on") == 1


def test_status_and_stop_from_the_command_line(home: Path) -> None:
    idle = repoctx("engine", "status")
    assert idle.returncode == 3 and "not running" in idle.stdout
    idle_json = repoctx("engine", "status", "--json")
    assert idle_json.returncode == 3 and json.loads(idle_json.stdout)["running"] is False

    started = repoctx("engine", "start", "--idle-timeout", "45")
    assert started.returncode == 0, started.stderr
    socket_path = home / "run" / "engine.sock"
    assert f"listening on {socket_path}" in started.stdout
    again = repoctx("engine", "start")
    assert again.returncode == 0 and "already running" in again.stdout

    shown = repoctx("engine", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    assert state["running"] is True and state["repoctx"] == __version__
    assert (state["socket"], state["log"]) == (str(socket_path), str(home / "run" / "engine.log"))
    assert (state["idle_timeout_s"], state["engines"], state["busy"]) == (45, [], False)
    text = repoctx("engine", "status").stdout
    assert f"pid {state['pid']}" in text and str(socket_path) in text and "none loaded" in text

    stopped = repoctx("engine", "stop")
    assert stopped.returncode == 0 and f"stopped (pid {state['pid']})" in stopped.stdout
    assert not lock_is_held(home / "run" / "engine.lock") and not socket_path.exists()
    assert repoctx("engine", "status").returncode == 3
    assert "not running" in repoctx("engine", "stop").stdout


def test_the_folder_and_the_socket_are_owner_only(home: Path) -> None:
    (home / "run").mkdir(parents=True, mode=0o755)
    (home / "run").chmod(0o755)
    connect().close()
    modes = {name: (home / "run" / name).stat().st_mode & 0o777 for name in
             ("", "engine.sock", "engine.log", "engine.lock")}  # fmt: skip
    assert modes == {"": 0o700, "engine.sock": 0o600, "engine.log": 0o600, "engine.lock": 0o600}


def test_a_stale_socket_file_is_replaced(home: Path) -> None:
    socket_path = home / "run" / "engine.sock"
    socket_path.parent.mkdir(parents=True, mode=0o700)
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(socket_path))
    left_behind.close()  # the file stays, nobody listens: a server that was killed
    (home / "run" / "engine.lock").write_text("999999\n")
    connection = connect()
    assert connection.request("status")["pid"] == connection.server_pid
    connection.close()
    assert (home / "run" / "engine.lock").read_text() == f"{connection.server_pid}\n"


def test_a_socket_path_longer_than_unix_sockets_allow_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: ModelInfo
) -> None:
    home = tmp_path / ("a-very-long-folder-name-" * 5) / "home"
    monkeypatch.setenv("REPOCTX_HOME", str(home))
    monkeypatch.setenv("REPOCTX_ENGINE", "fake")
    monkeypatch.setenv("REPOCTX_ENGINE_IDLE", "30")
    socket_path = home / "run" / "engine.sock"
    assert len(os.fsencode(socket_path)) > MAX_UNIX_PATH
    try:
        started = repoctx("engine", "start")
        assert started.returncode == 0, started.stderr
        assert socket_path.is_socket()
        engine = open_engine(model)
        assert engine.answer(PROMPT, QUICK, Events(), threading.Event()).text == SCRIPTED
        engine.close()
        assert status()["socket"] == str(socket_path)
    finally:
        stop_resident_engine(home)


def test_the_engine_exits_when_idle(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOCTX_ENGINE_IDLE", "1.5")
    connection = connect()
    pid = connection.server_pid
    time.sleep(2)  # a client connected: not idle
    assert not gone(pid)
    connection.close()
    wait_for(lambda: gone(pid), "the idle server exits")
    assert "stopping: idle for" in (home / "run" / "engine.log").read_text()


def test_removing_the_socket_file_stops_the_engine(home: Path) -> None:
    connection = connect()
    pid = connection.server_pid
    connection.close()
    (home / "run" / "engine.sock").unlink()
    wait_for(lambda: gone(pid), "the server exits")
    assert "was removed or replaced" in (home / "run" / "engine.log").read_text()


def test_removing_repoctx_home_stops_the_engine_even_when_a_new_one_starts(home: Path) -> None:
    connection = connect()
    old = connection.server_pid
    connection.close()
    shutil.rmtree(home)
    connection = connect()  # a new server in a new home, whatever inode its socket gets
    assert connection.server_pid != old
    connection.close()
    wait_for(lambda: gone(old), "the server of the removed home exits")


# -- several clients, cancelling, errors --------------------------------------------------------


def test_a_second_clients_request_waits_for_the_first_and_is_told(
    home: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOCTX_FAKE_ANSWER", "one two three four five six seven eight")
    monkeypatch.setenv("REPOCTX_FAKE_TOKEN_S", "0.2")
    first, second = open_engine(model), open_engine(model)
    first_events, second_events = Events(), Events()
    thread = answer_in_thread(first, first_events)
    done = second.answer(PROMPT, QUICK, second_events, threading.Event())
    (notice, *_) = second_events.of(Notice)
    assert notice.level == "info" and "waits for another answer" in notice.message
    assert first_events.notices() == []
    thread.join(TIMEOUT)
    assert done.text == "one two three four five six seven eight"
    assert status()["clients"] == 2


def test_cancel_from_the_client_stops_the_answer_in_the_server(
    home: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_answers(monkeypatch)
    engine = open_engine(model)
    cancel, events = threading.Event(), Events()
    thread = threading.Timer(0.3, cancel.set)
    thread.start()
    done = engine.answer(PROMPT, QUICK, events, cancel)
    assert done.stop_reason == "cancelled" and 0 < len(done.text) < len(LONG_ANSWER)
    assert status()["busy"] is False
    assert engine.answer(PROMPT, GenerationOptions(max_tokens=2), events, threading.Event()).text


def test_a_client_that_disconnects_mid_answer_cancels_it(
    home: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_answers(monkeypatch)
    engine = open_engine(model)
    connection = engine.connection
    request = {"id": 50, "method": "answer", "params": {"prefix_tokens": 0}}
    connection.sock.sendall(encode_frame(request, ids_payload(PROMPT.ids)))
    reader = FrameReader(connection.sock)
    while True:
        frame = reader.read(TIMEOUT)
        assert frame is not None, "the server closed the connection"
        if "event" in frame.message and isinstance(event_of(frame.message), Token):
            break
    engine.close()
    wait_for(lambda: status()["busy"] is False, "the server stops the answer of a gone client")


def test_an_error_in_a_request_is_the_same_error_in_the_client(
    home: Path, model: ModelInfo, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelError) as local:
        read_model_info(missing)
    with pytest.raises(ModelError) as remote:
        open_engine(dataclasses.replace(model, path=missing))
    assert type(remote.value) is type(local.value)
    assert (str(remote.value), remote.value.exit_code) == (str(local.value), 4)
    changed = dataclasses.replace(model, fingerprint="0" * 64)
    with pytest.raises(ModelError, match="changed since this client read it"):
        open_engine(changed)


def test_a_server_that_dies_mid_answer_is_a_clear_error_and_the_next_request_restarts_it(
    home: Path, model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_answers(monkeypatch)
    engine = open_engine(model)
    killed = engine.connection.server_pid
    killer = threading.Timer(0.3, os.kill, (killed, signal.SIGKILL))
    killer.start()
    with pytest.raises(EngineError, match="stopped answering during answer") as error:
        engine.answer(PROMPT, QUICK, Events(), threading.Event())
    assert str(home / "run" / "engine.log") in str(error.value)
    monkeypatch.delenv("REPOCTX_FAKE_ANSWER")  # the next server answers at once
    events = Events()
    done = engine.answer(PROMPT, QUICK, events, threading.Event())
    assert done.text == SCRIPTED and engine.connection.server_pid != killed
    assert events.of(ModelReady) == [engine.ready]


def test_another_version_of_the_server_is_replaced(home: Path) -> None:
    old = subprocess.Popen(
        [sys.executable, "-c", "import repoctx; repoctx.__version__ = '0.0.1'\n"
         "from repoctx.resident.server import run_server; run_server()"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: running_version() == "0.0.1", "the old server listens")
        with pytest.raises(EngineVersionError, match=r"runs repoctx 0\.0\.1"):
            connect(start=False)
        connection: EngineConnection = connect(start=True)
        assert old.wait(TIMEOUT) == 0, "the old server stops cleanly"
        assert connection.server_pid != old.pid
        state = connection.request("status")
        assert (state["repoctx"], state["pid"]) == (__version__, connection.server_pid)
        connection.close()
    finally:
        old.kill()


# -- `repoctx ask` ------------------------------------------------------------------------------


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial", when=1_600_000_000)
    return path


SHAPES = {
    "shapes.py": '"""Areas and perimeters of simple shapes."""\n\nimport math\n\n\n'
    'def circle_area(radius: float) -> float:\n    """The area of a circle of ``radius``."""\n'
    "    return math.pi * radius * radius\n\n\ndef square_area(side: float) -> float:\n"
    "    return side * side\n\n\ndef rectangle_perimeter(width: float, height: float) -> float:\n"
    "    return 2 * (width + height)\n",
    "report.py": '"""Prints the area of a unit circle."""\n\nfrom shapes import circle_area\n\n\n'
    'def main() -> None:\n    print(f"unit circle: {circle_area(1.0):.3f}")\n\n\n'
    'if __name__ == "__main__":\n    main()\n',
}


def ask_json(repo: Path, question: str, *flags: str) -> dict[str, list[dict[str, Any]]]:
    done = repoctx("ask", str(repo), question, "--json", *flags, env={"REPOCTX_ENGINE": ""})
    assert done.returncode == 0, done.stderr
    records: dict[str, list[dict[str, Any]]] = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        records.setdefault(record.pop("event"), []).append(record)
    return records


def test_ask_uses_a_running_resident_engine_and_its_live_context(
    home: Path, tmp_path: Path
) -> None:
    assert repoctx("engine", "start").returncode == 0  # scripted: REPOCTX_ENGINE=fake
    repo = make_repo(tmp_path / "shapes", SHAPES)
    first = ask_json(repo, "What does circle_area return?")
    second = ask_json(repo, "What does circle_area return?")
    assert first["AnswerDone"][0]["text"] == SCRIPTED == second["AnswerDone"][0]["text"]
    assert [r["source"] for r in first["CacheOutcome"] + second["CacheOutcome"]] == [
        "none",
        "memory",
    ]
    assert status()["requests_served"] == 4


def test_ctrl_c_in_ask_stops_the_answer_in_the_server(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_answers(monkeypatch)
    assert repoctx("engine", "start").returncode == 0
    repo = make_repo(tmp_path / "shapes", SHAPES)
    process = subprocess.Popen(
        [sys.executable, "-m", "repoctx", "ask", str(repo), "Go on?", "--json"], cwd=ROOT,
        env={**os.environ, "REPOCTX_ENGINE": ""}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if json.loads(line)["event"] == "Token":
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, stderr
    last = json.loads(stdout.splitlines()[-1])
    assert last["event"] == "AnswerDone" and last["stop_reason"] == "cancelled"
    assert status()["busy"] is False, "the server stopped the answer"


def test_a_new_process_answers_from_the_live_context_of_the_embedded_model(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOCTX_ENGINE", "")  # the server runs llama.cpp
    repo = make_repo(tmp_path / "shapes", SHAPES)
    # A prefill evaluates the prompt's last token on its own, as the live context does when
    # asked again: the greedy answers agree token for token (batch shapes change logits).
    question = "Which function computes a perimeter?"
    first = ask_json(repo, question, "--max-tokens", "8")
    second = ask_json(repo, question, "--max-tokens", "8")
    (fresh,), (live,) = first["CacheOutcome"], second["CacheOutcome"]
    assert (fresh["source"], live["source"]) == ("none", "memory")
    assert live["prompt_tokens"] == fresh["prompt_tokens"]
    assert live["restored_tokens"] + live["evaluated_tokens"] == live["prompt_tokens"]
    assert live["evaluated_tokens"] <= 1, "the whole prompt was in the live context"
    assert second["AnswerDone"][0]["text"] == first["AnswerDone"][0]["text"]
    assert second["AnswerDone"][0]["text"].strip()
    (loaded,) = status()["engines"]
    assert loaded["ready"]["model"] == default_model_path().name
