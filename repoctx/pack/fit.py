"""Fitting ordered files into a token budget, and the pack that results.

Over budget, the pack keeps its order and sheds what is worth least to a reader first:
generated, data and vendored files, then tests, docs and examples, then config files (build
files, CI, dotfiles), then source files are reduced to their signatures, then dropped. Within a
stage, a file that takes over half the budget goes first (it would crowd out the rest); then
files that fewer files import, and of those the largest. Then what was shed comes back, most
useful first (source files that many others import before the rest, config before tests and
docs), whole where it fits, else as signatures. Every file not packed whole is in
``Pack.omitted`` or ``Pack.reduced`` with its reason; the total never exceeds the budget.

The fit counts one rendering, the text the model sees (xml); ``view`` renders the same choice
of files in another format. Where the counts of files' signatures are known (a warm run), the
choice is made on the counts, and only the signatures packed are read and rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from repoctx.errors import BudgetTooSmallError
from repoctx.pack.render import Renderer
from repoctx.scan.snapshot import FileKind, SourceFile

DROP_FIRST = frozenset({FileKind.GENERATED, FileKind.DATA, FileKind.VENDORED})
DROP_SECOND = frozenset({FileKind.TEST, FileKind.DOCS, FileKind.EXAMPLE})
DROP_THIRD = frozenset({FileKind.CONFIG})
SHED_ORDER = (DROP_FIRST, DROP_SECOND, DROP_THIRD)  # then source and any other kind
OVERSIZED_SHARE = 2  # a file over 1/2 of the budget is shed first within its stage
DROPPED = "dropped to fit the budget: {kind} file"
REDUCED = "reduced to signatures to fit the budget"
OVER_HALF = "over half the budget"


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
    listed: tuple[str, ...] = ()  # files dropped for the budget that the footer names
    unlisted: int = 0  # files dropped for the budget that it only counts
    fitted_tokens: int | None = None  # a view: the tokens of the xml the budget was fitted on

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
    # the token counts of files' signatures known without their texts (by key), so that only
    # the files packed as signatures are reduced and rendered
    reduced_counts: Callable[[list[SourceFile]], dict[str, int]] | None = None


def fit(inputs: PackInputs, budget: int) -> Pack:
    """The pack of ``inputs`` within ``budget`` tokens; BudgetTooSmallError when not even the
    fixed text around the files fits."""
    state = _FitState(inputs, budget)
    state.shed()
    state.list_dropped()
    if not state.fetch_signatures():  # a known count was not that of the signatures made now
        return fit(dataclasses.replace(inputs, reduced_counts=None), budget)
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
        self.dropped: dict[str, str] = {}  # why each dropped file was dropped
        self.smaller: dict[str, Segment] = {}  # signature versions made so far
        self.unfetched: set[str] = set()  # of those, the ones known by their count alone
        self.listed: dict[str, int] = {}  # dropped files named in the footer, and their cost
        self.body_tokens = sum(s.tokens for s in inputs.segments)
        self.position = {s.file.key: i for i, s in enumerate(inputs.segments)}
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
        self._drop_all(self._victims(lambda s: s.file.kind in DROP_FIRST))
        self._drop_all(self._victims(lambda s: s.file.kind in DROP_SECOND))
        self._drop_all(self._victims(lambda s: s.file.kind in DROP_THIRD))
        self._reduce_until_fits()
        self._drop_all(self._victims(lambda s: True))
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

    def _oversized(self, segment: Segment) -> bool:
        return segment.tokens * OVERSIZED_SHARE > self.budget

    def _worth(self, segment: Segment) -> tuple[int, bool, int, int, int]:
        """What ``segment`` is worth to a reader, for sorting: least first."""
        key = segment.file.key
        kind = segment.file.kind
        stage = next((n for n, kinds in enumerate(SHED_ORDER) if kind in kinds), len(SHED_ORDER))
        dependents = self.inputs.dependents.get(key, 0)
        return (
            stage,
            not self._oversized(segment),
            dependents,
            -segment.tokens,
            -self.position[key],
        )

    def _victims(self, wanted: Callable[[Segment], bool]) -> list[Segment]:
        """The packed files ``wanted`` picks, in the order to shed them."""
        return sorted((s for s in self.current.values() if wanted(s)), key=self._worth)

    def _put(self, key: str, segment: Segment | None) -> None:
        """``segment`` in the pack for ``key`` (None: out of it), keeping the body's count."""
        previous = self.current.pop(key, None)
        if previous is not None:
            self.body_tokens -= previous.tokens
        if segment is not None:
            self.current[key] = segment
            self.body_tokens += segment.tokens

    def _drop_all(self, victims: list[Segment]) -> None:
        for segment in victims:
            if self.total() <= self.budget:
                return
            key = segment.file.key
            self._put(key, None)
            self.dropped[key] = self._drop_reason(segment)

    def _drop_reason(self, segment: Segment) -> str:
        reason = DROPPED.format(kind=segment.file.kind.value)
        if not self._oversized(segment):
            return reason
        return f"{reason}, {OVER_HALF}" + (" even as signatures" if segment.reduced else "")

    def _reduce_until_fits(self) -> None:
        if self.total() <= self.budget:
            return
        candidates = self._victims(lambda s: s.file.language is not None and not s.reduced)
        batch_size = 64
        for start in range(0, len(candidates), batch_size):
            batch = candidates[start : start + batch_size]
            reduced = self._signatures([s.file for s in batch])
            for segment in batch:
                if self.total() <= self.budget:
                    return
                smaller = reduced.get(segment.file.key)
                if smaller is not None and smaller.tokens < segment.tokens:
                    self.smaller[segment.file.key] = smaller
                    self._put(segment.file.key, smaller)

    def _signatures(self, files: list[SourceFile]) -> dict[str, Segment]:
        """Signature segments of ``files``: for those whose count is known, a stand-in with
        no text (``fetch_signatures`` puts the text in for the ones packed)."""
        known = self.inputs.reduced_counts(files) if self.inputs.reduced_counts else {}
        found = {f.key: Segment(f, "", known[f.key], reduced=True) for f in files if f.key in known}
        self.unfetched.update(found)
        rest = [f for f in files if f.key not in known]
        return {**found, **(self.inputs.reduce(rest) if rest else {})}

    def fetch_signatures(self) -> bool:
        """The texts of the signature segments packed that were known by their count alone;
        False when one's count is not the count it was known by (then nothing is changed)."""
        wanted = [
            s.file
            for key, s in self.current.items()
            if key in self.unfetched and s is self.smaller.get(key)  # not back whole
        ]
        if not wanted:
            return True
        made = self.inputs.reduce(wanted)
        for file in wanted:
            segment = made.get(file.key)
            if segment is None or segment.tokens != self.current[file.key].tokens:
                return False
        for file in wanted:
            self.current[file.key] = made[file.key]
        return True

    def _refill(self) -> None:
        """Bring shed files back, most useful first, whole where they fit, else a dropped file
        as signatures: dropping a large file can leave room for smaller ones. A file is ranked
        by its smallest form, so a central file that fits as signatures comes back early."""
        shed = [key for key in self.full if key in self.dropped or self.current[key].reduced]
        shed.sort(key=lambda key: self._worth(self.smaller.get(key, self.full[key])), reverse=True)
        for key in shed:
            options = [self.full[key]]
            if key in self.dropped and key in self.smaller:
                options.append(self.smaller[key])
            for segment in options:
                if self._fits_instead(key, segment):
                    break

    def _fits_instead(self, key: str, segment: Segment) -> bool:
        """Put ``segment`` in for ``key`` if the total stays within the budget."""
        previous = self.current.get(key)
        reason = self.dropped.pop(key, None)
        self._put(key, segment)
        if self.total() <= self.budget:
            return True
        self._put(key, previous)
        if reason is not None:
            self.dropped[key] = reason
        return False

    def _footer(self) -> str:
        return _footer(self.inputs.renderer, tuple(self.listed), self._unlisted())

    def _unlisted(self) -> int:
        return len(self.dropped) - len(self.listed)

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
                self._reduce_reason(self.full[s.file.key]),
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
            listed=tuple(self.listed),
            unlisted=self._unlisted(),
        )

    def _reduce_reason(self, whole: Segment) -> str:
        return f"{REDUCED}: whole, it is {OVER_HALF}" if self._oversized(whole) else REDUCED


