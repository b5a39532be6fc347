"""The resident engine's framing over a Unix stream socket, and what travels in the frames.

A frame is an 8-byte header (two u32 little-endian: the JSON length, the payload length), a
UTF-8 JSON object, then raw payload bytes (token ids as int32 little-endian). Requests are
``{"id": n, "method": ..., "params": {...}}``; the server answers each with any number of
``{"id": n, "event": {...}}`` frames, then one ``{"id": n, "result": {...}}`` or
``{"id": n, "error": {"kind", "message", "exit_code"}}``. ``cancel`` is sent without an id.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from repoctx import errors
from repoctx.errors import EngineError, RepoctxError
from repoctx.events import Event, event_from_json, event_to_json
from repoctx.kv.files import TOKEN_SIZE, token_bytes

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<II")
MAX_JSON_BYTES = 16 << 20
MAX_PAYLOAD_BYTES = 256 << 20  # 64M token ids
_RECEIVE_CHUNK = 1 << 16

JsonObject = dict[str, Any]


class WireError(EngineError):
    """A frame that breaks the format: too large, not JSON, cut short."""


@dataclass(frozen=True)
class Frame:
    message: JsonObject
    payload: bytes = field(default=b"", repr=False)


def encode_frame(message: Mapping[str, Any], payload: bytes = b"") -> bytes:
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    _check_sizes(len(data), len(payload))
    return HEADER.pack(len(data), len(payload)) + data + payload


def _check_sizes(json_bytes: int, payload_bytes: int) -> None:
    if json_bytes > MAX_JSON_BYTES:
        raise WireError(
            f"a frame's JSON of {json_bytes:,} bytes is over the limit of {MAX_JSON_BYTES:,}"
        )
    if payload_bytes > MAX_PAYLOAD_BYTES:
        raise WireError(
            f"a frame's payload of {payload_bytes:,} bytes is over the limit of "
            f"{MAX_PAYLOAD_BYTES:,} ({MAX_PAYLOAD_BYTES // TOKEN_SIZE:,} tokens); ask about "
            "less code (--budget)"
        )


def decode_message(data: bytes) -> JsonObject:
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireError(f"a frame does not hold UTF-8 JSON: {error}") from error
    if not isinstance(message, dict):
        raise WireError(f"a frame holds a JSON {type(message).__name__}, not an object")
    return message


class FrameReader:
    """Reads whole frames from a socket; ``read(timeout)`` raises ``TimeoutError`` when no
    whole frame arrived in time and returns None at a clean end of the connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def read(self, timeout: float | None = None) -> Frame | None:
        while (frame := self._take()) is None:
            if not self._poll.poll(None if timeout is None else int(timeout * 1000)):
                raise TimeoutError("no frame yet")
            chunk = self.sock.recv(_RECEIVE_CHUNK)
            if not chunk:
                if self._buffer:
                    raise WireError("the connection closed in the middle of a frame")
                return None
            self._buffer += chunk
        return frame

    def _take(self) -> Frame | None:
        if len(self._buffer) < HEADER.size:
            return None
        json_bytes, payload_bytes = HEADER.unpack_from(self._buffer)
        _check_sizes(json_bytes, payload_bytes)
        end = HEADER.size + json_bytes + payload_bytes
        if len(self._buffer) < end:
            return None
        message = decode_message(bytes(self._buffer[HEADER.size : HEADER.size + json_bytes]))
        payload = bytes(self._buffer[HEADER.size + json_bytes : end])
        del self._buffer[:end]
        return Frame(message, payload)


def ids_payload(ids: Sequence[int]) -> bytes:
    return token_bytes(ids)


def ids_from_payload(payload: bytes) -> list[int]:
    if len(payload) % TOKEN_SIZE:
        raise WireError(f"a payload of {len(payload):,} bytes is not a whole number of token ids")
    ids = array("i")
    ids.frombytes(payload)
    if sys.byteorder == "big":  # pragma: no cover - no big-endian test machine
        ids.byteswap()
    return ids.tolist()


def event_frame(request_id: int, event: Event) -> JsonObject:
    return {"id": request_id, "event": event_to_json(event)}


def event_of(message: Mapping[str, Any]) -> Event:
    record = message.get("event")
    if not isinstance(record, dict):
        raise WireError(f"an event frame holds {type(record).__name__}, not an object")
    try:
        return event_from_json(record)
    except ValueError as error:
        raise WireError(f"the engine sent an event this client does not know: {error}") from error


def error_to_json(error: RepoctxError) -> JsonObject:
    return {"kind": type(error).__name__, "message": str(error), "exit_code": error.exit_code}


def internal_error_json(error: BaseException) -> JsonObject:
    return {
        "kind": "InternalError",
        "message": f"internal error in the resident engine: {type(error).__name__}: {error}",
        "exit_code": EngineError.exit_code,
    }


def error_from_json(record: Any) -> RepoctxError:
    """The RepoctxError the server raised: the same class (by name, from repoctx.errors), the
    same message and exit code; an unknown kind becomes an ``EngineError``."""
    if not isinstance(record, dict) or not isinstance(record.get("message"), str):
        return WireError(f"the engine sent a malformed error: {record!r}")
    kind = getattr(errors, str(record.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, RepoctxError)):
        kind = EngineError
    error = kind.__new__(kind)
    RepoctxError.__init__(error, record["message"])  # the subclasses' own __init__ compose it
    exit_code = record.get("exit_code")
    if isinstance(exit_code, int) and exit_code != kind.exit_code:
        error.exit_code = exit_code
    return error
