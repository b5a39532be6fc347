"""Imports of every file (tree-sitter, cached by blob id, parsed on all cores) and the
dependency graph they resolve to."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repoctx.cache import ContentCache
from repoctx.deps.graph import DepGraph
from repoctx.events import EventSink, Progress, ignore_events
from repoctx.languages import ImportRef, RepoIndex, get_language
from repoctx.languages.base import HeadedLanguage
from repoctx.scan.snapshot import RootSnapshot, SkipReason, Snapshot, SourceFile

if TYPE_CHECKING:  # concurrent.futures: imported where worker processes start
    from concurrent.futures import Executor, Future

CACHE_NAMESPACE = "imports:v1"
# imports of a head that parsed cleanly, by its bytes: any file with that head has them
HEADS_NAMESPACE = "import-heads:v1"
_PARALLEL_MIN_BYTES = 2 * 1024 * 1024
_BATCH_BYTES = 512 * 1024

_Job = tuple[str, str, bytes]  # cache key, language, source
_Result = tuple[str, list[list[object]], str | None]  # cache key, refs as JSON, head key


def imports_cache_key(file: SourceFile) -> str:
    return f"{file.language}:{file.blob_id}"


def head_cache_key(language: str, head: bytes) -> str:
    return f"{language}:{hashlib.sha1(head, usedforsecurity=False).hexdigest()}"


def extract_one(language: str, source: bytes) -> list[ImportRef]:
    return get_language(language).extract(source)


@functools.cache
def _headed(language: str) -> HeadedLanguage | None:
    spec = get_language(language)
    return spec if isinstance(spec, HeadedLanguage) else None


def _extract_job(key: str, language: str, source: bytes) -> _Result:
    spec = _headed(language)
    if spec is None:
        return key, [ref.to_json() for ref in extract_one(language, source)], None
    refs, head = spec.extract_with_head(source)
    head_key = None if head is None else head_cache_key(language, head)
    return key, [ref.to_json() for ref in refs], head_key


def _extract_batch(jobs: list[_Job]) -> list[_Result]:
    return [_extract_job(*job) for job in jobs]


class ImportScan:
    """Imports extraction, fed files as they come, then ``finish()``. While the scan reads,
    ``offer`` gets its fresh files: those the cache does not hold (by blob id, then by head)
    are parsed ahead, in worker processes in batches once there is enough work to pay for them,
    while this thread goes on scanning, then counting tokens. ``add`` then names the files
    whose imports ``finish`` returns (the ones the resolution needs); what no worker parsed is
    parsed here."""

    def __init__(
        self,
        cache: ContentCache,
        on_event: EventSink = ignore_events,
        executor: Executor | None = None,
    ) -> None:
        self.cache = cache
        self.on_event = on_event
        self.executor = executor  # started by the caller, or by the first batch sent out
        self.refs: dict[str, list[ImportRef]] = {}
        self.by_head: dict[str, list[list[object]]] = {}  # found by head: stored by blob id too
        # batches sent out, and their files by key and language (parsed here should one fail;
        # not their sources: the files hold the texts, and bytes kept would add to the peak)
        self.pending: list[tuple[Future[list[_Result]], list[tuple[str, str]]]] = []
        self._files: dict[str, SourceFile] = {}
        self.inline_jobs: list[_Job] = []  # misses not sent out (yet)
        self.parsed_inline: list[list[_Result]] = []
        self._seen: set[str] = set()  # keys looked up, or parsed
        self._stored: set[str] = set()  # keys the cache holds, their imports not read yet
        self._offered: list[SourceFile] = []  # waiting for their look-up, in one query
        self._offered_bytes = 0
        self._total = 0
        self._no_workers = False  # worker processes could not start: everything parses here

    def offer(self, file: SourceFile) -> None:
        """A file read just now, that the resolution may need: parsed ahead if the cache does
        not hold its imports (looked up with others once enough have come)."""
        if file.language is None:
            return
        self._offered.append(file)
        self._offered_bytes += file.size
        if self._offered_bytes >= _BATCH_BYTES:
            self._look_ahead()

    def add(self, files: Sequence[SourceFile]) -> None:
        """The files whose imports ``finish`` returns."""
        self._offered, self._offered_bytes = [], 0  # those not added are not needed after all
        wanted = {imports_cache_key(f): f for f in files if f.language is not None}
        self._total += len(wanted)
        stored = [key for key in wanted if key in self._stored and key not in self.refs]
        self._stored.difference_update(stored)
        found = self.cache.get_many(CACHE_NAMESPACE, stored)
        self._seen.difference_update(key for key in stored if key not in found)  # evicted since
        self._take(found)
        self._look_up({key: f for key, f in wanted.items() if key not in self._seen})
        self._send_out(final=True)

    def parsed(self) -> bool:
        """Whether ``finish`` would find every file parsed (no wait, no parse here)."""
        return not self.inline_jobs and all(future.done() for future, _ in self.pending)

    def finish(self, keep_workers: bool = False) -> dict[str, list[ImportRef]]:
        """Every added file's imports, stored in the cache. The worker processes are shut
        down unless ``keep_workers`` (they count tokens too): ``close`` does it then."""
        fresh: dict[str, list[list[object]]] = dict(self.by_head)
        heads: dict[str, list[list[object]]] = {}
        total = self._total
        for batch in self._results():
            for key, refs, head_key in batch:
                fresh[key] = refs
                if head_key is not None:
                    heads[head_key] = refs
                self.refs[key] = [ImportRef.from_json(r) for r in refs]
            self.on_event(Progress("parse", min(len(self.refs), total), total))
        if not keep_workers:
            self.close()
        self.cache.put_many(CACHE_NAMESPACE, fresh)
        self.cache.put_many(HEADS_NAMESPACE, heads)
        return self.refs

    def close(self) -> None:
        """Shut the worker processes down, once what they were given is done."""
        if self.executor is not None:
            self.executor.shutdown()

    def abandon(self) -> None:
        """Shut the worker processes down without waiting for what they were given."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def parse_inline_now(self) -> None:
        """Parse the files left to this thread now rather than in ``finish`` (while a worker
        process derives the tokenizer, say)."""
        jobs, self.inline_jobs = self.inline_jobs, []
        self.parsed_inline += _parse_here(jobs)

    def _look_ahead(self) -> None:
        """Queue the offered files whose imports the cache does not hold (an existence check:
        reading those it holds waits for ``add``, which may not need them)."""
        files, self._offered, self._offered_bytes = self._offered, [], 0
        keys = {imports_cache_key(f): f for f in files}
        keys = {key: f for key, f in keys.items() if key not in self._seen}
        present = self.cache.present(CACHE_NAMESPACE, keys)
        self._stored.update(present)
        self._seen.update(present)
        self._look_up({key: f for key, f in keys.items() if key not in present}, cached={})

    def _look_up(self, files: dict[str, SourceFile], cached: dict[str, Any] | None = None) -> None:
        """Read the imports of ``files`` from the cache, by blob id (unless ``cached`` is what
        it holds of them), then by head; queue the rest for parsing."""
        if not files:
            return
        self._seen.update(files)
        self._files.update(files)
        if cached is None:
            cached = self.cache.get_many(CACHE_NAMESPACE, sorted(files))
        self._take(cached)
        jobs = [
            (key, str(f.language), self._source(key))
            for key, f in files.items()
            if key not in cached
        ]
        by_head = _found_by_head(jobs, self.cache)
        self.by_head.update(by_head)
        self._take(by_head)
        self.inline_jobs += [job for job in jobs if job[0] not in by_head]
        self._send_out(final=False)

    def _source(self, key: str) -> bytes:
        return self._files[key].text.encode("utf-8", "surrogatepass")

    def _take(self, found: dict[str, Any]) -> None:
        for key, value in found.items():
            self.refs[key] = [ImportRef.from_json(r) for r in value]

    def _send_out(self, final: bool) -> None:
        """Send the misses to worker processes in batches: once they are enough to pay for
        starting them, then each full batch, and at the end (``final``) what is left."""
        waiting = sum(len(job[2]) for job in self.inline_jobs)
        if not self.pending and waiting < _PARALLEL_MIN_BYTES:
            return
        if self.executor is None:
            if self._no_workers:
                return
            self.executor = worker_pool(parse_workers())
            self._no_workers = self.executor is None
            if self.executor is None:
                return
        if not final and waiting < _BATCH_BYTES:
            return
        for batch in _batches(self.inline_jobs):
            future = self.executor.submit(_extract_batch, batch)
            self.pending.append((future, [(key, language) for key, language, _ in batch]))
        self.inline_jobs = []

    def _results(self) -> Iterator[list[_Result]]:
        yield from self.parsed_inline
        for future, batch in self.pending:
            try:
                yield future.result()
            except Exception:  # a worker that failed (or died, or was shut down): parsed here
                yield _extract_batch(
                    [(key, language, self._source(key)) for key, language in batch]
                )
        yield from _parse_here(self.inline_jobs)


