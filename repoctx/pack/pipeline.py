"""The one place that composes the packing stages:

roots --scan--> Snapshot --deps--> DepGraph --order--> files --tokens/fit--> Pack (--> view)

The budget is about the text the model sees, the xml rendering: the fit always counts that one.
Another format (markdown) is a view of the same pack: the same files, whole or as signatures,
rendered and counted in that format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.deps.graph import DepGraph, Ordering, order_files
from repoctx.deps.resolve import (
    ImportScan,
    ResolvePlan,
    build_graph,
    parse_workers,
    plan_resolution,
    worker_pool,
)
from repoctx.errors import BudgetTooSmallError, NothingToPackError, UsageError
from repoctx.events import EventSink, Progress, ignore_events
from repoctx.languages import get_language
from repoctx.model.choice import resolve_model_path
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.pack.fit import Omission, Pack, PackInputs, Segment, fit, view
from repoctx.pack.render import RENDERERS, Renderer
from repoctx.scan.rules import Rules
from repoctx.scan.scanner import ScanOptions, scan
from repoctx.scan.snapshot import Snapshot, SourceFile
from repoctx.tokens.count import (
    Prepared,
    Tokenizer,
    count_batches,
    load_tokenizer,
    prepare_in_worker,
    ranks_to_derive,
)
from repoctx.tokens.shippedranks import shipped_path

if TYPE_CHECKING:  # concurrent.futures: imported where worker processes start
    from concurrent.futures import Executor, Future

SIGNATURES_NAMESPACE = "signatures:v1"
TEXTS_RECORD = "texts"  # key prefix of _TextCounts records, beside segment keys "xml:full:..."
SEGMENTS_RECORD = "segments"  # key prefix of _RecentCounts records
FITTED_FORMAT = "xml"  # what the model sees, so what the budget is about


def default_reserve(context_length: int) -> int:
    """Tokens kept free for the conversation when no budget is given."""
    return max(1024, min(16384, context_length // 8))


def pack_budget(settings: Settings, model: ModelInfo) -> int:
    """``--budget``, else the model's context less the reserve for the conversation."""
    if settings.budget is not None:
        return settings.budget
    if not model.context_length:
        raise UsageError(f"{model.path.name} does not say its context length; pass --budget N")
    reserve = settings.reserve
    if reserve is None:
        reserve = default_reserve(model.context_length)
    if reserve >= model.context_length:
        raise UsageError(
            f"--reserve {reserve:,} leaves nothing of the {model.context_length:,}-token context "
            f"of {model.path.name}; pass a smaller --reserve or a --budget"
        )
    return model.context_length - reserve


