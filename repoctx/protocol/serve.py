"""``repoctx serve --stdio``: JSON-RPC 2.0 for editors, one message per line (docs/protocol.md).

The main thread reads stdin and answers the quick methods at once; ``context/open``,
``context/refresh``, ``ask`` and ``shutdown`` queue for the one worker thread that owns the
session, so they run in arrival order and answers never interleave, while ``cancel`` and the
other requests are answered as they arrive. Every reply goes through one writer lock.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from repoctx import __version__
from repoctx.conversations import ConversationStore
from repoctx.errors import RepoctxError
from repoctx.protocol.methods import (
    SessionFactory,
    Workspace,
    default_session,
    no_context,
    parse_ask,
    parse_open,
)
from repoctx.protocol.params import Params
from repoctx.protocol.rpc import (
    APPLICATION_ERROR_BASE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_MESSAGE_BYTES,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    SERVER_NOT_INITIALIZED,
    BadRequest,
    JsonObject,
    Message,
    Oversized,
    RequestId,
    RpcError,
    Writer,
    decode,
    error_response,
    parse_json,
    read_frames,
    response,
)

log = logging.getLogger("repoctx.protocol")

PROTOCOL_VERSION = 1
NOTIFICATIONS = ("$/progress", "$/token", "$/notice", "$/model", "$/tail")
FINISH_TIMEOUT_S = 10.0


@dataclass
class Job:
    """A request for the worker."""

    id: RequestId
    method: str
    run: Callable[[threading.Event], Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    cancellable: bool = True


class _Deferred:
    """A request that the worker answers later."""


DEFERRED = _Deferred()


def application_error(error: RepoctxError) -> RpcError:
    data = {"kind": type(error).__name__, "exitCode": error.exit_code}
    return RpcError(APPLICATION_ERROR_BASE + error.exit_code, str(error), data)


class Server:
    """The dispatcher: ``receive`` one frame at a time from the reader; replies go to
    ``send``. ``exit_code`` is set once ``exit`` arrives; ``finish`` stops the worker."""

    def __init__(
        self,
        send: Callable[[JsonObject], None],
        flags: Mapping[str, Any],
        *,
        session_factory: SessionFactory = default_session,
        store: ConversationStore | None = None,
    ) -> None:
        self.send = send
        self.store = store or ConversationStore()
        self.workspace = Workspace(send, flags, self.store, session_factory)
        self.initialized = False
        self.shutting_down = False
        self.exit_code: int | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pending: dict[RequestId, Job] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._worker = threading.Thread(target=self._work, name="repoctx-worker", daemon=True)
        self._worker.start()
        self._methods: dict[str, Callable[[Message], Any]] = {
            "initialize": self._initialize,
            "shutdown": self._shutdown,
            "exit": self._exit,
            "cancel": self._cancel,
            "$/cancelRequest": self._cancel,
            "conversation/list": self._conversations,
            "context/open": self._open,
            "context/refresh": self._refresh,
            "ask": self._ask,
        }

    # -- the reader's side ---------------------------------------------------------------------

    def receive(self, frame: bytes | Oversized) -> None:
        """Handle one line (or an oversized one that was discarded); never raises."""
        if isinstance(frame, Oversized):
            text = (
                f"invalid request: a message of {frame.size:,} bytes is over the limit of "
                f"{MAX_MESSAGE_BYTES:,} bytes; it was discarded"
            )
            data = {"size": frame.size, "limit": MAX_MESSAGE_BYTES}
            self.send(error_response(None, RpcError(INVALID_REQUEST, text, data)))
            return
        if not frame.strip():
            return
        try:
            message = decode(parse_json(frame))
        except BadRequest as error:
            self.send(error_response(error.request_id, error))
            return
        except RpcError as error:
            self.send(error_response(None, error))
            return
        self.dispatch(message)

    def dispatch(self, message: Message) -> None:
        log.debug("<- %s %r", message.method, message.id)
        try:
            result = self._handle(message)
        except RpcError as error:
            failure = error
        except RepoctxError as error:
            failure = application_error(error)
        except Exception as error:
            log.exception("%s failed", message.method)
            failure = RpcError(INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}")
        else:
            if message.is_request and result is not DEFERRED:
                self.send(response(message.id, result))
            return
        if message.is_request:
            self.send(error_response(message.id, failure))

    def _handle(self, message: Message) -> Any:
        handler = self._methods.get(message.method)
        if message.method == "exit":
            return self._exit(message)
        if not self.initialized and message.method != "initialize":
            if not message.is_request:
                return None
            raise RpcError(SERVER_NOT_INITIALIZED, "the server is not initialized; send initialize")
        if self.shutting_down:
            raise RpcError(INVALID_REQUEST, "the server is shutting down; only exit is accepted")
        if handler is None:
            if not message.is_request:
                return None
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {message.method!r}")
        if not message.is_request and message.method not in ("$/cancelRequest", "cancel"):
            log.info("%s sent as a notification (no id) is ignored", message.method)
            return None
        return handler(message)

    def _queue(
        self, message: Message, run: Callable[[threading.Event], Any], cancellable: bool = True
    ) -> _Deferred:
        assert message.id is not None
        job = Job(message.id, message.method, run, cancellable=cancellable)
        with self._lock:
            if job.id in self._pending:
                raise RpcError(INVALID_REQUEST, f"id {job.id!r} is in use by a request in progress")
            self._pending[job.id] = job
        self._jobs.put(job)
        return DEFERRED

    # -- methods ---------------------------------------------------------------------------------

    def _initialize(self, message: Message) -> JsonObject:
        params = Params(message.params, message.method)
        version = params.integer("protocolVersion", minimum=0)
        if version is not None and version != PROTOCOL_VERSION:
            raise RpcError(
                INVALID_PARAMS,
                f"initialize: protocolVersion {version} is not supported; this server speaks "
                f"{PROTOCOL_VERSION}",
                {"parameter": "protocolVersion", "supported": [PROTOCOL_VERSION]},
            )
        params.nested("clientInfo")
        if self.initialized:
            raise RpcError(INVALID_REQUEST, "initialize was already received")
        self.initialized = True
        return {
            "protocolVersion": PROTOCOL_VERSION,
            "serverInfo": {"name": "repoctx", "version": __version__},
            "capabilities": {
                "methods": sorted(self._methods),
                "notifications": list(NOTIFICATIONS),
                "cancel": ["$/cancelRequest", "cancel"],
                "editorContext": ["path", "selection", "startLine", "endLine", "language"],
                "maxMessageBytes": MAX_MESSAGE_BYTES,
            },
        }

    def _shutdown(self, message: Message) -> _Deferred:
        self.shutting_down = True
        self.cancel_all()
        return self._queue(message, lambda cancel: self.workspace.close(), cancellable=False)

    def _exit(self, message: Message) -> None:
        self.exit_code = 0 if self.shutting_down else 1

    def _cancel(self, message: Message) -> JsonObject:
        target = Params(message.params, message.method).request_id("id")
        with self._lock:
            job = self._pending.get(target)
        if job is not None:
            job.cancel.set()
        return {"cancelled": job is not None}

    def _conversations(self, message: Message) -> JsonObject:
        Params(message.params, message.method)
        roots = self.workspace.roots
        if roots is None:
            raise no_context()
        listed = [
            {
                "id": c.id,
                "title": c.title,
                "model": c.model,
                "created": c.created,
                "updated": c.updated,
                "messages": len(c.messages),
            }
            for c in self.store.list(roots)
        ]
        return {"conversations": listed}

    def _open(self, message: Message) -> _Deferred:
        args = parse_open(Params(message.params, message.method))
        request_id = message.id
        assert request_id is not None
        return self._queue(message, lambda cancel: self.workspace.open(args, request_id, cancel))

    def _refresh(self, message: Message) -> _Deferred:
        prefill = Params(message.params, message.method).boolean("prefill", default=True)
        request_id = message.id
        assert request_id is not None
        return self._queue(
            message, lambda cancel: self.workspace.refresh(request_id, prefill, cancel)
        )

    def _ask(self, message: Message) -> _Deferred:
        args = parse_ask(Params(message.params, message.method))
        request_id = message.id
        assert request_id is not None
        return self._queue(message, lambda cancel: self.workspace.ask(args, request_id, cancel))

    # -- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(job)
        try:
            self.workspace.close()
        except Exception:
            log.exception("closing the session failed")

    def _run(self, job: Job) -> None:
        try:
            if job.cancel.is_set() and job.cancellable:
                raise RpcError(REQUEST_CANCELLED, f"request {job.id!r} was cancelled before it ran")
            reply = response(job.id, job.run(job.cancel))
        except RpcError as error:
            reply = error_response(job.id, error)
        except RepoctxError as error:
            reply = error_response(job.id, application_error(error))
        except Exception as error:
            log.exception("%s failed", job.method)
            failed = RpcError(INTERNAL_ERROR, f"internal error: {type(error).__name__}: {error}")
            reply = error_response(job.id, failed)
        with self._lock:
            self._pending.pop(job.id, None)
        self.send(reply)
        with self._idle:
            self._idle.notify_all()

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._pending.values())
        for job in jobs:
            job.cancel.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued request is answered; False after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def finish(self, timeout: float = FINISH_TIMEOUT_S) -> bool:
        """Cancel what is in flight, stop the worker and wait for it; False if it did not stop
        within ``timeout`` seconds."""
        self.cancel_all()
        self._jobs.put(None)
        self._worker.join(timeout)
        return not self._worker.is_alive()


def _take_stdout() -> BinaryIO:
    """A private copy of stdout for protocol lines; file descriptor 1 then points at stderr, so
    whatever else prints (a library, llama.cpp's C code) cannot corrupt the protocol."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(protocol_fd, "wb")


def _configure_logging() -> None:
    level = os.environ.get("REPOCTX_LOG", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "WARNING",
        format="repoctx serve: %(levelname)s %(message)s",
    )


def serve_stdio(flags: dict[str, Any]) -> int:
    """Serve until ``exit`` (0 after ``shutdown``, else 1) or the end of stdin (0; work in
    flight is cancelled). Returns the exit code."""
    _configure_logging()
    writer = Writer(_take_stdout())

    def send(message: JsonObject) -> None:
        writer(message)
        if writer.broken.is_set():
            server.cancel_all()

    server = Server(send, flags)
    interrupted = False
    try:
        for frame in read_frames(sys.stdin.buffer):
            server.receive(frame)
            if server.exit_code is not None or writer.broken.is_set():
                break
    except KeyboardInterrupt:
        interrupted = True
    except OSError as error:
        log.warning("stdin cannot be read (%s); stopping", error)
    if not server.finish():
        log.warning("the worker did not stop within %.0f s; exiting anyway", FINISH_TIMEOUT_S)
    if interrupted:
        return 130
    return server.exit_code if server.exit_code is not None else 0