def _parse_here(jobs: list[_Job]) -> list[list[_Result]]:
    return [_extract_batch(jobs[start : start + 64]) for start in range(0, len(jobs), 64)]


def parse_workers() -> int:
    """How many worker processes parse imports: a core stays with the caller's tokenizer."""
    return min((os.cpu_count() or 1) - 1, 8)


def worker_pool(workers: int) -> Executor | None:
    """``workers`` worker processes, or None where none can start (one core, or no
    semaphores): the caller does the work itself."""
    if workers < 1:
        return None
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: slow to import

    try:
        return ProcessPoolExecutor(max_workers=workers)
    except (OSError, NotImplementedError):
        return None


def start_import_scan(
    files: Sequence[SourceFile],
    cache: ContentCache,
    on_event: EventSink = ignore_events,
    executor: Executor | None = None,
) -> ImportScan:
    """An ``ImportScan`` of ``files``. ``executor``: worker processes already started (see
    ``parse_workers``), used instead of new ones; ``finish`` shuts them down."""
    imports = ImportScan(cache, on_event, executor)
    imports.add(files)
    return imports


def _found_by_head(jobs: list[_Job], cache: ContentCache) -> dict[str, list[list[object]]]:
    """The stored imports of the jobs whose head (see ``HeadedLanguage``) a file parsed
    before had, by the jobs' cache keys: an edit below the last import costs no parse."""
    heads: dict[str, str] = {}
    for key, language, source in jobs:
        spec = _headed(language)
        if spec is not None:
            head = spec.import_head(source)
            if head is not None:
                heads[key] = head_cache_key(language, head)
    if not heads:
        return {}
    stored = cache.get_many(HEADS_NAMESPACE, heads.values())
    return {key: stored[head] for key, head in heads.items() if head in stored}