@dataclass(frozen=True)
class PackResult:
    snapshot: Snapshot
    graph: DepGraph
    ordering: Ordering
    pack: Pack
    model: ModelInfo
    timings: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    """Seconds per stage, for ``--stats`` and the benchmark."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now

    def move(self, seconds: float, source: str, destination: str) -> None:
        """Count ``seconds`` of ``source``'s lap as ``destination``'s (work done inside it)."""
        self.timings[source] -= seconds
        self.timings[destination] += seconds


class _GraphWork:
    """Resolving imports into the dependency graph, and ordering it: Python work that this
    thread does between two batches of token counts once the worker processes have parsed
    every import (they count meanwhile), else after the counts."""

    def __init__(
        self, snapshot: Snapshot, imports: ImportScan, plan: ResolvePlan, cache: ContentCache
    ) -> None:
        self._snapshot = snapshot
        self._imports = imports
        self._plan = plan
        self._cache = cache
        self._done: tuple[DepGraph, Ordering] | None = None
        self.seconds = 0.0  # what it took, once done

    def if_ready(self) -> None:
        if self._done is None and self._imports.parsed():
            self._run()

    def result(self) -> tuple[DepGraph, Ordering]:
        return self._done if self._done is not None else self._run()

    def _run(self) -> tuple[DepGraph, Ordering]:
        start = time.perf_counter()
        refs = self._imports.finish(keep_workers=True)
        graph = build_graph(self._snapshot, refs, self._plan, self._cache)
        changed = {f.key: f.last_changed for f in self._snapshot.files}
        self._done = graph, order_files(graph, changed)
        self.seconds = time.perf_counter() - start
        return self._done


def build_pack(
    roots: Sequence[Path],
    settings: Settings,
    cache: ContentCache | None = None,
    on_event: EventSink = ignore_events,
    tokenizer: Tokenizer | None = None,
) -> PackResult:
    """Scan, parse imports (worker processes) while the tokenizer loads and counts (threads),
    order, and fit the budget. The first time this machine sees the model's vocabulary, a
    worker process derives the tokenizer while the scan runs (see ``_derive_meanwhile``)."""
    watch = _Stopwatch()
    cache = cache if cache is not None else ContentCache.open(on_event)
    model = read_model_info(resolve_model_path(settings.model))
    budget = pack_budget(settings, model)
    early, prepared = _derive_meanwhile(model) if tokenizer is None else (None, None)
    imports = ImportScan(cache, on_event, early)
    try:
        rules = Rules.from_mapping(settings.rules)
        options = ScanOptions(include=settings.include, exclude=settings.exclude, rules=rules)
        snapshot = scan(roots, options, cache, on_event, imports.offer)
        if not snapshot.files:
            raise NothingToPackError(str(roots[0]), len(snapshot.skipped))
        watch.lap("scan")
        plan = plan_resolution(snapshot, cache)
        imports.add(plan.todo)
    except BaseException:
        # a worker deriving the ranks finishes them (and stores them), then exits
        imports.abandon()
        raise
    if prepared is not None:
        imports.parse_inline_now()  # what is not for the workers, while one derives
    workers = imports.executor if tokenizer is None else None  # they rebuild only ours
    tokenizer = tokenizer or load_tokenizer(model.path, on_event, prepared)
    watch.lap("tokenizer")
    renderer = RENDERERS[FITTED_FORMAT]
    root_names = [root.name for root in snapshot.roots]
    counter = _SegmentCounter(tokenizer, cache, renderer, on_event, model.path, root_names)
    graph_work = _GraphWork(snapshot, imports, plan, cache)
    try:
        segments = counter.full_segments(snapshot.files, workers, graph_work.if_ready)
        meanwhile = graph_work.seconds
        watch.lap("tokens")
        graph, ordering = graph_work.result()
    except BaseException:
        imports.abandon()  # Ctrl-C, say: no waiting for the workers' batches
        raise
    imports.close()
    watch.lap("graph")
    watch.move(meanwhile, "tokens", "graph")
    texts = _TextCounts(tokenizer, cache, renderer, root_names)
    inputs = PackInputs(
        renderer=renderer,
        root_names=root_names,
        segments=[segments[key] for key in ordering.order],
        dependents={key: len(users) for key, users in graph.dependents().items()},
        count=texts.count_many,
        reduce=counter.reduced_segments,
        reduced_counts=counter.reduced_counts,
        skipped=[Omission(s.key, s.reason.value, s.size, None, s.detail) for s in snapshot.skipped],
    )
    pack = fit(inputs, budget)
    texts.remember()
    if not tokenizer.additive:
        pack = _fit_whole_text(inputs, budget, pack, tokenizer)
    counter.remember()
    if settings.format in RENDERERS and settings.format != FITTED_FORMAT:
        shown = RENDERERS[settings.format]
        viewer = _SegmentCounter(tokenizer, cache, shown, on_event, model.path, root_names)
        pack = _view(pack, root_names, viewer)
        viewer.remember()
    watch.lap("fit")
    return PackResult(snapshot, graph, ordering, pack, model, watch.timings)


def _derive_meanwhile(model: ModelInfo) -> tuple[Executor | None, Future[Prepared] | None]:
    """The first time this machine sees the model's vocabulary, its tokenizer is derived from
    the model file, or read from the ranks repoctx ships (up to a second; shipped ranks take
    milliseconds): a worker process starts on it at once, while this thread scans, and then
    parses imports and counts. Deriving takes a worker of its own for a while; reading shipped
    ranks does not, so no worker is added for it (it would only contend for the cores)."""
    if (os.cpu_count() or 1) < 2 or not ranks_to_derive(model.path):
        return None, None
    executor = worker_pool(parse_workers() + (shipped_path(model) is None))
    if executor is None:  # no worker processes here: derived in this thread
        return None, None
    return executor, executor.submit(prepare_in_worker, os.fspath(model.path))


def _view(pack: Pack, root_names: list[str], viewer: _SegmentCounter) -> Pack:
    """The fitted ``pack`` rendered and counted by ``viewer``'s renderer."""
    segments = {
        **viewer.full_segments([s.file for s in pack.segments if not s.reduced]),
        **viewer.reduced_segments([s.file for s in pack.segments if s.reduced]),
    }
    texts = _TextCounts(viewer.tokenizer, viewer.cache, viewer.renderer, root_names)
    shown = view(pack, viewer.renderer, root_names, segments, texts.count_many)
    texts.remember()
    if viewer.tokenizer.additive:
        return shown
    return dataclasses.replace(shown, tokens=viewer.tokenizer.count(shown.text))


