from __future__ import annotations

import pickle

import pytest
from repo_helpers import MakeRepo

from repoctx.cache import ContentCache
from repoctx.config import Settings
from repoctx.deps.graph import backward_violations
from repoctx.languages import get_language, python
from repoctx.languages.base import ImportRef, RepoIndex, load_language, parse
from repoctx.pack.pipeline import PackResult, build_pack

PY = get_language("python")


def make_index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def resolve_all(source: str, importer: str | None, index: RepoIndex) -> list[str]:
    found: list[str] = []
    for ref in PY.extract(source.encode()):
        found += PY.resolve(ref, importer, index)
    return found


# --- extraction -------------------------------------------------------------------------------


def test_extract_every_import_form() -> None:
    source = b"""\
import a.b.c
import a.b as x, d
from a.b import c, d as e
from a import (f,
    g as h)
from . import sibling
from ..pkg import y
from .m import *
from __future__ import annotations
"""
    assert PY.extract(source) == [
        ImportRef("a.b.c", (), "import"),
        ImportRef("a.b", (), "import"),
        ImportRef("d", (), "import"),
        ImportRef("a.b", ("c", "d"), "from"),
        ImportRef("a", ("f", "g"), "from"),
        ImportRef(".", ("sibling",), "from"),
        ImportRef("..pkg", ("y",), "from"),
        ImportRef(".m", ("*",), "from"),
    ]


def test_extract_imports_in_functions_and_type_checking_blocks() -> None:
    source = b"""\
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from app.models import User

def load():
    import app.storage
    return app.storage
"""
    modules = [ref.module for ref in PY.extract(source)]
    assert modules == ["typing", "app.models", "app.storage"]


TAIL_CASES = {
    "code after the last import": b"import a\n\ndef f():\n    import b\n    return 1\n\nx = 2\n",
    "a string the cut falls in": b'import a\nS = """\nimport b\nword\n"""\ny = 1\n',
    "a backslash continuation": b"import a, \\\nb\nimport c \\\r\nas_d = 1\n",
    "a parenthesised import": b"from a import (\n    b,\nc)\nx = 1\n",
    "a syntax error after it": b"import a\nx = 1\ndef broken(:\n    pass\n",
    "a syntax error before it": b"def broken(:\n    import a\nimport b\nx = 1\n",
    "no import at all": b"x = 'important'\n",
    "a comment at column 0 in a body": b"def f():\n    import a\n# note\n    return a\n",
    "a comment in a string": b'import a\nS = """\n# not a comment\n"""\n',
    "a docstring naming import": b'import a\n\ndef f():\n    """Import b, then import c."""\n'
    b"    return 1\n\nx = 2\n",
    "an import after a semicolon": b"x = 1; import a\ny = 2\n",
    "one-line compound statements": b"try: import a\nexcept ImportError: import b as a\nz = 1\n",
    "a from-import joined by backslashes": b"from \\\n  a \\\n  import b\nx = 1\n",
    "a comment ending in a backslash": b"import a\n# see \\\nimport b\nx = 1\n",
    "names that start with import": b"import a\nimporter = import_module('b')\nx = 1\n",
    "an import in a string at the end": b'import a\ndef f():\n    pass\nS = """\nimport b\n"""\n',
}


@pytest.mark.parametrize("source", TAIL_CASES.values(), ids=TAIL_CASES.keys())
def test_extraction_stops_after_the_last_import_yet_finds_what_the_whole_parse_finds(
    source: bytes,
) -> None:
    whole = parse(load_language("tree_sitter_python"), source)
    refs, head = python.PythonSpec().extract_with_head(source)
    assert refs == python._refs(whole) == PY.extract(source)
    if head is not None:
        assert source.startswith(head) and python.import_head(source) == head
        assert python._refs(parse(load_language("tree_sitter_python"), head)) == refs


