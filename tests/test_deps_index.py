"""Imports resolve against every file of a root the scan saw (empty ones and ones left out for
size or kind included, ignored ones not), and only the edges to packed files are kept."""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MakeRepo, write_files

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.deps import resolve as resolve_module
from repoctx.deps.graph import DepGraph, backward_violations, order_files
from repoctx.deps.resolve import (
    ResolvePlan,
    build_graph,
    indexed_paths,
    plan_resolution,
    start_import_scan,
)
from repoctx.languages import ImportRef, python
from repoctx.pack.pipeline import build_pack
from repoctx.scan.rules import Rules
from repoctx.scan.scanner import ScanOptions, scan
from repoctx.scan.snapshot import SkipReason, Snapshot


@dataclass(frozen=True)
class Resolved:
    snapshot: Snapshot
    plan: ResolvePlan
    graph: DepGraph

    def imports_of(self, path: str) -> set[str]:
        return set(self.graph.edges.get(f"proj/{path}", ()))

    def skip_reason(self, path: str) -> SkipReason | None:
        return next((s.reason for s in self.snapshot.skipped if s.path == path), None)


def resolve(
    repo: Path, cache: ContentCache | None = None, options: ScanOptions | None = None
) -> Resolved:
    """Scan ``repo`` and build its graph the way the pipeline does (real tree-sitter parses)."""
    cache = cache if cache is not None else ContentCache.memory()
    snapshot = scan([repo], options or ScanOptions())
    plan = plan_resolution(snapshot, cache)
    refs = start_import_scan(plan.todo, cache).finish()
    return Resolved(snapshot, plan, build_graph(snapshot, refs, plan, cache))


EXAMPLES_BESIDE_LIB = {
    "examples/__init__.py": "",
    "examples/asyncio/__init__.py": '"""Examples of the asyncio extension."""\n',
    "examples/asyncio/basic.py": "import asyncio\n\nasyncio.run(main())\n",
    "lib/pkg/__init__.py": '"""The library."""\n',
    "lib/pkg/x.py": "import asyncio\nfrom pkg import util\n\ndef run(): ...\n",
    "lib/pkg/util.py": "import os\n",
}
LIB_PKG_X_IMPORTS = {"proj/lib/pkg/__init__.py", "proj/lib/pkg/util.py"}  # not examples/asyncio


def test_an_empty_examples_init_keeps_examples_from_holding_top_level_packages(
    make_repo: MakeRepo,
) -> None:
    found = resolve(make_repo(EXAMPLES_BESIDE_LIB))
    assert found.skip_reason("examples/__init__.py") is SkipReason.EMPTY
    assert found.imports_of("lib/pkg/x.py") == LIB_PKG_X_IMPORTS
    assert found.imports_of("examples/asyncio/basic.py") == set()
    assert all("examples/asyncio" not in t for ts in found.graph.edges.values() for t in ts)


def test_a_package_with_an_empty_init_resolves_its_absolute_imports(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "lib/app/__init__.py": "",
            "lib/app/json.py": "DUMPS = None\n",
            "lib/app/helpers.py": "def helper(): ...\n",
            "lib/app/main.py": "import json\nfrom app import helpers\n",
            "lib/app/cli.py": "import app.main\nfrom app.json import DUMPS\n",
        }
    )
    found = resolve(repo)
    # Inside a package, ``import json`` is the standard library, not the sibling module; the
    # package's own modules resolve under ``lib/``, the root the empty __init__.py reveals.
    assert found.imports_of("lib/app/main.py") == {"proj/lib/app/helpers.py"}
    assert found.imports_of("lib/app/cli.py") == {"proj/lib/app/main.py", "proj/lib/app/json.py"}


def test_an_edge_to_an_existing_unpacked_file_is_dropped(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "config.py": "NAME = 'top'\n",
            "tools/config.py": "TABLE = [\n" + "    0,\n" * 200 + "]\n",
            "tools/helpers.py": "def h(): ...\n",
            "tools/run.py": "import config\nfrom helpers import h\n",
        }
    )
    options = ScanOptions(rules=Rules.from_mapping({"max_file_bytes": 1000}))
    found = resolve(repo, options=options)
    assert found.skip_reason("tools/config.py") is SkipReason.TOO_LARGE
    assert "proj/tools/config.py" not in found.graph.nodes
    # A script imports its sibling, which is not packed: no edge, and not the top-level one.
    assert found.imports_of("tools/run.py") == {"proj/tools/helpers.py"}
    assert all(t in found.graph.nodes for ts in found.graph.edges.values() for t in ts)
    assert found.graph.dependents()["proj/tools/helpers.py"] == {"proj/tools/run.py"}
    assert found.graph.dependents()["proj/config.py"] == set()
    ordering = order_files(found.graph, {})
    assert backward_violations(ordering.order, found.graph, ordering.cycles) == []


def test_a_pack_with_edges_to_unpacked_files_orders_its_files(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "lib/pkg/__init__.py": "",
            "lib/pkg/blob.py": b"DATA = b'\x00\x01\x02'\n",
            "lib/pkg/base.py": "from pkg import blob\n\nclass Base: ...\n",
            "lib/pkg/model.py": "from pkg.base import Base\nimport pkg.blob\n",
        }
    )
    result = build_pack([repo], Settings(), ContentCache.memory())
    assert "proj/lib/pkg/blob.py" not in result.graph.nodes
    assert result.graph.edges["proj/lib/pkg/model.py"] == {"proj/lib/pkg/base.py"}
    order = list(result.ordering.order)
    assert order.index("proj/lib/pkg/base.py") < order.index("proj/lib/pkg/model.py")


