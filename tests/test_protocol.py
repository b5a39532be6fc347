"""`repoctx serve --stdio` driven for real: a client spawns the server with the scripted engine
against a temporary git repository and checks every method, overlapping requests, every error
and the exits. Every wait has a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MakeRepo

from repoctx.conversations import ConversationStore
from repoctx.protocol.params import EditorContext, compose_question
from repoctx.protocol.rpc import MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 20.0
LONG_ANSWER = " ".join(f"word{i}" for i in range(200))

FILES = {
    "app/main.py": "from app.util import greet\n\n\ndef main():\n    print(greet('x'))\n",
    "app/util.py": "def greet(name):\n    return f'hello {name}'\n",
    "app/__init__.py": '"""The app."""\n',
}


def is_jsonrpc(message: Any) -> bool:
    """A JSON-RPC 2.0 response or notification as the server may write it."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return False
    if "method" in message:
        return isinstance(message["method"], str) and isinstance(message.get("params"), dict)
    if "id" not in message or ("result" in message) == ("error" in message):
        return False
    error = message.get("error")
    if error is not None:
        return isinstance(error.get("code"), int) and isinstance(error.get("message"), str)
    return True


class Client:
    """The server in a subprocess; stdout lines are collected by a thread."""

    def __init__(self, cwd: Path, **env: str) -> None:
        paths = [env.pop("PYTHONPATH", ""), str(ROOT), os.environ.get("PYTHONPATH", "")]
        environment = {**os.environ, "REPOCTX_ENGINE": "fake", **env}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "repoctx", "serve", "--stdio"],
            cwd=cwd,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = threading.Condition()
        self._next_id = 0
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                try:
                    self.messages.append(json.loads(line))
                except ValueError:
                    self.messages.append({"unparsable": line.decode("utf-8", "replace")})
                self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def request(self, method: str, params: Any = None, request_id: Any = None) -> Any:
        if request_id is None:
            self._next_id += 1
            request_id = self._next_id
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    def wait_for(self, found: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (value := found()):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; stdout so far: {self.lines[-5:]}"
                self._changed.wait(left)
            return value

    def response(self, request_id: Any, timeout: float = WAIT_S) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((m for m in self.responses() if m.get("id") == request_id), None)

        found: dict[str, Any] = self.wait_for(find, timeout)
        return found

    def responses(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "method" not in m]

    def reply_to_raw(self, line: bytes) -> dict[str, Any]:
        """Sends one raw line and returns the next response."""
        before = len(self.responses())
        self.send_raw(line)
        replies: list[dict[str, Any]] = self.wait_for(lambda: self.responses()[before:])
        return replies[0]

    def call(self, method: str, params: Any = None) -> Any:
        reply = self.response(self.request(method, params))
        assert "error" not in reply, reply
        return reply["result"]

    def error(self, method: str, params: Any = None, request_id: Any = None) -> dict[str, Any]:
        reply = self.response(self.request(method, params, request_id))
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    def notes(self, method: str, request_id: Any) -> list[dict[str, Any]]:
        with self._changed:
            return [
                m["params"]
                for m in self.messages
                if m.get("method") == method and m["params"].get("id") == request_id
            ]

    def tokens(self, request_id: Any) -> str:
        return "".join(p["text"] for p in self.notes("$/token", request_id))

    def open(self, repo: Path, **params: Any) -> dict[str, Any]:
        self.call("initialize", {"protocolVersion": 1, "clientInfo": {"name": "tests"}})
        result: dict[str, Any] = self.call("context/open", {"roots": [str(repo)], **params})
        return result

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def finish(self, timeout: float = WAIT_S) -> int:
        """Waits for the process to exit; checks that stdout held JSON-RPC lines only."""
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        for thread in self._threads:
            thread.join(5)
        for line in self.lines:
            assert line.endswith(b"\n") and is_jsonrpc(json.loads(line)), line
        assert b"Traceback" not in self.stderr, self.stderr.decode()
        return code


@pytest.fixture
def repo(make_repo: MakeRepo) -> Path:
    return make_repo(FILES)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    started: list[Client] = []

    def start(**env: str) -> Client:
        client = Client(tmp_path, **env)
        started.append(client)
        return client

    yield start
    for client in started:
        if client.process.poll() is None:
            client.process.kill()
            client.process.wait(5)


def test_every_method_in_one_session(repo: Path, spawn: Callable[..., Client]) -> None:
    client = spawn()
    hello = client.call("initialize", {"protocolVersion": 1})
    assert hello["protocolVersion"] == 1 and hello["serverInfo"]["name"] == "repoctx"
    methods = set(hello["capabilities"]["methods"])
    assert {"ask", "cancel", "context/open", "context/refresh", "conversation/list"} <= methods
    opened_id = client.request("context/open", {"roots": [str(repo)], "exclude": ["nothing/**"]})
    stats = client.response(opened_id)["result"]
    assert stats["files"] == 3 and stats["omitted"] == 0 and stats["model"].endswith(".gguf")
    assert 0 < stats["tokens"] <= stats["budget"]
    assert {p["stage"] for p in client.notes("$/progress", opened_id)} >= {"scan"}

    first = client.request("ask", {"question": "What does main do?"})
    answer = client.response(first)["result"]
    assert answer["text"] == "This is a scripted answer." == client.tokens(first)
    # context/open prefilled the pack: the question starts from the live context
    assert stats["cache"]["source"] == "none" and stats["cache"]["evaluatedTokens"] > 0
    assert answer["stopReason"] == "end" and answer["cache"]["source"] == "memory"
    conversation = answer["conversationId"]
    follow = client.call("ask", {"question": "And greet?", "conversationId": conversation})
    assert follow["conversationId"] == answer["conversationId"]
    listed = client.call("conversation/list")["conversations"]
    assert [(c["id"], c["messages"], c["title"]) for c in listed] == [
        (answer["conversationId"], 4, "What does main do?")
    ]

    (repo / "app" / "util.py").write_text("def greet(name):\n    return name\n")
    refreshed = client.call("context/refresh")
    assert refreshed["changed"] == 1 and 0 < refreshed["unchangedTokens"] < refreshed["tokens"]
    again = client.call("ask", {"question": "Now?", "conversationId": answer["conversationId"]})
    assert again["cache"]["source"] == "memory"
    assert 0 < again["cache"]["evaluatedTokens"] < again["promptTokens"]

    assert client.call("cancel", {"id": 999}) == {"cancelled": False}
    assert client.call("shutdown") is None
    assert client.error("ask", {"question": "late"})["code"] == -32600
    client.notify("exit")
    assert client.finish() == 0


def test_editor_context_goes_into_the_question(repo: Path, spawn: Callable[..., Client]) -> None:
    client = spawn()
    client.open(repo)
    context = {
        "path": str(repo / "app" / "util.py"),
        "selection": "def greet(name):\n    return f'hello {name}'\n",
        "startLine": 1,
        "endLine": 2,
        "language": "python",
    }
    answer = client.call("ask", {"question": "Why an f-string?", "context": context})
    stored = ConversationStore().get([repo], answer["conversationId"])
    assert stored is not None
    assert stored.messages[0].content == (
        "Why an f-string?\n\nSelected in `proj/app/util.py` (lines 1-2):\n\n"
        "```python\ndef greet(name):\n    return f'hello {name}'\n```"
    )
    client.close_stdin()
    assert client.finish() == 0


def test_a_question_gets_the_files_it_names_that_the_pack_left_out(
    make_repo: MakeRepo, spawn: Callable[..., Client]
) -> None:
    report = "".join(
        f"def report_line_{i}(sales):\n    return sales[{i}] * {i}\n\n\n" for i in range(40)
    )
    repo = make_repo({**FILES, "app/report.py": report}, name="shop")
    client = spawn()
    hello = client.call("initialize", {"protocolVersion": 1})
    assert "$/tail" in hello["capabilities"]["notifications"]
    stats = client.call("context/open", {"roots": [str(repo)], "budget": 200})
    assert stats["omitted"] >= 1
    asked = client.request("ask", {"question": "What does app/report.py compute?"})
    answer = client.response(asked)["result"]
    tail = answer["tail"]
    assert tail["files"] == tail["named"] == ["shop/app/report.py"] and tail["reduced"] == []
    assert 0 < tail["tokens"] <= tail["budget"]
    (note,) = client.notes("$/tail", asked)
    assert note == {"id": asked, **tail}
    stored = ConversationStore().get([repo], answer["conversationId"])
    assert stored is not None and stored.exchanges()[0].added == ("shop/app/report.py",)
    assert stored.messages[0].content == "What does app/report.py compute?"
    follow = client.call("ask", {"question": "Where is main?", "conversationId": stored.id})
    assert follow["tail"] is None, "nothing left out is about it"
    assert follow["cache"]["restoredTokens"] >= answer["promptTokens"], "the first turn is kept"
    client.close_stdin()
    assert client.finish() == 0


def test_compose_question_forms() -> None:
    roots = [Path("/nowhere/proj")]
    assert compose_question("Q?", None, roots) == "Q?"
    here = EditorContext(path="/nowhere/proj/a.py", start_line=7)
    assert (
        compose_question("Q?", here, roots)
        == "Q?\n\nThe file open in the editor: `proj/a.py` (line 7)."
    )
    ticks = EditorContext(path="rel.md", selection="```\ncode\n```\n")
    assert compose_question("Q?", ticks, roots) == (
        "Q?\n\nSelected in `rel.md`:\n\n````\n```\ncode\n```\n````"
    )


def test_cancel_and_requests_while_an_answer_streams(
    repo: Path, spawn: Callable[..., Client]
) -> None:
    client = spawn(REPOCTX_FAKE_ANSWER=LONG_ANSWER, REPOCTX_FAKE_TOKEN_S="0.02")
    client.open(repo)
    streaming = client.request("ask", {"question": "long"})
    queued = client.request("ask", {"question": "queued"}, request_id="q-1")
    client.wait_for(lambda: client.notes("$/token", streaming))
    # answered at once while the first answer streams
    assert client.call("conversation/list") == {"conversations": []}
    assert client.error("initialize")["code"] == -32600
    assert not any(m.get("id") == streaming for m in client.responses())
    # LSP style for the queued one, the method for the streaming one
    client.notify("$/cancelRequest", {"id": "q-1"})
    assert client.call("cancel", {"id": streaming}) == {"cancelled": True}
    stopped = client.response(streaming)["result"]
    assert stopped["stopReason"] == "cancelled"
    assert stopped["text"] == client.tokens(streaming) and len(stopped["text"]) < len(LONG_ANSWER)
    assert client.response(queued)["error"]["code"] == -32800
    assert client.notes("$/token", "q-1") == []
    # the stopped exchange is kept; the cancelled-before-it-ran one is not
    assert [c["messages"] for c in client.call("conversation/list")["conversations"]] == [2]
    client.close_stdin()
    assert client.finish() == 0


def test_two_asks_in_one_conversation_do_not_interleave(
    repo: Path, spawn: Callable[..., Client]
) -> None:
    client = spawn(REPOCTX_FAKE_ANSWER="one two three four five six", REPOCTX_FAKE_TOKEN_S="0.01")
    client.open(repo)
    conversation = client.call("ask", {"question": "first"})["conversationId"]
    second = client.request("ask", {"question": "second", "conversationId": conversation})
    third = client.request("ask", {"question": "third", "conversationId": conversation})
    client.response(third)
    order = [
        ("token" if "method" in m else "done", m.get("id") or m["params"]["id"])
        for m in client.messages
        if m.get("method") == "$/token" or m.get("id") in (second, third)
    ]
    tokens = [("token", second)] * 6 + [("done", second)] + [("token", third)] * 6
    assert order[-14:] == [*tokens, ("done", third)]
    stored = ConversationStore().get([repo], conversation)
    assert stored is not None
    assert [m.content for m in stored.messages if m.role == "user"] == ["first", "second", "third"]
    client.close_stdin()
    assert client.finish() == 0


RAW_ERRORS: list[tuple[bytes, int]] = [
    (b"{not json\n", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": NaN}\n', -32700),
    (b"\xff\xfe\n", -32700),
    (b"[" * 100_000 + b"\n", -32700),
    (b"[]\n", -32600),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "initialize"}]\n', -32600),
    (b'"a string"\n', -32600),
    (b'{"jsonrpc": "1.0", "method": "ask"}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ask"}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ask"}\n', -32600),
    (b'{"jsonrpc": "2.0", "id": "raw", "method": 5}\n', -32600),
]


