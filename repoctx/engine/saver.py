"""Saving KV states to disk in the background: the answer is never held up by the disk. The
engine hands over host states (their images are not changed again); one thread writes them
into the store, one after another, and marks each settled. Notices of those saves (a full disk)
are kept until the engine passes them on to the next request, or to ``wait``'s sink.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from repoctx.engine.hostcache import HostCache, HostState
from repoctx.events import Event, EventSink, Notice, Progress
from repoctx.kv import io as kvio
from repoctx.kv.store import KVStore, StateKey

_PROGRESS_S = 0.25


class SaveAborted(BaseException):
    """The process is going away: the save in progress is dropped (its files are removed).
    A BaseException, so that the store does not report it as a failed save."""


@dataclass(eq=False)
class _Job:
    state: HostState
    key: StateKey


class Saver:
    def __init__(self, store: KVStore, cache: HostCache) -> None:
        # a store of its own: its notices come from this thread, not from an answer's
        self.store = KVStore(
            store.root, store.cap_bytes, self._keep, lock_timeout=store.lock_timeout,
            keep_recent=store.keep_recent, min_free_bytes=store.min_free_bytes,
        )  # fmt: skip
        self.cache = cache
        self._jobs: list[_Job] = []
        self._notices: list[Notice] = []
        self._written = 0
        self._aborted = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="repoctx-saver", daemon=True)
        self._thread.start()

    def submit(self, state: HostState, key: StateKey) -> None:
        with self._changed:
            self._jobs.append(_Job(state, key))
            self._changed.notify_all()

    @property
    def pending_bytes(self) -> int:
        with self._changed:
            return sum(job.state.image.length for job in self._jobs)

    def take_notices(self) -> list[Notice]:
        with self._changed:
            notices, self._notices = self._notices, []
        return notices

    def wait(self, on_event: EventSink) -> None:
        """Return once every save submitted has ended, reporting ``save`` progress in bytes to
        ``on_event`` (the saves' notices stay for ``take_notices``)."""
        with self._changed:
            total = sum(job.state.image.length for job in self._jobs)
            start = self._written
        if total:
            on_event(Progress("save", 0, total, "bytes"))
        while True:
            with self._changed:
                if not self._jobs:
                    break
                self._changed.wait(_PROGRESS_S)
                done = min(total, self._written - start)
            on_event(Progress("save", done, total, "bytes"))
        if total:
            on_event(Progress("save", total, total, "bytes"))

    def abort(self) -> None:
        """Stop the save in progress at its next chunk and drop the others."""
        with self._changed:
            self._aborted = True
            for job in self._jobs[1:]:
                self.cache.end_write(job.state)
            del self._jobs[1:]
            self._changed.notify_all()

    def close(self, on_event: EventSink) -> None:
        self.wait(on_event)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                job = self._jobs[0]
            try:
                self._save(job)
            finally:
                with self._changed:
                    if self._jobs and self._jobs[0] is job:
                        self._jobs.pop(0)
                    self._changed.notify_all()

    def _save(self, job: _Job) -> None:
        state = job.state
        if not self.cache.begin_write(state):
            return
        try:
            image = state.image

            def write(fd: int) -> str:
                return kvio.write_state(fd, image.view, on_chunk=self._moved)

            self.store.save(
                job.key, state.tokens, write, label=state.label, expected_bytes=image.length,
                checkpoint=state.checkpoint, repositories=state.repositories,
            )  # fmt: skip
        except SaveAborted:
            pass
        finally:
            self.cache.end_write(state)

    def _moved(self, count: int) -> None:
        with self._changed:
            if self._aborted:
                raise SaveAborted
            self._written += count
            self._changed.notify_all()

    def _keep(self, event: Event) -> None:
        if isinstance(event, Notice):
            with self._changed:
                self._notices.append(event)
