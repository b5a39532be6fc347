"""The question-dependent tail. When the pack sheds files for its budget, a question gets the
shed files most relevant to it (``repoctx.pack.relevance``) after the cached prefix: in the
user's turn, before the question, so the pack's KV state is reused as it is and only the tail
and the question are evaluated.

The shed files are those the pack dropped and those it reduced to signatures (their bodies are
what it left out). The tail is one heading line, then files in the pack's own markup and order.
A file goes in whole where it fits; else, when the pack dropped it (one the pack reduced shows
its signatures already), as signatures where those fit; else not at all. Its tokens, counted
on its whole text with the model's tokenizer, never exceed the budget. Files the pack holds
whole are never in it; a pack that sheds nothing has no tail.
"""

from __future__ import annotations

from dataclasses import dataclass

from repoctx.cache import ContentCache
from repoctx.pack.fit import Segment
from repoctx.pack.pipeline import PackResult, file_segments
from repoctx.pack.relevance import Ranked, TermIndex
from repoctx.scan.snapshot import SourceFile
from repoctx.tokens.count import Tokenizer

HEADING = (
    "These files were left out of the pack above for its token budget and picked for this "
    "question:\n"
)
MAX_CANDIDATES = 64  # the most relevant files that are considered
MAX_REDUCED = 8  # of those, how many may be reduced to signatures to fit


__all__ = ["HEADING", "Tail", "TailPicker", "shed_files"]


@dataclass(frozen=True)
class Tail:
    """The files picked for one question: ``text`` goes before the question in its turn."""

    files: tuple[str, ...]  # their keys, in the order they appear
    text: str
    tokens: int
    budget: int
    named: tuple[str, ...] = ()  # of ``files``, those the question names
    reduced: tuple[str, ...] = ()  # of ``files``, those given as signatures only


def shed_files(result: PackResult) -> list[SourceFile]:
    """The files of the snapshot that the pack does not hold whole, in pack order."""
    whole = {segment.file.key for segment in result.pack.segments if not segment.reduced}
    position = {key: index for index, key in enumerate(result.ordering.order)}
    shed = [file for file in result.snapshot.files if file.key not in whole]
    return sorted(shed, key=lambda file: (position.get(file.key, len(position)), file.key))


class TailPicker:
    """Picks the tail of each question about one pack. The term index of the files it shed is
    built at the first question and kept for the next."""

    def __init__(self, result: PackResult, tokenizer: Tokenizer, cache: ContentCache) -> None:
        self.result = result
        self.tokenizer = tokenizer
        self.cache = cache
        self.shed = shed_files(result)
        self.position = {file.key: index for index, file in enumerate(self.shed)}
        self.reduced_in_pack = {s.file.key for s in result.pack.segments if s.reduced}
        self._index: TermIndex | None = None
        self._heading_tokens: int | None = None

    def index(self) -> TermIndex:
        if self._index is None:
            self._index = TermIndex(self.shed, self.cache)
        return self._index

    def pick(self, question: str, budget: int) -> Tail | None:
        """The tail for ``question`` within ``budget`` tokens; None when the pack shed nothing,
        nothing shed is about the question, or nothing relevant fits."""
        if not self.shed or budget <= 0:
            return None
        if self._heading_tokens is None:
            self._heading_tokens = self.tokenizer.count(HEADING)
        room = budget - self._heading_tokens
        if room <= 0:
            return None
        ranked = self.index().rank(question)[:MAX_CANDIDATES]
        return self._tail(self._fill(ranked, room), budget)

    def _segments(self, files: list[SourceFile], reduced: bool) -> dict[str, Segment]:
        result = self.result
        return file_segments(
            files,
            result.pack.format,
            self.tokenizer,
            self.cache,
            result.model.path,
            reduced=reduced,
        )

    def _fill(self, ranked: list[Ranked], room: int) -> list[tuple[Ranked, Segment]]:
        """The most relevant files that fit in ``room`` tokens, most relevant first."""
        whole = self._segments([r.file for r in ranked], reduced=False)
        chosen: list[tuple[Ranked, Segment]] = []
        reductions = 0
        for candidate in ranked:
            file = candidate.file
            segment: Segment | None = whole[file.key]
            too_big = whole[file.key].tokens > room
            if too_big and self._reducible(file) and reductions < MAX_REDUCED:
                reductions += 1
                segment = self._segments([file], reduced=True).get(file.key)
            if segment is not None and segment.tokens <= room:
                chosen.append((candidate, segment))
                room -= segment.tokens
        return chosen

    def _reducible(self, file: SourceFile) -> bool:
        return file.language is not None and file.key not in self.reduced_in_pack

    def _tail(self, chosen: list[tuple[Ranked, Segment]], budget: int) -> Tail | None:
        """The tail of ``chosen``, counted whole; the least relevant files leave it until it
        fits (counts of pieces add up for byte-level BPE, not for every tokenizer)."""
        while chosen:
            ordered = sorted(chosen, key=lambda pair: self.position[pair[0].file.key])
            text = HEADING + "".join(segment.text for _, segment in ordered)
            tokens = self.tokenizer.count(text)
            if tokens <= budget:
                return Tail(
                    files=tuple(r.file.key for r, _ in ordered),
                    text=text,
                    tokens=tokens,
                    budget=budget,
                    named=tuple(r.file.key for r, _ in ordered if r.named),
                    reduced=tuple(r.file.key for r, s in ordered if s.reduced),
                )
            chosen = chosen[:-1]
        return None
