"""Classification rules: default kinds and skips, user overrides, and text decoding."""

from __future__ import annotations

import random

import pytest
from pathspec import GitIgnoreSpec

from repoctx.errors import ConfigError
from repoctx.scan.ignore import FirstMatch
from repoctx.scan.rules import (
    DEFAULT_MAX_FILE_BYTES,
    LOCK_FILES,
    TRACKED_IN_GENERATED_FOLDER,
    Rules,
    decode_text,
)
from repoctx.scan.snapshot import FileKind, SkipReason

DEFAULT = Rules().classifier()


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("src/app.py", FileKind.SOURCE),
        ("cmd/server/main.go", FileKind.SOURCE),
        ("tests/test_app.py", FileKind.TEST),
        ("pkg/test_util.py", FileKind.TEST),
        ("pkg/util_test.py", FileKind.TEST),
        ("conftest.py", FileKind.TEST),
        ("server/handler_test.go", FileKind.TEST),
        ("web/button.test.ts", FileKind.TEST),
        ("web/button.spec.js", FileKind.TEST),
        ("web/__tests__/button.tsx", FileKind.TEST),
        ("src/test/java/com/x/AppTest.java", FileKind.TEST),
        ("App/AppTests.cs", FileKind.TEST),
        ("spec/models/user_spec.rb", FileKind.TEST),
        ("lib/user_spec.rb", FileKind.TEST),
        ("go/testdata/input.go", FileKind.TEST),
        ("docs/index.rst", FileKind.DOCS),
        ("docs/notes.txt", FileKind.DOCS),
        ("README.md", FileKind.DOCS),
        ("README", FileKind.DOCS),
        ("LICENSE", FileKind.DOCS),
        ("CHANGELOG", FileKind.DOCS),
        ("guide/intro.md", FileKind.DOCS),
        ("examples/basic.py", FileKind.EXAMPLE),
        ("samples/hello/main.go", FileKind.EXAMPLE),
        ("demo/app.js", FileKind.EXAMPLE),
        ("data/users.csv", FileKind.DATA),
        ("logs/events.jsonl", FileKind.DATA),
        ("dump.ndjson", FileKind.DATA),
        ("a.tsv", FileKind.DATA),
        ("pyproject.toml", FileKind.CONFIG),
        ("setup.cfg", FileKind.CONFIG),
        ("tox.ini", FileKind.CONFIG),
        ("package.json", FileKind.CONFIG),
        (".github/workflows/ci.yml", FileKind.CONFIG),
        ("Dockerfile", FileKind.CONFIG),
        ("Makefile", FileKind.CONFIG),
        ("CMakeLists.txt", FileKind.CONFIG),
        ("requirements-dev.txt", FileKind.CONFIG),
        ("go.mod", FileKind.CONFIG),
        (".gitignore", FileKind.CONFIG),
        (".editorconfig", FileKind.CONFIG),
        (".coveragerc", FileKind.CONFIG),
        (".pre-commit-config.yaml", FileKind.CONFIG),
        (".github/FUNDING.yml", FileKind.CONFIG),
        (".github/CODEOWNERS", FileKind.CONFIG),
        (".github/actions/setup/index.js", FileKind.CONFIG),
        (".devcontainer/on-create-command.sh", FileKind.CONFIG),
        ("web/.eslintrc.js", FileKind.CONFIG),
        ("requirements/dev.in", FileKind.CONFIG),
        ("MANIFEST.in", FileKind.CONFIG),
        ("PKG-INFO", FileKind.CONFIG),
        (".github/ISSUE_TEMPLATE/bug-report.md", FileKind.DOCS),
        ("notes.txt", FileKind.SOURCE),
        ("scripts/deploy.sh", FileKind.SOURCE),
    ],
)
def test_default_kinds(path: str, kind: FileKind) -> None:
    verdict = DEFAULT.classify(path)
    assert (verdict.kind, verdict.skip) == (kind, None)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("package-lock.json", SkipReason.LOCK_FILE),
        ("web/yarn.lock", SkipReason.LOCK_FILE),
        ("pnpm-lock.yaml", SkipReason.LOCK_FILE),
        ("poetry.lock", SkipReason.LOCK_FILE),
        ("Cargo.lock", SkipReason.LOCK_FILE),
        ("go.sum", SkipReason.LOCK_FILE),
        ("uv.lock", SkipReason.LOCK_FILE),
        ("Pipfile.lock", SkipReason.LOCK_FILE),
        ("composer.lock", SkipReason.LOCK_FILE),
        ("Gemfile.lock", SkipReason.LOCK_FILE),
        ("api/service_pb2.py", SkipReason.GENERATED),
        ("api/service.pb.go", SkipReason.GENERATED),
        ("static/app.min.js", SkipReason.GENERATED),
        ("static/app.js.map", SkipReason.GENERATED),
        ("Models.generated.cs", SkipReason.GENERATED),
        ("dist/index.js", SkipReason.GENERATED),
        ("packages/ui/build/index.js", SkipReason.GENERATED),
        ("node_modules/left-pad/index.js", SkipReason.VENDORED),
        ("vendor/github.com/x/y.go", SkipReason.VENDORED),
        ("third_party/zlib/zlib.h", SkipReason.VENDORED),
        ("src/third-party/lib.c", SkipReason.VENDORED),
        ("external/dep/dep.cc", SkipReason.VENDORED),
        ("assets/logo.png", SkipReason.BINARY),
        ("lib/native.so", SkipReason.BINARY),
        ("fonts/a.woff2", SkipReason.BINARY),
        ("db.sqlite", SkipReason.BINARY),
        ("App.class", SkipReason.BINARY),
    ],
)
def test_default_skips(path: str, reason: SkipReason) -> None:
    assert DEFAULT.classify(path).skip is reason


