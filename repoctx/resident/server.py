"""The resident engine server (``repoctx engine start --foreground``): one process per user
(per REPOCTX_HOME) that keeps the model loaded and serves every ``repoctx`` process through a
Unix socket, so that a follow-up from a new process starts from the live context.

One instance per socket: the server holds an exclusive flock on ``engine.lock`` beside the
socket while it lives (a socket file nobody holds the lock for is stale and replaced). It
exits when asked (``stop``), after ``idle_timeout`` seconds with no client and nothing to do,
on SIGTERM or SIGINT, and when its socket file is removed or replaced. It logs to
``paths.engine_log()`` and never writes to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from repoctx import __version__, paths
from repoctx.errors import EngineError
from repoctx.events import event_to_json
from repoctx.resident.connection import Connection
from repoctx.resident.opener import Opener, opener_from_env
from repoctx.resident.sockets import (
    file_identity,
    open_lock_file,
    peer_credentials,
    private_runtime_dir,
    try_lock,
    unix_address,
)
from repoctx.resident.wire import PROTOCOL_VERSION, JsonObject
from repoctx.resident.worker import Worker

log = logging.getLogger("repoctx.engine")

DEFAULT_IDLE_TIMEOUT_S = 600.0
LOCK_WAIT_S = 120.0  # a server that is stopping may still be saving a large state
TICK_S = 0.25
LOG_BYTES = 4 << 20
LOG_BACKUPS = 1


def idle_timeout_from_env() -> float:
    value = os.environ.get("REPOCTX_ENGINE_IDLE", "")
    try:
        return float(value) if value.strip() else DEFAULT_IDLE_TIMEOUT_S
    except ValueError:
        raise EngineError(
            f"REPOCTX_ENGINE_IDLE={value!r} is not a number of seconds; set it to 600, say"
        ) from None


def lock_path() -> Path:
    return paths.engine_socket().with_name("engine.lock")


class EngineServer:
    def __init__(self, listener: socket.socket, socket_path: Path, lock_fd: int,
                 idle_timeout: float, opener: Opener) -> None:  # fmt: skip
        self.listener = listener
        self.lock_fd = lock_fd
        self.socket_path = socket_path
        self.identity = file_identity(socket_path)
        self.idle_timeout = idle_timeout
        self.worker = Worker(opener)
        self.started = time.time()
        self.connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._idle_since: float | None = time.monotonic()

    # -- what connections ask of the server ---------------------------------------------------

    def status(self, asking: Connection) -> JsonObject:
        with self._lock:
            others = len(self.connections - {asking})
        engines = [
            {"model_path": key.model_path, "fingerprint": key.fingerprint,
             "kv_type": key.kv_type, "flash_attn": key.flash_attn, "ready": event_to_json(ready)}
            for key, ready in self.worker.engines.snapshot()
        ]  # fmt: skip
        return {
            "pid": os.getpid(),
            "repoctx": __version__,
            "protocol": PROTOCOL_VERSION,
            "started": self.started,
            "uptime_s": time.time() - self.started,
            "idle_timeout_s": self.idle_timeout,
            "socket": str(self.socket_path),
            "log": str(paths.engine_log()),
            "engines": engines,
            "clients": others,
            "requests_served": self.worker.requests_served,
            "busy": self.worker.busy,
            "queue_length": self.worker.queue_length,
        }

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str, cancel_in_flight: bool) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
        self.worker.stop(cancel_in_flight)

    def forget(self, connection: Connection) -> None:
        with self._lock:
            self.connections.discard(connection)

    # -- the main loop -----------------------------------------------------------------------

    def serve(self) -> None:
        self.worker.start()
        self.listener.settimeout(TICK_S)
        log.info("listening on %s (pid %d, idle timeout %.0f s)", self.socket_path,
                 os.getpid(), self.idle_timeout)  # fmt: skip
        try:
            while not self._stop.is_set():
                self._accept()
                self._check_socket_file()
                self._check_idle()
        finally:
            self._shut_down()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except TimeoutError:
            return
        except OSError as error:  # out of descriptors, say: the clients that have one go on
            log.warning("cannot accept a connection: %s", error)
            time.sleep(TICK_S)
            return
        pid, uid, _ = peer_credentials(sock)
        if uid != os.getuid():
            log.warning("refused a connection from pid %d of user %d", pid, uid)
            sock.close()
            return
        connection = Connection(sock, pid, self)
        with self._lock:
            self.connections.add(connection)
        connection.start()

    def _check_socket_file(self) -> None:
        """Gone or another file: someone removed it (or REPOCTX_HOME). A new socket can reuse
        the old inode number; a removed lock file (no links left) gives that case away."""
        if file_identity(self.socket_path) != self.identity:
            self.request_stop(f"{self.socket_path} was removed or replaced", True)
        elif os.fstat(self.lock_fd).st_nlink == 0:
            self.request_stop(f"{lock_path()} was removed", True)

    def _check_idle(self) -> None:
        with self._lock:
            connected = bool(self.connections)
        if connected or self.worker.busy or self.idle_timeout <= 0:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = time.monotonic()
        elif time.monotonic() - self._idle_since >= self.idle_timeout:
            self.request_stop(f"idle for {self.idle_timeout:.0f} s", False)

    def _shut_down(self) -> None:
        log.info("stopping: %s", self._stop_reason or "interrupted")
        self.listener.close()
        if self.identity is not None and file_identity(self.socket_path) == self.identity:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        if not self._stop.is_set():  # an exception or a second Ctrl-C left the loop
            self.request_stop("interrupted", cancel_in_flight=True)
        self.worker.thread.join()
        with self._lock:
            connections = list(self.connections)
        for connection in connections:
            connection.shutdown()
        log.info("stopped after serving %d requests", self.worker.requests_served)


def _accepts(socket_path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(socket_path) as address:
            probe.connect(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _acquire_lock(socket_path: Path) -> int | None:
    """The server lock's descriptor, with this pid written in it; None when another server
    holds the lock and accepts connections."""
    path = lock_path()
    fd = open_lock_file(path)
    deadline = time.monotonic() + LOCK_WAIT_S
    while not try_lock(fd):
        if _accepts(socket_path):
            os.close(fd)
            return None
        if time.monotonic() > deadline:
            os.close(fd)
            raise EngineError(
                f"another resident engine holds {path} and does not answer on {socket_path}; "
                "end the process whose pid that file holds, then start again"
            )
        time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _listen(socket_path: Path) -> socket.socket:
    """Bind the socket, owner-only (we hold the lock: a file already there is stale)."""
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        with unix_address(socket_path) as address:
            listener.bind(address)
    finally:
        os.umask(previous)
    socket_path.chmod(0o600)
    listener.listen(64)
    return listener


def configure_logging() -> None:
    """The log file (rotated at LOG_BYTES), and stderr too when it is a terminal; stdout is
    pointed at stderr so that nothing (llama.cpp's C code included) writes to it."""
    log_path = paths.engine_log()
    paths.ensure_private_dir(log_path.parent)
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [handler]
    if sys.stderr.isatty():
        handlers.append(logging.StreamHandler(sys.stderr))
    level = os.environ.get("REPOCTX_LOG", "INFO").upper()
    logging.basicConfig(
        handlers=handlers,
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s repoctx engine[%(process)d]: %(levelname)s %(message)s",
        force=True,
    )
    sys.stdout.flush()
    os.dup2(2, 1)


def _handle_signals(server: EngineServer) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if server.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        server.request_stop(f"signal {signal.Signals(signum).name}", cancel_in_flight=True)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_server(idle_timeout: float | None = None, opener: Opener | None = None) -> bool:
    """Serve until the server stops; False when another server already serves the socket."""
    configure_logging()
    socket_path = paths.engine_socket()
    private_runtime_dir(socket_path.parent)
    lock_fd = _acquire_lock(socket_path)
    if lock_fd is None:
        log.info("another resident engine already listens on %s", socket_path)
        return False
    try:
        timeout = idle_timeout if idle_timeout is not None else idle_timeout_from_env()
        listener = _listen(socket_path)
        server = EngineServer(listener, socket_path, lock_fd, timeout, opener or opener_from_env())
        _handle_signals(server)
        server.serve()
    except Exception:
        log.exception("the resident engine failed")
        raise
    finally:
        os.close(lock_fd)  # last: a new server may start once the engines are closed
    return True
