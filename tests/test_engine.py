"""The llama.cpp engine gives the same greedy answers however the prompt's KV state was obtained:
a fresh prefill, a restore from disk in a new process, a partial re-prefill after an edit, the
live context of a follow-up question; and a synthetic model with a 1,048,576-token context
loads, saves and restores on the CPU in seconds."""

from __future__ import annotations

# llama_cpp before anything that imports numpy: on CUDA builds the other order crashes at model
# load. Keep this the first third-party import.
import llama_cpp  # isort: skip

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import LLAMA3_VOCAB, Events, git, write_files

from repoctx.config import Settings
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.engine.llama import SAVE_AFTER_TOKENS, LlamaEngine
from repoctx.events import AnswerDone, CacheOutcome, ModelReady, Token
from repoctx.kv.store import KVStore
from repoctx.model import synth
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import ModelInfo, read_model_info
from repoctx.model.prompt import Prompt
from repoctx.session import Session

assert llama_cpp.__version__  # imported for its side effect on the import order

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 12
GREEDY = GenerationOptions(max_tokens=MAX_TOKENS, temperature=0.0)
QUESTION = "What does Store.sell return, and what is written to the log?"
FOLLOW_UP = "Which function keeps the quantity between 0 and 10,000?"
SUBPROCESS_TIMEOUT = 180

# A small inventory service: ~1,250 tokens packed, just above SAVE_AFTER_TOKENS so that the first
# answer saves its state. main.py imports every other module: it comes last in the pack.
INVENTORY = {
    "inventory/__init__.py": '"""An in-memory inventory service."""\n',
    "inventory/util.py": '''"""Small helpers shared by the inventory service."""


def clamp(value: int, low: int, high: int) -> int:
    """Keep ``value`` between ``low`` and ``high``."""
    return max(low, min(high, value))


def slug(text: str) -> str:
    """A lowercase, dash-separated form of ``text`` for URLs."""
    return "-".join(text.lower().split())
''',
    "inventory/models.py": '''"""The records the inventory keeps."""

from dataclasses import dataclass, field

from inventory.util import clamp, slug


@dataclass
class Item:
    name: str
    quantity: int = 0
    price_cents: int = 0
    tags: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return slug(self.name)

    def restock(self, amount: int) -> None:
        """Add ``amount`` units, never more than 10,000 in stock."""
        self.quantity = clamp(self.quantity + amount, 0, 10_000)

    def take(self, amount: int) -> int:
        """Remove up to ``amount`` units; returns how many were taken."""
        taken = min(self.quantity, amount)
        self.quantity -= taken
        return taken

    def value_cents(self) -> int:
        return self.quantity * self.price_cents
''',
    "inventory/store.py": '''"""An in-memory store of items with a simple audit log."""

from inventory.models import Item


class Store:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.log: list[str] = []

    def add(self, item: Item) -> None:
        if item.key in self.items:
            raise KeyError(f"{item.name} is already in the store")
        self.items[item.key] = item
        self.log.append(f"added {item.key}")

    def restock(self, name: str, amount: int) -> int:
        item = self.items[name]
        item.restock(amount)
        self.log.append(f"restocked {name} by {amount}")
        return item.quantity

    def sell(self, name: str, amount: int) -> int:
        """Sell up to ``amount`` units of ``name``; returns how many were sold."""
        item = self.items[name]
        sold = item.take(amount)
        self.log.append(f"sold {sold} of {name}")
        return sold

    def low_stock(self, threshold: int = 5) -> list[Item]:
        return sorted(
            (item for item in self.items.values() if item.quantity < threshold),
            key=lambda item: item.quantity,
        )

    def total_value_cents(self) -> int:
        return sum(item.value_cents() for item in self.items.values())
''',
    "inventory/report.py": '''"""Reports printed by the command line."""

from inventory.store import Store


def summary(store: Store) -> str:
    lines = [f"{len(store.items)} items, worth {store.total_value_cents() / 100:.2f}"]
    for item in sorted(store.items.values(), key=lambda item: item.name):
        lines.append(f"- {item.name}: {item.quantity}")
    return "\\n".join(lines)


def low_stock_report(store: Store, threshold: int = 5) -> str:
    low = store.low_stock(threshold)
    if not low:
        return "nothing is running low"
    return "running low: " + ", ".join(item.name for item in low)
''',
    "main.py": '''"""Command line entry point of the inventory service."""

import sys

from inventory.models import Item
from inventory.report import low_stock_report, summary
from inventory.store import Store


def main(argv: list[str]) -> int:
    store = Store()
    for name in argv or ["apples", "pears", "plums"]:
        store.add(Item(name, quantity=3, price_cents=120))
    store.restock("apples", 20)
    store.sell("pears", 2)
    print(summary(store))
    print(low_stock_report(store))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
''',
}
MAIN_EDIT = (
    "    print(summary(store))\n    print(low_stock_report(store))\n",
    "    print(low_stock_report(store, threshold=3))\n    print(summary(store))\n",
)