def test_tracked_files_are_demoted_not_skipped_by_a_generated_folder_alone() -> None:
    for path in ("doc/build/conf.py", "dist/index.js", "web/__generated__/q.ts"):
        tracked = DEFAULT.classify(path, tracked=True)
        assert (tracked.kind, tracked.skip) == (FileKind.GENERATED, None), path
        assert tracked.detail == TRACKED_IN_GENERATED_FOLDER
        assert DEFAULT.classify(path).skip is SkipReason.GENERATED, path
    for path in ("build/app.min.js", "dist/api_pb2.py", "node_modules/x/build/y.js"):
        assert DEFAULT.classify(path, tracked=True).skip is not None, path
    custom = Rules.from_mapping({"generated": ["out/**", "*.gen.go", "!out/keep.go"]})
    classifier = custom.classifier()
    assert classifier.classify("out/a.go", tracked=True).skip is None
    assert classifier.classify("out/a.gen.go", tracked=True).skip is SkipReason.GENERATED
    assert classifier.classify("out/keep.go", tracked=True).kind is FileKind.SOURCE
    kept = Rules.from_mapping({"skip_generated": False}).classifier().classify("build/a.py")
    assert (kept.kind, kept.skip, kept.detail) == (FileKind.GENERATED, None, "rules.generated")


def test_content_markers_make_a_file_generated() -> None:
    for header in (
        "// Code generated by mockgen. DO NOT EDIT.\n",
        "# @generated by buck\n",
        "// <auto-generated>\n",
        "# This file was automatically generated by SWIG\n",
        "/* Autogenerated by Thrift Compiler */\n",
    ):
        verdict = DEFAULT.refine(DEFAULT.classify("x.go"), "x.go", 100, header + "package x\n")
        assert (verdict.kind, verdict.skip) == (FileKind.GENERATED, SkipReason.GENERATED), header
    late = "package x\n" * 10 + "// Code generated by hand. DO NOT EDIT.\n"
    assert DEFAULT.refine(DEFAULT.classify("y.go"), "y.go", 100, late).kind is FileKind.SOURCE


def test_large_structured_files_are_data() -> None:
    small = DEFAULT.refine(DEFAULT.classify("conf.json"), "conf.json", 2_000, "{}")
    large = DEFAULT.refine(DEFAULT.classify("conf.json"), "conf.json", 1_000_000, "{}")
    assert small.kind is FileKind.CONFIG
    assert large.kind is FileKind.DATA and large.skip is None
    code = DEFAULT.refine(DEFAULT.classify("big.py"), "big.py", 1_000_000, "x = 1")
    assert code.kind is FileKind.SOURCE


def test_from_mapping_replaces_extends_and_sets() -> None:
    rules = Rules.from_mapping(
        {
            "max_file_bytes": 4096,
            "skip_generated": False,
            "lock_files": ["deps.lock"],
            "extend_tests": ["checks/"],
            "extend_vendored": ["ext/"],
            "keep": ["vendor/keep.go"],
            "extra_skip": ["secrets/"],
        }
    )
    assert rules.max_file_bytes == 4096 and rules.lock_files == ("deps.lock",)
    classifier = rules.classifier()
    assert classifier.classify("deps.lock").skip is SkipReason.LOCK_FILE
    assert classifier.classify("yarn.lock").skip is None
    assert classifier.classify("checks/a.py").kind is FileKind.TEST
    assert classifier.classify("tests/a.py").kind is FileKind.TEST  # extended, not replaced
    assert classifier.classify("ext/a.c").skip is SkipReason.VENDORED
    kept = classifier.classify("vendor/keep.go")
    assert kept.kind is FileKind.VENDORED and kept.skip is None and kept.keep
    generated = classifier.classify("x_pb2.py")
    assert generated.kind is FileKind.GENERATED and generated.skip is None
    assert classifier.classify("secrets/k.py").skip is SkipReason.IGNORED


def test_extend_applies_after_replacement_whatever_the_order() -> None:
    rules = Rules.from_mapping({"extend_docs": ["manual/"], "docs": ["*.md"]})
    assert rules.docs == ("*.md", "manual/")


