"""The resident engine's wire format: frames over a real socket pair, token payloads, every
event to JSON and back, and errors that keep their class, message and exit code."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from repoctx.errors import (
    BudgetTooSmallError,
    EngineError,
    ModelError,
    PathNotFoundError,
    RepoctxError,
    StateLoadError,
)
from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    Event,
    ModelReady,
    Notice,
    Progress,
    TailAdded,
    Token,
    event_from_json,
    event_to_json,
)
from repoctx.resident.wire import (
    HEADER,
    MAX_JSON_BYTES,
    MAX_PAYLOAD_BYTES,
    FrameReader,
    WireError,
    encode_frame,
    error_from_json,
    error_to_json,
    ids_from_payload,
    ids_payload,
)

EVERY_EVENT: list[Event] = [
    Progress("prefill", 512, 2048, "tokens"),
    Notice("a cache was rebuilt", "info"),
    ModelReady("model.gguf", 8192, "q8_0", "GPU (NVIDIA H200, 139 GiB)", True, 32),
    CacheOutcome("disk", 1000, 24, 0.25, 1024),
    TailAdded(("p/a.py", "p/b.py"), 1200, 8192, named=("p/a.py",), reduced=("p/b.py",)),
    Token("héllo ✓"),
    AnswerDone("the answer", "length", 1024, 12, 0.5, 1.5),
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield one, other
    one.close()
    other.close()


def test_frames_with_json_and_payload_cross_a_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    writer, reading = pair
    ids = [0, 1, 2**31 - 1, -5, 128_000]
    writer.sendall(encode_frame({"id": 1, "method": "answer"}, ids_payload(ids)))
    writer.sendall(encode_frame({"id": 2, "method": "status", "params": {"ü": "✓"}}))
    reader = FrameReader(reading)
    first, second = reader.read(5), reader.read(5)
    assert first is not None and second is not None
    assert first.message == {"id": 1, "method": "answer"}
    assert ids_from_payload(first.payload) == ids
    assert (second.message["params"], second.payload) == ({"ü": "✓"}, b"")
    with pytest.raises(TimeoutError):
        reader.read(0.05)
    writer.close()
    assert reader.read(5) is None, "a clean end of the connection"


def test_a_frame_cut_short_is_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reading = pair
    writer.sendall(encode_frame({"id": 1}, b"\0" * 40)[:-10])
    writer.close()
    with pytest.raises(WireError, match="closed in the middle of a frame"):
        FrameReader(reading).read(5)


@pytest.mark.parametrize(
    ("json_bytes", "payload_bytes", "expected"),
    [(MAX_JSON_BYTES + 1, 0, "JSON of .* over the limit"), (2, MAX_PAYLOAD_BYTES + 4, "payload")],
)
def test_oversized_frames_are_refused_from_their_header(
    pair: tuple[socket.socket, socket.socket], json_bytes: int, payload_bytes: int, expected: str
) -> None:
    writer, reading = pair
    writer.sendall(HEADER.pack(json_bytes, payload_bytes))
    with pytest.raises(WireError, match=expected):
        FrameReader(reading).read(5)


def test_a_frame_must_hold_a_json_object(pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reading = pair
    for body, expected in [(b"[1, 2]", "JSON list, not an object"), (b"{nope", "UTF-8 JSON")]:
        writer.sendall(struct.pack("<II", len(body), 0) + body)
        with pytest.raises(WireError, match=expected):
            FrameReader(reading).read(5)


def test_a_payload_must_hold_whole_token_ids() -> None:
    with pytest.raises(WireError, match="not a whole number of token ids"):
        ids_from_payload(b"\1\2\3")


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda event: type(event).__name__)
def test_every_event_goes_to_json_and_back(event: Event) -> None:
    record = event_to_json(event)
    assert record["event"] == type(event).__name__
    assert event_from_json(record) == event


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"event": "Explosion"}, "unknown event 'Explosion'"),
        ({"text": "no kind"}, "unknown event None"),
        ({"event": "Token", "text": "a", "colour": "red"}, "Token has no field 'colour'"),
        ({"event": "Token"}, "Token lacks its field 'text'"),
        ({"event": "Progress", "stage": "x", "done": "1", "total": 2}, "Progress.done must be"),
        ({"event": "ModelReady", "model": "m", "n_ctx": 1, "kv_type": "f16", "device": "CPU",
          "flash_attn": 1, "gpu_layers": 0}, "ModelReady.flash_attn must be bool"),
        ({"event": "TailAdded", "files": "a.py", "tokens": 1, "budget": 2},
         "TailAdded.files must be a list of strings"),
    ],
)  # fmt: skip
def test_unknown_events_and_fields_are_refused(record: dict[str, object], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        event_from_json(record)


@pytest.mark.parametrize(
    "error",
    [
        BudgetTooSmallError(100, 250),
        PathNotFoundError("/nowhere"),
        StateLoadError("llama.cpp rejected the state file"),
        ModelError("model.gguf: not a GGUF model file; pass another --model"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_keep_their_class_message_and_exit_code(error: RepoctxError) -> None:
    again = error_from_json(error_to_json(error))
    assert type(again) is type(error)
    assert (str(again), again.exit_code) == (str(error), error.exit_code)


def test_an_unknown_error_kind_becomes_an_engine_error_with_its_exit_code() -> None:
    again = error_from_json({"kind": "InternalError", "message": "it broke", "exit_code": 7})
    assert type(again) is EngineError
    assert (str(again), again.exit_code) == ("it broke", 7)