def _fit_whole_text(inputs: PackInputs, budget: int, pack: Pack, tokenizer: Tokenizer) -> Pack:
    """For tokenizers whose counts do not add up piece by piece (SentencePiece adds a leading
    space to each text): count the whole text, and fit again with the excess taken off the
    budget until the whole text fits."""
    target = budget
    for _ in range(8):
        exact = tokenizer.count(pack.text)
        if exact <= budget:
            return dataclasses.replace(pack, tokens=exact, budget=budget)
        target -= exact - budget
        if target <= 0:
            break
        pack = fit(inputs, target)
    raise BudgetTooSmallError(budget, exact)


def file_segments(
    files: Sequence[SourceFile],
    format: str,
    tokenizer: Tokenizer,
    cache: ContentCache,
    model_path: Path,
    *,
    reduced: bool = False,
) -> dict[str, Segment]:
    """``files`` rendered as the pack renders them in ``format``, whole or as signatures (a
    file without a language has none), with their token counts: from the cache where the pack
    counted them, by key."""
    renderer = RENDERERS.get(format, RENDERERS[FITTED_FORMAT])
    counter = _SegmentCounter(tokenizer, cache, renderer, ignore_events, model_path)
    return counter.reduced_segments(list(files)) if reduced else counter.full_segments(files)


class _TextCounts:
    """Token counts of the texts around the files (header, footer, the names of dropped
    files), kept in the cache per tokenizer, format and roots, text by text, so that a run
    whose files all come from the cache never has to build the tokenizer."""

    LIMIT = 20_000  # texts kept per record

    def __init__(
        self, tokenizer: Tokenizer, cache: ContentCache, renderer: Renderer, roots: list[str]
    ) -> None:
        self.tokenizer = tokenizer
        self.cache = cache
        self.namespace = f"tokens:{tokenizer.name}"
        self.key = f"{TEXTS_RECORD}:{renderer.name}:{_roots_digest(roots)}"
        stored = cache.get(self.namespace, self.key)
        self.known: dict[str, int] = stored if _is_counts(stored) else {}
        self.fresh = False

    def count_many(self, texts: Sequence[str]) -> list[int]:
        missing = [text for text in dict.fromkeys(texts) if text not in self.known]
        if missing:
            self.known.update(zip(missing, self.tokenizer.count_many(missing), strict=True))
            self.fresh = True
        return [self.known[text] for text in texts]

    def remember(self) -> None:
        if self.fresh and len(self.known) <= self.LIMIT:
            self.cache.put(self.namespace, self.key, self.known)


class _RecentCounts:
    """The token counts of the segments that the last pack of the same roots used (per
    tokenizer and format), in one record: a warm run reads it instead of looking every file up.
    Its keys are those of the entries kept per file, blob ids included, so a hit is as right as
    theirs; it is rewritten, with this run's segments only, when they differ."""

    LIMIT = 500_000  # segments kept in the record

    def __init__(self, cache: ContentCache, namespace: str, key: str) -> None:
        self.cache = cache
        self.namespace = namespace
        self.key = key
        stored = cache.get(namespace, key)
        self.stored: dict[str, int] = stored if _is_counts(stored) else {}
        self.used: dict[str, int] = {}

    def get_many(self, keys: Iterable[str]) -> dict[str, int]:
        """The counts of those ``keys`` that are known: from the record, else per file."""
        found: dict[str, int] = {}
        missing: list[str] = []
        for key in keys:
            if key in self.stored:
                found[key] = self.stored[key]
            else:
                missing.append(key)
        if missing:
            found.update(self.cache.get_many(self.namespace, missing))
        return found

    def note(self, counts: Mapping[str, int]) -> None:
        self.used.update(counts)

    def remember(self) -> None:
        if self.used != self.stored and len(self.used) <= self.LIMIT:
            self.cache.put(self.namespace, self.key, self.used)


_BATCH_CHARS = 128 * 1024  # small enough for workers and this thread to meet near the middle


def _batches(names: list[str], size: Callable[[str], int]) -> list[list[str]]:
    """``names`` in order, cut into batches of about ``_BATCH_CHARS`` characters."""
    batches: list[list[str]] = [[]]
    filled = 0
    for name in names:
        if filled >= _BATCH_CHARS:
            batches.append([])
            filled = 0
        batches[-1].append(name)
        filled += size(name)
    return batches if batches[0] else []


def _roots_digest(roots: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(roots).encode()).hexdigest()[:32]


def _is_counts(value: object) -> TypeGuard[dict[str, int]]:
    return isinstance(value, dict) and all(
        isinstance(k, str) and type(v) is int for k, v in value.items()
    )


