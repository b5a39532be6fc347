"""The resident engine's worker: the one thread that owns the loaded engines and runs requests
one at a time, in arrival order (a GPU runs one prefill at a time). Idle, it lets the engines
do their deferred work; stopping, it finishes the request in flight and closes them."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from repoctx.engine.base import Engine
from repoctx.errors import EngineError, ModelError, RepoctxError
from repoctx.events import Event, EventSink, ModelReady, Notice
from repoctx.model.modelfile import read_model_info
from repoctx.resident.opener import EngineKey, Opener
from repoctx.resident.wire import JsonObject, error_to_json, internal_error_json

log = logging.getLogger("repoctx.engine")

HOUSEKEEP_INTERVAL_S = 1.0


class Client(Protocol):
    """The connection a job answers to."""

    @property
    def closed(self) -> bool: ...

    def send_event(self, request_id: int, event: Event) -> None: ...

    def finish(self, job: Job, reply: JsonObject) -> None: ...


@dataclass
class Job:
    """One request of one client for the worker; ``run`` returns the result object."""

    client: Client
    request_id: int
    method: str
    run: Callable[[Engines, EventSink, threading.Event], JsonObject]
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False

    def sink(self, event: Event) -> None:
        """Events of this request, to its client, until the request is answered."""
        if not self.finished:
            self.client.send_event(self.request_id, event)


class Engines:
    """The loaded engines by key; one model in memory at a time."""

    def __init__(self, opener: Opener) -> None:
        self.opener = opener
        self._loaded: dict[EngineKey, Engine] = {}
        self._lock = threading.Lock()  # status reads them from other threads

    def snapshot(self) -> list[tuple[EngineKey, ModelReady]]:
        with self._lock:
            return [(key, engine.ready) for key, engine in self._loaded.items()]

    def get(self, key: EngineKey, n_ctx: int, on_event: EventSink) -> tuple[Engine, bool]:
        """The engine for ``key`` with at least ``n_ctx`` tokens of context (a loaded one
        grows with ``fit``), and whether it reported its ``ModelReady`` meanwhile."""
        engine = self._loaded_for(key)
        if engine is not None:
            if engine.ready.n_ctx >= n_ctx:
                return engine, False
            before = engine.ready
            message = f"growing the context of {before.model} to {n_ctx:,} tokens"
            on_event(Notice(message + f" (from {before.n_ctx:,})", "info"))
            engine.fit(n_ctx, on_event)
            return engine, engine.ready != before
        model = read_model_info(key.model_path)
        if model.fingerprint != key.fingerprint:
            raise ModelError(
                f"{key.model_path} changed since this client read it; ask again so that it "
                "reads the new file"
            )
        for other, loaded in list(self._loaded.items()):
            closing, opening = loaded.ready.model, model.path.name
            if closing == opening:  # two files of one name: say which is which
                closing, opening = other.model_path, str(model.path)
            message = f"closing {closing} to open {opening}"
            on_event(Notice(message + " (one model in memory at a time)", "info"))
            self._close(other)
        opened = self.opener(model, n_ctx, on_event, key.kv_type, key.flash_attn)
        with self._lock:
            self._loaded[key] = opened
        return opened, True

    def _loaded_for(self, key: EngineKey) -> Engine | None:
        """The engine loaded for ``key``, or for the same file content at another path (one
        model file reached by two paths, as two installs sharing REPOCTX_HOME do)."""
        engine = self._loaded.get(key)
        if engine is None:
            same = replace(key, model_path="")
            found = (e for k, e in self._loaded.items() if replace(k, model_path="") == same)
            engine = next(found, None)
        return engine

    def housekeep(self) -> None:
        for key, engine in list(self._loaded.items()):
            try:
                engine.housekeep()
            except Exception:
                log.exception("deferred work of %s failed", key.model_path)

    def _close(self, key: EngineKey) -> None:
        with self._lock:
            engine = self._loaded.pop(key)
        try:
            engine.close(_log_event)
        except Exception:
            log.exception("closing %s failed", key.model_path)

    def close_all(self) -> None:
        for key in list(self._loaded):
            self._close(key)


def _log_event(event: Event) -> None:
    """What an engine reports with no client to tell: the saves of its closing."""
    if isinstance(event, Notice):
        log.warning("%s", event.message)
    else:
        log.debug("%s", event)


_IDLE = object()


class Worker:
    def __init__(self, opener: Opener) -> None:
        self.engines = Engines(opener)
        self.requests_served = 0
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._stopping = False
        self._housekeep_due = False
        self._changed = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="repoctx-engine-worker")

    def start(self) -> None:
        self.thread.start()

    @property
    def busy(self) -> bool:
        with self._changed:
            return self._current is not None or bool(self._queue)

    @property
    def queue_length(self) -> int:
        with self._changed:
            return len(self._queue)

    def submit(self, job: Job) -> None:
        """Queue ``job``; when another client's request runs or waits, tell this one."""
        with self._changed:
            if self._stopping:
                raise EngineError("the resident engine is stopping; ask again in a moment")
            ahead = len(self._queue) + (self._current is not None)
            if ahead:
                message = f"waits for another answer to finish first ({ahead} ahead)"
                job.sink(Notice(message, "info"))
            self._queue.append(job)
            self._changed.notify_all()

    def stop(self, cancel_in_flight: bool) -> None:
        """The request in flight finishes (or is cancelled), the queued ones are refused, the
        engines are closed (which finishes their saves); then the thread ends."""
        with self._changed:
            self._stopping = True
            if cancel_in_flight and self._current is not None:
                self._current.cancel.set()
            self._changed.notify_all()

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            if isinstance(job, Job):
                self._run(job)
            else:
                self.engines.housekeep()
        for refused in self._drain():
            stopped = EngineError("the resident engine stopped before this request ran; ask again")
            refused.client.finish(refused, {"id": refused.request_id, **_error(stopped)})
        self.engines.close_all()

    def _next(self) -> Job | object | None:
        with self._changed:
            if not self._queue and not self._stopping and self._housekeep_due:
                self._housekeep_due = False
                return _IDLE
            while not self._queue and not self._stopping:
                if not self._changed.wait(HOUSEKEEP_INTERVAL_S):
                    return _IDLE
            if self._stopping:
                return None
            self._current = self._queue.popleft()
            return self._current

    def _drain(self) -> list[Job]:
        with self._changed:
            jobs, self._queue = list(self._queue), deque()
            return jobs

    def _run(self, job: Job) -> None:
        reply: JsonObject
        try:
            if job.client.closed:
                reply = {"id": job.request_id, "result": None}
            else:
                result = job.run(self.engines, job.sink, job.cancel)
                reply = {"id": job.request_id, "result": result}
        except RepoctxError as error:
            log.info("%s %d failed: %s", job.method, job.request_id, error)
            reply = {"id": job.request_id, **_error(error)}
        except Exception as error:
            log.exception("%s %d failed", job.method, job.request_id)
            reply = {"id": job.request_id, "error": internal_error_json(error)}
        job.finished = True
        with self._changed:
            self._current = None
            self.requests_served += 1
            self._housekeep_due = True
        job.client.finish(job, reply)


def _error(error: RepoctxError) -> JsonObject:
    return {"error": error_to_json(error)}