def _batches(jobs: list[_Job]) -> Iterator[list[_Job]]:
    """Batches of about ``_BATCH_BYTES``, the largest files first."""
    batch: list[_Job] = []
    size = 0
    for job in sorted(jobs, key=lambda j: -len(j[2])):
        batch.append(job)
        size += len(job[2])
        if size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


GRAPH_NAMESPACE = "graph:v2"

# Files the scan left out that still exist as files, so an import can name them: resolvers must
# see them (an empty ``__init__.py`` makes its folder a package) even though no edge may point to
# them. Ignored files are left out by the user's choice; the other reasons are not files of the
# root (submodules, folders and special files, dangling links, links leading outside).
_INDEXED_SKIPS = frozenset(
    {
        SkipReason.BINARY,
        SkipReason.TOO_LARGE,
        SkipReason.LOCK_FILE,
        SkipReason.GENERATED,
        SkipReason.VENDORED,
        SkipReason.UNREADABLE,
        SkipReason.EMPTY,
        SkipReason.UNDECODABLE,
    }
)


def indexed_paths(root: RootSnapshot) -> list[str]:
    """The paths of ``root`` imports are resolved against: its packed files and the files left
    out for their size, kind or content (not ignored ones)."""
    paths = [f.path for f in root.files]
    paths += [s.path for s in root.skipped if s.reason in _INDEXED_SKIPS]
    return paths


@dataclass
class ResolvePlan:
    """Which files need their imports resolved, and the targets of the others from the last run.

    A file's targets (packed or not; edges keep the packed ones) are a function of its imports
    (its blob), the set of indexed paths of every root, and the content of the files the
    resolvers read (go.mod, tsconfig.json, declarations of packages and namespaces ...). The last
    run's targets of an unchanged file are reused while the path set and every file the resolvers
    read are unchanged (a read file that was not packed counts as unchanged while it stays
    unpacked: resolvers saw no content)."""

    cache_key: str
    paths_digest: str  # of the indexed paths of every root
    reusable: dict[str, list[str]]
    todo: list[SourceFile]
    reads: dict[str, str | None]  # file key -> blob id of a file the resolvers read, None: unpacked