class _SegmentCounter:
    """Renders files and counts their tokens, cached by (format, path, blob id, tokenizer).
    Given the pack's ``roots``, it reads the counts of the last pack of those roots in one
    record (``_RecentCounts``), and ``remember()`` stores this run's."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        cache: ContentCache,
        renderer: Renderer,
        on_event: EventSink,
        model_path: Path,
        roots: Sequence[str] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.cache = cache
        self.renderer = renderer
        self.on_event = on_event
        self.model_path = model_path
        self.namespace = f"tokens:{tokenizer.name}"
        self.recent: _RecentCounts | None = None
        if roots:
            key = f"{SEGMENTS_RECORD}:{renderer.name}:{_roots_digest(roots)}"
            self.recent = _RecentCounts(cache, self.namespace, key)

    def remember(self) -> None:
        if self.recent is not None:
            self.recent.remember()

    def _key(self, file: SourceFile, reduced: bool) -> str:
        # signatures are counted per version of the reduction: a new one makes new texts
        state = SIGNATURES_NAMESPACE if reduced else "full"
        return f"{self.renderer.name}:{state}:{file.blob_id}:{file.key}"

    def _segments(
        self,
        rendered: dict[str, tuple[SourceFile, str, bool]],
        workers: Executor | None = None,
        between: Callable[[], None] | None = None,
    ) -> dict[str, Segment]:
        """``between``: work for this thread, called after each batch it has counted or waited
        for (see ``_GraphWork``)."""
        keys = {name: self._key(file, reduced) for name, (file, _, reduced) in rendered.items()}
        cached = self._cached(keys.values())
        missing = [name for name, key in keys.items() if key not in cached]
        batches = _batches(missing, lambda name: len(rendered[name][1]))
        texts = [[rendered[name][1] for name in batch] for batch in batches]
        counted: dict[str, int] = {}
        done = 0
        for batch, counts in zip(
            batches, count_batches(self.tokenizer, texts, self.model_path, workers), strict=True
        ):
            counted.update({keys[name]: count for name, count in zip(batch, counts, strict=True)})
            done += len(batch)
            self.on_event(Progress("tokens", done, len(missing)))
            if between is not None:
                between()
        self.cache.put_many(self.namespace, counted)
        totals = {**cached, **counted}
        if self.recent is not None:
            self.recent.note(totals)
        return {
            name: Segment(file, text, totals[keys[name]], reduced)
            for name, (file, text, reduced) in rendered.items()
        }

    def _cached(self, keys: Iterable[str]) -> dict[str, int]:
        """The known counts of those ``keys`` (an entry that holds no count is counted again)."""
        if self.recent is not None:
            found = self.recent.get_many(keys)
        else:
            found = self.cache.get_many(self.namespace, keys)
        return {key: count for key, count in found.items() if type(count) is int}

    def full_segments(
        self,
        files: Sequence[SourceFile],
        workers: Executor | None = None,
        between: Callable[[], None] | None = None,
    ) -> dict[str, Segment]:
        """Every file whole; ``workers`` (processes) may count some of them."""
        rendered = {f.key: (f, self.renderer.file(f, f.text, False), False) for f in files}
        return self._segments(rendered, workers, between)

    def reduced_counts(self, files: list[SourceFile]) -> dict[str, int]:
        """The token counts of ``files``' signatures that are known, by file key, without
        making or reading the signatures (a large repository over budget reduces most of its
        files, and packs few of them as signatures)."""
        keys = {f.key: self._key(f, True) for f in files if f.language}
        counts = self._cached(keys.values())
        if self.recent is not None:
            self.recent.note(counts)
        return {name: counts[key] for name, key in keys.items() if key in counts}

    def reduced_segments(self, files: list[SourceFile]) -> dict[str, Segment]:
        keys = {f.key: f"{f.language}:{f.blob_id}" for f in files if f.language}
        stored = self.cache.get_many(SIGNATURES_NAMESPACE, keys.values())
        fresh: dict[str, str] = {}
        rendered: dict[str, tuple[SourceFile, str, bool]] = {}
        for file in files:
            if file.key not in keys:
                continue
            cache_key = keys[file.key]
            if cache_key not in stored:
                spec = get_language(str(file.language))
                fresh[cache_key] = spec.reduce(file.text.encode("utf-8", "surrogatepass"))
            text = str(stored.get(cache_key, fresh.get(cache_key)))
            rendered[file.key] = (file, self.renderer.file(file, text, True), True)
        self.cache.put_many(SIGNATURES_NAMESPACE, fresh)
        return self._segments(rendered)