def test_defaults() -> None:
    rules = Rules()
    assert rules.max_file_bytes == DEFAULT_MAX_FILE_BYTES == 4 * 1024 * 1024
    assert rules.skip_generated and rules.skip_vendored
    assert "go.sum" in LOCK_FILES and Rules.from_mapping({}) == rules


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"max_files": 1}, "unknown key 'max_files'"),
        ({"max_file_bytes": "big"}, "max_file_bytes must be a positive"),
        ({"max_file_bytes": 0}, "max_file_bytes must be a positive"),
        ({"max_file_bytes": True}, "max_file_bytes must be a positive"),
        ({"skip_generated": "yes"}, "skip_generated must be true or false"),
        ({"tests": "tests/"}, "tests must be a list of strings"),
        ({"extend_docs": [1]}, "extend_docs must be a list of strings"),
        ({"keep": ["\\"]}, "rules.keep: bad pattern"),
        ({"generated_markers": ["(unclosed"]}, "generated_markers: bad regex"),
    ],
)
def test_bad_rules_raise_config_error(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Rules.from_mapping(mapping)


def test_first_match_is_ordered_and_honours_negation() -> None:
    lists = [("one", ["*.py", "!keep.py"]), ("two", ["src/"]), ("three", ["*.py"])]
    matcher = FirstMatch(lists)
    assert matcher.first("a.py") == 0
    assert matcher.first("keep.py") == 2
    assert matcher.first("src/keep.py") == 1
    assert matcher.first("README") is None
    merged = FirstMatch([("a", ["/top.txt"]), ("b", ["*.txt"])])
    assert merged.first("top.txt") == 0 and merged.first("sub/top.txt") == 1


def reference_first(lists: list[tuple[str, list[str]]], path: str) -> int | None:
    for index, (_, lines) in enumerate(lists):
        if GitIgnoreSpec.from_lines(lines).match_file(path):
            return index
    return None


def test_first_match_agrees_with_pathspec_on_many_paths() -> None:
    rules = Rules()
    lists = [
        ("odd", ["/anchored.py", "a/**/deep.txt", "x?z.py", "[Mm]akefile.*", " spaced"]),
        ("words", ["*.py", "build/", "README"]),
        *((name, list(getattr(rules, name))) for name in ("lock_files", "binary", "tests")),
        *((name, list(getattr(rules, name))) for name in ("vendored", "docs", "config")),
    ]
    parts = [
        *("src", "tests", "build", "a", "b", "node_modules", "docs", "x.py", "vendor", "deep"),
        *("README", "Makefile", "makefile.in", "xyz.py", "anchored.py", "deep.txt", "go.sum"),
        *("yarn.lock", "logo.png", "util_test.go", "conf.toml", "Dockerfile", " spaced", ".lock"),
        *("notes", "main.c"),
    ]
    rng = random.Random(7)
    catch_all = [*lists, ("all", ["*"])]
    matcher, everything = FirstMatch(lists), FirstMatch(catch_all)
    outcomes = set()
    for _ in range(3000):
        path = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
        outcomes.add(matcher.first(path))
        assert matcher.first(path) == reference_first(lists, path), path
        assert everything.first(path) == reference_first(catch_all, path), path
    assert outcomes == {None, *range(len(lists))}


# -- text decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Größe über Straße und Fußgänger. Äpfel, Öl!",
        "naïve résumé façade déjà vu",
        "El niño comió piñata; canción ¿qué tal?",
        "Smörgåsbord på svenska, Ærø og Ødegaard",
        "Müller",
        "ÀÉÎÕÜ",
        "Zoë",
        "©2020 Société Générale™ « guillemets »",
    ],
)
def test_cp1252_text_is_not_mistaken_for_shift_jis(text: str) -> None:
    assert decode_text(text.encode("cp1252")) == (text, "cp1252")


@pytest.mark.parametrize(
    "text",
    [
        "日本語のテキストです。",
        "# 設定値を読み込む\nvalue = 1\n",
        "設定",
        "// コメント\nint x;",
        "データベース接続",
        "ｱｲｳ 半角カナ と 全角カナ",
        "Pythonの設定ファイル",
    ],
)
def test_shift_jis_text_comes_out_right(text: str) -> None:
    assert decode_text(text.encode("shift_jis")) == (text, "shift_jis")


def test_cp932_extensions() -> None:
    assert decode_text("①②③ 丸数字".encode("cp932")) == ("①②③ 丸数字", "cp932")


def test_boms_binary_and_fallbacks() -> None:
    assert decode_text(b"\xef\xbb\xbfhi\r\n") == ("hi\r\n", "utf-8-sig")
    assert decode_text("\ufeffhé".encode("utf-16-be")) == ("hé", "utf-16-be")
    assert decode_text("\ufeffhé".encode("utf-32-le")) == ("hé", "utf-32-le")
    assert decode_text(b"\xff\xfe\x00\xd8") is SkipReason.UNDECODABLE  # lone surrogate
    assert decode_text(b"abc\x00def") is SkipReason.BINARY
    assert decode_text(bytes(range(1, 32)) * 20) is SkipReason.BINARY
    assert decode_text(b"x" * 9000 + b"\x00") == ("x" * 9000 + "\x00", "utf-8")
    assert decode_text(b"caf\xe9 \x81") == ("caf\xe9 \x81", "latin-1")
    assert decode_text(b"plain ascii\n") == ("plain ascii\n", "utf-8")
