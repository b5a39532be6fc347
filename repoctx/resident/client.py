"""The client of the resident engine: ``RemoteEngine`` is an ``Engine`` whose model lives in
the ``repoctx engine`` process, and ``ResidentEngineFactory`` the session's factory for it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, TypeVar

from repoctx.engine.base import Engine, GenerationOptions
from repoctx.errors import EngineError, EngineVersionError
from repoctx.events import (
    AnswerDone,
    CacheOutcome,
    Event,
    EventSink,
    ModelReady,
    event_from_json,
    ignore_events,
)
from repoctx.model.modelfile import ModelInfo
from repoctx.model.prompt import Prompt
from repoctx.resident.channel import EngineConnection, try_connect
from repoctx.resident.spawn import start_server, stop_server
from repoctx.resident.wire import ids_payload

log = logging.getLogger("repoctx.engine")

_E = TypeVar("_E", ModelReady, AnswerDone, CacheOutcome)


CONNECT_ATTEMPTS = 3


def connect(start: bool = True) -> EngineConnection:
    """A greeted connection to the resident engine of this REPOCTX_HOME. ``start``: start one
    when none listens, and replace one that runs another version of repoctx (it finishes its
    work first)."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        connection = _reach(start)
        try:
            connection.hello()
            return connection
        except EngineVersionError as mismatch:
            if not start or attempt == CONNECT_ATTEMPTS:
                connection.close()
                raise
            log.info("replacing the resident engine: %s", mismatch)
            stop_server(connection)
        except EngineError:
            connection.close()
            if not connection.broken or attempt == CONNECT_ATTEMPTS:
                raise
            time.sleep(0.1)  # a server that just died can still hold its socket for a moment
        except BaseException:
            connection.close()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _reach(start: bool) -> EngineConnection:
    connection = try_connect()
    if connection is not None:
        return connection
    if not start:
        raise EngineError("the resident engine is not running; start it: repoctx engine start")
    return start_server()


class RemoteEngine:
    """An engine in the resident process; ``close`` closes the connection, not the server.
    After the server went away (the request then failed with an ``EngineError``), the next
    request connects again, starting a server, and opens the engine there again."""

    def __init__(
        self, connection: EngineConnection, ready: ModelReady, open_params: dict[str, Any]
    ) -> None:
        self.connection = connection
        self._ready = ready
        self._open_params = open_params

    @classmethod
    def open(
        cls,
        connection: EngineConnection,
        model: ModelInfo,
        n_ctx: int,
        on_event: EventSink,
        kv_type: str | None = None,
        flash_attn: bool | None = None,
    ) -> RemoteEngine:
        params = {
            "model": str(model.path.absolute()),
            "fingerprint": model.fingerprint,
            "n_ctx": n_ctx,
            "kv_type": kv_type,
            "flash_attn": flash_attn,
        }
        result = connection.request("open", params, on_event=on_event)
        return cls(connection, _result_event(result, "ready", ModelReady), params)

    @property
    def ready(self) -> ModelReady:
        return self._ready

    def fit(self, n_ctx: int, on_event: EventSink) -> None:
        """Room for ``n_ctx`` tokens: the server grows the loaded engine's context."""
        if n_ctx <= self._ready.n_ctx:
            return
        result = self._request("fit", {"n_ctx": n_ctx}, on_event)
        self._ready = _result_event(result, "ready", ModelReady)
        self._open_params = {**self._open_params, "n_ctx": self._ready.n_ctx}

    def _request(
        self,
        method: str,
        params: dict[str, Any],
        on_event: EventSink,
        payload: bytes = b"",
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        if self.connection.broken:
            self.connection.close()
            self.connection = connect(start=True)
            opened = self.connection.request("open", self._open_params, on_event=on_event)
            self._ready = _result_event(opened, "ready", ModelReady)
        return self.connection.request(method, params, payload, self._forward(on_event), cancel)

    def _forward(self, on_event: EventSink) -> EventSink:
        def forward(event: Event) -> None:
            if isinstance(event, ModelReady):  # the server reopened it (another client's model)
                self._ready = event
            on_event(event)

        return forward

    def answer(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        on_event: EventSink,
        cancel: threading.Event,
    ) -> AnswerDone:
        params = {
            "prefix_tokens": prompt.prefix_tokens,
            "repositories": list(prompt.repositories),
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "seed": options.seed,
            "repeat_penalty": options.repeat_penalty,
        }
        result = self._request("answer", params, on_event, ids_payload(prompt.ids), cancel)
        return _result_event(result, "done", AnswerDone)

    def prefill(
        self, prompt: Prompt, on_event: EventSink, cancel: threading.Event
    ) -> CacheOutcome | None:
        params = {"prefix_tokens": prompt.prefix_tokens, "repositories": list(prompt.repositories)}
        result = self._request("prefill", params, on_event, ids_payload(prompt.ids), cancel)
        if result.get("outcome") is None:
            return None
        return _result_event(result, "outcome", CacheOutcome)

    def housekeep(self) -> None:
        """The server does its engines' deferred work."""

    def flush(self, on_event: EventSink) -> None:
        """The server saves; its engines outlive this process."""

    def close(self, on_event: EventSink = ignore_events) -> None:
        """The connection only: the server keeps the engine, and saves its state."""
        self.connection.close()


def _result_event(result: dict[str, Any], name: str, kind: type[_E]) -> _E:
    record = result.get(name)
    try:
        event = event_from_json(record) if isinstance(record, dict) else None
    except ValueError as error:
        message = f"the resident engine sent a {name} this client does not know: {error}"
        raise EngineError(message) from error
    if not isinstance(event, kind):
        raise EngineError(f"the resident engine sent {record!r} where a {kind.__name__} belongs")
    return event


class ResidentEngineFactory:
    """The session's engine factory: connects to the resident engine (starting it when needed)
    and opens the model there with the user's KV type and flash attention choices."""

    def __init__(self, kv_type: str | None = None, flash_attn: bool | None = None) -> None:
        self.kv_type = kv_type
        self.flash_attn = flash_attn

    def __call__(self, model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        connection = connect(start=True)
        try:
            return RemoteEngine.open(
                connection, model, n_ctx, on_event, self.kv_type, self.flash_attn
            )
        except BaseException:
            connection.close()
            raise
