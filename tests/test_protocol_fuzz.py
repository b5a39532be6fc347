"""The reader and the dispatcher under hypothesis: arbitrary bytes, arbitrary JSON values and
near-valid messages never raise, every request gets exactly one valid JSON-RPC response,
malformed lines get one with a null id, and notifications get none. The dispatcher runs in
process with the scripted engine on a fixed small repository, whatever roots a message names."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repoctx.config import Settings
from repoctx.conversations import ConversationStore
from repoctx.engine.fake import FakeEngine
from repoctx.protocol.rpc import Oversized, read_frames
from repoctx.protocol.serve import NOTIFICATIONS, Server
from repoctx.session import Session

METHODS = [
    "ask", "initialize", "shutdown", "exit", "cancel", "$/cancelRequest", "conversation/list",
    "context/open", "context/open", "context/open", "context/refresh", "ask", "ask",
    "unknown/method", "$/unknown",
]  # fmt: skip
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.integers(-5, 5) | st.sampled_from(["a", "", "1"]) | json_values
param_values = st.fixed_dictionaries(
    {},
    optional={
        "roots": st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=2),
        "question": st.text(min_size=1, max_size=30),
        "conversationId": st.text(max_size=5),
        "budget": st.integers(-2, 100_000),
        "exclude": st.lists(st.text(max_size=5), max_size=2),
        "context": st.fixed_dictionaries(
            {},
            optional={
                "path": st.text(max_size=20),
                "selection": st.text(max_size=40),
                "startLine": st.integers(-1, 5),
                "language": st.text(max_size=6),
            },
        ),
        "id": ids,
        "protocolVersion": st.integers(0, 2),
    },
)


def odds(draw: st.DrawFn, good: int, bad: int = 1) -> bool:
    """True ``good`` times in ``good + bad`` (shrinking towards True: the valid form)."""
    return draw(st.sampled_from([True] * good + [False] * bad))


def sometimes(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """Mostly a value from ``valid``; now and then any JSON value."""
    return draw(valid) if odds(draw, 9) else draw(json_values)


def mangle(draw: st.DrawFn, params: dict[str, Any]) -> dict[str, Any]:
    """One member of ``params`` replaced by any JSON value, now and then."""
    if params and not odds(draw, 4):
        params[draw(st.sampled_from(sorted(params)))] = draw(json_values)
    return params


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Messages near the valid ones: each member sometimes missing or of the wrong type."""
    message: dict[str, Any] = {}
    if odds(draw, 19):
        message["jsonrpc"] = sometimes(draw, st.just("2.0"))
    if odds(draw, 19):
        message["method"] = sometimes(draw, st.sampled_from(METHODS))
    if odds(draw, 4):
        message["id"] = sometimes(draw, st.integers(0, 6) | st.sampled_from(["a", ""]))
    if odds(draw, 5):
        message["params"] = sometimes(draw, param_values.map(lambda p: mangle(draw, p)))
    return message


def not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def kind(line: bytes) -> tuple[str, Any]:
    """What the client sent, judged independently of the server: ("blank"|"request"|
    "notification"|"invalid", id)."""
    if not line.strip():
        return "blank", None
    try:
        value = json.loads(line, parse_constant=not_json)
    except (ValueError, RecursionError):
        return "invalid", None
    if not isinstance(value, dict):
        return "invalid", None
    request_id = value.get("id")
    id_ok = isinstance(request_id, str) or (
        isinstance(request_id, int) and not isinstance(request_id, bool)
    )
    if "id" in value and not id_ok:
        return "invalid", None
    if value.get("jsonrpc") != "2.0" or not isinstance(value.get("method"), str):
        return "invalid", request_id
    return ("request", request_id) if "id" in value else ("notification", None)


def check_shape(message: Any) -> None:
    assert isinstance(message, dict) and message["jsonrpc"] == "2.0"
    if "method" in message:
        assert message["method"] in NOTIFICATIONS
        assert isinstance(message["params"], dict) and "id" in message["params"]
        return
    assert set(message) == {"jsonrpc", "id", "result"} or set(message) == {"jsonrpc", "id", "error"}
    if "error" in message:
        error = message["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str)
        assert error["message"] and "Traceback" not in error["message"]


@pytest.fixture(scope="module")
def fixed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from repo_helpers import git

    repo = tmp_path_factory.mktemp("fuzz") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("def f():\n    return 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one", when=1_600_000_000)
    return repo


class FixedRootSession(Session):
    """A session that keeps its repository whatever roots a later ``context/open`` names (the
    server reuses the session of the same model): a fuzzed root such as ``~`` must not make the
    test pack the home folder."""

    def set_roots(self, roots: Sequence[Path]) -> None:
        super().set_roots(self.roots)


class Harness:
    """A server in process, fed the way ``serve_stdio`` feeds it."""

    def __init__(self, repo: Path, initialized: bool) -> None:
        self.sent: list[bytes] = []
        self._lock = threading.Lock()

        def factory(roots: Sequence[Path], config: Settings, store: ConversationStore) -> Session:
            engine = FakeEngine(answers=("fuzzed answer",))
            return FixedRootSession(
                [repo], config, engine_factory=lambda *_: engine, conversations=store
            )

        self.server = Server(self.send, {"model": None}, session_factory=factory)
        self.server.initialized = initialized

    def send(self, message: dict[str, Any]) -> None:
        from repoctx.protocol.rpc import encode

        with self._lock:
            self.sent.append(encode(message))

    def feed(self, data: bytes, limit: int = 4096) -> list[bytes]:
        """Feeds the frames; returns the lines that were read before ``exit``."""
        read: list[bytes] = []
        for frame in read_frames(io.BytesIO(data), limit):
            read.append(frame if isinstance(frame, bytes) else b"{oversized")
            self.server.receive(frame)
            if self.server.exit_code is not None:
                break
        else:
            assert self.server.wait_idle(30), "requests still pending"
        assert self.server.finish(timeout=30), "the worker did not stop"
        return read

    def replies(self) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.sent]
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in self.sent)
        for message in parsed:
            check_shape(message)
        return [m for m in parsed if "method" not in m]


