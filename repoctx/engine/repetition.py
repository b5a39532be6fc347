"""Stopping an answer that loops. Small models decoding greedily fall into cycles ("-based-based-
based...", a thousand lines of ``#``, one paragraph again and again) that no later token ends;
the sampler's repeat penalty makes them rarer, and this guard ends the ones left: once the end
of the answer is a short cycle repeated several times, nothing useful follows.

The guard watches the tokens and the text: under the repeat penalty a model repeats a paragraph
in other tokens ("Python" as "Py" "thon"), a cycle that only the text shows. It looks at what
was generated only, so it is as deterministic as the answer it watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoopRule:
    """A loop: the last ``max(min_span, min_repeats * period)`` items (tokens or characters)
    repeat a cycle of ``period`` items, for some period up to ``max_period``."""

    min_span: int
    min_repeats: int
    max_period: int

    def span(self, period: int) -> int:
        return max(self.min_span, self.min_repeats * period)


TOKEN_LOOPS = LoopRule(min_span=64, min_repeats=4, max_period=64)
TEXT_LOOPS = LoopRule(min_span=256, min_repeats=4, max_period=512)  # in characters


def repeating_period(items: Sequence[int] | str, rule: LoopRule) -> int:
    """The shortest period of a cycle that the end of ``items`` repeats as ``rule`` says; 0
    when the end of ``items`` is no loop."""
    for period in range(1, rule.max_period + 1):
        span = rule.span(period)
        if len(items) < span:
            return 0  # spans only grow with the period
        if items[-1] != items[-1 - period]:
            continue  # the common case, without copying the tail
        tail = items[-span:]
        if tail[period:] == tail[:-period]:
            return period
    return 0


class LoopGuard:
    """Follows one answer: ``add(token, text)`` is True once its tokens or its text loop."""

    def __init__(self, tokens: LoopRule = TOKEN_LOOPS, text: LoopRule = TEXT_LOOPS) -> None:
        self.token_rule, self.text_rule = tokens, text
        self.tokens: list[int] = []
        self.text = ""

    def add(self, token: int, text: str) -> bool:
        self.tokens.append(token)
        self.text += text
        return bool(
            repeating_period(self.tokens, self.token_rule)
            or (text and repeating_period(self.text, self.text_rule))
        )