def test_malformed_lines_and_the_size_limit(spawn: Callable[..., Client]) -> None:
    client = spawn()
    client.call("initialize")
    for line, code in RAW_ERRORS:
        reply = client.reply_to_raw(line)
        assert reply["error"]["code"] == code, (line[:60], reply)
        assert reply["id"] == ("raw" if b'"raw"' in line else None)

    big = b'{"jsonrpc": "2.0", "id": "big", "method": "ask", "params": {"q": "'
    oversized = client.reply_to_raw(big + b"x" * MAX_MESSAGE_BYTES + b'"}}\n')
    assert oversized["id"] is None and oversized["error"]["code"] == -32600
    assert "over the limit" in oversized["error"]["message"]
    assert client.error("conversation/list")["code"] == -32001  # still serving

    count = len(client.responses())
    client.notify("no/such/notification")
    client.request("initialize", request_id="after")
    assert client.response("after")["error"]["code"] == -32600  # already initialized
    assert len(client.responses()) == count + 1  # nothing for the notification
    client.notify("exit")  # without shutdown: exit code 1, as in LSP
    assert client.finish() == 1


def test_invalid_params_name_the_parameter(repo: Path, spawn: Callable[..., Client]) -> None:
    client = spawn()
    client.call("initialize")
    assert client.error("no/such/method")["code"] == -32601
    wrong = [
        ("context/open", {"roots": "."}, "roots"),
        ("context/open", {}, "roots"),
        ("context/open", {"roots": [str(repo)], "budget": "big"}, "budget"),
        ("context/open", {"roots": [str(repo)], "exclude": [1]}, "exclude"),
        ("context/open", [str(repo)], "params"),
        ("ask", {"question": 42}, "question"),
        ("ask", {"question": "q", "context": {"selection": 3}}, "context.selection"),
        ("ask", {"question": "q", "context": {"startLine": 0}}, "context.startLine"),
        ("ask", {"question": "q", "conversationId": 7}, "conversationId"),
        ("cancel", {"id": [1]}, "id"),
        ("initialize", {"protocolVersion": 99}, "protocolVersion"),
    ]
    for method, params, name in wrong:
        error = client.error(method, params)
        assert error["code"] == -32602 and name in error["message"], (method, error)
    client.close_stdin()
    assert client.finish() == 0


