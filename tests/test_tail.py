"""The question-dependent tail: when the pack sheds files for its budget, a question gets those
it names or is about, after the cached pack and before the question, within its token budget,
counted with the model's own tokenizer; the tail stays with its question in the conversation,
so a follow-up (also in a new process) rebuilds the same history tokens. A repository that fits
gets no tail. Real git repositories, the embedded model's tokenizer, the scripted engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_helpers import Events, MakeRepo

from repoctx.config import DEFAULT_TAIL_TOKENS, Settings, load_settings
from repoctx.conversations import ConversationStore
from repoctx.engine.base import Engine, GenerationOptions
from repoctx.engine.fake import FakeEngine
from repoctx.errors import ConfigError
from repoctx.events import CacheOutcome, EventSink, TailAdded
from repoctx.model.modelfile import ModelInfo
from repoctx.pack.relevance import TermIndex, question_terms, split_identifier
from repoctx.pack.tail import HEADING, shed_files
from repoctx.session import Session


def module(name: str, count: int) -> str:
    return "".join(
        f"def {name}_step_{i}(value):\n    '''Step {i} of {name}.'''\n    return value + {i}\n\n\n"
        for i in range(count)
    )


INVOICE = (
    "from shop.money import Money\n\n\n"
    "def compute_invoice_total(lines):\n"
    "    '''The invoice total: every line's price times its quantity, taxes included.'''\n"
    "    subtotal = sum(line.price * line.quantity for line in lines)\n"
    "    return Money(subtotal + invoice_tax(subtotal))\n\n\n"
    "def invoice_tax(subtotal):\n    return subtotal * 20 // 100\n\n\n"
    "class InvoiceRenderer:\n    '''Renders an invoice as text.'''\n\n"
    "    def render(self, lines):\n        return '\\n'.join(str(line) for line in lines)\n"
)
SHIPPING = (
    "from shop.money import Money\n\n\n"
    "def shipping_rate(parcel):\n"
    "    '''The shipping rate of a parcel, by weight band.'''\n"
    "    if parcel.weight_grams < 500:\n        return Money(450)\n"
    "    return Money(450 + parcel.weight_grams // 100 * 12)\n\n\n"
    "class Parcel:\n    weight_grams: int = 0\n"
)
CATALOG = "".join(  # far over the budget, even as signatures
    f"def catalog_lookup_{i}(shelf_number, product_code, warehouse_zone):\n"
    + "".join(f"    row_{j} = shelf_number * {j} + product_code\n" for j in range(12))
    + "    return row_0\n\n\n"
    for i in range(30)
)
FILES = {
    "shop/__init__.py": '"""A shop."""\n',
    "shop/money.py": "class Money:\n    def __init__(self, cents):\n        self.cents = cents\n",
    "shop/billing/__init__.py": '"""Billing."""\n',
    "shop/billing/invoice.py": INVOICE,
    "shop/shipping.py": SHIPPING,
    "shop/catalog.py": CATALOG,
    **{f"shop/extra/mod{i}.py": module(f"extra{i}", 8) for i in range(12)},
}
BUDGET = 600  # the pack holds a fifth of the files
INVOICE_KEY = "proj/shop/billing/invoice.py"
SHIPPING_KEY = "proj/shop/shipping.py"
CATALOG_KEY = "proj/shop/catalog.py"
ANSWER = GenerationOptions(max_tokens=64)


class Engines:
    def __init__(self) -> None:
        self.made: list[FakeEngine] = []

    def __call__(self, model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        engine = FakeEngine(n_ctx=n_ctx)
        self.made.append(engine)
        return engine


def session_on(
    repo: Path, store: ConversationStore, engines: Engines | None = None, **settings: object
) -> Session:
    options: dict[str, object] = {"budget": BUDGET, **settings}
    return Session(
        [repo],
        Settings(**options),  # type: ignore[arg-type]
        engine_factory=engines or Engines(),
        generation=ANSWER,
        conversations=store,
    )


@pytest.fixture
def repo(make_repo: MakeRepo) -> Path:
    return make_repo(FILES)


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "conversations")


def shed(session: Session) -> set[str]:
    assert session.result is not None
    return {file.key for file in shed_files(session.result)}


@pytest.mark.parametrize(
    "question",
    [
        "What does shop/billing/invoice.py do?",
        "Explain `billing/invoice.py`, please.",
        "What is in invoice.py?",
        "Where is shop.billing.invoice used?",
        "What does proj/shop/billing/invoice.py:12 compute?",
        "Walk me through billing/invoice",
    ],
)
def test_a_file_the_question_names_comes_after_the_pack(
    repo: Path, store: ConversationStore, question: str
) -> None:
    session = session_on(repo, store)
    session.pack()
    assert INVOICE_KEY in shed(session), "the pack left it out (or reduced it)"
    tail = session.tail_for(question)
    assert tail is not None and INVOICE_KEY in tail.files and INVOICE_KEY in tail.named
    assert tail.text.startswith(HEADING)
    assert f'<file path="{INVOICE_KEY}">\n{INVOICE}</file>\n' in tail.text, "whole, pack markup"


def test_the_other_files_are_ranked_by_the_words_of_the_question(
    repo: Path, store: ConversationStore
) -> None:
    session = session_on(repo, store)
    session.pack()
    assert {SHIPPING_KEY, INVOICE_KEY} <= shed(session)
    question = "How is the shipping rate of a parcel computed?"
    tail = session.tail_for(question)
    assert tail is not None and tail.files == (SHIPPING_KEY,) and tail.named == ()
    assert session.tail_for(question) == tail, "the same question, the same tail"
    assert session.tail_for("What is the capital of France?") is None, "nothing is about it"


def test_a_file_too_big_for_the_tail_comes_as_signatures(
    repo: Path, store: ConversationStore
) -> None:
    session = session_on(repo, store)
    result = session.pack()
    dropped = {o.key for o in result.pack.omitted}
    assert CATALOG_KEY in dropped, "dropped, not reduced, by the pack"
    tail = session.tail_for("What does catalog.py do?")
    assert tail is not None and tail.reduced == (CATALOG_KEY,)
    assert f'<file path="{CATALOG_KEY}" reduced="signatures">\n' in tail.text
    assert "def catalog_lookup_29(shelf_number, product_code, warehouse_zone):" in tail.text
    assert "row_11 = shelf_number" not in tail.text


def test_the_tail_fits_its_budget_in_exact_tokens(repo: Path, store: ConversationStore) -> None:
    question = "How are the invoice total, its tax and the shipping rate of a parcel computed?"
    roomy = session_on(repo, store)
    both = roomy.tail_for(question)
    assert both is not None and {INVOICE_KEY, SHIPPING_KEY} <= set(both.files)

    budget = both.tokens - 1  # one of them no longer fits
    session = session_on(repo, store, tail_tokens=budget)
    tail = session.tail_for(question)
    assert tail is not None and 0 < len(tail.files) < len(both.files)
    assert tail.budget == budget and tail.tokens <= budget
    assert session._format is not None
    assert tail.tokens == session._format.tokenizer.count(tail.text)
    plain, with_tail = session.prompt_for(question), session.prompt_for(question, tail)
    assert len(with_tail) - len(plain) == tail.tokens, "the prompt grows by exactly that"
    assert with_tail.ids[: with_tail.prefix_tokens] == plain.ids[: plain.prefix_tokens]

    assert session_on(repo, store, tail_tokens=0).tail_for(question) is None


def test_the_tail_leaves_room_for_the_answer_in_the_context(
    repo: Path, store: ConversationStore
) -> None:
    session = session_on(repo, store, tail_tokens=1_000_000)
    prompt = session.prompt_for("What does shop/billing/invoice.py do?")
    budget = session.tail_budget(len(prompt))
    assert session.result is not None
    context = session.result.model.context_length or 0
    assert 0 < budget < 1_000_000
    assert len(prompt) + budget + ANSWER.max_tokens <= context
    session.ask("What does shop/billing/invoice.py do?")
    assert session.engine is not None and session.engine.ready.n_ctx <= context


def test_a_repository_that_fits_gets_no_tail(make_repo: MakeRepo, store: ConversationStore) -> None:
    repo = make_repo({k: v for k, v in FILES.items() if k != "shop/catalog.py"}, name="small")
    engines = Engines()
    session = session_on(repo, store, engines, budget=None)
    events = Events()
    question = "What does shop/billing/invoice.py do?"
    session.ask(question, events)
    assert session.result is not None and shed(session) == set()
    assert events.of(TailAdded) == []
    (engine,) = engines.made
    assert engine.prompts[0].ids == session_on(repo, store, budget=None).prompt_for(question).ids
    (saved,) = store.root.rglob("*.json")
    assert "tail" not in json.loads(saved.read_text())["messages"][0]


def test_a_follow_up_reads_the_first_turns_tail_as_it_was(
    repo: Path, store: ConversationStore
) -> None:
    engines = Engines()
    session = session_on(repo, store, engines)
    events = Events()
    session.ask("What does shop/billing/invoice.py do?", events)
    session.ask("And how is the shipping rate of a parcel computed?", events)
    first, second = events.of(TailAdded)
    assert (first.files, second.files) == ((INVOICE_KEY,), (SHIPPING_KEY,))
    (engine,) = engines.made
    one, two = engine.prompts
    assert two.ids[: len(one.ids)] == one.ids, "the first turn, its tail included, unchanged"
    outcome = events.of(CacheOutcome)[-1]
    assert outcome.source == "memory" and outcome.restored_tokens >= len(one.ids)
    assert session.conversation is not None
    assert [e.added for e in session.conversation.exchanges()] == [(INVOICE_KEY,), (SHIPPING_KEY,)]

    # a new process, with no tail of its own: the history's tails come from disk, not again
    later = session_on(repo, store, tail_tokens=0)
    assert later.resume() is not None
    three = later.prompt_for("Anything else?")
    assert three.ids[: len(two.ids)] == two.ids


def test_terms_split_identifiers_and_leave_out_stop_words() -> None:
    assert split_identifier("parseHTTPResponse") == [
        "parse", "http", "response", "parsehttpresponse"
    ]  # fmt: skip
    assert split_identifier("build_pack") == ["build", "pack", "build_pack"]
    assert split_identifier("fit") == ["fit"]
    assert question_terms("What does the build_pack function do with a Tokenizer?") == [
        "build", "pack", "build_pack", "function", "tokenizer"
    ]  # fmt: skip


def test_names_are_matched_on_whole_path_parts(repo: Path, store: ConversationStore) -> None:
    session = session_on(repo, store)
    session.pack()
    index = TermIndex(shed_files(session.result)) if session.result else None
    assert index is not None
    named = {index.files[i].key for i in index.named("see voice.py, ing/invoice.py, invoice")}
    assert named == set(), "a name ends at a folder, and a bare word is no file name"
    named = {index.files[i].key for i in index.named("Compare (shop.billing) and CATALOG.PY.")}
    assert CATALOG_KEY in named


def test_the_tail_budget_is_a_setting(tmp_path: Path) -> None:
    assert load_settings([tmp_path], {}).tail_tokens == DEFAULT_TAIL_TOKENS == 8192
    (tmp_path / ".repoctx.toml").write_text("[pack]\ntail_tokens = 2048\n")
    assert load_settings([tmp_path], {}).tail_tokens == 2048
    assert load_settings([tmp_path], {"tail_tokens": 0}).tail_tokens == 0
    (tmp_path / ".repoctx.toml").write_text("[pack]\ntail_tokens = -1\n")
    with pytest.raises(ConfigError, match="tail_tokens must be zero"):
        load_settings([tmp_path], {})