def plan_resolution(snapshot: Snapshot, cache: ContentCache) -> ResolvePlan:
    files = snapshot.files
    roots = "\0".join(f"{root.name}={root.path}" for root in snapshot.roots)
    cache_key = hashlib.sha256(roots.encode()).hexdigest()
    blobs = {f.key: f.blob_id for f in files}
    stored = cache.get(GRAPH_NAMESPACE, cache_key)
    reusable: dict[str, list[str]] = {}
    reads: dict[str, str | None] = {}
    paths_digest = _paths_digest(snapshot)
    if _still_valid(stored, paths_digest, blobs):
        assert isinstance(stored, dict)
        reads = dict(stored["reads"])
        for key, (blob, targets) in stored["files"].items():
            if blobs.get(key) == blob:
                reusable[key] = list(targets)
    todo = [f for f in files if f.language is not None and f.key not in reusable]
    return ResolvePlan(cache_key, paths_digest, reusable, todo, reads)


def _paths_digest(snapshot: Snapshot) -> str:
    keys = (f"{root.name}/{path}" for root in snapshot.roots for path in indexed_paths(root))
    return hashlib.sha256("\0".join(sorted(keys)).encode()).hexdigest()


def _still_valid(stored: Any, paths_digest: str, blobs: dict[str, str]) -> bool:
    if not isinstance(stored, dict) or stored.get("paths") != paths_digest:
        return False
    reads = stored.get("reads")
    return isinstance(reads, dict) and all(blobs.get(k) == b for k, b in reads.items())


def build_graph(
    snapshot: Snapshot,
    refs: dict[str, list[ImportRef]],
    plan: ResolvePlan,
    cache: ContentCache,
) -> DepGraph:
    """Resolve the imports of ``plan.todo`` against every indexed file (first in the importer's
    own root, then, for non-relative references, in the other roots), reuse the rest, store the
    result for the next run, and keep the edges to files of the pack."""
    read_log: set[str] = set()
    indexes = {root.name: _root_index(root, read_log) for root in snapshot.roots}
    found: dict[str, list[str]] = dict(plan.reusable)
    for file in plan.todo:
        own_refs = refs.get(imports_cache_key(file), [])
        targets = _resolve_file(file, own_refs, file.root, indexes)
        targets.discard(file.key)
        found[file.key] = sorted(targets)
    blobs = {f.key: f.blob_id for f in snapshot.files}
    record = {
        "paths": plan.paths_digest,
        "reads": {**plan.reads, **{key: blobs.get(key) for key in read_log}},
        "files": {key: [blobs[key], targets] for key, targets in found.items()},
    }
    if plan.todo or not plan.reusable:
        cache.put(GRAPH_NAMESPACE, plan.cache_key, record)
    nodes = tuple(f.key for f in snapshot.files)
    return DepGraph(nodes, _packed_edges(found, frozenset(nodes)))


def _packed_edges(found: dict[str, list[str]], packed: frozenset[str]) -> dict[str, frozenset[str]]:
    """Each file's targets that are in the pack, for the files that have any."""
    edges = {key: frozenset(targets) & packed for key, targets in found.items() if targets}
    return {key: targets for key, targets in edges.items() if targets}


def _resolve_file(
    file: SourceFile, refs: list[ImportRef], root: str, indexes: dict[str, RepoIndex]
) -> set[str]:
    spec = get_language(str(file.language))
    own = indexes[root]
    targets: set[str] = set()
    for ref in refs:
        found = spec.resolve(ref, file.path, own)
        if found:
            targets.update(f"{root}/{path}" for path in found)
            continue
        for other, index in indexes.items():
            if other != root:
                targets.update(f"{other}/{path}" for path in spec.resolve(ref, None, index))
    return targets


def _root_index(root: RootSnapshot, read_log: set[str]) -> RepoIndex:
    """Every indexed path of ``root``; only packed files have content to read. ``read_log``
    gets the key of each indexed file read (reading a path that is not indexed sees nothing, and
    the path set changes when one appears)."""
    paths = frozenset(indexed_paths(root))
    texts = {f.path: f.text for f in root.files}

    def read_text(path: str) -> str | None:
        if path in paths:
            read_log.add(f"{root.name}/{path}")
        return texts.get(path)

    return RepoIndex(paths, read_text)