def test_only_the_head_up_to_the_last_import_is_parsed_when_it_parses_cleanly() -> None:
    source = b"import a\n\ndef f():\n    import b\n\nx = 1\n" + b"y = 2\n" * 1000
    refs, head = python.PythonSpec().extract_with_head(source)
    assert head == source[: source.index(b"x = 1")]
    assert refs == [ImportRef("a", (), "import"), ImportRef("b", (), "import")]
    for name in ("a string the cut falls in", "a syntax error before it", "no import at all"):
        assert python.PythonSpec().extract_with_head(TAIL_CASES[name])[1] is None, name


def test_a_docstring_or_comment_naming_import_does_not_lengthen_the_head() -> None:
    body = b'    """Lazily import the rest, as importlib would."""\n    return 1\n\n'
    source = b"import a\n\ndef f():\n" + body + b"# import nothing\nx = 1\n" * 50
    refs, head = python.PythonSpec().extract_with_head(source)
    assert head == b"import a\n\n" and refs == [ImportRef("a", (), "import")]


def test_refs_round_trip_through_json() -> None:
    for ref in PY.extract(b"from ..pkg import y, z\nimport q\n"):
        assert ImportRef.from_json(ref.to_json()) == ref


# --- resolution -------------------------------------------------------------------------------

FLAT = {
    "pkg/__init__.py": "",
    "pkg/a.py": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/b.py": "",
    "pkg/sub/c/__init__.py": "",
    "pkg/util.pyi": "",
    "main.py": "",
}


def test_dotted_import_depends_on_enclosing_packages() -> None:
    index = make_index(FLAT)
    assert resolve_all("import pkg.sub.b", "main.py", index) == [
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/b.py",
    ]


def test_from_import_of_submodules_and_attributes() -> None:
    index = make_index(FLAT)
    found = resolve_all("from pkg.sub import b, c, CONSTANT", "main.py", index)
    assert found == [
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/b.py",
        "pkg/sub/c/__init__.py",
    ]
    assert resolve_all("from pkg import a", "main.py", index) == ["pkg/__init__.py", "pkg/a.py"]


def test_stub_files_resolve() -> None:
    index = make_index(FLAT)
    assert resolve_all("import pkg.util", "main.py", index) == ["pkg/__init__.py", "pkg/util.pyi"]


def test_src_layout() -> None:
    index = make_index({"src/app/__init__.py": "", "src/app/core.py": "", "tests/test_core.py": ""})
    found = resolve_all("from app import core", "tests/test_core.py", index)
    assert found == ["src/app/__init__.py", "src/app/core.py"]


def test_nested_project_roots_prefer_the_importers_own() -> None:
    index = make_index(
        {
            "services/api/app/__init__.py": "",
            "services/api/app/db.py": "",
            "services/worker/app/__init__.py": "",
            "services/worker/app/db.py": "",
            "services/worker/run.py": "",
        }
    )
    found = resolve_all("import app.db", "services/worker/run.py", index)
    assert found == ["services/worker/app/__init__.py", "services/worker/app/db.py"]


def test_scripts_import_their_siblings() -> None:
    index = make_index({"scripts/run.py": "", "scripts/helpers.py": ""})
    assert resolve_all("import helpers", "scripts/run.py", index) == ["scripts/helpers.py"]


def test_relative_imports() -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "",
        "pkg/sub/x.py": "",
        "pkg/other/__init__.py": "",
        "pkg/other/y.py": "",
    }
    index = make_index(files)
    importer = "pkg/sub/mod.py"
    assert resolve_all("from . import x", importer, index) == ["pkg/sub/x.py"]
    assert resolve_all("from .x import thing", importer, index) == ["pkg/sub/x.py"]
    assert resolve_all("from ..other import y", importer, index) == [
        "pkg/other/__init__.py",
        "pkg/other/y.py",
    ]
    assert resolve_all("from .. import VERSION", importer, index) == ["pkg/__init__.py"]
    assert resolve_all("from .... import too_far", importer, index) == []


def test_relative_import_from_package_init() -> None:
    index = make_index({"pkg/__init__.py": "", "pkg/core.py": ""})
    assert resolve_all("from .core import run", "pkg/__init__.py", index) == ["pkg/core.py"]
    assert resolve_all("from . import VERSION", "pkg/__init__.py", index) == []


