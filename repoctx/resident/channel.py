"""A client's connection to the resident engine: one request at a time, its events forwarded
as they arrive, and ``cancel`` sent as soon as the caller's cancel event is set."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from repoctx import __version__, paths
from repoctx.errors import EngineError
from repoctx.events import EventSink, ignore_events
from repoctx.resident.sockets import peer_credentials, unix_address
from repoctx.resident.wire import (
    PROTOCOL_VERSION,
    FrameReader,
    JsonObject,
    encode_frame,
    error_from_json,
    event_of,
)

POLL_S = 0.1  # how soon a set cancel event reaches the server


class EngineConnection:
    def __init__(self, sock: socket.socket, server_pid: int) -> None:
        self.sock = sock
        self.server_pid = server_pid
        self._reader = FrameReader(sock)
        self._next_id = 1
        self.broken = False  # the server went away: this connection is of no further use

    def close(self) -> None:
        self.sock.close()

    def hello(self) -> JsonObject:
        """Raises ``EngineVersionError`` when the server runs another version."""
        return self.request("hello", {"repoctx": __version__, "protocol": PROTOCOL_VERSION})

    def request(
        self,
        method: str,
        params: JsonObject | None = None,
        payload: bytes = b"",
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
    ) -> JsonObject:
        """Send one request and return its result; events go to ``on_event`` meanwhile. An
        error of the server is raised here as the same RepoctxError."""
        request_id = self._next_id
        self._next_id += 1
        self._send({"id": request_id, "method": method, "params": params or {}}, payload, method)
        cancel_sent = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self._send({"method": "cancel", "params": {"id": request_id}}, b"", method)
                cancel_sent = True
            waiting = cancel is not None and not cancel_sent
            try:
                frame = self._reader.read(POLL_S if waiting else None)
            except TimeoutError:
                continue
            except OSError as error:
                raise self._gone(method, str(error)) from error
            if frame is None:
                raise self._gone(method, "it closed the connection")
            reply = frame.message
            if reply.get("id") not in (request_id, None):
                continue  # a late frame of an earlier request
            if "event" in reply:
                on_event(event_of(reply))
            elif "error" in reply:
                raise error_from_json(reply["error"])
            elif isinstance(reply.get("result"), dict):
                result: JsonObject = reply["result"]
                return result
            else:
                raise EngineError(f"the resident engine answered {method} with {reply!r}")

    def _send(self, message: dict[str, Any], payload: bytes, method: str) -> None:
        try:
            self.sock.sendall(encode_frame(message, payload))
        except OSError as error:
            raise self._gone(method, str(error)) from error

    def _gone(self, method: str, detail: str) -> EngineError:
        self.broken = True
        return EngineError(
            f"the resident engine stopped answering during {method} ({detail}); it may have "
            f"crashed: see {paths.engine_log()}, then ask again (a new one starts)"
        )


def try_connect() -> EngineConnection | None:
    """A connection to the resident engine of this REPOCTX_HOME; None when none listens."""
    path = paths.engine_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            sock.connect(address)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as error:
        sock.close()
        raise EngineError(
            f"cannot connect to the resident engine at {path} ({error}); remove that file "
            "if no `repoctx engine` runs"
        ) from error
    pid, uid, _ = peer_credentials(sock)
    if uid != os.getuid():
        sock.close()
        raise EngineError(
            f"{path} is served by user {uid}'s process {pid}, not by yours; remove it or set "
            "REPOCTX_HOME to a folder of your own"
        )
    return EngineConnection(sock, pid)
