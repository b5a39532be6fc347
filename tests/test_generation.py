"""Generation settings and the loop guard: the repeat penalty comes from the config layers, and
an answer whose last tokens, or whose text, repeat a short cycle is recognised (the engine then
stops it with ``stop_reason`` "repetition": tests/test_engine.py runs that on the embedded
model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from repoctx.config import DEFAULT_REPEAT_PENALTY, load_settings, user_config_path
from repoctx.engine.repetition import (
    TEXT_LOOPS,
    TOKEN_LOOPS,
    LoopGuard,
    LoopRule,
    repeating_period,
)
from repoctx.errors import ConfigError

RULE = LoopRule(min_span=64, min_repeats=4, max_period=64)


def test_a_token_repeated_64_times_is_a_loop_and_63_times_is_not() -> None:
    answer = [5, 6, 7, 8, 9]
    assert repeating_period([*answer, *[35] * 63], RULE) == 0
    assert repeating_period([*answer, *[35] * 64], RULE) == 1


def test_a_cycle_is_found_at_its_shortest_period() -> None:
    line = [2, 198]  # "#", "\n"
    assert repeating_period([1, *line * 32], RULE) == 2
    sentence = list(range(100, 130))  # 30 tokens: 4 repeats need 120
    assert repeating_period(sentence * 3 + sentence[:29], RULE) == 0
    assert repeating_period([7, *sentence * 4], RULE) == 30
    assert repeating_period(list(range(70)) * 4, RULE) == 0, "longer than max_period"


def test_ordinary_text_and_code_are_no_loop() -> None:
    prose = [(index * 7919) % 1000 for index in range(2000)]
    assert all(repeating_period(prose[:end], RULE) == 0 for end in range(1, 2000, 37))
    # code that repeats a short line a few times, then moves on
    code = [*[40, 41, 42, 13] * 10, 50, 51]
    assert repeating_period(code, RULE) == 0
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert all(repeating_period(text[:end], TEXT_LOOPS) == 0 for end in range(1, len(text), 97))


def test_the_guard_says_when_the_answer_starts_looping() -> None:
    guard = LoopGuard()
    stops = [guard.add(token, "#" if token == 3 else "\n") for token in [9, 8, *[3, 4] * 40]]
    assert stops.index(True) == 2 + TOKEN_LOOPS.min_span - 1


def test_the_guard_sees_a_paragraph_repeated_in_other_tokens() -> None:
    """Under the repeat penalty the embedded model wrote one paragraph eleven times, each in
    other tokens (measured on the README's question): the text loops, the tokens do not."""
    paragraph = (
        'The project is a Python library called "repoctx.engine.base.GeneratorEngine", which '
        "is a Python module that provides a generator function to generate and manipulate "
        "tokenized text.\n\n"
    )
    words = paragraph.split(" ")
    pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
    guard = LoopGuard()
    added = 0
    for repeat in range(6):
        # a new token id for every word of every repeat
        if any(guard.add(10_000 * repeat + index, piece) for index, piece in enumerate(pieces)):
            break
        added += 1
    assert added == 3, "three repeats may be a list: the fourth is a loop"
    assert guard.text == paragraph * 4, "as the fourth ends"


def write_user_config(text: str) -> Path:
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def user_config() -> Iterator[Path]:
    """The user's config.toml, removed after the test."""
    path = user_config_path()
    yield path
    path.unlink(missing_ok=True)


def test_repeat_penalty_defaults_then_config_then_flag(tmp_path: Path, user_config: Path) -> None:
    assert load_settings([tmp_path], {}).repeat_penalty == DEFAULT_REPEAT_PENALTY == 1.1
    write_user_config("[generation]\nrepeat_penalty = 1.3\n")
    assert load_settings([tmp_path], {}).repeat_penalty == 1.3
    (tmp_path / ".repoctx.toml").write_text("[generation]\nrepeat_penalty = 1\n")
    assert load_settings([tmp_path], {}).repeat_penalty == 1.0
    assert load_settings([tmp_path], {"repeat_penalty": 1.2}).repeat_penalty == 1.2


@pytest.mark.parametrize("value", ["0.9", "2.5", '"high"'])
def test_a_repeat_penalty_out_of_range_names_the_range(
    tmp_path: Path, user_config: Path, value: str
) -> None:
    write_user_config(f"[generation]\nrepeat_penalty = {value}\n")
    with pytest.raises(ConfigError, match=r"repeat_penalty must be (between 1\.0|a number)"):
        load_settings([tmp_path], {})
