"""The packer end to end on real git repositories: order, exact counts, budget, determinism."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import LLAMA3_VOCAB, Events, MakeRepo, git, write_files
from rich.console import Console

from repoctx.cache import ContentCache
from repoctx.cli.pack import pack_json, print_stats
from repoctx.config import FORMATS, Settings
from repoctx.deps import resolve
from repoctx.deps.graph import backward_violations
from repoctx.errors import BudgetTooSmallError, NothingToPackError, UsageError
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import Vocabulary, read_model_info
from repoctx.pack import pipeline
from repoctx.pack.pipeline import SIGNATURES_NAMESPACE, PackResult, build_pack
from repoctx.scan import scanner
from repoctx.scan.scanner import ScanOptions, scan
from repoctx.scan.snapshot import FileKind, SourceFile
from repoctx.tokens import bperanks
from repoctx.tokens import count as tokens
from repoctx.tokens.count import load_tokenizer

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
    assert reasons["proj/data/prices.csv"] == (
        "dropped to fit the budget: data file, over half the budget"
    )
    assert reasons["proj/docs/guide.md"] == (
        "dropped to fit the budget: docs file, over half the budget"
    )
    reduced = {o.key: o.reason for o in tight.reduced}
    assert reduced["proj/src/shop/big.py"] == (
        "reduced to signatures to fit the budget: whole, it is over half the budget"
    )
    assert all(r.startswith("reduced to signatures to fit the budget") for r in reduced.values())


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


def many_reducible(count: int) -> dict[str, str]:
    body = "".join(f"    total += {i}\n" for i in range(40))
    return {
        f"m{n:02}.py": f"def f{n}(total: int) -> int:\n{body}    return total\n"
        for n in range(count)
    }


def test_a_warm_pack_over_budget_makes_signatures_only_of_the_files_it_packs_so(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reducing is decided on counts: the signatures' counts come from the cache, and the
    signatures themselves are read only for the files packed as signatures."""
    repo = make_repo(many_reducible(30))
    cache = ContentCache.memory()
    full = pack([repo], cache, budget=1_000_000).pack
    budget = full.tokens // 12  # about half the files fit as signatures
    cold = pack([repo], cache, budget=budget).pack
    packed_reduced = {s.file.key for s in cold.segments if s.reduced}
    dropped = {o.key for o in cold.omitted}
    assert packed_reduced and dropped, "some files packed as signatures, some dropped"
    read: list[str] = []
    get_many = cache.get_many

    def spy(namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        if namespace == SIGNATURES_NAMESPACE:
            read.extend(wanted)
        return get_many(namespace, wanted)

    monkeypatch.setattr(cache, "get_many", spy)
    warm = pack([repo], cache, budget=budget).pack
    assert warm.text == cold.text and warm.tokens == cold.tokens
    assert len(read) == len(packed_reduced)


def test_signature_counts_that_do_not_hold_are_fitted_again_without_them(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safety net: were a known count not that of the signatures made, the pack is fitted
    again on the signatures themselves, never packed with a wrong count."""
    repo = make_repo(many_reducible(12))
    cache = ContentCache.memory()
    budget = pack([repo], cache, budget=1_000_000).pack.tokens // 3
    right = pack([repo], cache, budget=budget).pack
    assert any(s.reduced for s in right.segments)

    def wrong(self: object, files: list[SourceFile]) -> dict[str, int]:
        return {f.key: 1 for f in files}

    monkeypatch.setattr(pipeline._SegmentCounter, "reduced_counts", wrong)
    again = pack([repo], cache, budget=budget).pack
    assert again.text == right.text and again.tokens == right.tokens


def _functions(name: str, count: int, body_lines: int) -> str:
    """``count`` functions whose bodies are ``body_lines`` long: they reduce to far less."""
    return "".join(
        f"def {name}_{i}(order: Order) -> int:\n"
        + "".join(f"    step_{j} = order.quantity * {j} + {i}\n" for j in range(body_lines))
        + f"    return step_{body_lines - 1}\n\n"
        for i in range(count)
    )


LEAF_HEADER = "from app.core import Order\nfrom app.models import Item\n\n\n"
RANKED = {
    "app/__init__.py": "",
    "app/core.py": "class Order:\n    def __init__(self, quantity: int) -> None:\n"
    "        self.quantity = quantity\n",
    "app/models.py": "from app.core import Order\n\n\nclass Item:\n    order: Order\n",
    "app/api.py": LEAF_HEADER + _functions("handle", 3, 6),
    "app/jobs.py": LEAF_HEADER + _functions("run", 3, 6),
    "app/cli.py": "from app.core import Order\n\n\n" + _functions("command", 3, 6),
    "tests/test_core.py": "from app.core import Order\n\n\ndef test_order() -> None:\n"
    "    assert Order(2).quantity == 2\n",
    ".gitignore": "__pycache__/\n*.egg-info/\n.venv/\ndist/\nbuild/\n.coverage\nhtmlcov/\n",
    ".github/workflows/ci.yml": "name: CI\non: [push, pull_request]\njobs:\n  test:\n"
    "    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
    "      - uses: actions/setup-python@v5\n        with:\n          python-version: '3.12'\n"
    "      - run: pip install -e . pytest\n      - run: pytest\n",
    ".github/FUNDING.yml": "github: [shop-maintainers]\nopen_collective: shop\n"
    "custom: ['https://example.invalid/donate']\n",
    ".devcontainer/on-create-command.sh": "#!/bin/bash\nset -e\npython3 -m venv .venv\n"
    ". .venv/bin/activate\npip install -e '.[dev]'\npre-commit install --install-hooks\n",
    ".coveragerc": "[run]\nbranch = True\nsource =\n    app\n    tests\n\n[report]\n"
    "show_missing = True\n",
    ".editorconfig": "root = true\n\n[*]\nindent_style = space\nindent_size = 4\n"
    "insert_final_newline = true\ntrim_trailing_whitespace = true\n",
    "pyproject.toml": "[project]\nname = 'app'\nversion = '1.0'\n\n[tool.pytest.ini_options]\n"
    "testpaths = ['tests']\n",
}
SOURCES = [f"proj/app/{name}.py" for name in ("core", "models", "api", "jobs", "cli")]
CONFIGS = [f"proj/{path}" for path in RANKED if path.startswith(".") or path == "pyproject.toml"]


def test_over_budget_config_files_go_before_source_and_central_source_stays(
    make_repo: MakeRepo,
) -> None:
    repo = make_repo(RANKED)
    full = pack([repo], budget=1_000_000)
    kinds = {s.file.key: s.file.kind for s in full.pack.segments}
    assert all(kinds[key] is FileKind.CONFIG for key in CONFIGS)
    dependents = full.graph.dependents()
    assert len(dependents["proj/app/core.py"]) > len(dependents["proj/app/models.py"]) > 0
    tokens = {s.file.key: s.tokens for s in full.pack.segments}
    config_tokens = sum(tokens[key] for key in CONFIGS)

    roomy = pack([repo], budget=full.pack.tokens - config_tokens // 2).pack
    whole = {s.file.key for s in roomy.segments if not s.reduced}
    assert set(SOURCES) <= whole, "config files go before any source file is reduced"
    reasons = {o.key: o.reason for o in roomy.omitted}
    shed = [key for key in CONFIGS if key in reasons]
    assert shed and all(reasons[key] == "dropped to fit the budget: config file" for key in shed)

    tight = pack([repo], budget=full.pack.tokens // 3).pack
    packed = {s.file.key: s for s in tight.segments}
    assert not packed["proj/app/core.py"].reduced and not packed["proj/app/models.py"].reduced
    assert all(packed[key].reduced for key in ("proj/app/api.py", "proj/app/jobs.py")), (
        "the leaves come back as signatures before any config file comes back"
    )
    assert "proj/app/cli.py" in packed
    reasons = {o.key: o.reason for o in tight.omitted}
    for key in ("proj/.github/workflows/ci.yml", "proj/.devcontainer/on-create-command.sh"):
        assert reasons[key] == "dropped to fit the budget: config file"
    back = [key for key in CONFIGS if key in packed]
    assert all(tokens[key] <= tokens[out] for key in back for out in CONFIGS if out in reasons), (
        "what room is left takes the smallest config files"
    )


def test_a_file_over_half_the_budget_is_shed_first_yet_packed_when_there_is_room(
    make_repo: MakeRepo,
) -> None:
    files = {
        "app/__init__.py": "",
        "app/core.py": "class Order:\n    quantity: int\n",
        "app/engine.py": "from app.core import Order\n\n\n" + _functions("compile", 8, 8),
        "app/a.py": "from app.engine import compile_0\n",
        "app/b.py": "from app.engine import compile_1\n",
        "app/leaf.py": "from app.core import Order\n\n\n" + _functions("leaf", 2, 4),
        "tests/test_engine.py": "from app.engine import compile_0\n\n\n"
        + _functions("test", 4, 6).replace("order: Order", ""),
    }
    repo = make_repo(files)
    full = pack([repo], budget=1_000_000).pack
    tokens = {s.file.key: s.tokens for s in full.segments}
    engine = "proj/app/engine.py"

    budget = full.tokens - tokens["proj/tests/test_engine.py"] // 2
    assert tokens[engine] * 2 > budget
    roomy = pack([repo], budget=budget).pack
    assert [s.file.key for s in roomy.segments if s.reduced] == []
    assert engine in {s.file.key for s in roomy.segments}, "it fits, so it stays whole"

    budget = full.tokens - tokens["proj/tests/test_engine.py"] - tokens["proj/app/leaf.py"] // 3
    assert tokens[engine] * 2 > budget
    tight = pack([repo], budget=budget).pack
    reduced = {o.key: o.reason for o in tight.reduced}
    assert reduced == {
        engine: "reduced to signatures to fit the budget: whole, it is over half the budget"
    }, "the oversized file goes first, though three files import it and none imports leaf.py"


def test_every_format_is_a_view_of_the_same_fitted_pack(make_repo: MakeRepo) -> None:
    files = {
        **APP,
        "src/shop/pricing.py": "from shop.money import Money\n\n"
        + _functions("price", 6, 3).replace("order: Order", "value: int"),
        "docs/guide.md": "# Guide\n\nUse `total()` and ``cart``.\n" * 20,
        "tests/test_pricing.py": "from shop.pricing import price_1\n\n"
        + _functions("test", 4, 2).replace("order: Order", ""),
    }
    repo = make_repo(files)
    cache = ContentCache.memory()
    full = pack([repo], cache, budget=1_000_000).pack
    saw_reduced = False
    for budget in (full.tokens * 3 // 4, full.tokens // 2, full.tokens // 3):
        results = {fmt: pack([repo], cache, budget=budget, format=fmt) for fmt in FORMATS}
        document = json.loads(pack_json(results["json"]))
        chosen = {
            fmt: [(s.file.key, s.reduced) for s in result.pack.segments]
            for fmt, result in results.items()
        }
        chosen["json"] = [(f["path"], f["reduced"]) for f in document["files"]]
        assert chosen["markdown"] == chosen["xml"] == chosen["json"], budget
        xml, markdown = results["xml"].pack, results["markdown"].pack
        assert [o.key for o in markdown.omitted] == [o.key for o in xml.omitted]
        assert markdown.listed == xml.listed and markdown.unlisted == xml.unlisted
        assert xml.tokens <= budget and markdown.fitted_tokens == xml.tokens
        assert markdown.text.startswith("# Repository pack") and "<file path=" not in markdown.text
        tokenizer = load_tokenizer(results["markdown"].model.path)
        assert tokenizer.count(markdown.text) == markdown.tokens
        if xml.reduced:
            saw_reduced = True
            assert "(signatures only)" in markdown.text
    assert saw_reduced


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


def test_a_warm_pack_reads_the_counts_of_the_last_pack_in_one_record(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(APP)
    cache = ContentCache.memory()
    first = pack([repo], cache).pack.text
    asked: list[tuple[str, str]] = []
    get_many = cache.get_many

    def spy(namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        asked.extend((namespace, key) for key in wanted if namespace.startswith("tokens:"))
        return get_many(namespace, wanted)

    monkeypatch.setattr(cache, "get_many", spy)
    assert pack([repo], cache).pack.text == first
    records = {key.split(":")[0] for _, key in asked}
    assert records == {"segments", "texts"}  # no file looked up on its own
    namespace, record = next((n, k) for n, k in asked if k.startswith("segments:"))

    asked.clear()
    write_files(repo, {"src/shop/money.py": "class Money:\n    cents: int\n"})
    edited = pack([repo], cache)
    alone = [key for _, key in asked if key.startswith("xml:")]
    assert len(alone) == 1 and alone[0].endswith(":proj/src/shop/money.py")
    tokenizer = load_tokenizer(edited.model.path)
    assert all(tokenizer.count(s.text) == s.tokens for s in edited.pack.segments)

    cache.put(namespace, record, {alone[0]: "not a count"})
    assert pack([repo], cache).pack.text == edited.pack.text
    assert pack([repo], cache).pack.text == edited.pack.text


def test_a_cached_count_that_is_no_count_is_counted_again(make_repo: MakeRepo) -> None:
    repo = make_repo(APP)
    cache = ContentCache.memory()
    first = pack([repo], cache)
    namespace = f"tokens:{load_tokenizer(first.model.path).name}"
    rows = cache._db.execute("SELECT key FROM entries WHERE namespace=?", (namespace,))
    damaged = {key: "not a count" for (key,) in rows if key.startswith("xml:")}
    assert damaged
    cache.put_many(namespace, damaged)
    for (key,) in cache._db.execute("SELECT key FROM entries WHERE key LIKE 'segments:%'"):
        cache.put(namespace, key, {})  # no record to read the counts from instead
    again = pack([repo], cache)
    assert again.pack.text == first.pack.text and again.pack.tokens == first.pack.tokens


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


def test_tracked_files_in_a_build_folder_are_packed_as_generated_and_stats_say_so(
    make_repo: MakeRepo,
) -> None:
    repo = make_repo(
        {
            "doc/build/conf.py": "project = 'shop'\nextensions = ['sphinx.ext.autodoc']\n",
            "doc/build/index.rst": "Shop\n====\n\n" + "The shop sells things. " * 8 + "\n",
            "shop.py": "def total(prices: list[int]) -> int:\n    return sum(prices)\n",
        }
    )
    write_files(repo, {"doc/build/draft.rst": "untracked\n"})
    result = pack([repo], budget=1_000_000)
    kinds = {s.file.key: s.file.kind for s in result.pack.segments}
    assert kinds == {
        "proj/doc/build/conf.py": FileKind.GENERATED,
        "proj/doc/build/index.rst": FileKind.GENERATED,
        "proj/shop.py": FileKind.SOURCE,
    }
    assert {o.key: o.reason for o in result.pack.omitted} == {
        "proj/doc/build/draft.rst": "generated"
    }
    tight = pack([repo], budget=result.pack.tokens - 20)
    assert "proj/shop.py" in keys(tight)
    assert {o.key: o.reason for o in tight.pack.omitted}["proj/doc/build/index.rst"] == (
        "dropped to fit the budget: generated file"
    )
    for shown, packed in ((result, 2), (tight, 1)):
        text = io.StringIO()
        print_stats(Console(file=text, width=400), shown, None)
        assert (
            "2 files git tracks in folders that rules.generated matches (build/, dist/...), such "
            "as proj/doc/build/conf.py, proj/doc/build/index.rst, are kept as generated files, "
            f"the first shed over budget: {packed} of them packed"
        ) in text.getvalue()


GPT2_VOCAB = LLAMA3_VOCAB.with_name("ggml-vocab-gpt-2.gguf")


def _first_sight(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A REPOCTX_HOME that has seen no vocabulary, on two cores. Returns the file where each
    derivation of ranks writes the id of the process that ran it."""
    monkeypatch.setenv("REPOCTX_HOME", str(home))
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    log = home.parent / "derived-in"
    derive = bperanks.derive_ranks

    def logged(vocab: Vocabulary) -> bperanks.Ranks:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return derive(vocab)

    monkeypatch.setattr(bperanks, "derive_ranks", logged)
    return log


def _gpt2_cache(home: Path) -> Path:
    fingerprint = read_model_info(GPT2_VOCAB).vocab_fingerprint
    return home / "cache" / "tokenizers" / f"{fingerprint}.ranks"


@pytest.mark.parametrize("pooled", [False, True])
def test_first_sight_of_a_vocabulary_derives_its_tokenizer_in_a_worker(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pooled: bool
) -> None:
    """The first pack with a vocabulary this machine has not seen derives its tokenizer in a
    worker process while the scan runs (imports then parse here, or in the workers too), stores
    it, and counts what a tokenizer loaded from the cache counts."""
    log = _first_sight(tmp_path / "home", monkeypatch)
    if pooled:
        monkeypatch.setattr(resolve, "_PARALLEL_MIN_BYTES", 0)
    repo = make_repo(APP)
    events = Events()
    settings = Settings(model=str(GPT2_VOCAB), budget=100_000)
    first = build_pack([repo], settings, ContentCache.memory(), events)
    (derived_in,) = log.read_text().split()
    assert int(derived_in) != os.getpid() and events.notices() == []
    assert _gpt2_cache(tmp_path / "home").is_file()
    assert first.graph.edges["proj/src/shop/cart.py"] >= {"proj/src/shop/models.py"}
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    again = pack([repo], model=str(GPT2_VOCAB), budget=100_000)
    assert log.read_text().split() == [derived_in]  # read from the cache
    assert (again.pack.text, again.pack.tokens) == (first.pack.text, first.pack.tokens)
    tokenizer = load_tokenizer(GPT2_VOCAB)
    assert all(s.tokens == tokenizer.count(s.text) for s in first.pack.segments)


def test_first_sight_without_worker_processes_derives_here(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where worker processes cannot start (no semaphores, say), the tokenizer is derived in
    this thread, as on one core."""
    log = _first_sight(tmp_path / "home", monkeypatch)

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refused)
    result = pack([make_repo(APP)], model=str(GPT2_VOCAB), budget=100_000)
    assert log.read_text().split() == [str(os.getpid())]
    tokenizer = load_tokenizer(GPT2_VOCAB)
    assert all(s.tokens == tokenizer.count(s.text) for s in result.pack.segments)


def test_a_corrupt_tokenizer_cache_is_rebuilt(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache file is there, so the tokenizer is loaded as usual (no worker starts for it):
    found corrupt, it is derived again, stored, and the user told."""
    log = _first_sight(tmp_path / "home", monkeypatch)
    stored = _gpt2_cache(tmp_path / "home")
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"not a cache file" * 10)
    events = Events()
    settings = Settings(model=str(GPT2_VOCAB), budget=100_000)
    result = build_pack([make_repo(APP)], settings, ContentCache.memory(), events)
    (message,) = events.warnings()
    assert "corrupt" in message and str(stored) in message
    assert log.read_text().split() == [str(os.getpid())]
    again = Events()
    assert not isinstance(bperanks.cached_ranks_later(read_model_info(GPT2_VOCAB), again), str)
    assert again.events == [] and log.read_text().split() == [str(os.getpid())]
    tokenizer = load_tokenizer(GPT2_VOCAB)
    assert all(s.tokens == tokenizer.count(s.text) for s in result.pack.segments)


def test_a_pack_that_fails_on_first_sight_still_stores_the_tokenizer(
    make_repo: MakeRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error comes at once; the worker finishes the derivation and stores it, then exits."""
    _first_sight(tmp_path / "home", monkeypatch)
    repo = make_repo({"logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary", "empty.txt": ""})
    with pytest.raises(NothingToPackError):
        pack([repo], model=str(GPT2_VOCAB), budget=100_000)
    info = read_model_info(GPT2_VOCAB)
    deadline = time.monotonic() + 60
    while bperanks.ranks_to_derive(info) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not bperanks.ranks_to_derive(info)


def test_imports_parse_in_worker_processes_while_the_scan_reads(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the files read need enough parsing to pay for worker processes, batches go to them
    before the scan ends; the pack is the one parsed after the scan, here."""
    files = {"pkg/__init__.py": "", "pkg/m0.py": "X = 0\n"}
    files |= {f"pkg/m{i}.py": f"from pkg import m{i - 1}\n" + "x = 1\n" * 40 for i in range(1, 30)}
    repo = make_repo(files)
    expected = pack([repo])
    assert expected.graph.edges["proj/pkg/m7.py"] == {"proj/pkg/m6.py"}
    monkeypatch.setattr(resolve, "_PARALLEL_MIN_BYTES", 2000)
    monkeypatch.setattr(resolve, "_BATCH_BYTES", 600)
    moments: list[str] = []
    send_out = resolve.ImportScan._send_out
    finish_root = scanner._Reader.finish

    def sending(self: resolve.ImportScan, final: bool) -> None:
        before = len(self.pending)
        send_out(self, final)
        moments.extend(["sent"] * (len(self.pending) - before))

    def finishing(self: Any, on_event: Any) -> Any:
        moments.append("scan read every file")
        return finish_root(self, on_event)

    monkeypatch.setattr(resolve.ImportScan, "_send_out", sending)
    monkeypatch.setattr(scanner._Reader, "finish", finishing)
    streamed = pack([repo])
    assert moments.index("sent") < moments.index("scan read every file")
    assert (streamed.pack.text, streamed.graph.edges) == (expected.pack.text, expected.graph.edges)


def test_the_graph_is_built_once_between_counts_when_every_import_is_parsed(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline offers the graph's work after each batch of counts (``if_ready``): it runs
    once the imports are all parsed, and only then; the result is the one built after."""
    repo = make_repo(APP)
    cache = ContentCache.memory()
    snapshot = scan([repo], ScanOptions(), cache)
    plan = resolve.plan_resolution(snapshot, cache)
    imports = resolve.ImportScan(cache)
    imports.add(plan.todo)  # too little to send out: parsed here
    built: list[object] = []
    build = pipeline.build_graph

    def building(*args: Any) -> Any:
        built.append(build(*args))
        return built[-1]

    monkeypatch.setattr(pipeline, "build_graph", building)
    work = pipeline._GraphWork(snapshot, imports, plan, cache)
    work.if_ready()
    assert built == [] and not imports.parsed()
    imports.parse_inline_now()
    work.if_ready()
    work.if_ready()
    graph, _ = work.result()
    assert built == [graph] and graph.edges == pack([repo]).graph.edges


def test_a_warm_pack_of_a_plain_folder_reads_no_imports_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain folder's files are hashed (so offered to the import parser) at every run; while
    the resolution of the last run holds, their imports are only checked for presence."""
    repo = tmp_path / "plain"
    write_files(repo, APP)
    cache = ContentCache.memory()
    first = pack([repo], cache)
    read: list[str] = []
    get_many = ContentCache.get_many

    def reading(self: ContentCache, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        if namespace == resolve.CACHE_NAMESPACE:
            read.extend(wanted)
        return get_many(self, namespace, wanted)

    monkeypatch.setattr(resolve, "_BATCH_BYTES", 1)  # each file offered is looked up at once
    monkeypatch.setattr(ContentCache, "get_many", reading)
    again = pack([repo], cache)
    assert read == [] and again.graph.edges == first.graph.edges


@pytest.mark.parametrize(("model", "workers"), [("embedded", 1), ("gpt2", 2)])
def test_first_sight_adds_a_worker_only_to_derive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, workers: int
) -> None:
    """Reading shipped ranks takes a worker milliseconds before it parses: none is added for
    it, as one is to derive (on two cores, one parses)."""
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    path = default_model_path() if model == "embedded" else GPT2_VOCAB
    executor, prepared = pipeline._derive_meanwhile(read_model_info(path))
    assert executor is not None and prepared is not None
    try:
        assert executor._max_workers == workers  # type: ignore[attr-defined]
        assert prepared.result(timeout=60)[1] == []
    finally:
        executor.shutdown()