def test_stdlib_and_third_party_resolve_to_nothing() -> None:
    index = make_index(FLAT)
    source = "import os\nimport os.path\nfrom typing import Any\nimport numpy as np\n"
    assert resolve_all(source, "main.py", index) == []


def test_other_root_resolves_absolute_but_not_relative() -> None:
    index = make_index(FLAT)
    assert resolve_all("from . import a", None, index) == []
    assert resolve_all("import pkg.a", None, index) == ["pkg/__init__.py", "pkg/a.py"]


def test_never_resolves_to_the_importer() -> None:
    index = make_index(FLAT)
    assert resolve_all("import pkg.a", "pkg/a.py", index) == ["pkg/__init__.py"]


# --- a dialect package in miniature (SQLAlchemy's lib/sqlalchemy/dialects/mysql) -------------

LIB = "lib/sqlalchemy"
MYSQL = f"{LIB}/dialects/mysql"
DIALECT_PACKAGE = {
    f"{LIB}/__init__.py": "from . import util\nfrom .sql import select\n",
    f"{LIB}/util.py": "def warn(message: str) -> None:\n    print(message)\n",
    f"{LIB}/sql/__init__.py": "from .expression import select\n",
    f"{LIB}/sql/expression.py": "def select() -> str:\n    return 'SELECT'\n",
    f"{LIB}/dialects/__init__.py": "from .. import util\n",
    f"{MYSQL}/__init__.py": "from . import base, mysqldb\nfrom .base import BIGINT\n",
    f"{MYSQL}/base.py": "from ... import util\nfrom ...sql import expression\n\n"
    "class BIGINT:\n    pass\n\nclass MySQLDialect:\n    pass\n",
    f"{MYSQL}/mysqldb.py": "from .base import MySQLDialect\n\n"
    "class MySQLDialect_mysqldb(MySQLDialect):\n    pass\n",
}
# As in SQLAlchemy's postgresql dialect: the package binds a name that its base module imports
# back, so the package and the modules it imports form one import cycle.
CYCLIC_DIALECT_PACKAGE = {
    **DIALECT_PACKAGE,
    f"{MYSQL}/__init__.py": "from . import array as arraylib\nfrom . import base, mysqldb\n"
    "from .base import BIGINT\n",
    f"{MYSQL}/array.py": "class ARRAY:\n    pass\n",
    f"{MYSQL}/base.py": "from ... import util\nfrom ...sql import expression\n"
    "from . import arraylib as _array\n\nclass BIGINT:\n    pass\n\n"
    "class MySQLDialect:\n    pass\n",
}


def resolved_edges(files: dict[str, str]) -> dict[str, list[str]]:
    """Importer -> the files it imports, each once, in the order of its imports."""
    index = make_index(files)
    return {path: list(dict.fromkeys(resolve_all(src, path, index))) for path, src in files.items()}


def pack_order(result: PackResult) -> list[str]:
    return [segment.file.path for segment in result.pack.segments]


def test_relative_imports_of_a_dialect_package_resolve_like_python() -> None:
    edges = resolved_edges(DIALECT_PACKAGE)
    assert edges[f"{MYSQL}/__init__.py"] == [f"{MYSQL}/base.py", f"{MYSQL}/mysqldb.py"]
    assert edges[f"{MYSQL}/mysqldb.py"] == [f"{MYSQL}/base.py"]
    assert edges[f"{MYSQL}/base.py"] == [
        f"{LIB}/util.py",
        f"{LIB}/sql/__init__.py",
        f"{LIB}/sql/expression.py",
    ]
    assert edges[f"{LIB}/dialects/__init__.py"] == [f"{LIB}/util.py"]
    assert edges[f"{LIB}/__init__.py"] == [f"{LIB}/util.py", f"{LIB}/sql/__init__.py"]