# -- helpers ------------------------------------------------------------------------------------


def store_at(home: Path, sink: Events | None = None) -> KVStore:
    """The KV store a `repoctx` process with REPOCTX_HOME=home uses."""
    return KVStore(home / "cache" / "kv", on_event=sink or Events())


def make_git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial", when=1_600_000_000)
    return path


def ask_in_new_process(repo: Path, home: Path, question: str) -> tuple[AnswerDone, CacheOutcome]:
    """`repoctx ask REPO QUESTION --json` in a new Python process with its own REPOCTX_HOME."""
    done = subprocess.run(
        [sys.executable, "-m", "repoctx", "ask", str(repo), question, "--json",
         "--max-tokens", str(MAX_TOKENS)],
        cwd=ROOT, env={**os.environ, "REPOCTX_HOME": str(home), "REPOCTX_ENGINE": "local"},
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    fields: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        fields.setdefault(record.pop("event"), []).append(record)
    (answer,) = fields["AnswerDone"]
    (outcome,) = fields["CacheOutcome"]
    assert "".join(t["text"] for t in fields["Token"]) == answer["text"]
    return AnswerDone(**answer), CacheOutcome(**outcome)


def fresh_answer(model: ModelInfo, n_ctx: int, prompt: Prompt) -> AnswerDone:
    """The answer of a fresh prefill: a new engine that reads and writes no state."""
    engine = LlamaEngine.open(model, n_ctx, persist=False)
    try:
        events = Events()
        done = engine.answer(prompt, GREEDY, events, threading.Event())
        assert events.outcome().source == "none"
        return done
    finally:
        engine.close()


# -- the embedded model and a real repository ---------------------------------------------------


@dataclass
class FirstRun:
    """One Session that answered QUESTION with a fresh prefill, saving its state in ``home``."""

    repo: Path
    home: Path
    session: Session
    engine: LlamaEngine
    prompt: Prompt
    events: Events
    done: AnswerDone


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    base = tmp_path_factory.mktemp("engine")
    repo = make_git_repo(base / "original" / "inventory-service", INVENTORY)
    home = base / "home-a"
    engines: list[LlamaEngine] = []

    def factory(model: ModelInfo, n_ctx: int, on_event: Any) -> Engine:
        engine = LlamaEngine.open(model, n_ctx, on_event, store=store_at(home))
        engines.append(engine)
        return engine

    session = Session([repo], Settings(max_tokens=MAX_TOKENS), engine_factory=factory)
    session.pack()
    prompt = session.prompt_for(QUESTION)
    events = Events()
    done = session.ask(QUESTION, events)
    (engine,) = engines
    engine.flush(events)  # the state is written in the background once the answer is out
    yield FirstRun(repo, home, session, engine, prompt, events, done)
    session.close()


def test_the_embedded_model_answers_a_fresh_prefill_and_saves_it(first_run: FirstRun) -> None:
    prompt, done = first_run.prompt, first_run.done
    assert first_run.session.result is not None
    assert first_run.session.result.model.path == default_model_path().resolve()
    assert 1_100 <= len(prompt) <= 1_500, "keep the prompt just above SAVE_AFTER_TOKENS"
    assert len(prompt) > SAVE_AFTER_TOKENS
    outcome = first_run.events.outcome()
    assert (outcome.source, outcome.restored_tokens) == ("none", 0)
    assert outcome.evaluated_tokens == outcome.prompt_tokens == len(prompt)
    assert done.text.strip() and done.stop_reason == "length"
    assert done.generated_tokens == MAX_TOKENS
    assert "".join(t.text for t in first_run.events.of(Token)) == done.text
    assert first_run.events.warnings() == []
    (entry,) = store_at(first_run.home).entries()
    assert entry.n_tokens == len(prompt) + MAX_TOKENS  # the prompt and the answer's tokens
    assert entry.key == first_run.engine.key
    assert entry.repositories == (str(first_run.repo.resolve()),), "for `repoctx cache list`"


def test_a_new_process_restores_the_state_and_answers_the_same(first_run: FirstRun) -> None:
    done, outcome = ask_in_new_process(first_run.repo, first_run.home, QUESTION)
    assert outcome.source == "disk"
    assert outcome.prompt_tokens == len(first_run.prompt)
    assert outcome.restored_tokens >= 0.9 * outcome.prompt_tokens
    assert outcome.restored_tokens + outcome.evaluated_tokens == outcome.prompt_tokens
    assert done.text == first_run.done.text


def test_an_edit_of_the_last_file_re_evaluates_only_its_tail(
    first_run: FirstRun, tmp_path: Path
) -> None:
    assert first_run.session.result is not None
    segments = first_run.session.result.pack.segments
    assert segments[-1].file.key.endswith("/main.py"), "the edited file must come last"
    # a copy under the same folder name packs to the same text, so the saved state matches
    repo = tmp_path / "edited" / first_run.repo.name
    shutil.copytree(first_run.repo, repo, symlinks=True)
    main = repo / "main.py"
    old, new = MAIN_EDIT
    assert old in main.read_text()
    main.write_text(main.read_text().replace(old, new))

    partial, partial_outcome = ask_in_new_process(repo, first_run.home, QUESTION)
    fresh, fresh_outcome = ask_in_new_process(repo, tmp_path / "home-b", QUESTION)

    assert (fresh_outcome.source, fresh_outcome.restored_tokens) == ("none", 0)
    prompt_tokens = fresh_outcome.prompt_tokens
    assert partial_outcome.prompt_tokens == prompt_tokens
    assert partial_outcome.source == "disk"
    assert 0 < partial_outcome.restored_tokens < prompt_tokens
    assert partial_outcome.evaluated_tokens == prompt_tokens - partial_outcome.restored_tokens
    # only main.py onwards is evaluated again: a few hundred tokens, not the whole prompt
    main_tokens = segments[-1].tokens
    assert partial_outcome.evaluated_tokens < min(prompt_tokens // 2, main_tokens + 64)
    assert partial.text == fresh.text


def test_a_follow_up_in_the_same_process_reuses_the_live_context(first_run: FirstRun) -> None:
    session = first_run.session
    assert session.conversation is not None and len(session.conversation.messages) == 2
    prompt = session.prompt_for(FOLLOW_UP)
    assert prompt.ids[: len(first_run.prompt)] == first_run.prompt.ids
    events = Events()
    done = session.ask(FOLLOW_UP, events)
    assert session.engine is first_run.engine, "the loaded engine is kept"
    assert events.of(ModelReady) == []
    outcome = events.outcome()
    assert outcome.source == "memory"
    assert outcome.prompt_tokens == len(prompt)
    # everything of the first exchange that the new prompt repeats is kept: at least the first
    # prompt; only the answer's text, the end of its turn and the new question are evaluated
    assert outcome.restored_tokens >= len(first_run.prompt)
    assert outcome.evaluated_tokens == len(prompt) - outcome.restored_tokens
    assert outcome.evaluated_tokens <= len(prompt) - len(first_run.prompt)
    assert outcome.evaluated_tokens < 64
    assert len(store_at(first_run.home).entries()) == 1, "a short evaluation is not saved"
    # The live context holds the first answer's tokens as generation evaluated them, one at a
    # time; a fresh prefill evaluates them in a batch, and on the CPU the two differ by up to
    # ~0.6 in the logits (measured), enough to change a greedy answer at a near tie. The
    # saved state holds exactly the live context: restoring it in a new engine must give the
    # same answer as the live context.
    events = Events()
    engine = LlamaEngine.open(
        first_run.engine.model, first_run.engine.ready.n_ctx, events,
        store=store_at(first_run.home, events),
    )  # fmt: skip
    try:
        restored = engine.answer(prompt, GREEDY, events, threading.Event())
    finally:
        engine.close()
    assert events.outcome().source == "disk"
    assert events.outcome().restored_tokens == outcome.restored_tokens
    assert restored.text == done.text


# The embedded model, greedy, answers this with "#" lines until stopped (measured), with or
# without the default repeat penalty.
LOOPING_QUESTION = "Draw a line of 300 # characters."


def test_an_answer_that_loops_is_stopped_and_the_repeat_penalty_applies(
    first_run: FirstRun,
) -> None:
    def in_memory(model: ModelInfo, n_ctx: int, on_event: Any) -> Engine:
        return LlamaEngine.open(model, n_ctx, on_event, persist=False)

    settings = Settings(max_tokens=200, repeat_penalty=1.0)
    session = Session([first_run.repo], settings, engine_factory=in_memory)
    try:
        plain = session.ask(LOOPING_QUESTION)
        session.new_conversation()
        again = session.ask(LOOPING_QUESTION)
        session.generation = dataclasses.replace(session.generation, repeat_penalty=1.1)
        session.new_conversation()
        penalized = session.ask(LOOPING_QUESTION)
    finally:
        session.close()
    assert plain.stop_reason == "repetition"
    assert 64 <= plain.generated_tokens < 100, "stopped once 64 tokens repeat a cycle"
    assert any(has_period(plain.text[-48:], period) for period in range(1, 9)), plain.text
    assert (again.text, again.stop_reason) == (plain.text, plain.stop_reason), "deterministic"
    assert penalized.text != plain.text, "the penalty changes a greedy answer that repeats"
    assert penalized.generated_tokens < 200


def has_period(text: str, period: int) -> bool:
    return text[period:] == text[:-period]


# -- a synthetic model with a 1,048,576-token context -------------------------------------------

# CPU attention is quadratic: a prompt past 128K tokens takes minutes here (measured: 150K
# tokens in about 140 s on this 2-core machine), so this test evaluates ~12K tokens in a
# full-size 1,048,576-token context; full-length runs live in the GPU benchmark
# (`repoctx bench engine`).
LONG_CONTEXT = 1_048_576
LONG_PROMPT = 12_000
CHANGED_TAIL = 700


def random_ids(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1_000, 120_000) for _ in range(count)]  # ordinary Llama 3 tokens


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    path = tmp_path_factory.mktemp("synth") / "tiny-llama3.gguf"
    synth.write_synthetic_gguf(path, synth.TINY, vocab_from=LLAMA3_VOCAB)
    return read_model_info(path)


def test_a_million_token_context_loads_saves_and_restores_in_seconds(
    tiny_model: ModelInfo, tmp_path: Path
) -> None:
    assert tiny_model.context_length == LONG_CONTEXT
    first_ids = random_ids(LONG_PROMPT, seed=1)
    second_ids = first_ids[:-CHANGED_TAIL] + random_ids(CHANGED_TAIL, seed=2)
    first, second = Prompt(first_ids, 1_000), Prompt(second_ids, 1_000)

    events = Events()
    started = time.perf_counter()
    engine = LlamaEngine.open(tiny_model, LONG_CONTEXT, events, store=store_at(tmp_path, events))
    opened = time.perf_counter() - started
    try:
        assert engine.ready.n_ctx == LONG_CONTEXT
        assert events.of(ModelReady) == [engine.ready]
        assert (engine.ready.device, engine.ready.kv_type) == ("CPU", "f16")
        assert opened < 30, f"opening a 1M-token context took {opened:.1f} s"
        done = engine.answer(first, GREEDY, events, threading.Event())
        assert events.outcome().evaluated_tokens == LONG_PROMPT
        assert done.generated_tokens > 0
    finally:
        engine.close()
    (entry,) = store_at(tmp_path).entries()
    assert entry.n_tokens == LONG_PROMPT + done.generated_tokens

    events = Events()
    engine = LlamaEngine.open(tiny_model, LONG_CONTEXT, events, store=store_at(tmp_path, events))
    try:
        started = time.perf_counter()
        restored = engine.answer(second, GREEDY, events, threading.Event())
        took = time.perf_counter() - started
    finally:
        engine.close()
    outcome = events.outcome()
    assert outcome.source == "disk"
    assert outcome.restored_tokens == LONG_PROMPT - CHANGED_TAIL
    assert outcome.evaluated_tokens == CHANGED_TAIL
    assert events.warnings() == []
    assert took < 30, f"restoring {outcome.restored_tokens:,} tokens took {took:.1f} s"
    assert restored.text == fresh_answer(tiny_model, LONG_CONTEXT, second).text


def test_the_same_prompt_again_reuses_the_live_context(
    tiny_model: ModelInfo, tmp_path: Path
) -> None:
    """Asked again in the same process (a retry, a regenerated answer), a prompt is evaluated
    from the live context, even though the state saved after the first answer holds it too:
    reading that state back from disk would cost seconds for a long prompt."""
    prompt = Prompt(random_ids(2_000, seed=3), 1_000)
    events = Events()
    engine = LlamaEngine.open(tiny_model, 4096, events, store=store_at(tmp_path, events))
    try:
        first = engine.answer(prompt, GREEDY, events, threading.Event())
        engine.flush(events)
        assert len(store_at(tmp_path).entries()) == 1
        assert len(engine.host.states()) == 1, "and a copy in host memory"
        events.events.clear()
        again = engine.answer(prompt, GREEDY, events, threading.Event())
    finally:
        engine.close()
    outcome = events.outcome()
    assert (outcome.source, outcome.restored_tokens) == ("memory", len(prompt) - 1)
    assert outcome.evaluated_tokens == 1
    assert again.text == first.text
