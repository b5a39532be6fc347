from __future__ import annotations

import pickle

from repoctx.languages import get_language
from repoctx.languages.base import ImportRef, RepoIndex

RS = get_language("rust")


def make_index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def resolve_all(source: str, importer: str | None, index: RepoIndex) -> list[str]:
    found: list[str] = []
    for ref in RS.extract(source.encode()):
        found += RS.resolve(ref, importer, index)
    return found


# --- extraction -------------------------------------------------------------------------------


def test_extract_mod_use_and_extern_crate() -> None:
    source = b"""\
mod foo;
#[path = "gen/api.rs"]
#[allow(dead_code)]
pub mod api;
pub(crate) mod inline {
    mod nested;
    fn helper() {}
}
use crate::a::b::C;
use super::x;
use self::y::{z, w as renamed};
use crate::{a, b::c, d::*, e::{self, f}};
pub use ::std::io;
use r#type::Thing;
extern crate serde;

#[cfg(test)]
mod tests {
    use super::*;
}
"""
    assert RS.extract(source) == [
        ImportRef("foo", (), "mod"),
        ImportRef("gen/api.rs", (), "mod_path"),
        ImportRef("nested", ("inline",), "mod"),
        ImportRef("crate::a::b::C", (), "use"),
        ImportRef("super::x", (), "use"),
        ImportRef("self::y::z", (), "use"),
        ImportRef("self::y::w", (), "use"),
        ImportRef("crate::a", (), "use"),
        ImportRef("crate::b::c", (), "use"),
        ImportRef("crate::d::*", (), "use"),
        ImportRef("crate::e::self", (), "use"),
        ImportRef("crate::e::f", (), "use"),
        ImportRef("::std::io", (), "use"),
        ImportRef("r#type::Thing", (), "use"),
        ImportRef("serde", (), "extern_crate"),
        ImportRef("super::*", ("tests",), "use"),
    ]


def test_inline_module_blocks_are_not_file_references() -> None:
    source = b"mod inline {\n    pub fn f() {}\n}\nfn main() {}\n"
    assert RS.extract(source) == []


# --- resolution -------------------------------------------------------------------------------

CORE = "crates/core/src"
FILES = {
    "Cargo.toml": '[workspace]\nmembers = ["crates/*"]\n',
    "crates/core/Cargo.toml": '[package]\nname = "acme-core"\nversion = "0.1.0"\n',
    f"{CORE}/lib.rs": "",
    f"{CORE}/model.rs": "",
    f"{CORE}/net/mod.rs": "",
    f"{CORE}/net/http.rs": "",
    f"{CORE}/net/tcp.rs": "",
    f"{CORE}/util.rs": "",
    f"{CORE}/util/helpers.rs": "",
    f"{CORE}/outer/inner.rs": "",
    f"{CORE}/gen/api.rs": "",
    "crates/core/tests/integration.rs": "",
    "crates/core/tests/common/mod.rs": "",
    "crates/cli/Cargo.toml": '[package]\nname = "acme-cli"\n\n[dependencies]\nacme-core = "*"\n',
    "crates/cli/src/main.rs": "",
    "crates/cli/src/commands.rs": "",
    "crates/cli/src/bin/tool.rs": "",
    "crates/cli/src/bin/shared.rs": "",
}


def test_mod_declarations_follow_rust_file_rules() -> None:
    index = make_index(FILES)
    assert resolve_all("mod model;\npub mod net;", f"{CORE}/lib.rs", index) == [
        f"{CORE}/model.rs",
        f"{CORE}/net/mod.rs",
    ]
    assert resolve_all("mod http;", f"{CORE}/net/mod.rs", index) == [f"{CORE}/net/http.rs"]
    assert resolve_all("mod helpers;", f"{CORE}/util.rs", index) == [f"{CORE}/util/helpers.rs"]
    assert resolve_all("mod missing;", f"{CORE}/lib.rs", index) == []


def test_mod_in_inline_block_and_path_attribute() -> None:
    index = make_index(FILES)
    assert resolve_all("mod outer { mod inner; }", f"{CORE}/lib.rs", index) == [
        f"{CORE}/outer/inner.rs"
    ]
    source = '#[path = "gen/api.rs"]\nmod api;'
    assert resolve_all(source, f"{CORE}/lib.rs", index) == [f"{CORE}/gen/api.rs"]


def test_mod_from_other_crate_roots() -> None:
    index = make_index(FILES)
    assert resolve_all("mod shared;", "crates/cli/src/bin/tool.rs", index) == [
        "crates/cli/src/bin/shared.rs"
    ]
    assert resolve_all("mod common;", "crates/core/tests/integration.rs", index) == [
        "crates/core/tests/common/mod.rs"
    ]