def test_a_name_the_package_binds_makes_its_base_module_import_the_package() -> None:
    edges = resolved_edges(CYCLIC_DIALECT_PACKAGE)
    assert edges[f"{MYSQL}/__init__.py"] == [
        f"{MYSQL}/array.py",
        f"{MYSQL}/base.py",
        f"{MYSQL}/mysqldb.py",
    ]
    assert f"{MYSQL}/__init__.py" in edges[f"{MYSQL}/base.py"]


def test_dialect_package_packs_its_modules_before_the_package(make_repo: MakeRepo) -> None:
    result = build_pack([make_repo(DIALECT_PACKAGE)], Settings(), ContentCache.memory())
    order = pack_order(result)
    assert result.ordering.cycles == ()
    assert backward_violations(result.ordering.order, result.graph, ()) == []
    assert order.index(f"{LIB}/util.py") < order.index(f"{LIB}/dialects/__init__.py")
    assert order.index(f"{LIB}/sql/expression.py") < order.index(f"{MYSQL}/base.py")
    assert order.index(f"{MYSQL}/base.py") < order.index(f"{MYSQL}/mysqldb.py")
    assert order.index(f"{MYSQL}/mysqldb.py") < order.index(f"{MYSQL}/__init__.py")


@pytest.mark.parametrize(
    "later_commits",
    [
        pytest.param([], id="one-commit"),
        pytest.param(
            [
                ({f"{MYSQL}/mysqldb.py": CYCLIC_DIALECT_PACKAGE[f"{MYSQL}/mysqldb.py"] + "#\n"}, 1),
                ({f"{MYSQL}/base.py": CYCLIC_DIALECT_PACKAGE[f"{MYSQL}/base.py"] + "#\n"}, 2),
            ],
            id="modules-changed-after-the-package",
        ),
    ],
)
def test_inside_a_package_cycle_imported_modules_still_come_first(
    make_repo: MakeRepo, later_commits: list[tuple[dict[str, str], int]]
) -> None:
    commits = [(files, 1_700_000_000 + n) for files, n in later_commits]
    repo = make_repo(CYCLIC_DIALECT_PACKAGE, commits=commits)
    result = build_pack([repo], Settings(), ContentCache.memory())
    order = pack_order(result)
    cycle = {f"proj/{MYSQL}/{name}" for name in ("__init__.py", "base.py", "mysqldb.py")}
    assert [set(c) for c in result.ordering.cycles] == [cycle]
    assert backward_violations(result.ordering.order, result.graph, result.ordering.cycles) == []
    assert order.index(f"{MYSQL}/array.py") < order.index(f"{MYSQL}/base.py")
    assert order.index(f"{MYSQL}/base.py") < order.index(f"{MYSQL}/mysqldb.py")
    assert order.index(f"{MYSQL}/mysqldb.py") < order.index(f"{MYSQL}/__init__.py")


# --- reduce -----------------------------------------------------------------------------------


@pytest.fixture
def reduced() -> str:
    source = b'''\
import os


def load(path: str) -> str:
    """Read a file."""
    with open(path) as handle:
        return handle.read()


class Store:
    """Keeps things."""

    limit = 10

    def put(self, key: str, value: int) -> None:
        self.items[key] = value
        self.count += 1

    def size(self) -> int: return self.count
'''
    return PY.reduce(source)


def test_reduce_elides_bodies_and_keeps_signatures(reduced: str) -> None:
    assert "handle.read()" not in reduced
    assert "self.count += 1" not in reduced
    assert "def load(path: str) -> str:" in reduced
    assert "def put(self, key: str, value: int) -> None:\n        ..." in reduced


def test_reduce_keeps_docstrings_classes_and_one_liners(reduced: str) -> None:
    assert '"""Read a file."""\n    ...' in reduced
    assert "class Store:" in reduced
    assert "limit = 10" in reduced
    assert "def size(self) -> int: return self.count" in reduced
    assert reduced.startswith("import os\n")


def test_spec_survives_pickling_for_worker_processes() -> None:
    source = b"import a\\n"
    assert pickle.loads(pickle.dumps(PY)).extract(source) == PY.extract(source) != []
