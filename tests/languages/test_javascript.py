from __future__ import annotations

import json
import pickle

from repoctx.languages import get_language
from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.javascript import loads_lenient

JS = get_language("javascript")


def make_index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def resolve(specifier: str, importer: str | None, index: RepoIndex) -> list[str]:
    return JS.resolve(ImportRef(specifier), importer, index)


# --- extraction -------------------------------------------------------------------------------


def test_extract_every_import_form() -> None:
    source = b"""\
import a, { b as c } from "./x";
import * as ns from './y.js';
import "./side-effect";
export { q } from "./q";
export * from "./all";
export * as nn from "./nn";
const r = require("./r");
const t = require(`./tmpl`);
async function load() {
  const d = await import("./dyn");
  return d;
}
const notAnImport = foo("./nope");
const computed = require(`./${name}`);
import data from "./data.json" with { type: "json" };
"""
    assert JS.extract(source) == [
        ImportRef("./x", (), "import"),
        ImportRef("./y.js", (), "import"),
        ImportRef("./side-effect", (), "import"),
        ImportRef("./q", (), "export"),
        ImportRef("./all", (), "export"),
        ImportRef("./nn", (), "export"),
        ImportRef("./r", (), "require"),
        ImportRef("./tmpl", (), "require"),
        ImportRef("./dyn", (), "dynamic"),
        ImportRef("./data.json", (), "import"),
    ]


def test_extract_jsx_file() -> None:
    source = b'import React from "react";\nimport Button from "./Button";\n'
    source += b"export const App = () => <Button label='x' />;\n"
    assert [ref.module for ref in JS.extract(source)] == ["react", "./Button"]


# --- resolution -------------------------------------------------------------------------------


def test_relative_extension_and_index_probing() -> None:
    index = make_index(
        {
            "src/app.js": "",
            "src/util.js": "",
            "src/view.jsx": "",
            "src/lib/index.js": "",
            "src/esm.mjs": "",
            "src/styles.css": "",
        }
    )
    assert resolve("./util", "src/app.js", index) == ["src/util.js"]
    assert resolve("./util.js", "src/app.js", index) == ["src/util.js"]
    assert resolve("./view", "src/app.js", index) == ["src/view.jsx"]
    assert resolve("./lib", "src/app.js", index) == ["src/lib/index.js"]
    assert resolve("./lib/", "src/app.js", index) == ["src/lib/index.js"]
    assert resolve("./esm", "src/app.js", index) == ["src/esm.mjs"]
    assert resolve("./styles.css", "src/app.js", index) == ["src/styles.css"]
    assert resolve("../src/util", "src/app.js", index) == ["src/util.js"]
    assert resolve("./missing", "src/app.js", index) == []
    assert resolve("../../outside", "src/app.js", index) == []


def test_folder_with_package_json_main() -> None:
    index = make_index(
        {
            "app.js": "",
            "vendor/thing/package.json": json.dumps({"main": "lib/thing.js"}),
            "vendor/thing/lib/thing.js": "",
        }
    )
    assert resolve("./vendor/thing", "app.js", index) == ["vendor/thing/lib/thing.js"]


def test_bare_packages_resolve_to_nothing() -> None:
    index = make_index({"app.js": "", "react.js": "", "node_modules/react/index.js": ""})
    assert resolve("react", "app.js", index) == []
    assert resolve("lodash/fp", "app.js", index) == []
    assert resolve("node:fs", "app.js", index) == []


def test_other_root_does_not_resolve_relative() -> None:
    index = make_index({"a.js": "", "b.js": ""})
    assert resolve("./b", "a.js", index) == ["b.js"]
    assert resolve("./b", None, index) == []


def test_jsconfig_base_url_and_paths() -> None:
    jsconfig = """{
      // comments and trailing commas are fine
      "compilerOptions": {
        "baseUrl": "src",
        "paths": { "@/*": ["./*"], },
      },
    }"""
    index = make_index(
        {
            "jsconfig.json": jsconfig,
            "src/pages/home.js": "",
            "src/components/Button.jsx": "",
        }
    )
    importer = "src/pages/home.js"
    assert resolve("@/components/Button", importer, index) == ["src/components/Button.jsx"]
    assert resolve("components/Button", importer, index) == ["src/components/Button.jsx"]


def test_workspace_packages_by_name() -> None:
    index = make_index(
        {
            "package.json": json.dumps({"name": "root", "workspaces": ["packages/*"]}),
            "packages/core/package.json": json.dumps({"name": "@acme/core", "main": "dist/x.js"}),
            "packages/core/src/index.js": "",
            "packages/core/src/sub/thing.js": "",
            "packages/ui/package.json": json.dumps(
                {"name": "ui", "exports": {".": {"import": "./esm/ui.js"}, "./extra": "./x.js"}}
            ),
            "packages/ui/esm/ui.js": "",
            "packages/ui/x.js": "",
            "apps/web/main.js": "",
        }
    )
    importer = "apps/web/main.js"
    assert resolve("@acme/core", importer, index) == ["packages/core/src/index.js"]
    assert resolve("@acme/core/sub/thing", importer, index) == ["packages/core/src/sub/thing.js"]
    assert resolve("ui", importer, index) == ["packages/ui/esm/ui.js"]
    assert resolve("ui/extra", importer, index) == ["packages/ui/x.js"]
    assert resolve("ui", None, index) == ["packages/ui/esm/ui.js"]
    assert resolve("@acme/other", importer, index) == []


def test_loads_lenient_keeps_comment_markers_inside_strings() -> None:
    text = '{"a": "http://x/*y*/", /* gone */ "b": [1, 2,], // end\n}'
    assert loads_lenient(text) == {"a": "http://x/*y*/", "b": [1, 2]}
    assert loads_lenient("{not json") is None


# --- reduce -----------------------------------------------------------------------------------


def test_reduce_elides_function_bodies() -> None:
    source = b"""\
import { x } from "./x";

export function add(a, b) {
  const sum = a + b;
  return sum;
}

function* count() {
  yield 1;
  yield 2;
}

class Store {
  constructor() {
    this.items = [];
  }
  get size() {
    return this.items.length;
  }
}

const handler = async (event) => {
  await save(event);
};
const short = () => 1;
"""
    reduced = JS.reduce(source)
    for hidden in ("const sum", "yield 1", "this.items = []", "items.length", "await save"):
        assert hidden not in reduced
    for kept in (
        'import { x } from "./x";',
        "export function add(a, b) { ... }",
        "function* count() { ... }",
        "class Store {",
        "constructor() { ... }",
        "get size() { ... }",
        "const handler = async (event) => { ... };",
        "const short = () => 1;",
    ):
        assert kept in reduced


def test_spec_survives_pickling_for_worker_processes() -> None:
    source = b'import a from "./a";\n'
    assert pickle.loads(pickle.dumps(JS)).extract(source) == JS.extract(source) != []
