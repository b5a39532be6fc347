"""Fitting ordered files into a token budget, and the pack that results.

Over budget, the pack keeps its order and sheds the least useful content first: generated,
data and vendored files, then tests, docs and examples, then source files are reduced to their
signatures, then files are dropped. Within a stage, files that fewer files import go first, and
of those the largest. Every file not packed whole is in ``Pack.omitted`` or ``Pack.reduced``
with its reason; the total never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from repoctx.errors import BudgetTooSmallError
from repoctx.render import Renderer
from repoctx.snapshot import FileKind, SourceFile

DROP_FIRST = frozenset({FileKind.GENERATED, FileKind.DATA, FileKind.VENDORED})
DROP_SECOND = frozenset({FileKind.TEST, FileKind.DOCS, FileKind.EXAMPLE})


@dataclass(frozen=True)
class Segment:
    """One file as the pack renders it."""

    file: SourceFile
    text: str
    tokens: int
    reduced: bool = False


@dataclass(frozen=True)
class Omission:
    """A file that is not in the pack (or not whole), and why."""

    key: str
    reason: str
    size: int = 0
    tokens: int | None = None  # its full token count, when known
    detail: str = ""


@dataclass(frozen=True)
class Pack:
    format: str
    header: str
    segments: tuple[Segment, ...]
    footer: str
    tokens: int
    budget: int
    header_tokens: int
    footer_tokens: int
    omitted: tuple[Omission, ...]  # not packed: skipped by the scan or dropped for the budget
    reduced: tuple[Omission, ...] = field(default=())  # packed as signatures only

    @property
    def text(self) -> str:
        return "".join(self.pieces())

    def pieces(self) -> list[str]:
        """The text in pieces (header, files, footer): writing them one by one spares joining
        tens of megabytes into one string."""
        return [self.header, *(s.text for s in self.segments), self.footer]


@dataclass
class PackInputs:
    """What fitting needs: full segments in pack order, and how to reduce one."""

    renderer: Renderer
    root_names: list[str]
    segments: list[Segment]
    dependents: Mapping[str, int]
    count: Callable[[Sequence[str]], list[int]]
    reduce: Callable[[list[SourceFile]], dict[str, Segment]]
    skipped: list[Omission]


def fit(inputs: PackInputs, budget: int) -> Pack:
    """The pack of ``inputs`` within ``budget`` tokens; BudgetTooSmallError when not even the
    fixed text around the files fits."""
    state = _FitState(inputs, budget)
    state.shed()
    state.list_dropped()
    return state.pack()


class _FitState:
    """Content is settled first, against a footer that only says how many files were dropped;
    what is left of the budget then lists their paths, in pack order, as far as it goes."""

    def __init__(self, inputs: PackInputs, budget: int) -> None:
        self.inputs = inputs
        self.budget = budget
        renderer = inputs.renderer
        self.header = renderer.header(inputs.root_names)
        self.header_tokens, self.close_empty, self.open_close = _fixed_counts(inputs)
        if self.header_tokens + self.close_empty > budget:
            raise BudgetTooSmallError(budget, self.header_tokens + self.close_empty)
        self.current: dict[str, Segment] = {s.file.key: s for s in inputs.segments}
        self.full: dict[str, Segment] = dict(self.current)
        self.dropped: dict[str, str] = {}  # in the order they were dropped
        self.smaller: dict[str, Segment] = {}  # signature versions made so far
        self.listed: dict[str, int] = {}  # dropped files named in the footer, and their cost
        self.body_tokens = sum(s.tokens for s in inputs.segments)
        self._more_cost: dict[int, int] = {}

    def _more_tokens(self, unlisted: int) -> int:
        if unlisted == 0:
            return 0
        if unlisted not in self._more_cost:
            line = self.inputs.renderer.footer_more(unlisted)
            self._more_cost[unlisted] = self.inputs.count([line])[0]
        return self._more_cost[unlisted]

    def footer_tokens(self) -> int:
        if not self.dropped:
            return self.close_empty
        unlisted = len(self.dropped) - len(self.listed)
        return self.open_close + sum(self.listed.values()) + self._more_tokens(unlisted)

    def total(self) -> int:
        return self.header_tokens + self.body_tokens + self.footer_tokens()

    def shed(self) -> None:
        if self.total() <= self.budget:
            return
        kinds_first = self._victims(lambda s: s.file.kind in DROP_FIRST)
        self._drop_all(kinds_first, "dropped to fit the budget: {kind} file")
        kinds_second = self._victims(lambda s: s.file.kind in DROP_SECOND)
        self._drop_all(kinds_second, "dropped to fit the budget: {kind} file")
        self._reduce_until_fits()
        self._drop_all(self._victims(lambda s: True), "dropped to fit the budget")
        self._refill()
        if self.total() > self.budget:
            raise BudgetTooSmallError(self.budget, self.total() - self.body_tokens)

    def list_dropped(self) -> None:
        """Name dropped files in the footer while the budget allows."""
        order = [s.file.key for s in self.inputs.segments if s.file.key in self.dropped]
        lines = self.inputs.count([self.inputs.renderer.footer_line(key) for key in order])
        for key, cost in zip(order, lines, strict=True):
            self.listed[key] = cost
            if self.total() > self.budget:
                del self.listed[key]
                return

    def _victims(self, wanted: Callable[[Segment], bool]) -> list[Segment]:
        position = {s.file.key: i for i, s in enumerate(self.inputs.segments)}
        chosen = [s for s in self.current.values() if wanted(s)]
        dependents = self.inputs.dependents
        chosen.sort(key=lambda s: (dependents.get(s.file.key, 0), -s.tokens, -position[s.file.key]))
        return chosen

    def _drop_all(self, victims: list[Segment], reason: str) -> None:
        for segment in victims:
            if self.total() <= self.budget:
                return
            key = segment.file.key
            del self.current[key]
            self.body_tokens -= segment.tokens
            self.dropped[key] = reason.format(kind=segment.file.kind.value)

    def _refill(self) -> None:
        """Put dropped files back, most useful first, wherever they still fit whole or as
        signatures: dropping a large file can leave room for smaller ones."""
        for key in reversed(list(self.dropped)):
            options = [self.full[key], self.smaller.get(key)]
            for segment in (option for option in options if option is not None):
                reason = self.dropped.pop(key)
                self.current[key] = segment
                self.body_tokens += segment.tokens
                if self.total() <= self.budget:
                    break
                del self.current[key]
                self.body_tokens -= segment.tokens
                self.dropped[key] = reason

    def _reduce_until_fits(self) -> None:
        if self.total() <= self.budget:
            return
        candidates = self._victims(lambda s: s.file.language is not None and not s.reduced)
        batch_size = 64
        for start in range(0, len(candidates), batch_size):
            batch = candidates[start : start + batch_size]
            reduced = self.inputs.reduce([s.file for s in batch])
            for segment in batch:
                if self.total() <= self.budget:
                    return
                smaller = reduced.get(segment.file.key)
                if smaller is not None and smaller.tokens < segment.tokens:
                    self.smaller[segment.file.key] = smaller
                    self.current[segment.file.key] = smaller
                    self.body_tokens -= segment.tokens - smaller.tokens

    def _footer(self) -> str:
        renderer = self.inputs.renderer
        if not self.dropped:
            return renderer.footer_close(False)
        unlisted = len(self.dropped) - len(self.listed)
        more = renderer.footer_more(unlisted) if unlisted else ""
        lines = "".join(renderer.footer_line(key) for key in self.listed)
        return renderer.footer_open() + lines + more + renderer.footer_close(True)

    def pack(self) -> Pack:
        order = [s.file.key for s in self.inputs.segments]
        keep = [self.current[key] for key in order if key in self.current]
        omitted = list(self.inputs.skipped) + [
            Omission(k, self.dropped[k], self.full[k].file.size, self.full[k].tokens)
            for k in order
            if k in self.dropped
        ]
        reduced = [
            Omission(
                s.file.key,
                "reduced to signatures to fit the budget",
                s.file.size,
                self.full[s.file.key].tokens,
                detail=f"{s.tokens} tokens as signatures",
            )
            for s in keep
            if s.reduced
        ]
        return Pack(
            format=self.inputs.renderer.name,
            header=self.header,
            segments=tuple(keep),
            footer=self._footer(),
            tokens=self.total(),
            budget=self.budget,
            header_tokens=self.header_tokens,
            footer_tokens=self.footer_tokens(),
            omitted=tuple(omitted),
            reduced=tuple(reduced),
        )


def _fixed_counts(inputs: PackInputs) -> tuple[int, int, int]:
    """Tokens of the header, of the footer with nothing dropped, and of the footer's frame."""
    renderer = inputs.renderer
    texts = [
        renderer.header(inputs.root_names),
        renderer.footer_close(False),
        renderer.footer_open(),
        renderer.footer_close(True),
    ]
    header, close_empty, opening, closing = inputs.count(texts)
    return header, close_empty, opening + closing