def _footer(renderer: Renderer, listed: Sequence[str], unlisted: int) -> str:
    if not listed and not unlisted:
        return renderer.footer_close(False)
    more = renderer.footer_more(unlisted) if unlisted else ""
    lines = "".join(renderer.footer_line(key) for key in listed)
    return renderer.footer_open() + lines + more + renderer.footer_close(True)


def view(
    pack: Pack,
    renderer: Renderer,
    root_names: list[str],
    segments: Mapping[str, Segment],
    count: Callable[[Sequence[str]], list[int]],
) -> Pack:
    """``pack`` in the format of ``renderer``: the same files, whole or as signatures, and the
    same footer. ``segments`` holds each packed file rendered and counted that way. The counts
    are of the view's own text; ``fitted_tokens`` keeps the count the budget was fitted on."""
    header = renderer.header(root_names)
    footer = _footer(renderer, pack.listed, pack.unlisted)
    header_tokens, footer_tokens = count([header, footer])
    chosen = tuple(segments[s.file.key] for s in pack.segments)
    return dataclasses.replace(
        pack,
        format=renderer.name,
        header=header,
        segments=chosen,
        footer=footer,
        tokens=header_tokens + sum(s.tokens for s in chosen) + footer_tokens,
        header_tokens=header_tokens,
        footer_tokens=footer_tokens,
        fitted_tokens=pack.tokens if pack.fitted_tokens is None else pack.fitted_tokens,
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
