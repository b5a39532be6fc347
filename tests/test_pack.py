"""The packer end to end on real git repositories: order, exact counts, budget, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_helpers import LLAMA3_VOCAB, MakeRepo, git, write_files

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.errors import BudgetTooSmallError, NothingToPackError, UsageError
from repoctx.graph import backward_violations
from repoctx.pipeline import PackResult, build_pack
from repoctx.tokens import load_tokenizer

APP = {
    "src/shop/__init__.py": "",
    "src/shop/models.py": "from shop.money import Money\n\nclass Item:\n    price: Money\n",
    "src/shop/money.py": "class Money:\n    def __init__(self, cents: int) -> None:\n"
    "        self.cents = cents\n",
    "src/shop/cart.py": "from .models import Item\nfrom . import money\n\n"
    "def total(items: list[Item]) -> int:\n    return sum(i.price.cents for i in items)\n",
    "web/api.ts": "import { fmt } from './format.js'\nexport const show = (n: number) => fmt(n)\n",
    "web/format.ts": "export function fmt(n: number): string {\n  return `${n}`\n}\n",
    "go.mod": "module example.com/shop\n\ngo 1.22\n",
    "cmd/main.go": 'package main\n\nimport "example.com/shop/pkg/tax"\n\n'
    "func main() { tax.Rate() }\n",
    "pkg/tax/tax.go": "package tax\n\nfunc Rate() float64 {\n\treturn 0.2\n}\n",
    "README.md": "# Shop\n\nA shop.\n",
    "tests/test_cart.py": "from shop.cart import total\n\n"
    "def test_total():\n    assert total([]) == 0\n",
}


def pack(roots: list[Path], cache: ContentCache | None = None, **settings: object) -> PackResult:
    return build_pack(roots, Settings(**settings), cache or ContentCache.memory())  # type: ignore[arg-type]


def keys(result: PackResult) -> list[str]:
    return [segment.file.key for segment in result.pack.segments]


def test_dependencies_come_before_their_users_in_every_language(make_repo: MakeRepo) -> None:
    result = pack([make_repo(APP)])
    order = keys(result)
    edges = result.graph.edges
    assert edges["proj/src/shop/cart.py"] >= {"proj/src/shop/models.py", "proj/src/shop/money.py"}
    assert "proj/web/format.ts" in edges["proj/web/api.ts"]
    assert "proj/pkg/tax/tax.go" in edges["proj/cmd/main.go"]
    assert "proj/src/shop/cart.py" in edges["proj/tests/test_cart.py"]
    assert backward_violations(order, result.graph, result.ordering.cycles) == []
    assert order.index("proj/src/shop/money.py") < order.index("proj/src/shop/models.py")
    assert order.index("proj/src/shop/models.py") < order.index("proj/src/shop/cart.py")


def test_cycles_stay_together(make_repo: MakeRepo) -> None:
    files = {
        "a.py": "import b\n",
        "b.py": "import c\n",
        "c.py": "import a\nimport base\n",
        "base.py": "X = 1\n",
        "main.py": "import a\n",
    }
    result = pack([make_repo(files)])
    order = keys(result)
    assert [set(c) for c in result.ordering.cycles] == [{"proj/a.py", "proj/b.py", "proj/c.py"}]
    positions = sorted(order.index(f"proj/{n}.py") for n in "abc")
    assert positions[2] - positions[0] == 2
    assert order.index("proj/base.py") < positions[0] and positions[2] < order.index("proj/main.py")


def test_least_recently_changed_files_come_first(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {"old.txt": "old\n", "hot.txt": "hot v1\n", "mid.txt": "mid v1\n"},
        commits=[
            ({"hot.txt": "hot v2\n"}, 1_700_000_000),
            ({"mid.txt": "mid v2\n"}, 1_650_000_000),
        ],
    )
    write_files(repo, {"new.txt": "untracked\n"})
    assert keys(pack([repo])) == ["proj/old.txt", "proj/mid.txt", "proj/hot.txt", "proj/new.txt"]


def test_same_inputs_give_a_byte_identical_pack_cold_or_warm(make_repo: MakeRepo) -> None:
    repo = make_repo(APP)
    cache = ContentCache.memory()
    first = pack([repo], cache).pack.text
    assert pack([repo], cache).pack.text == first
    assert pack([repo]).pack.text == first


@pytest.mark.parametrize("fmt", ["xml", "markdown"])
@pytest.mark.parametrize("vocab", ["embedded", "llama3"])
def test_counts_are_exact_for_the_whole_text(make_repo: MakeRepo, fmt: str, vocab: str) -> None:
    files = {
        **APP,
        "blank_tail.py": "x = 1\n\n\n   \n",
        "no_newline.py": "y = 2",
        "crlf.c": "int a;\r\n",
    }
    model = str(LLAMA3_VOCAB) if vocab == "llama3" else None
    result = pack([make_repo(files)], format=fmt, model=model, budget=100_000)
    tokenizer = load_tokenizer(result.model.path)
    assert tokenizer.count(result.pack.text) == result.pack.tokens
    for segment in result.pack.segments:
        assert tokenizer.count(segment.text) == segment.tokens


def test_the_default_budget_is_the_context_less_the_reserve(make_repo: MakeRepo) -> None:
    repo = make_repo(APP)
    assert pack([repo], model=str(LLAMA3_VOCAB), reserve=1000).pack.budget == 8192 - 1000
    assert pack([repo]).pack.budget == 8192 - 1024
    with pytest.raises(UsageError, match="smaller --reserve"):
        pack([repo], model=str(LLAMA3_VOCAB), reserve=9000)


def test_over_budget_the_pack_sheds_the_least_useful_content_first(make_repo: MakeRepo) -> None:
    body = "".join(f"    v{i} = compute({i})\n" for i in range(40))
    files = {
        **APP,
        "src/shop/big.py": f"from shop.money import Money\n\ndef big():\n{body}    return 1\n",
        "data/prices.csv": "sku,price\n" + "".join(f"{i},{i * 3}\n" for i in range(300)),
        "docs/guide.md": "# Guide\n\n" + "Words about the shop. " * 80 + "\n",
    }
    repo = make_repo(files)
    full = pack([repo], budget=1_000_000).pack
    for budget in range(full.tokens, 150, -97):
        result = pack([repo], budget=budget).pack
        assert result.tokens <= budget
        assert (
            load_tokenizer(pack([repo], budget=budget).model.path).count(result.text)
            == result.tokens
        )
        packed = {s.file.key for s in result.segments}
        omitted = {o.key: o.reason for o in result.omitted}
        if "proj/docs/guide.md" in packed:
            assert (
                "proj/data/prices.csv" not in omitted or "data" in omitted["proj/data/prices.csv"]
            )
        if any(s.reduced for s in result.segments):
            assert "proj/data/prices.csv" in omitted and "proj/docs/guide.md" in omitted
        assert packed | set(omitted) == {s.file.key for s in full.segments} | {
            o.key for o in full.omitted
        }
    tight = pack([repo], budget=400).pack
    reasons = {o.key: o.reason for o in tight.omitted}
    assert reasons["proj/data/prices.csv"] == "dropped to fit the budget: data file"
    assert reasons["proj/docs/guide.md"] == "dropped to fit the budget: docs file"
    assert all(o.reason == "reduced to signatures to fit the budget" for o in tight.reduced)


def test_reduced_files_keep_their_signatures(make_repo: MakeRepo) -> None:
    body = "".join(f"    total += {i}\n" for i in range(60))
    files = {
        "calc.py": f"def add_all(total: int) -> int:\n{body}    return total\n",
        "x.py": "X = 1\n",
    }
    repo = make_repo(files)
    full = pack([repo], budget=100_000).pack
    result = pack([repo], budget=full.tokens - 50).pack
    reduced = [s for s in result.segments if s.reduced]
    assert [s.file.key for s in reduced] == ["proj/calc.py"]
    assert "def add_all(total: int) -> int:" in reduced[0].text
    assert "total += 30" not in reduced[0].text
    assert 'reduced="signatures"' in result.text


def test_a_budget_below_the_fixed_overhead_is_refused(make_repo: MakeRepo) -> None:
    with pytest.raises(BudgetTooSmallError, match="pass --budget"):
        pack([make_repo(APP)], budget=10)


def test_nothing_packable_is_an_error(make_repo: MakeRepo) -> None:
    repo = make_repo({"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary", "empty.txt": ""})
    with pytest.raises(NothingToPackError, match="none of its 2 files"):
        pack([repo])


def test_several_roots_with_the_same_name_are_told_apart(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    one = make_repo({"lib.py": "A = 1\n"}, name="proj", parent=tmp_path / "a")
    two = make_repo(
        {"lib.py": "B = 2\n", "use.py": "import lib\n"}, name="proj", parent=tmp_path / "b"
    )
    result = pack([one, two])
    assert sorted(keys(result)) == ["a/proj/lib.py", "b/proj/lib.py", "b/proj/use.py"]
    assert result.graph.edges["b/proj/use.py"] == frozenset({"b/proj/lib.py"})


def test_imports_resolve_across_roots(make_repo: MakeRepo, tmp_path: Path) -> None:
    lib = make_repo({"corelib/__init__.py": "", "corelib/util.py": "U = 1\n"}, name="lib")
    app = make_repo({"app.py": "from corelib.util import U\n"}, name="app")
    result = pack([app, lib])
    assert result.graph.edges["app/app.py"] >= {"lib/corelib/util.py"}
    assert keys(result).index("lib/corelib/util.py") < keys(result).index("app/app.py")


def test_edges_follow_edits_new_files_and_config_changes(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "a.py": "X = 1\n",
            "b.py": "Y = 2\n",
            "web/x.ts": "import '@lib/y'\n",
            "web/lib/y.ts": "export {}\n",
            "tsconfig.json": '{"compilerOptions": {}}',
        }
    )
    cache = ContentCache.memory()
    assert pack([repo], cache).graph.edges == {}
    write_files(repo, {"a.py": "import b\nimport c\n"})
    assert pack([repo], cache).graph.edges == {"proj/a.py": frozenset({"proj/b.py"})}
    write_files(repo, {"c.py": "Z = 3\n"})
    assert pack([repo], cache).graph.edges["proj/a.py"] == {"proj/b.py", "proj/c.py"}
    tsconfig = {"compilerOptions": {"baseUrl": ".", "paths": {"@lib/*": ["web/lib/*"]}}}
    write_files(repo, {"tsconfig.json": json.dumps(tsconfig)})
    assert pack([repo], cache).graph.edges["proj/web/x.ts"] == {"proj/web/lib/y.ts"}


def test_an_edit_keeps_the_pack_text_before_the_edited_file(make_repo: MakeRepo) -> None:
    files = {f"m{i}.py": f"V{i} = {i}\n" for i in range(8)}
    repo = make_repo(files, commits=[({"m7.py": "V7 = 'recent'\n"}, 1_700_000_000)])
    before = pack([repo]).pack.text
    write_files(repo, {"m7.py": "V7 = 'edited'\n"})
    after = pack([repo]).pack.text
    cut = before.index('<file path="proj/m7.py">')
    assert after[:cut] == before[:cut] and after != before


def test_tracked_ignored_files_are_packed_and_untracked_ignored_are_not(
    make_repo: MakeRepo,
) -> None:
    repo = make_repo({".gitignore": "*.log\n"})
    write_files(repo, {"keep.log": "tracked on purpose\n"})
    git(repo, "add", "-f", "keep.log")
    git(repo, "commit", "-q", "-m", "track a log")
    write_files(repo, {"noise.log": "untracked\n", "new.py": "N = 1\n"})
    assert sorted(keys(pack([repo]))) == ["proj/.gitignore", "proj/keep.log", "proj/new.py"]


def test_a_sentencepiece_vocabulary_is_counted_on_the_whole_text(make_repo: MakeRepo) -> None:
    spm = str(LLAMA3_VOCAB.with_name("ggml-vocab-llama-spm.gguf"))
    repo = make_repo(APP)
    tokenizer = load_tokenizer(spm)
    assert not tokenizer.additive  # llama.cpp's tokenizer: counts of pieces do not add up
    full = pack([repo], model=spm, budget=100_000).pack
    assert tokenizer.count(full.text) == full.tokens
    for budget in (full.tokens - 1, full.tokens // 2, 300):
        result = pack([repo], model=spm, budget=budget).pack
        assert tokenizer.count(result.text) == result.tokens <= budget
