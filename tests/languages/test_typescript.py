from __future__ import annotations

import pickle

from repoctx.languages import get_language
from repoctx.languages.base import ImportRef, RepoIndex

TS = get_language("typescript")
TSX = get_language("tsx")


def make_index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def resolve(specifier: str, importer: str | None, index: RepoIndex) -> list[str]:
    return TS.resolve(ImportRef(specifier), importer, index)


# --- extraction -------------------------------------------------------------------------------


def test_extract_typescript_forms() -> None:
    source = b"""\
import type { A } from "./types";
import { type B, C } from "./bc";
import legacy = require("./legacy");
export type { D } from "./d";
export * from "./all";
const lazy = import("./lazy");
const cjs = require("./cjs");
type T = typeof import("./typed");
declare module "./augmented" {}
function f(a: number): string {
  return String(a);
}
"""
    assert TS.extract(source) == [
        ImportRef("./types", (), "import"),
        ImportRef("./bc", (), "import"),
        ImportRef("./legacy", (), "require"),
        ImportRef("./d", (), "export"),
        ImportRef("./all", (), "export"),
        ImportRef("./lazy", (), "dynamic"),
        ImportRef("./cjs", (), "require"),
        ImportRef("./typed", (), "dynamic"),
    ]


def test_extract_tsx() -> None:
    source = b"""\
import React from "react";
import type { Props } from "./props";
import { Button } from "@/components/Button";
export const App = (props: Props) => <Button {...props} />;
"""
    assert [ref.module for ref in TSX.extract(source)] == [
        "react",
        "./props",
        "@/components/Button",
    ]


# --- resolution -------------------------------------------------------------------------------

FILES = {
    "src/main.ts": "",
    "src/util.ts": "",
    "src/view.tsx": "",
    "src/types.d.ts": "",
    "src/esm.mts": "",
    "src/common.cts": "",
    "src/lib/index.ts": "",
    "src/plain.js": "",
}


def test_esm_js_specifiers_name_typescript_files() -> None:
    index = make_index(FILES)
    assert resolve("./util.js", "src/main.ts", index) == ["src/util.ts"]
    assert resolve("./view.js", "src/main.ts", index) == ["src/view.tsx"]
    assert resolve("./view.jsx", "src/main.ts", index) == ["src/view.tsx"]
    assert resolve("./esm.mjs", "src/main.ts", index) == ["src/esm.mts"]
    assert resolve("./common.cjs", "src/main.ts", index) == ["src/common.cts"]
    assert resolve("./plain.js", "src/main.ts", index) == ["src/plain.js"]


def test_typescript_importers_prefer_sources_over_compiled_js() -> None:
    index = make_index({"src/a.ts": "", "src/b.ts": "", "src/b.js": "", "src/c.js": ""})
    assert resolve("./b.js", "src/a.ts", index) == ["src/b.ts"]
    assert resolve("./b.js", "src/c.js", index) == ["src/b.js"]


def test_extension_declaration_and_index_resolution() -> None:
    index = make_index(FILES)
    assert resolve("./util", "src/main.ts", index) == ["src/util.ts"]
    assert resolve("./view", "src/main.ts", index) == ["src/view.tsx"]
    assert resolve("./types", "src/main.ts", index) == ["src/types.d.ts"]
    assert resolve("./lib", "src/main.ts", index) == ["src/lib/index.ts"]
    assert resolve("./lib/index.js", "src/main.ts", index) == ["src/lib/index.ts"]


def test_bare_and_other_root() -> None:
    index = make_index(FILES)
    assert resolve("react", "src/main.ts", index) == []
    assert resolve("@types/node", "src/main.ts", index) == []
    assert resolve("./util", None, index) == []


TSCONFIG = """{
  /* Visit https://aka.ms/tsconfig to read more */
  "extends": "./tsconfig.base.json",
  "compilerOptions": {
    "strict": true, // trailing commas below
    "paths": {
      "@/*": ["src/*", "generated/*"],
      "@app/config": ["config/index.ts"],
      "@app/*": ["packages/app/src/*",],
    },
  },
}"""

BASE = '{"compilerOptions": {"baseUrl": ".", "target": "es2022"}}'


def test_tsconfig_paths_wildcards_targets_in_order_and_base_url() -> None:
    index = make_index(
        {
            "tsconfig.json": TSCONFIG,
            "tsconfig.base.json": BASE,
            "src/components/Button.tsx": "",
            "generated/api.ts": "",
            "config/index.ts": "",
            "packages/app/src/store.ts": "",
            "shared/log.ts": "",
            "src/main.ts": "",
        }
    )
    importer = "src/main.ts"
    assert resolve("@/components/Button", importer, index) == ["src/components/Button.tsx"]
    assert resolve("@/api", importer, index) == ["generated/api.ts"]
    assert resolve("@app/config", importer, index) == ["config/index.ts"]
    assert resolve("@app/store", importer, index) == ["packages/app/src/store.ts"]
    assert resolve("shared/log", importer, index) == ["shared/log.ts"]
    assert resolve("@/missing", importer, index) == []


def test_nearest_tsconfig_wins_and_paths_are_relative_to_it() -> None:
    index = make_index(
        {
            "tsconfig.json": '{"compilerOptions": {"paths": {"~/*": ["root/*"]}}}',
            "root/thing.ts": "",
            "web/tsconfig.json": '{"compilerOptions": {"paths": {"~/*": ["./app/*"]}}}',
            "web/app/thing.ts": "",
            "web/app/page.ts": "",
            "cli/main.ts": "",
        }
    )
    assert resolve("~/thing", "web/app/page.ts", index) == ["web/app/thing.ts"]
    assert resolve("~/thing", "cli/main.ts", index) == ["root/thing.ts"]


def test_workspace_package_with_typescript_sources() -> None:
    index = make_index(
        {
            "packages/shared/package.json": '{"name": "@acme/shared", "main": "dist/index.js"}',
            "packages/shared/src/index.ts": "",
            "apps/web/main.tsx": "",
        }
    )
    found = TSX.resolve(ImportRef("@acme/shared"), "apps/web/main.tsx", index)
    assert found == ["packages/shared/src/index.ts"]


# --- reduce -----------------------------------------------------------------------------------


def test_reduce_keeps_types_and_signatures() -> None:
    source = b"""\
export interface Shape {
  area(): number;
}

export class Circle implements Shape {
  constructor(private readonly r: number) {
    validate(r);
  }
  area(): number {
    return Math.PI * this.r ** 2;
  }
}

export function make(r: number): Circle {
  const circle = new Circle(r);
  return circle;
}

export const double = (n: number): number => {
  return n * 2;
};
"""
    reduced = TS.reduce(source)
    for hidden in ("validate(r)", "Math.PI", "new Circle(r)", "n * 2"):
        assert hidden not in reduced
    for kept in (
        "export interface Shape {\n  area(): number;\n}",
        "constructor(private readonly r: number) { ... }",
        "area(): number { ... }",
        "export function make(r: number): Circle { ... }",
        "export const double = (n: number): number => { ... };",
    ):
        assert kept in reduced


def test_reduce_tsx_component() -> None:
    source = b"""\
export function Card({ title }: { title: string }) {
  const upper = title.toUpperCase();
  return <div>{upper}</div>;
}
"""
    reduced = TSX.reduce(source)
    assert "toUpperCase" not in reduced
    assert "export function Card({ title }: { title: string }) { ... }" in reduced


def test_spec_survives_pickling_for_worker_processes() -> None:
    source = b'import a = require("./a");\n'
    assert pickle.loads(pickle.dumps(TS)).extract(source) == TS.extract(source) != []
