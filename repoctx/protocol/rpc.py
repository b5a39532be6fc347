"""JSON-RPC 2.0 over lines: the framing, the error codes, decoding one message, and the
writer that keeps each message on its own line. Nothing here knows about repoctx's methods.

Framing: one JSON value per line, UTF-8, terminated by ``\\n`` (a ``\\r`` before it is
tolerated); JSON escapes newlines inside strings, so a message never spans lines. Blank lines
are ignored. A line longer than ``MAX_MESSAGE_BYTES`` is read to its end and discarded, and
answered with an Invalid Request error whose id is null.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

log = logging.getLogger("repoctx.protocol")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_DISCARD_CHUNK = 1024 * 1024

# JSON-RPC 2.0
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# server errors (-32000 to -32099) and LSP's codes
CONTEXT_NOT_OPEN = -32001
SERVER_NOT_INITIALIZED = -32002
REQUEST_CANCELLED = -32800
# a RepoctxError: APPLICATION_ERROR_BASE + its exit code (1002 usage or config, 1003 pack,
# 1004 model, 1005 cache, 1001 anything else)
APPLICATION_ERROR_BASE = 1000

RequestId = str | int
JsonObject = dict[str, Any]


class RpcError(Exception):
    """An error to answer a request with."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> JsonObject:
        error: JsonObject = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True)
class Oversized:
    """A line over the size limit, already discarded."""

    size: int


@dataclass(frozen=True)
class Message:
    """A well-formed request (``id`` set) or notification (``id`` None)."""

    method: str
    params: Any  # absent params are None; the method checks the rest
    id: RequestId | None

    @property
    def is_request(self) -> bool:
        return self.id is not None


def read_frames(stream: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> Iterator[bytes | Oversized]:
    """The lines of ``stream`` without their terminators, until end of file; a line over
    ``limit`` bytes is consumed in bounded chunks and reported as ``Oversized``."""
    while True:
        line = stream.readline(limit + 2)  # room for the content, "\r" and "\n"
        if not line:
            return
        content = line.removesuffix(b"\n").removesuffix(b"\r")
        if line.endswith(b"\n") or len(line) < limit + 2:  # the whole line was read
            yield content if len(content) <= limit else Oversized(len(content))
            continue
        size = len(content)
        while True:
            line = stream.readline(_DISCARD_CHUNK)
            size += len(line.removesuffix(b"\n"))
            if not line or line.endswith(b"\n"):
                break
        yield Oversized(size)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The JSON value of one line; RpcError(PARSE_ERROR) when it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RpcError(PARSE_ERROR, f"parse error: the line is not UTF-8 ({error})") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise RpcError(PARSE_ERROR, "parse error: JSON nested too deeply") from None
    except ValueError as error:
        raise RpcError(PARSE_ERROR, f"parse error: {error}") from None


def valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def decode(value: Any) -> Message:
    """A request or notification from a parsed line. Raises ``BadRequest`` (with the id when
    one could be read) for anything else; responses from the client are not expected."""
    if isinstance(value, list):
        raise BadRequest(None, "batches are not supported; send one message per line")
    if not isinstance(value, dict):
        raise BadRequest(None, "a message must be a JSON object")
    request_id = value.get("id")
    has_id = "id" in value
    if has_id and not valid_id(request_id):
        raise BadRequest(None, '"id" must be a string or an integer')
    known_id = request_id if has_id else None
    if value.get("jsonrpc") != "2.0":
        raise BadRequest(known_id, '"jsonrpc" must be "2.0"')
    method = value.get("method")
    if not isinstance(method, str):
        raise BadRequest(known_id, '"method" must be a string')
    return Message(method, value.get("params"), known_id)


class BadRequest(RpcError):
    """Invalid Request, answered with ``id`` (null when it could not be read)."""

    def __init__(self, request_id: RequestId | None, message: str) -> None:
        super().__init__(INVALID_REQUEST, f"invalid request: {message}")
        self.request_id = request_id


def response(request_id: RequestId | None, result: Any) -> JsonObject:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(request_id: RequestId | None, error: RpcError) -> JsonObject:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def notification(method: str, params: JsonObject) -> JsonObject:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def encode(message: JsonObject) -> bytes:
    """One line: ASCII-only JSON (non-ASCII characters and lone surrogates escaped), so it is
    valid UTF-8 whatever the strings hold."""
    try:
        text = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        log.error("cannot encode %r: %s", message, error)
        failed = RpcError(INTERNAL_ERROR, f"internal error: the reply cannot be encoded ({error})")
        fallback = error_response(message.get("id"), failed)
        text = json.dumps(fallback, ensure_ascii=True, default=str)
    return text.encode("ascii") + b"\n"


class Writer:
    """Writes whole lines under one lock. After the reader of ``stream`` has gone (a broken
    pipe), every write is dropped and ``broken`` is set."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.broken = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, message: JsonObject) -> None:
        line = encode(message)
        with self._lock:
            if self.broken.is_set():
                return
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError) as error:  # ValueError: the stream was closed
                log.warning("stdout is closed (%s); dropping replies", error)
                self.broken.set()
