from __future__ import annotations

import pickle

from repoctx.languages import get_language
from repoctx.languages.base import ImportRef, RepoIndex

GO = get_language("go")


def make_index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def resolve(path: str, importer: str | None, index: RepoIndex) -> list[str]:
    return GO.resolve(ImportRef(path), importer, index)


def test_extract_every_import_form() -> None:
    source = b"""\
package main

import "fmt"

import (
	"example.com/app/internal/db"
	log "example.com/app/pkg/logging"
	. "example.com/app/pkg/dsl"
	_ "example.com/app/pkg/driver"
	`example.com/app/raw`
)

func main() {
	fmt.Println(db.Open())
}
"""
    assert GO.extract(source) == [
        ImportRef("fmt"),
        ImportRef("example.com/app/internal/db"),
        ImportRef("example.com/app/pkg/logging"),
        ImportRef("example.com/app/pkg/dsl"),
        ImportRef("example.com/app/pkg/driver"),
        ImportRef("example.com/app/raw"),
    ]


FILES = {
    "go.mod": "// the app\nmodule example.com/app\n\ngo 1.22\n\nrequire golang.org/x/sync v0.7.0\n",
    "cmd/app/main.go": "",
    "internal/db/db.go": "",
    "internal/db/query.go": "",
    "internal/db/db_test.go": "",
    "internal/db/testdata/fixture.sql": "",
    "internal/db/schema/schema.go": "",
    "main.go": "",
    "tools/go.mod": 'module "example.com/app/tools"\n',
    "tools/gen/gen.go": "",
    "tools/gen/gen_test.go": "",
}


def test_import_path_names_every_non_test_file_of_the_package() -> None:
    index = make_index(FILES)
    found = resolve("example.com/app/internal/db", "cmd/app/main.go", index)
    assert found == ["internal/db/db.go", "internal/db/query.go"]


def test_module_root_package_and_subpackages() -> None:
    index = make_index(FILES)
    assert resolve("example.com/app", "cmd/app/main.go", index) == ["main.go"]
    assert resolve("example.com/app/internal/db/schema", "main.go", index) == [
        "internal/db/schema/schema.go"
    ]


def test_nested_module_wins_by_longest_module_path() -> None:
    index = make_index(FILES)
    assert resolve("example.com/app/tools/gen", "main.go", index) == ["tools/gen/gen.go"]


def test_stdlib_and_other_modules_resolve_to_nothing() -> None:
    index = make_index(FILES)
    assert resolve("fmt", "main.go", index) == []
    assert resolve("net/http", "main.go", index) == []
    assert resolve("golang.org/x/sync/errgroup", "main.go", index) == []
    assert resolve("example.com/app/missing", "main.go", index) == []
    assert resolve("example.com/application", "main.go", index) == []


def test_other_root_still_resolves_module_paths() -> None:
    index = make_index(FILES)
    assert resolve("example.com/app/tools/gen", None, index) == ["tools/gen/gen.go"]


def test_vendored_packages_need_the_importer() -> None:
    files = {
        "go.mod": "module example.com/app\n",
        "main.go": "",
        "vendor/github.com/pkg/errors/errors.go": "",
        "vendor/github.com/pkg/errors/stack.go": "",
    }
    index = make_index(files)
    assert resolve("github.com/pkg/errors", "main.go", index) == [
        "vendor/github.com/pkg/errors/errors.go",
        "vendor/github.com/pkg/errors/stack.go",
    ]
    assert resolve("github.com/pkg/errors", None, index) == []


def test_reduce_elides_function_and_method_bodies() -> None:
    source = b"""\
package db

// Store keeps rows.
type Store struct {
	rows []string
}

func Open(path string) (*Store, error) {
	s := &Store{}
	return s, nil
}

func (s *Store) Add(row string) {
	s.rows = append(s.rows, row)
}

func Len(s *Store) int { return len(s.rows) }
"""
    reduced = GO.reduce(source)
    assert "&Store{}" not in reduced
    assert "append(" not in reduced
    assert "func Open(path string) (*Store, error) { ... }" in reduced
    assert "func (s *Store) Add(row string) { ... }" in reduced
    assert "type Store struct {\n\trows []string\n}" in reduced
    assert "func Len(s *Store) int { return len(s.rows) }" in reduced


def test_spec_survives_pickling_for_worker_processes() -> None:
    source = b'package m\nimport "a"\n'
    assert pickle.loads(pickle.dumps(GO)).extract(source) == GO.extract(source) != []