def test_indexed_paths_hold_every_file_seen_but_not_ignored_ones(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            ".gitignore": "build/\n",
            "a.py": "import b\n",
            "empty.py": "",
            "big.py": "X = 1\n" * 400,
            "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00",
            "excluded.py": "SECRET = 1\n",
        }
    )
    write_files(repo, {"untracked.py": "", "build/out.py": "GENERATED = 1\n"})
    options = ScanOptions(
        exclude=("excluded.py",), rules=Rules.from_mapping({"max_file_bytes": 1000})
    )
    (root,) = scan([repo], options).roots
    assert set(indexed_paths(root)) == {
        ".gitignore",
        "a.py",
        "empty.py",
        "big.py",
        "logo.png",
        "untracked.py",
    }


def test_cached_targets_follow_a_file_that_becomes_packed(make_repo: MakeRepo) -> None:
    repo = make_repo(
        {
            "pkg/__init__.py": "",
            "pkg/sub.py": "X = 1\n",
            "main.py": "import pkg.sub\n",
        }
    )
    cache = ContentCache.memory()
    first = resolve(repo, cache)
    assert first.imports_of("main.py") == {"proj/pkg/sub.py"}
    write_files(repo, {"pkg/__init__.py": "from pkg.sub import X\n"})
    second = resolve(repo, cache)
    assert "proj/main.py" not in {f.key for f in second.plan.todo}  # reused from the cache
    assert second.imports_of("main.py") == {"proj/pkg/__init__.py", "proj/pkg/sub.py"}


def test_a_new_empty_file_invalidates_the_cached_targets(make_repo: MakeRepo) -> None:
    files = {k: v for k, v in EXAMPLES_BESIDE_LIB.items() if k != "examples/__init__.py"}
    repo = make_repo(files)
    cache = ContentCache.memory()
    first = resolve(repo, cache)
    # Without examples/__init__.py, examples/ is a folder of top-level packages, as in Python.
    assert "proj/examples/asyncio/__init__.py" in first.imports_of("lib/pkg/x.py")
    write_files(repo, {"examples/__init__.py": ""})  # untracked, not ignored, empty
    second = resolve(repo, cache)
    assert second.skip_reason("examples/__init__.py") is SkipReason.EMPTY
    assert "proj/lib/pkg/x.py" in {f.key for f in second.plan.todo}
    assert second.imports_of("lib/pkg/x.py") == LIB_PKG_X_IMPORTS


def test_an_edit_below_the_last_import_reuses_the_imports_without_a_parse(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "import os\nfrom pkg import util\n\n\ndef run():\n    return 1\n"
    files = {"pkg/__init__.py": "", "pkg/util.py": "x = 1\n", "pkg/other.py": "y = 2\n"}
    repo = make_repo({**files, "pkg/m.py": module})
    cache = ContentCache.memory()
    assert resolve(repo, cache).imports_of("pkg/m.py") == {"proj/pkg/util.py"}
    parsed: list[bytes] = []
    real = python._extract_with_head

    def spy(source: bytes) -> tuple[list[ImportRef], bytes | None]:
        parsed.append(source)
        return real(source)

    monkeypatch.setattr(python, "_extract_with_head", spy)
    write_files(repo, {"pkg/m.py": module + "\n\ndef more():\n    return 2\n"})
    edited = [f for f in scan([repo]).files if f.path == "pkg/m.py"]
    refs = start_import_scan(edited, cache).finish()
    assert parsed == []
    assert list(refs.values()) == [[ImportRef("os"), ImportRef("pkg", ("util",), "from")]]
    write_files(repo, {"pkg/m.py": "from pkg import other\n" + module})
    found = resolve(repo, cache).imports_of("pkg/m.py")
    assert found == {"proj/pkg/util.py", "proj/pkg/other.py"} and len(parsed) == 1


def test_batches_a_worker_could_not_parse_are_parsed_here(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies (the out-of-memory killer, say) or fails costs its batches a parse
    here, not the pack."""

    class DeadWorkers(Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = Future()
            future.set_running_or_notify_cancel()
            future.set_exception(OSError("the worker died"))
            return future

    repo = make_repo(EXAMPLES_BESIDE_LIB)
    expected = resolve(repo)
    snapshot = scan([repo], ScanOptions())
    cache = ContentCache.memory()
    plan = plan_resolution(snapshot, cache)
    monkeypatch.setattr(resolve_module, "_PARALLEL_MIN_BYTES", 0)
    imports = resolve_module.ImportScan(cache, executor=DeadWorkers())
    imports.add(plan.todo)
    assert imports.pending and imports.parsed()
    graph = build_graph(snapshot, imports.finish(), plan, cache)
    assert graph.edges == expected.graph.edges and graph.edges


def test_imports_parse_here_where_worker_processes_cannot_start(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")

    repo = make_repo(EXAMPLES_BESIDE_LIB)
    expected = resolve(repo)
    monkeypatch.setattr(resolve_module, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refused)
    result = build_pack([repo], Settings(), ContentCache.memory())
    assert result.graph.edges == expected.graph.edges and result.graph.edges
