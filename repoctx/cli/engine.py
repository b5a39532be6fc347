"""`repoctx engine start|stop|status`: the resident engine process, rendered for a terminal."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from repoctx import paths
from repoctx.cli.console import describe_model
from repoctx.events import ModelReady, event_from_json

EXIT_NOT_RUNNING = 3  # what `systemctl status` and LSB init scripts answer: not running


def start_engine(foreground: bool, idle_timeout: float | None) -> int:
    from repoctx.resident.channel import try_connect

    connection = try_connect()
    if connection is not None:
        status = connection.request("status")
        connection.close()
        print(f"repoctx engine: already running on {status['socket']} (pid {status['pid']})")
        return 0
    if foreground:
        if os.environ.get("REPOCTX_ENGINE") != "fake":
            import llama_cpp  # noqa: F401 - before anything imports numpy (CUDA builds crash)

        from repoctx.resident.server import run_server

        if not run_server(idle_timeout):
            print("repoctx engine: another one already runs", file=sys.stderr)
        return 0
    from repoctx.resident.spawn import start_server

    connection = start_server(idle_timeout)
    status = connection.request("status")
    connection.close()
    print(f"repoctx engine: listening on {status['socket']} (pid {status['pid']})")
    return 0


def stop_engine() -> int:
    from repoctx.resident.channel import try_connect
    from repoctx.resident.spawn import stop_server

    connection = try_connect()
    if connection is None:
        print(f"repoctx engine: not running (no server on {paths.engine_socket()})")
        return 0
    pid = stop_server(connection)
    print(f"repoctx engine: stopped (pid {pid})")
    return 0


def engine_status(as_json: bool) -> int:
    from repoctx.resident.channel import try_connect

    connection = try_connect()
    if connection is None:
        if as_json:
            print(json.dumps({"running": False, "socket": str(paths.engine_socket())}))
        else:
            print(f"repoctx engine: not running (no server on {paths.engine_socket()})")
        return EXIT_NOT_RUNNING
    status = connection.request("status")
    connection.close()
    if as_json:
        print(json.dumps({"running": True, **status}, ensure_ascii=False))
    else:
        print(describe_status(status))
    return 0


def describe_status(status: dict[str, Any]) -> str:
    idle = status["idle_timeout_s"]
    lines = [
        f"repoctx engine: running (pid {status['pid']}, repoctx {status['repoctx']})",
        f"  socket:   {status['socket']}",
        f"  log:      {status['log']}",
        f"  uptime:   {_duration(status['uptime_s'])}; "
        + (f"exits after {_duration(idle)} idle" if idle > 0 else "no idle timeout"),
    ]
    models = [_model_line(engine["ready"]) for engine in status["engines"]]
    lines.append(f"  model:    {models[0] if models else 'none loaded'}")
    work = "busy" if status["busy"] else "idle"
    if status["queue_length"]:
        work += f", {status['queue_length']} waiting"
    lines.append(
        f"  clients:  {status['clients']} connected; {status['requests_served']:,} requests "
        f"served; {work}"
    )
    return "\n".join(lines)


def _model_line(record: dict[str, Any]) -> str:
    ready = event_from_json(record)
    return describe_model(ready) if isinstance(ready, ModelReady) else str(record)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
