"""Starting the resident engine on demand and waiting for it to stop.

Clients that find nobody listening take ``start.lock`` (so that two clients starting at once
start one server), look again, then spawn ``python -P -m repoctx engine start --foreground``
detached from their session, with its output in the engine's log file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from repoctx import paths
from repoctx.errors import EngineError
from repoctx.resident.channel import EngineConnection, try_connect
from repoctx.resident.server import LOCK_WAIT_S, lock_path
from repoctx.resident.sockets import held_lock, lock_is_held, private_runtime_dir

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 300.0  # the request in flight finishes and the engines save their state


def start_server(idle_timeout: float | None = None) -> EngineConnection:
    """A connection to the resident engine, started first when none listens."""
    folder = private_runtime_dir(paths.engine_socket().parent)
    with held_lock(folder / "start.lock", 2 * START_TIMEOUT_S, "a resident engine is starting"):
        connection = try_connect()
        if connection is not None:
            return connection
        # a server that is stopping holds the lock until its saves are done; the new one waits
        timeout = START_TIMEOUT_S + (LOCK_WAIT_S if lock_is_held(lock_path()) else 0)
        return _wait_for_server(_spawn(idle_timeout), timeout)


def _spawn(idle_timeout: float | None) -> subprocess.Popen[bytes]:
    # -P: a client started inside a checkout of repoctx must not make the server import it
    command = [sys.executable, "-P", "-m", "repoctx", "engine", "start", "--foreground"]
    if idle_timeout is not None:
        command += ["--idle-timeout", str(idle_timeout)]
    log_path = paths.engine_log()
    paths.ensure_private_dir(log_path.parent)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as error:
        raise EngineError(f"cannot start the resident engine ({error}); see {log_path}") from error
    finally:
        os.close(log_fd)
    # reaps it when it exits while this process lives (no zombie, no ResourceWarning)
    threading.Thread(target=process.wait, name="repoctx-engine-reaper", daemon=True).start()
    return process


def _wait_for_server(process: subprocess.Popen[bytes], timeout: float) -> EngineConnection:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = try_connect()
        if connection is not None:
            return connection
        code = process.poll()
        if code is not None:  # 0: another server took the socket first, and serves it
            connection = try_connect()
            if connection is not None:
                return connection
            raise EngineError(
                f"the resident engine exited with code {code} before it accepted connections; "
                f"see {paths.engine_log()}"
            )
        time.sleep(0.05)
    raise EngineError(
        f"the resident engine (pid {process.pid}) did not accept connections within "
        f"{timeout:.0f} s; see {paths.engine_log()}"
    )


def wait_until_stopped(timeout: float = STOP_TIMEOUT_S) -> None:
    """Until no server holds the lock of this REPOCTX_HOME (it releases it last)."""
    deadline = time.monotonic() + timeout
    while lock_is_held(lock_path()):
        if time.monotonic() > deadline:
            raise EngineError(
                f"the resident engine did not stop within {timeout:.0f} s; see {paths.engine_log()}"
            )
        time.sleep(0.05)


def stop_server(connection: EngineConnection, timeout: float = STOP_TIMEOUT_S) -> int:
    """Ask the server to stop (it finishes the request in flight) and wait until it is gone.
    Returns its pid."""
    pid = int(connection.request("stop").get("pid", connection.server_pid))
    connection.close()
    wait_until_stopped(timeout)
    return pid
