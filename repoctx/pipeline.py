"""The one place that composes the packing stages:

roots --scan--> Snapshot --deps--> DepGraph --order--> files --tokens/fit--> Pack (--> view)

The budget is about the text the model sees, the xml rendering: the fit always counts that one.
Another format (markdown) is a view of the same pack: the same files, whole or as signatures,
rendered and counted in that format.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.deps import build_graph, plan_resolution, start_import_scan
from repoctx.errors import BudgetTooSmallError, NothingToPackError, UsageError
from repoctx.events import EventSink, Progress, ignore_events
from repoctx.graph import DepGraph, Ordering, order_files
from repoctx.languages import get_language
from repoctx.modelfile import ModelInfo, read_model_info
from repoctx.models import resolve_model_path
from repoctx.pack import Omission, Pack, PackInputs, Segment, fit, view
from repoctx.render import RENDERERS, Renderer
from repoctx.rules import Rules
from repoctx.scan import ScanOptions, scan
from repoctx.snapshot import Snapshot, SourceFile
from repoctx.tokens import Tokenizer, load_tokenizer

SIGNATURES_NAMESPACE = "signatures:v1"
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


def build_pack(
    roots: Sequence[Path],
    settings: Settings,
    cache: ContentCache | None = None,
    on_event: EventSink = ignore_events,
    tokenizer: Tokenizer | None = None,
) -> PackResult:
    """Scan, parse imports (worker processes) while the tokenizer loads and counts (threads),
    order, and fit the budget."""
    watch = _Stopwatch()
    cache = cache if cache is not None else ContentCache.open(on_event)
    model = read_model_info(resolve_model_path(settings.model))
    budget = pack_budget(settings, model)
    rules = Rules.from_mapping(settings.rules)
    options = ScanOptions(include=settings.include, exclude=settings.exclude, rules=rules)
    snapshot = scan(roots, options, cache, on_event)
    if not snapshot.files:
        raise NothingToPackError(str(roots[0]), len(snapshot.skipped))
    watch.lap("scan")
    plan = plan_resolution(snapshot, cache)
    imports = start_import_scan(plan.todo, cache, on_event)
    tokenizer = tokenizer or load_tokenizer(model.path, on_event)
    watch.lap("tokenizer")
    renderer = RENDERERS[FITTED_FORMAT]
    counter = _SegmentCounter(tokenizer, cache, renderer, on_event)
    segments = counter.full_segments(snapshot.files)
    watch.lap("tokens")
    graph = build_graph(snapshot, imports.finish(), plan, cache)
    ordering = order_files(graph, {f.key: f.last_changed for f in snapshot.files})
    watch.lap("graph")
    inputs = PackInputs(
        renderer=renderer,
        root_names=[root.name for root in snapshot.roots],
        segments=[segments[key] for key in ordering.order],
        dependents={key: len(users) for key, users in graph.dependents().items()},
        count=tokenizer.count_many,
        reduce=counter.reduced_segments,
        skipped=[Omission(s.key, s.reason.value, s.size, None, s.detail) for s in snapshot.skipped],
    )
    pack = fit(inputs, budget)
    if not tokenizer.additive:
        pack = _fit_whole_text(inputs, budget, pack, tokenizer)
    if settings.format in RENDERERS and settings.format != FITTED_FORMAT:
        viewer = _SegmentCounter(tokenizer, cache, RENDERERS[settings.format], on_event)
        pack = _view(pack, inputs.root_names, viewer)
    watch.lap("fit")
    return PackResult(snapshot, graph, ordering, pack, model, watch.timings)


def _view(pack: Pack, root_names: list[str], viewer: _SegmentCounter) -> Pack:
    """The fitted ``pack`` rendered and counted by ``viewer``'s renderer."""
    segments = {
        **viewer.full_segments([s.file for s in pack.segments if not s.reduced]),
        **viewer.reduced_segments([s.file for s in pack.segments if s.reduced]),
    }
    shown = view(pack, viewer.renderer, root_names, segments, viewer.tokenizer.count_many)
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


class _SegmentCounter:
    """Renders files and counts their tokens, cached by (format, path, blob id, tokenizer)."""

    def __init__(
        self, tokenizer: Tokenizer, cache: ContentCache, renderer: Renderer, on_event: EventSink
    ) -> None:
        self.tokenizer = tokenizer
        self.cache = cache
        self.renderer = renderer
        self.on_event = on_event
        self.namespace = f"tokens:{tokenizer.name}"

    def _key(self, file: SourceFile, reduced: bool) -> str:
        state = "sig" if reduced else "full"
        return f"{self.renderer.name}:{state}:{file.blob_id}:{file.key}"

    def _segments(self, rendered: dict[str, tuple[SourceFile, str, bool]]) -> dict[str, Segment]:
        keys = {name: self._key(file, reduced) for name, (file, _, reduced) in rendered.items()}
        cached = self.cache.get_many(self.namespace, keys.values())
        missing = [name for name, key in keys.items() if key not in cached]
        counted: dict[str, int] = {}
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            counts = self.tokenizer.count_many([rendered[name][1] for name in chunk])
            counted.update({keys[name]: count for name, count in zip(chunk, counts, strict=True)})
            self.on_event(Progress("tokens", start + len(chunk), len(missing)))
        self.cache.put_many(self.namespace, counted)
        totals = {**cached, **counted}
        return {
            name: Segment(file, text, int(totals[keys[name]]), reduced)
            for name, (file, text, reduced) in rendered.items()
        }

    def full_segments(self, files: Sequence[SourceFile]) -> dict[str, Segment]:
        rendered = {f.key: (f, self.renderer.file(f, f.text, False), False) for f in files}
        return self._segments(rendered)

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