def test_use_crate_paths() -> None:
    index = make_index(FILES)
    importer = f"{CORE}/util/helpers.rs"
    assert resolve_all("use crate::net::http::Client;", importer, index) == [f"{CORE}/net/http.rs"]
    assert resolve_all("use crate::model::User;", importer, index) == [f"{CORE}/model.rs"]
    assert resolve_all("use crate::VERSION;", importer, index) == [f"{CORE}/lib.rs"]
    assert resolve_all("use crate::{model, net::tcp::*};", importer, index) == [
        f"{CORE}/model.rs",
        f"{CORE}/net/tcp.rs",
    ]


def test_use_super_and_self() -> None:
    index = make_index(FILES)
    http = f"{CORE}/net/http.rs"
    assert resolve_all("use super::tcp::Stream;", http, index) == [f"{CORE}/net/tcp.rs"]
    assert resolve_all("use super::super::model;", http, index) == [f"{CORE}/model.rs"]
    assert resolve_all("use super::Shared;", http, index) == [f"{CORE}/net/mod.rs"]
    assert resolve_all("use self::helpers::run;", f"{CORE}/util.rs", index) == [
        f"{CORE}/util/helpers.rs"
    ]
    assert resolve_all("use super::Anything;", f"{CORE}/lib.rs", index) == []


def test_inline_test_module_super_is_the_file_itself() -> None:
    index = make_index(FILES)
    source = "#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::model;\n}\n"
    assert resolve_all(source, f"{CORE}/net/http.rs", index) == [f"{CORE}/net/mod.rs"]


def test_uniform_paths_to_local_modules() -> None:
    index = make_index(FILES)
    assert resolve_all("mod model;\nuse model::User;", f"{CORE}/lib.rs", index) == [
        f"{CORE}/model.rs",
        f"{CORE}/model.rs",
    ]


def test_workspace_crates_by_name() -> None:
    index = make_index(FILES)
    main = "crates/cli/src/main.rs"
    assert resolve_all("use acme_core::net::http::get;", main, index) == [f"{CORE}/net/http.rs"]
    assert resolve_all("use ::acme_core::Config;", main, index) == [f"{CORE}/lib.rs"]
    assert resolve_all("extern crate acme_core;", main, index) == [f"{CORE}/lib.rs"]
    assert resolve_all(
        "use acme_core::model::User;", "crates/core/tests/integration.rs", index
    ) == [f"{CORE}/model.rs"]
    assert resolve_all("use crate::commands::run;", main, index) == ["crates/cli/src/commands.rs"]


def test_std_and_external_crates_resolve_to_nothing() -> None:
    index = make_index(FILES)
    source = "use std::collections::HashMap;\nuse serde::Serialize;\nextern crate libc;\n"
    assert resolve_all(source, f"{CORE}/model.rs", index) == []


def test_other_root_resolves_only_crate_names() -> None:
    index = make_index(FILES)
    assert resolve_all("mod model;\nuse crate::model;\nuse super::x;", None, index) == []
    assert resolve_all("use acme_core::model::User;", None, index) == [f"{CORE}/model.rs"]


def test_without_cargo_the_nearest_root_file_is_the_crate_root() -> None:
    index = make_index({"main.rs": "", "parser.rs": "", "parser/lexer.rs": ""})
    assert resolve_all("mod parser;", "main.rs", index) == ["parser.rs"]
    assert resolve_all("mod lexer;", "parser.rs", index) == ["parser/lexer.rs"]
    assert resolve_all("use crate::parser::Ast;", "parser/lexer.rs", index) == ["parser.rs"]


# --- reduce -----------------------------------------------------------------------------------


def test_reduce_elides_function_bodies() -> None:
    source = b"""\
use std::fmt;

/// A point.
pub struct Point {
    pub x: i32,
}

impl Point {
    pub fn new(x: i32) -> Self {
        let p = Point { x };
        p
    }
}

pub trait Shape {
    fn area(&self) -> f64;
}

fn main() {
    println!("hello");
}
"""
    reduced = RS.reduce(source)
    assert "let p" not in reduced
    assert "println!" not in reduced
    assert "pub fn new(x: i32) -> Self { ... }" in reduced
    assert "fn main() { ... }" in reduced
    assert "pub struct Point {\n    pub x: i32,\n}" in reduced
    assert "fn area(&self) -> f64;" in reduced
    assert "use std::fmt;" in reduced


def test_spec_survives_pickling_for_worker_processes() -> None:
    source = b"mod a;\\n"
    assert pickle.loads(pickle.dumps(RS)).extract(source) == RS.extract(source) != []
