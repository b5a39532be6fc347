from __future__ import annotations

import pickle

import pytest

from repoctx.languages import get_language
from repoctx.languages.base import ImportRef, RepoIndex

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
