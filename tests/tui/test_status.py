"""The status line's reading of the core's events."""

from __future__ import annotations

from repoctx.events import AnswerDone, CacheOutcome, ModelReady, Progress, Token
from tui.status_line import Activity, cache_summary, duration


def test_prefill_shows_its_rate_and_the_time_left() -> None:
    activity = Activity()
    activity.apply(Progress("prefill", 1000, 10000, "tokens"), at=100.0)
    assert activity.state == "prefilling 1,000/10,000 tokens"
    activity.apply(Progress("prefill", 3000, 10000, "tokens"), at=102.0)
    assert activity.state == "prefilling 3,000/10,000 tokens · 1,000 tok/s · 7 s left"
    activity.apply(Progress("prefill", 5000, 10000, "tokens"), at=104.0)
    assert activity.state.endswith("1,000 tok/s · 5 s left")


def test_each_stage_reads_plainly() -> None:
    activity = Activity()
    expected = [
        (Progress("scan", 3, 10), "packing · scanning 3/10 files"),
        (Progress("parse", 0, 0), "packing · reading imports"),
        (Progress("tokens", 5, 5), "packing · counting tokens 5/5 files"),
        (Progress("load", 1, 4, "parts"), "loading the model 1/4 parts"),
        (Progress("load", 0, 1, "model"), "loading the model"),
        (Progress("restore", 0, 0), "restoring the cache from disk"),
        (CacheOutcome("disk", 120_000, 40, 0.42, 120_040), "prompt ready · 120,000 from disk"),
        (Token("Hi"), "answering · 1 token"),
        (Progress("save", 3 << 20, 32 << 20, "bytes"), "saving the cache 3/32 MiB"),
        (
            AnswerDone("Hi", "end", 10, 1, 0.1, 0.2),
            "ready · 120,000 from disk in 0.4 s + 40 prefilled",
        ),
    ]
    for event, text in expected:
        activity.apply(event, at=0.0)
        assert activity.state.startswith(text), (event, activity.state)


def test_the_model_part_and_the_cache_summaries() -> None:
    activity = Activity()
    assert activity.describe_model() == "no model yet"
    activity.model_file = "model.gguf"
    assert activity.describe_model() == "model.gguf · not loaded"
    activity.apply(ModelReady("Llama 3 8B", 131072, "q8_0", "GPU (H100)", True, 33), at=0.0)
    assert activity.describe_model() == "Llama 3 8B · ctx 131,072 · KV q8_0 · GPU (H100)"
    outcomes = [
        (CacheOutcome("disk", 9000, 12, 0.25, 9012), "9,000 from disk in 0.2 s + 12 prefilled"),
        (CacheOutcome("memory", 900, 12, 0.0, 912), "900 cached + 12 prefilled"),
        (CacheOutcome("none", 0, 912, 0.0, 912), "912 prefilled, no cache"),
    ]
    for outcome, text in outcomes:
        assert cache_summary(outcome) == text


def test_durations() -> None:
    assert [duration(s) for s in (0.4, 59, 61, 3599, 3600, 7325)] == [
        "0 s",
        "59 s",
        "1 min 01 s",
        "59 min 59 s",
        "1 h 00 min",
        "2 h 02 min",
    ]