def test_order_and_application_errors(repo: Path, spawn: Callable[..., Client]) -> None:
    client = spawn()
    assert client.error("ask", {"question": "early"})["code"] == -32002
    client.notify("context/refresh")  # a notification before initialize: no reply
    client.call("initialize")
    assert client.error("ask", {"question": "no context"})["code"] == -32001

    missing = client.error("context/open", {"roots": [str(repo / "missing")]})
    assert missing["code"] == 1002 and "no such file" in missing["message"]
    assert missing["data"] == {"kind": "PathNotFoundError", "exitCode": 2}
    tiny = client.error("context/open", {"roots": [str(repo)], "budget": 1})
    assert tiny["code"] == 1002 and "--budget" in tiny["message"]
    assert client.error("context/refresh")["code"] == -32001  # a failed open leaves none open
    client.call("context/open", {"roots": [str(repo)]})
    unknown = client.error("ask", {"question": "q", "conversationId": "nope"})
    assert unknown["code"] == -32602 and "conversationId" in unknown["message"]
    assert len(client.responses()) == 8  # one per request, none for the notification
    client.close_stdin()
    assert client.finish() == 0


def test_stdin_closed_mid_answer_exits(repo: Path, spawn: Callable[..., Client]) -> None:
    client = spawn(REPOCTX_FAKE_ANSWER=LONG_ANSWER, REPOCTX_FAKE_TOKEN_S="0.05")
    client.open(repo)
    streaming = client.request("ask", {"question": "long"})
    client.wait_for(lambda: client.notes("$/token", streaming))
    started = time.monotonic()
    client.close_stdin()
    assert client.finish(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_stdout_carries_protocol_only(tmp_path: Path, spawn: Callable[..., Client]) -> None:
    """Whatever else writes to stdout (print, C code writing to fd 1) ends up on stderr."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    (noisy / "sitecustomize.py").write_text(
        "import os\nimport repoctx.protocol.serve as p\nreceive = p.Server.receive\n"
        "def loud(self, frame):\n    print('print noise')\n    os.write(1, b'fd noise\\n')\n"
        "    return receive(self, frame)\np.Server.receive = loud\n"
    )
    client = spawn(PYTHONPATH=str(noisy))
    assert client.call("initialize")["protocolVersion"] == 1
    client.close_stdin()
    assert client.finish() == 0
    assert b"print noise" in client.stderr and b"fd noise" in client.stderr


@pytest.mark.parametrize("engine", ["", "local"])
def test_serve_opens_the_engine_with_the_settings_kv_type_and_flash_attention(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repoctx.config import Settings
    from repoctx.conversations import ConversationStore
    from repoctx.protocol.methods import default_session

    monkeypatch.setenv("REPOCTX_ENGINE", engine)
    settings = Settings(kv_type="q4_0", flash_attn=False)
    session = default_session([tmp_path], settings, ConversationStore(tmp_path / "c"))
    factory: Any = session.engine_factory
    assert (factory.kv_type, factory.flash_attn) == ("q4_0", False)