def check_replies(harness: Harness, read: list[bytes]) -> None:
    replies = harness.replies()
    expected_ids: list[Any] = []
    for line in read:
        what, request_id = kind(line)
        if what == "request" or (what == "invalid" and request_id is not None):
            expected_ids.append(request_id)
        elif what == "invalid":
            expected_ids.append(None)
    got = [r["id"] for r in replies]
    assert sorted(map(repr, got)) == sorted(map(repr, expected_ids))


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=8), initialized=st.booleans())
def test_arbitrary_bytes(fixed_repo: Path, chunks: list[bytes], initialized: bool) -> None:
    harness = Harness(fixed_repo, initialized)
    read = harness.feed(b"\n".join(chunks), limit=32)
    check_replies(harness, read)


@FUZZ
@given(values=st.lists(json_values, max_size=6), initialized=st.booleans())
def test_arbitrary_json_values(fixed_repo: Path, values: list[Any], initialized: bool) -> None:
    harness = Harness(fixed_repo, initialized)
    read = harness.feed(b"".join(json.dumps(v).encode() + b"\n" for v in values))
    check_replies(harness, read)


@FUZZ
@given(batch=st.lists(messages(), min_size=1, max_size=8), initialized=st.booleans())
def test_near_valid_messages(fixed_repo: Path, batch: list[Any], initialized: bool) -> None:
    harness = Harness(fixed_repo, initialized)
    read = harness.feed(b"".join(json.dumps(m).encode() + b"\n" for m in batch), limit=1 << 20)
    check_replies(harness, read)


valid_params = {
    "context/open": st.fixed_dictionaries(
        {"roots": st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=2)},
        optional={"budget": st.integers(50, 100_000), "exclude": st.lists(st.just("*.md"))},
    ),
    "ask": st.fixed_dictionaries(
        {"question": st.text(min_size=1, max_size=20).filter(str.strip)},
        optional={
            "context": st.fixed_dictionaries(
                {"path": st.text(max_size=20), "selection": st.text(max_size=40)},
                optional={"startLine": st.integers(1, 5), "endLine": st.integers(1, 5)},
            )
        },
    ),
    "context/refresh": st.just({}),
    "conversation/list": st.just({}),
    "cancel": st.fixed_dictionaries({"id": st.integers(1, 8)}),
    "$/cancelRequest": st.fixed_dictionaries({"id": st.integers(1, 8)}),
}


@FUZZ
@given(
    steps=st.lists(
        st.sampled_from(sorted(valid_params)).flatmap(
            lambda method: st.tuples(st.just(method), valid_params[method])
        ),
        max_size=8,
    )
)
def test_valid_sequences(fixed_repo: Path, steps: list[tuple[str, dict[str, Any]]]) -> None:
    """Well-formed sessions: open, ask, refresh, list and cancel in any order."""
    harness = Harness(fixed_repo, initialized=False)
    lines = [{"jsonrpc": "2.0", "id": 0, "method": "initialize"}]
    for number, (method, params) in enumerate(steps, start=1):
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if method != "$/cancelRequest":
            message["id"] = number
        lines.append(message)
    read = harness.feed(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    check_replies(harness, read)
    for reply in harness.replies():
        if "error" in reply:
            assert reply["error"]["code"] in (-32001, -32800, 1002), reply


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=300), limit=st.integers(1, 40))
def test_frames_are_bounded_and_complete(data: bytes, limit: int) -> None:
    frames = list(read_frames(io.BytesIO(data), limit))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    assert len(frames) == len(lines)
    for frame, line in zip(frames, lines, strict=True):
        line = line.removesuffix(b"\r")
        if isinstance(frame, Oversized):
            assert len(line) > limit
        else:
            assert frame == line and len(frame) <= limit


def test_a_real_session_in_process(fixed_repo: Path) -> None:
    """The harness itself answers questions (so the fuzzing reaches the session)."""
    harness = Harness(fixed_repo, initialized=False)
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize"},
        {"jsonrpc": "2.0", "id": 2, "method": "context/open", "params": {"roots": ["x"]}},
        {"jsonrpc": "2.0", "id": 3, "method": "ask", "params": {"question": "q"}},
    ]
    harness.feed(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    assert harness.replies()[-1]["result"]["text"] == "fuzzed answer"


def test_a_line_at_the_limit_with_a_carriage_return_is_not_oversized() -> None:
    """Found by the fuzzer: the "\\r" of a "\\r\\n" (or a last line's "\\r") is not content."""
    frames = list(read_frames(io.BytesIO(b"abcde\r\nabcdef\r\nabcde\r"), 5))
    assert frames == [b"abcde", Oversized(6), b"abcde"]
