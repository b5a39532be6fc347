"""Exact token counts (repoctx.tokens.count) against llama.cpp's own tokenizer."""

from __future__ import annotations

import llama_cpp  # before anything imports numpy: on CUDA builds the other order crashes

# isort: split
import sysconfig
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import regex  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from repoctx.errors import ModelError
from repoctx.events import Event, Notice
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import read_model_info, read_vocabulary
from repoctx.tokens import bperanks, pretokenizers
from repoctx.tokens import count as tokens

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
VOCABS = {
    "smollm": default_model_path(),
    "llama3": DATA / "ggml-vocab-llama-bpe.gguf",
    "gpt2": DATA / "ggml-vocab-gpt-2.gguf",
    "spm": DATA / "ggml-vocab-llama-spm.gguf",
}
BPE = ["smollm", "llama3", "gpt2"]

SNIPPETS = [
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n"
    '    println!("{v:?}");\n}\n',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n'
    "\t\tfmt.Println(i)\n\t}\n}\n",
    "public class Hello {\n    public static void main(String[] args) {\n        "
    'System.out.println("Hi, " + args.length);\n    }\n}\n',
    "export const sum = (xs: number[]): number =>\n  xs.reduce((a, b) => a + b, 0);\r\n",
    'fun greet(name: String?) = println("Hello, ${name ?: "world"}!")\n',
    "def fib(n)\n  n < 2 ? n : fib(n - 1) + fib(n - 2)\nend\nputs fib(30) # => 832040\n",
    "<?php\n$items = ['a' => 1, 'b' => 2];\nforeach ($items as $k => $v) { echo \"$k=$v\\n\"; }\n",
    "SELECT id, name FROM users WHERE created_at >= '2024-01-01' ORDER BY id DESC LIMIT 10;\n",
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 0x7fffffff);\n\treturn 0;\n}\n',
    "key: value\nlist:\n  - 1\n  - 'two'\n# comment\n",
    "# Título\n\n* café, naïve, Straße, ÆØÅ\n* 中文字符和日本語のテキスト、한국어\n"
    "* 🙂👍🏽🇫🇷👩‍💻\n",
    "مرحبا بالعالم — שלום עולם — Привет, мир — γειά σου κόσμε\n",  # noqa: RUF001
    "e\u0301 a\u0308 \u0915\u094d\u0937 \u0e01\u0e34 \u200b\u200d\ufeff \u00a0 \u2028 \u3000end\n",
    "ids = [12345678901234567890, 3.14159, 1e-10, 0xDEADBEEF, ١٢٣٤, ½, ²³]\n",
    "I'm sure you'll see they've done it; we'd've been THERE'S 'S 'T 'Ll ſ'S\n",  # noqa: RUF001
    "    \t  \t\n\n\n   \r\n\r\n\t\t\tx  \n \n  \n" + " " * 40 + "y\n" + "\t" * 9 + "z",
    'print("<|eot_id|> <|im_start|>user\\n<|endoftext|><|begin_of_text|><s></s>[INST]")\n',
    "<|im_start|>system\nYou are helpful<|im_end|>\n<|reserved_special_token_0|><|end_of_text|>",
    "a\x00b\x04c\x06d\x13\x14\x16\x1d\x7f\U00040000\U0010fffd\ufffd",
    "ÿþ\x80\x85\x9f 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙 Ⅻ ⑳ ☃ ∑∫ ≠ ≤ «»„“”‘’",  # noqa: RUF001
]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _sample(files: list[Path], budget: int) -> list[str]:
    texts: list[str] = []
    step = max(1, len(files) // 60)
    for path in files[::step]:
        if budget <= 0:
            break
        text = _read(path)[:40_000]
        texts.append(text)
        budget -= len(text)
    return texts


def _corpus() -> list[str]:
    """Real code in several languages (this Python's stdlib and headers, the repository's own
    files), short snippets of other languages, and edge cases."""
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    headers = sorted(Path(sysconfig.get_paths()["include"]).glob("*.h"))
    own = sorted((REPO / "repoctx").rglob("*.py")) + sorted((REPO / "repoctx").rglob("*.scm"))
    texts = _sample(stdlib, 300_000) + _sample(headers, 60_000) + [_read(p) for p in own]
    texts.append(_read(REPO / "pyproject.toml"))
    return [text for text in texts if text] + SNIPPETS


CORPUS = _corpus()


@pytest.fixture(scope="module", autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPOCTX_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def reference() -> Callable[[str, str], list[int]]:
    """llama.cpp's tokenizer, as the test of record: ``reference(vocab, text)``."""
    models = {
        name: llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        for name, path in VOCABS.items()
    }

    def tokenize(name: str, text: str) -> list[int]:
        return list(models[name].tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return tokenize


def test_backends() -> None:
    for name in BPE:
        tokenizer = tokens.load_tokenizer(VOCABS[name])
        assert isinstance(tokenizer, tokens.TiktokenTokenizer)
        assert tokenizer.name == f"bpe:{read_model_info(VOCABS[name]).vocab_fingerprint}"
    fallback = tokens.load_tokenizer(VOCABS["spm"])
    assert isinstance(fallback, tokens.LlamaCppTokenizer)
    assert fallback.name.startswith("llama.cpp:")
    assert tokens.load_tokenizer(VOCABS["gpt2"]) is tokens.load_tokenizer(str(VOCABS["gpt2"]))


@pytest.mark.parametrize("name", [*BPE, "spm"])
def test_matches_llama_cpp(name: str, reference: Callable[[str, str], list[int]]) -> None:
    tokenizer = tokens.load_tokenizer(VOCABS[name])
    texts = CORPUS if name != "spm" else CORPUS[::4] + SNIPPETS
    for text in texts:
        assert tokenizer.encode(text) == reference(name, text), text[:200]
    assert sum(map(len, texts)) > (300_000 if name != "spm" else 50_000)


@pytest.mark.parametrize("name", BPE)
@given(text=st.text(alphabet="aZé中 \t\n\r'stvmdlRE0159٣½²!.,;-_😀\u0301\u00a0<|>", max_size=30))
@settings(max_examples=150, deadline=None)
def test_random_text_matches_llama_cpp(
    name: str, text: str, reference: Callable[[str, str], list[int]]
) -> None:
    assert tokens.load_tokenizer(VOCABS[name]).encode(text) == reference(name, text)


def _fresh(name: str) -> tokens.TiktokenTokenizer:
    """A tokenizer of its own (not the memoized one), that has built no encoder yet."""
    info = read_model_info(VOCABS[name])
    tokenizer = tokens._bpe_tokenizer(info, bperanks.cached_ranks(info, lambda event: None))
    assert isinstance(tokenizer, tokens.TiktokenTokenizer)
    return tokenizer


@pytest.mark.parametrize("name", BPE)
def test_short_texts_encode_before_the_whole_encoder_is_built(
    name: str, reference: Callable[[str, str], list[int]]
) -> None:
    """Up to a count, a short text is encoded with the ranks of its own substrings (a follow-up
    question's prompt needs a few): exactly as llama.cpp does, and the whole vocabulary's
    encoder is not built; after that count, it is."""
    tokenizer = _fresh(name)
    short = [text for text in SNIPPETS if len(text.encode()) * tokenizer._tables.longest < 65536]
    assert len(short) > 10
    for text in short:
        tokenizer._tables._small_left = 1
        assert tokenizer.encode(text) == reference(name, text), text
    assert tokenizer._tables._full is None
    tokenizer._tables._small_left = 0
    assert tokenizer.encode(short[0]) == reference(name, short[0])
    assert tokenizer._tables._full is not None


@pytest.mark.parametrize("name", BPE)
@given(
    text=st.text(alphabet="aZé中 \t\n\r'stvmdlRE0159٣½²!.,;-_😀\u0301\u00a0<|>\ud800", max_size=40)
)
@settings(max_examples=100, deadline=None)
def test_random_short_texts_encode_alone_as_with_the_whole_encoder(
    name: str, text: str, short_tokenizers: dict[str, tokens.TiktokenTokenizer]
) -> None:
    tokenizer = short_tokenizers[name]
    tokenizer._tables._small_left = 1
    assert tokenizer.encode(text) == tokens.load_tokenizer(VOCABS[name]).encode(text)
    assert tokenizer._tables._full is None


@pytest.fixture(scope="module")
def short_tokenizers() -> dict[str, tokens.TiktokenTokenizer]:
    return {name: _fresh(name) for name in BPE}


@pytest.mark.parametrize("name", BPE)
def test_every_code_point(name: str, reference: Callable[[str, str], list[int]]) -> None:
    """Each code point between letters, digits and spaces: the Unicode tables agree."""
    tokenizer = tokens.load_tokenizer(VOCABS[name])
    start = BPE.index(name)  # each vocabulary checks a third of the code points
    points = [c for c in range(start, 0x110000, 3) if not 0xD800 <= c < 0xE000]
    points = [c for c in points if c < 0x40000 or c >= 0xE0000 or c % 101 == 0]
    for first in range(0, len(points), 2048):
        text = "".join(f"x{chr(c)}x {chr(c)}1 {chr(c)}\n" for c in points[first : first + 2048])
        assert tokenizer.encode(text) == reference(name, text)


def test_special_token_text_is_plain(reference: Callable[[str, str], list[int]]) -> None:
    for name in [*BPE, "spm"]:
        tokenizer = tokens.load_tokenizer(VOCABS[name])
        vocab = read_vocabulary(VOCABS[name])
        control = {index for index, kind in enumerate(vocab.token_types) if kind == 3}
        for text in ("<|eot_id|>", "<|im_start|>", "<|endoftext|>", "<s>", "</s>"):
            ids = tokenizer.encode(f"x {text} y")
            assert ids == reference(name, f"x {text} y") and not control & set(ids)


def test_no_bos_and_empty_text() -> None:
    for name in [*BPE, "spm"]:
        tokenizer = tokens.load_tokenizer(VOCABS[name])
        assert tokenizer.encode("") == [] and tokenizer.count("") == 0
        bos = read_model_info(VOCABS[name]).bos_id
        assert tokenizer.encode("hello")[0] != bos


def test_lone_surrogates_are_replaced(reference: Callable[[str, str], list[int]]) -> None:
    for name in [*BPE, "spm"]:
        tokenizer = tokens.load_tokenizer(VOCABS[name])
        assert tokenizer.encode("a\ud800b") == reference(name, "a\ufffdb")


@pytest.mark.parametrize("name", [*BPE, "spm"])
def test_count_many(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = tokens.load_tokenizer(VOCABS[name])
    texts = CORPUS if name != "spm" else CORPUS[::2]
    monkeypatch.setattr(tokens.os, "cpu_count", lambda: 4)
    assert sum(map(len, texts)) > tokens._PARALLEL_CHARS  # llama.cpp's: on four threads
    expected = [len(tokenizer.encode(text)) for text in texts]
    assert tokenizer.count_many(texts) == expected
    assert [tokenizer.count(text) for text in texts] == expected
    assert tokenizer.count_many(texts[:3]) == expected[:3] and tokenizer.count_many([]) == []


def test_count_batches_are_shared_with_worker_processes_that_may_fail() -> None:
    tokenizer = tokens.load_tokenizer(VOCABS["gpt2"])
    batches = [CORPUS[start : start + 5] for start in range(0, 60, 5)]
    expected = [tokenizer.count_many(batch) for batch in batches]
    with ProcessPoolExecutor(max_workers=1) as workers:
        shared = tokens.count_batches(tokenizer, batches, VOCABS["gpt2"], workers)
        assert list(shared) == expected

    class DeadWorkers(Executor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = Future()
            future.set_running_or_notify_cancel()  # started: it cannot be taken back
            future.set_exception(OSError("the worker died"))
            return future

    dead = tokens.count_batches(tokenizer, batches, VOCABS["gpt2"], DeadWorkers())
    assert list(dead) == expected


def _segments() -> list[str]:
    """Pieces of real files as the packer cuts them: each ends with a newline right after
    code, and the next one starts with a non-space character."""
    pieces = []
    for text in CORPUS[:40]:
        for block in text.split("\n\n"):
            block = block.strip()
            if block:
                pieces.append(block + "\n")
    return pieces


@pytest.mark.parametrize("name", BPE)
def test_counts_add_up_across_segments(name: str) -> None:
    tokenizer = tokens.load_tokenizer(VOCABS[name])
    segments = _segments()
    assert len(segments) > 500
    counts = tokenizer.count_many(segments)
    for index in range(len(segments) - 1):
        joined = tokenizer.count(segments[index] + segments[index + 1])
        assert joined == counts[index] + counts[index + 1], segments[index][-80:]
    assert tokenizer.count("".join(segments)) == sum(counts)


def test_sentencepiece_counts_do_not_add_up() -> None:
    """llama.cpp puts a space before every SentencePiece text: a piece alone counts the
    space's token that the joined text does not have."""
    spm = tokens.load_tokenizer(VOCABS["spm"])
    a, b = "Each line is of the form:\n", "FeatureName = 1\n"
    assert spm.count(a + b) == spm.count(a) + spm.count(b) - 1


def test_blank_lines_before_a_cut_only_add_up_for_llama3() -> None:
    """The GPT-2 pre-tokenizer keeps trailing whitespace together only at the end of a text:
    a segment ending with a blank line counts one token less alone than before more code."""
    a, b = "x = 1\n\n", "y = 2\n"
    llama3 = tokens.load_tokenizer(VOCABS["llama3"])
    assert llama3.count(a + b) == llama3.count(a) + llama3.count(b)
    for name in ("gpt2", "smollm"):
        tokenizer = tokens.load_tokenizer(VOCABS[name])
        assert tokenizer.count(a + b) == tokenizer.count(a) + tokenizer.count(b) + 1


def _split_then_gpt2(text: str) -> list[str]:
    """llama.cpp's "smollm" pre-tokenizer as it runs: cut at each \\p{N} (the cuts and the text
    between them are pieces), then the GPT-2 regex within each piece."""
    pieces, last = [], 0
    for match in regex.finditer(r"\p{N}", text):
        pieces += [text[last : match.start()], match.group()]
        last = match.end()
    pieces.append(text[last:])
    return [
        m.group() for piece in pieces for m in regex.finditer(pretokenizers.GPT2_PATTERN, piece)
    ]


@given(text=st.text(alphabet="ab Z\t\n\r'sdlvre01٣½²!.-_😀\u0301\u00a0", max_size=40))
@settings(max_examples=500, deadline=None)
def test_digits_then_gpt2_is_one_regex(text: str) -> None:
    one = [m.group() for m in regex.finditer(pretokenizers.DIGITS_GPT2_PATTERN, text)]
    assert one == _split_then_gpt2(text) and "".join(one) == text


def test_tiktoken_pattern_keeps_the_regex_meaning() -> None:
    for pre in {p.pattern for p in pretokenizers.PRE_TOKENIZERS.values()}:
        narrowed = pretokenizers.for_tiktoken(pre)
        for text in SNIPPETS:
            plain = [m.group() for m in regex.finditer(pre, text)]
            assert [m.group() for m in regex.finditer("(?V1)" + narrowed, text)] == plain


def test_alternatives_split_at_the_top_level_only() -> None:
    pattern = r"a|(b|c)|[|(]|\||[[^\s|][x]]|(?!\S)d"
    assert pretokenizers.top_level_alternatives(pattern) == [
        "a", "(b|c)", "[|(]", r"\|", r"[[^\s|][x]]", r"(?!\S)d",
    ]  # fmt: skip
    grouped = pretokenizers.group_plain_alternatives(pattern)
    assert grouped == r"(?:a|(b|c)|[|(]|\||[[^\s|][x]])|(?!\S)d"


def test_grouped_patterns_split_real_code_as_the_plain_ones() -> None:
    text = "".join(CORPUS[:60])
    for pre in {p.pattern for p in pretokenizers.PRE_TOKENIZERS.values()}:
        grouped = pretokenizers.group_plain_alternatives(pre)
        assert grouped != pre
        expected = [m.group() for m in regex.finditer(pre, text)]
        assert [m.group() for m in regex.finditer(grouped, text)] == expected


def test_bytes_missing_from_the_vocabulary_are_left_out_of_counts(
    reference: Callable[[str, str], list[int]],
) -> None:
    """SmolLM's vocabulary lacks a few control bytes and the lead bytes of U+40000-U+BFFFF:
    llama.cpp drops them, in ASCII text and in other text alike."""
    tokenizer = tokens.load_tokenizer(VOCABS["smollm"])
    texts = ["x = 1\x04\x1d + 2\n", "ab\U00040000cd é\x06", "plain ascii\n", "é\n"]
    for text in texts:
        expected = len(reference("smollm", text))
        assert tokenizer.count(text) == len(tokenizer.encode(text)) == expected, text
    assert tokenizer.count("x\x04") < len(tokenizer._encoding.encode_ordinary("x\x04"))


def _plain_bpe(text: str, rules: dict[tuple[str, str], int]) -> list[str]:
    """llama.cpp's BPE as it reads: merge the adjacent pair whose rule comes first, the leftmost
    on ties, until no adjacent pair has a rule."""
    symbols = list(text)
    while True:
        ranked = [(rules[p], i) for i, p in enumerate(pairwise(symbols)) if p in rules]
        if not ranked:
            return symbols
        _, at = min(ranked)
        symbols[at : at + 2] = [symbols[at] + symbols[at + 1]]


@pytest.mark.parametrize("name", BPE)
def test_the_check_of_every_token_is_plain_bpe(name: str) -> None:
    """Whether BPE makes a token from its own characters, as the derivation checks it for every
    token, against BPE as it reads (Llama 3 has tokens it cannot make)."""
    vocab = read_vocabulary(VOCABS[name])
    token_id = {text: index for index, text in enumerate(vocab.tokens)}
    rules, first, split = bperanks._merge_rules(vocab.merges, token_id)
    texts = list(first)
    made = [bperanks._made_alone(text, rules) for text in texts]
    assert made == [_plain_bpe(text, rules) == [text] for text in texts]
    assert (False in made) == (name == "llama3")
    in_bulk = bperanks._made_alone_all(texts, split, rules)
    assert in_bulk == [text for text, alone in zip(texts, made, strict=True) if alone]


@given(
    pairs=st.lists(st.tuples(st.text("ab c", min_size=1, max_size=3), st.text("abc", min_size=1)),
                   max_size=14),
    text=st.text("ab c", min_size=2, max_size=14),
)  # fmt: skip
@settings(max_examples=400, deadline=None)
def test_made_alone_is_plain_bpe(pairs: list[tuple[str, str]], text: str) -> None:
    rules: dict[tuple[str, str], int] = {}
    for index, pair in enumerate(pairs):
        rules.setdefault(pair, index)
    assert bperanks._made_alone(text, rules) == (_plain_bpe(text, rules) == [text])


@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_tokens_decided_in_bulk_are_those_plain_bpe_makes(data: st.DataObject) -> None:
    """Vocabularies whose merges join tokens made before (the usual case, where the walk along
    the two ends decides) or strings made later or never (where BPE runs)."""
    made = ["a", "b", "c", "d"]
    merges: list[str] = []
    strings = st.text("abcd", min_size=1, max_size=3)
    for _ in range(data.draw(st.integers(0, 30))):
        left, right = (data.draw(st.sampled_from(made) | strings) for _ in range(2))
        if left + right not in made:
            merges.append(f"{left} {right}")
            made.append(left + right)
    token_id = {text: index for index, text in enumerate(made)}
    rules, first, split = bperanks._merge_rules(merges, token_id)
    texts = list(first)
    expected = [text for text in texts if _plain_bpe(text, rules) == [text]]
    assert bperanks._made_alone_all(texts, split, rules) == expected


def test_rank_cache_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    first = tokens.load_tokenizer(VOCABS["gpt2"])
    fingerprint = read_model_info(VOCABS["gpt2"]).vocab_fingerprint
    assert (tmp_path / "cache" / "tokenizers" / f"{fingerprint}.ranks").is_file()
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    second = tokens.load_tokenizer(VOCABS["gpt2"])
    assert second is not first and derivations == ["ggml-vocab-gpt-2.gguf"]
    assert second.encode(CORPUS[0]) == first.encode(CORPUS[0])


def test_cached_ranks_are_read_out_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    expected = tokens.load_tokenizer(VOCABS["gpt2"]).count(CORPUS[0])
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    reads: list[bytes] = []
    value = bperanks._value

    def reading(body: bytes) -> bperanks.Ranks | str:
        reads.append(body)
        return value(body)

    monkeypatch.setattr(bperanks, "_value", reading)
    tokenizer = tokens.load_tokenizer(VOCABS["gpt2"])
    assert reads == []  # a run whose counts are all cached stops here
    assert tokenizer.count(CORPUS[0]) == expected and len(reads) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_corrupt_rank_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    expected = tokens.load_tokenizer(VOCABS["gpt2"]).encode(CORPUS[1])
    path = next((tmp_path / "cache" / "tokenizers").iterdir())
    data = bytearray(path.read_bytes())
    damaged = {
        "garbage": b"not a cache file" * 10,
        "truncated": bytes(data[: len(data) // 2]),
        "flipped": bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:]),
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    events: list[Event] = []
    assert tokens.load_tokenizer(VOCABS["gpt2"], events.append).encode(CORPUS[1]) == expected
    assert len(derivations) == 2 and path.read_bytes() == bytes(data)
    assert [type(e) for e in events] == [Notice] and "corrupt" in str(events[0])


def test_ranks_a_worker_failed_to_prepare_are_derived_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    assert tokens.ranks_to_derive(VOCABS["gpt2"])
    failed: Future[tokens.Prepared] = Future()
    failed.set_exception(OSError("the worker died"))
    tokenizer = tokens.load_tokenizer(VOCABS["gpt2"], prepared=failed)
    assert derivations == ["ggml-vocab-gpt-2.gguf"] and tokenizer.count("hello world") == 2
    assert not tokens.ranks_to_derive(VOCABS["gpt2"])
    assert not tokens.ranks_to_derive(VOCABS["spm"])  # llama.cpp tokenizes it: nothing to derive


def test_ranks_prepared_in_a_worker_are_used_and_kept_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    """The worker rebuilds a corrupt cache file (its notice comes here), hands the ranks back,
    and counts later batches with the tokenizer it kept."""
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    fingerprint = read_model_info(VOCABS["gpt2"]).vocab_fingerprint
    damaged = tmp_path / "cache" / "tokenizers" / f"{fingerprint}.ranks"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"garbage")
    batches = [CORPUS[start : start + 5] for start in range(0, 30, 5)]
    events: list[Event] = []
    with ProcessPoolExecutor(max_workers=1) as workers:
        prepared = workers.submit(tokens.prepare_in_worker, str(VOCABS["gpt2"]))
        tokenizer = tokens.load_tokenizer(VOCABS["gpt2"], events.append, prepared)
        assert [type(e) for e in events] == [Notice] and "corrupt" in str(events[0])
        (path,) = (tmp_path / "cache" / "tokenizers").iterdir()
        path.unlink()  # the worker counts with the tokenizer it kept, not from the cache
        shared = list(tokens.count_batches(tokenizer, batches, VOCABS["gpt2"], workers))
    assert derivations == [] and not path.exists()
    assert shared == [[len(reference) for reference in map(tokenizer.encode, b)] for b in batches]


def test_unwritable_cache_still_tokenizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("REPOCTX_HOME", str(blocker))
    events: list[Event] = []
    tokenizer = tokens.load_tokenizer(VOCABS["gpt2"], events.append)
    assert tokenizer.count("hello world") == 2
    assert len(events) == 1 and "cannot write tokenizer cache" in str(events[0])


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        tokens.load_tokenizer(tmp_path / "missing.gguf")
    (tmp_path / "notes.gguf").write_text("hello")
    with pytest.raises(ModelError, match="is not a GGUF model file"):
        tokens.load_tokenizer(tmp_path / "notes.gguf")


def test_llama_cpp_fallback_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    tokenizer = tokens.LlamaCppTokenizer(read_model_info(VOCABS["spm"]))
    assert tokenizer.count("Hello world") > 0
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def _synthetic(tmp_path: Path, pre: str, added: list[tuple[str, int]], shuffle: bool) -> Path:
    """The GPT-2 vocabulary rewritten: another pre-tokenizer, added tokens (text, type), and
    optionally token ids that no longer follow merge order."""
    import gguf

    vocab = read_vocabulary(VOCABS["gpt2"])
    order = list(range(len(vocab.tokens)))
    if shuffle:
        order = order[:256] + order[256:][::-1]
    path = tmp_path / f"{pre}.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name("synthetic")
    for key in ("context_length", "embedding_length", "feed_forward_length", "block_count"):
        getattr(writer, f"add_{key}")(vocab.metadata[f"gpt2.{key}"])
    writer.add_head_count(12)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([vocab.tokens[i] for i in order] + [text for text, _ in added])
    writer.add_token_types([vocab.token_types[i] for i in order] + [kind for _, kind in added])
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(order.index(50256))
    writer.add_eos_token_id(order.index(50256))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


USER_DEFINED_TEXT = (
    "x = '<tool_call>' + \"</tool_call>\"<tool_call><tool_call>\n<|fim_prefix|>a<|im_end|>b"
    "<|file_sep|>def f(): return 1</tool_call>"
)


@pytest.mark.parametrize(("pre", "shuffle"), [("qwen2", False), ("gpt-2", True)])
def test_synthetic_vocabularies(tmp_path: Path, pre: str, shuffle: bool) -> None:
    added = [("<tool_call>", 4), ("</tool_call>", 4), ("<|fim_prefix|>", 4), ("<|im_end|>", 4)]
    added += [("<|file_sep|>", 4), ("<|ctrl|>", 3)]
    path = _synthetic(tmp_path, pre, added, shuffle)
    tokenizer = tokens.load_tokenizer(path)
    assert isinstance(tokenizer, tokens.TiktokenTokenizer)
    assert (tokenizer._tables.id_of_rank is not None) == shuffle
    model = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in [USER_DEFINED_TEXT, *SNIPPETS, *CORPUS[:5]]:
        expected = model.tokenize(text.encode(), add_bos=False, special=False)
        assert tokenizer.encode(text) == expected
        assert tokenizer.count(text) == len(expected)


def test_unknown_pre_tokenizer_goes_to_llama_cpp(tmp_path: Path) -> None:
    path = _synthetic(tmp_path, "deepseek-coder", [], False)
    tokenizer = tokens.load_tokenizer(path)
    assert isinstance(tokenizer, tokens.LlamaCppTokenizer)
    model = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in SNIPPETS:
        assert tokenizer.encode(text) == model.tokenize(text.encode(), False, False)
