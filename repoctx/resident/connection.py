"""One client of the resident engine: a reader thread takes its frames and answers the quick
requests at once (``hello``, ``status``, ``stop``, ``cancel``); ``open``, ``fit``, ``answer``
and ``prefill`` go to the worker, one at a time per connection. Replies and events go out under
one lock; a client that is gone, or reads nothing for ``SEND_TIMEOUT_S``, has its request
cancelled."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from repoctx import __version__
from repoctx.errors import EngineVersionError, RepoctxError
from repoctx.events import Event, EventSink
from repoctx.resident.requests import (
    JobBody,
    Opened,
    Params,
    answer_body,
    open_body,
    parse_fit,
    parse_open,
    parse_prompt,
    prefill_body,
)
from repoctx.resident.wire import (
    PROTOCOL_VERSION,
    Frame,
    FrameReader,
    JsonObject,
    WireError,
    encode_frame,
    error_to_json,
    event_frame,
    internal_error_json,
)
from repoctx.resident.worker import Engines, Job, Worker

log = logging.getLogger("repoctx.engine")

SEND_TIMEOUT_S = 60.0


class Host(Protocol):
    """What a connection needs of the server."""

    worker: Worker

    def status(self, asking: Connection) -> JsonObject: ...

    def request_stop(self, reason: str, cancel_in_flight: bool) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Connection:
    def __init__(self, sock: socket.socket, pid: int, host: Host) -> None:
        self.sock = sock
        self.pid = pid
        self.host = host
        self.opened: Opened | None = None
        self.greeted = False
        self._in_flight: Job | None = None
        self._closed = False
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._handlers: dict[str, Callable[[int, Any, bytes], None]] = {
            "hello": self._hello,
            "status": self._status,
            "stop": self._stop,
            "open": self._open,
            "fit": self._fit,
            "answer": self._answer,
            "prefill": self._prefill,
        }
        sock.settimeout(SEND_TIMEOUT_S)
        self.thread = threading.Thread(
            target=self._read_loop, name=f"repoctx-engine-client-{pid}", daemon=True
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self.thread.start()

    def shutdown(self) -> None:
        """Ends the reader (the server is exiting)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: JsonObject) -> None:
        if self._closed:
            return
        data = encode_frame(message)
        try:
            with self._send_lock:
                self.sock.sendall(data)
        except OSError as error:
            log.info("client %d is gone (%s)", self.pid, error)
            self._lost()

    def send_event(self, request_id: int, event: Event) -> None:
        self.send(event_frame(request_id, event))

    def finish(self, job: Job, reply: JsonObject) -> None:
        with self._state_lock:
            if self._in_flight is job:
                self._in_flight = None
        self.send(reply)

    # -- receiving ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        reader = FrameReader(self.sock)
        try:
            while (frame := reader.read()) is not None:
                self._dispatch(frame)
        except WireError as error:
            log.warning("client %d sent a frame that breaks the format (%s)", self.pid, error)
            self.send({"id": None, "error": error_to_json(error)})
        except OSError as error:
            log.info("client %d: the connection failed (%s)", self.pid, error)
        finally:
            self._lost()
            self.sock.close()
            self.host.forget(self)

    def _lost(self) -> None:
        """The client is gone: nobody waits for its request any more."""
        self._closed = True
        with self._state_lock:
            job = self._in_flight
        if job is not None:
            job.cancel.set()

    def _dispatch(self, frame: Frame) -> None:
        message = frame.message
        method = message.get("method")
        if method == "cancel":
            self._cancel(message.get("params"))
            return
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            error = WireError(f"a request needs an integer id, not {request_id!r}")
            self.send({"id": None, "error": error_to_json(error)})
            return
        try:
            handler = self._handlers.get(str(method))
            if handler is None:
                raise WireError(f"unknown method {method!r}")
            handler(request_id, message.get("params"), frame.payload)
        except RepoctxError as error:
            self.send({"id": request_id, "error": error_to_json(error)})
        except Exception as error:
            log.exception("%s from client %d failed", method, self.pid)
            self.send({"id": request_id, "error": internal_error_json(error)})

    # -- the requests ------------------------------------------------------------------------

    def _cancel(self, raw: Any) -> None:
        target = Params("cancel", raw, ("id",)).get("id", int)
        with self._state_lock:
            job = self._in_flight
        if job is not None and job.request_id == target:
            log.info("client %d cancels %s %d", self.pid, job.method, target)
            job.cancel.set()

    def _hello(self, request_id: int, raw: Any, payload: bytes) -> None:
        params = Params("hello", raw, ("repoctx", "protocol"))
        version, protocol = params.get("repoctx", str), params.get("protocol", int)
        if (version, protocol) != (__version__, PROTOCOL_VERSION):
            raise EngineVersionError(
                f"the resident engine runs repoctx {__version__} (protocol {PROTOCOL_VERSION}) "
                f"and this client repoctx {version} (protocol {protocol}); stop it with "
                "`repoctx engine stop` and ask again"
            )
        self.greeted = True
        reply = {"repoctx": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid()}
        self.send({"id": request_id, "result": reply})

    def _status(self, request_id: int, raw: Any, payload: bytes) -> None:
        Params("status", raw, ())
        self.send({"id": request_id, "result": self.host.status(self)})

    def _stop(self, request_id: int, raw: Any, payload: bytes) -> None:
        Params("stop", raw, ())
        # the reply first: once stopping, the server may close this connection at any time
        self.send({"id": request_id, "result": {"stopping": True, "pid": os.getpid()}})
        self.host.request_stop(f"client {self.pid} asked it to stop", cancel_in_flight=False)

    def _open(self, request_id: int, raw: Any, payload: bytes) -> None:
        self._submit(request_id, "open", self._opening(parse_open(raw)))

    def _fit(self, request_id: int, raw: Any, payload: bytes) -> None:
        self._submit(request_id, "fit", self._opening(parse_fit(raw, self._needs_open())))

    def _opening(self, opened: Opened) -> JobBody:
        """``open_body``, then this connection's answers and prefills use that engine."""
        body = open_body(opened)

        def run(engines: Engines, on_event: EventSink, cancel: threading.Event) -> JsonObject:
            result = body(engines, on_event, cancel)
            self.opened = opened
            return result

        return run

    def _answer(self, request_id: int, raw: Any, payload: bytes) -> None:
        prompt, options = parse_prompt("answer", raw, payload)
        self._submit(request_id, "answer", answer_body(self._needs_open(), prompt, options))

    def _prefill(self, request_id: int, raw: Any, payload: bytes) -> None:
        prompt, _ = parse_prompt("prefill", raw, payload)
        self._submit(request_id, "prefill", prefill_body(self._needs_open(), prompt))

    def _needs_open(self) -> Opened:
        if self.opened is None:
            raise WireError("send open before fit, answer or prefill")
        return self.opened

    def _submit(self, request_id: int, method: str, run: JobBody) -> None:
        if not self.greeted:
            raise WireError(f"send hello before {method}")
        job = Job(self, request_id, method, run)
        with self._state_lock:
            if self._in_flight is not None:
                raise WireError(
                    f"{method} {request_id} arrived while {self._in_flight.method} "
                    f"{self._in_flight.request_id} runs; a connection runs one request at a time"
                )
            self._in_flight = job
        try:
            self.host.worker.submit(job)
        except RepoctxError:
            with self._state_lock:
                self._in_flight = None
            raise
