"""File classification rules: which files the scan skips, and what kind each kept file is.

``Rules`` holds gitignore-style pattern lists (matched against root-relative paths) and
thresholds; every field can be set from the ``[rules]`` table of a config file through
``Rules.from_mapping``. A list key replaces the default list, ``extend_<key>`` appends to it.

The first matching category decides, in this order: ``extra_skip`` (skipped, IGNORED),
``lock_files`` (skipped), ``binary`` (skipped unread), ``vendored`` and ``generated`` (skipped
while ``skip_vendored`` / ``skip_generated``, else demoted), then the demoted kinds ``data``,
``examples``, ``tests``, ``docs``, ``config`` (build files, CI, hidden files and folders such as
.gitignore and .github/); anything else is SOURCE. ``keep`` overrides every skip above as well
as ``max_file_bytes`` (binary content is still skipped). After reading, a generated-code marker
in the first lines makes a file GENERATED, and a file matching ``data_if_large`` over
``data_threshold_bytes`` becomes DATA.

A file git tracks is never skipped on a folder pattern of ``generated`` alone (``build/``,
``dist/``: Sphinx sources live in doc/build): it is kept as GENERATED, the first kind shed over
budget. Untracked files there, and files of plain folders, are skipped as the rules say.

Size. The budget, in tokens, decides what fits: ``repoctx.pack.fit`` sheds a file that takes over
half of it early, and packs any file that fits. ``max_file_bytes`` is only a guard against
absurd files: a file over it is skipped unread (TOO_LARGE) whatever its kind, unless ``keep``
matches it. The default, 4 MiB (about a million tokens), lets every real source file through.
``max_bulk_file_bytes`` (256 KiB) is the ceiling for the kinds that are bulky and read least
(docs, data, generated, vendored: built HTML, search indexes, dumps), which would otherwise
dominate the time to scan and count a repository while adding little to an answer.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from repoctx.errors import ConfigError
from repoctx.scan.ignore import FirstMatch
from repoctx.scan.snapshot import FileKind, SkipReason

DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024  # ~1M tokens, more than a context holds
DEFAULT_MAX_BULK_FILE_BYTES = 256 * 1024
DEFAULT_DATA_THRESHOLD_BYTES = 64 * 1024
BULK_KINDS = frozenset({FileKind.DOCS, FileKind.DATA, FileKind.GENERATED, FileKind.VENDORED})
MARKER_LINES = 5


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LOCK_FILES = _words(
    "package-lock.json npm-shrinkwrap.json yarn.lock pnpm-lock.yaml bun.lockb poetry.lock "
    "Pipfile.lock uv.lock pdm.lock Cargo.lock Gemfile.lock composer.lock go.sum go.work.sum "
    "flake.lock mix.lock pubspec.lock Podfile.lock packages.lock.json gradle.lockfile *.lock"
)
GENERATED = _words(
    "*_pb2.py *_pb2.pyi *_pb2_grpc.py *.pb.go *.pb.gw.go *.pb.cc *.pb.h *_generated.go "
    "zz_generated*.go *.min.js *.min.css *.map *.bundle.js *.chunk.js *.generated.* *.g.dart "
    "*.freezed.dart *.Designer.cs *.designer.cs .pnp.cjs .pnp.loader.mjs __generated__/ dist/ "
    "build/"
)
VENDORED = _words(
    "node_modules/ bower_components/ jspm_packages/ vendor/ third_party/ third-party/ "
    "thirdparty/ 3rdparty/ external/ externals/ extern/ deps/ .venv/ venv/ site-packages/ Pods/ "
    "Carthage/ .yarn/"
)
BINARY = tuple(
    f"*.{ext}"
    for ext in _words(
        "png jpg jpeg gif bmp ico icns webp tif tiff psd heic avif pdf zip gz tgz bz2 xz zst 7z "
        "rar tar lz4 so dll dylib exe bin o a obj lib class jar war ear pyc pyo pyd whl egg woff "
        "woff2 ttf otf eot mp3 mp4 m4a wav ogg flac avi mov mkv webm sqlite sqlite3 db npy npz "
        "pkl pickle h5 hdf5 pt pth onnx safetensors gguf ckpt tflite parquet avro orc doc docx "
        "xls xlsx ppt pptx odt dmg iso img wasm jks keystore p12 pfx der DS_Store"
    )
)
DATA = _words("*.csv *.tsv *.psv *.jsonl *.ndjson *.geojson *.arff *.log *.svg")
DATA_IF_LARGE = _words("*.json *.xml *.yaml *.yml *.sql *.txt *.ipynb")
TESTS = _words(
    "tests/ test/ __tests__/ spec/ specs/ testdata/ __mocks__/ __fixtures__/ test_*.py "
    "*_test.py conftest.py *_test.go *.test.ts *.test.tsx *.test.js *.test.jsx *.test.mjs "
    "*.spec.ts *.spec.tsx *.spec.js *.spec.jsx *Test.java *Tests.java *Test.kt *Tests.kt "
    "*Test.cs *Tests.cs *_spec.rb *_test.rb *Test.php *Test.swift *Tests.swift *Spec.scala "
    "*Test.scala *Suite.scala *_test.c *_test.cc *_test.cpp *_unittest.cc *_test.rs"
)
DOCS = _words(
    "docs/ doc/ documentation/ *.md *.markdown *.rst *.adoc *.rdoc README README.* LICENSE "
    "LICENSE.* LICENCE LICENCE.* COPYING COPYING.* NOTICE CHANGELOG CHANGES AUTHORS "
    "CONTRIBUTORS"
)
EXAMPLES = _words("examples/ example/ samples/ sample/ demo/ demos/ _examples/")
CONFIG = _words(
    "*.toml *.ini *.cfg *.conf *.json *.json5 *.jsonc *.yaml *.yml *.xml *.properties *.plist "
    "*.csproj *.sln *.props Dockerfile Dockerfile.* *.dockerfile Containerfile Makefile "
    "makefile GNUmakefile *.mk CMakeLists.txt *.cmake requirements*.txt Pipfile "
    "constraints*.txt Procfile Vagrantfile Jenkinsfile *.gradle *.gradle.kts go.mod go.work "
    "Gemfile BUILD BUILD.bazel WORKSPACE meson.build requirements/ requirements*.in MANIFEST.in "
    "PKG-INFO CODEOWNERS CITATION.cff justfile Justfile "
    # hidden files and folders: .gitignore, .editorconfig, .coveragerc, .github/, .devcontainer/
    ".*"
)
GENERATED_MARKERS = (
    r"code generated .* do not edit",
    r"@generated\b",
    r"<auto-?generated",
    r"auto-?generated by",
    r"generated by the protocol buffer compiler",
    r"this file (?:was|is|has been) (?:automatically|auto-?) ?generated",
)
TRACKED_IN_GENERATED_FOLDER = "tracked, in a folder rules.generated matches"

_LIST_FIELDS = (
    *("lock_files", "generated", "vendored", "binary", "data", "data_if_large", "tests"),
    *("docs", "examples", "config", "extra_skip", "keep", "generated_markers"),
)
_INT_FIELDS = ("max_file_bytes", "max_bulk_file_bytes", "data_threshold_bytes")
_BOOL_FIELDS = ("skip_generated", "skip_vendored")


@dataclass(frozen=True)
class Rules:
    """Pattern lists and thresholds; ``Rules()`` holds the defaults."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_bulk_file_bytes: int = DEFAULT_MAX_BULK_FILE_BYTES
    data_threshold_bytes: int = DEFAULT_DATA_THRESHOLD_BYTES
    skip_generated: bool = True
    skip_vendored: bool = True
    lock_files: tuple[str, ...] = LOCK_FILES
    generated: tuple[str, ...] = GENERATED
    vendored: tuple[str, ...] = VENDORED
    binary: tuple[str, ...] = BINARY
    data: tuple[str, ...] = DATA
    data_if_large: tuple[str, ...] = DATA_IF_LARGE
    tests: tuple[str, ...] = TESTS
    docs: tuple[str, ...] = DOCS
    examples: tuple[str, ...] = EXAMPLES
    config: tuple[str, ...] = CONFIG
    extra_skip: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    generated_markers: tuple[str, ...] = GENERATED_MARKERS  # case-insensitive regexes

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Rules:
        """Rules from a ``[rules]`` table; raises ConfigError naming the bad key."""
        values: dict[str, Any] = {}
        extends = {k: v for k, v in mapping.items() if k.startswith("extend_")}
        for key, value in [
            *((k, v) for k, v in mapping.items() if k not in extends),
            *extends.items(),
        ]:
            name = key.removeprefix("extend_")
            if name in _LIST_FIELDS:
                base = values.get(name, getattr(cls, name)) if name != key else ()
                values[name] = (*base, *_string_list(key, value))
            elif key in _INT_FIELDS:
                values[key] = _positive_int(key, value)
            elif key in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ConfigError(f"rules.{key} must be true or false, not {value!r}")
                values[key] = value
            else:
                known = ", ".join(sorted((*_LIST_FIELDS, *_INT_FIELDS, *_BOOL_FIELDS)))
                raise ConfigError(f"rules: unknown key {key!r}; known keys: {known}")
        rules = dataclasses.replace(cls(), **values)
        rules.classifier()  # report bad patterns now, not in the middle of a scan
        return rules

    def classifier(self) -> Classifier:
        return _compile(self)


def _string_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"rules.{key} must be a list of strings, not {value!r}")
    return tuple(value)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"rules.{key} must be a positive whole number of bytes, not {value!r}")
    return value


class PathClass(NamedTuple):
    """What the path alone says about a file: its kind, and the reason to skip it, if any."""

    kind: FileKind
    skip: SkipReason | None
    keep: bool
    detail: str = ""


_Category = tuple[str, FileKind, SkipReason | None]
_CATEGORIES: tuple[_Category, ...] = (
    ("extra_skip", FileKind.SOURCE, SkipReason.IGNORED),
    ("lock_files", FileKind.CONFIG, SkipReason.LOCK_FILE),
    ("binary", FileKind.DATA, SkipReason.BINARY),
    ("vendored", FileKind.VENDORED, SkipReason.VENDORED),
    ("generated", FileKind.GENERATED, SkipReason.GENERATED),
    ("data", FileKind.DATA, None),
    ("examples", FileKind.EXAMPLE, None),
    ("tests", FileKind.TEST, None),
    ("docs", FileKind.DOCS, None),
    ("config", FileKind.CONFIG, None),
)


class Classifier:
    """Rules compiled once per scan."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._categories = FirstMatch(
            [(f"rules.{name}", getattr(rules, name)) for name, *_ in _CATEGORIES]
        )
        self._keep = FirstMatch([("rules.keep", rules.keep)])
        files_only = [p for p in rules.generated if not _is_folder_pattern(p)]
        self._generated_files = FirstMatch([("rules.generated", files_only)])
        self._large = FirstMatch([("rules.data_if_large", rules.data_if_large)])
        self._markers = _marker_regex(rules.generated_markers)

    def classify(self, path: str, tracked: bool = False) -> PathClass:
        """The verdict from the path alone (posix, relative to the root); ``tracked``: git
        tracks the file."""
        keep = self._keep.first(path) is not None
        index = self._categories.first(path)
        if index is None:
            return PathClass(FileKind.SOURCE, None, keep)
        name, kind, reason = _CATEGORIES[index]
        if reason is None or keep or not self._skips(reason):
            return PathClass(kind, None, keep, f"rules.{name}")
        if reason is SkipReason.GENERATED and tracked and self._generated_by_folder(path):
            return PathClass(kind, None, keep, TRACKED_IN_GENERATED_FOLDER)
        return PathClass(kind, reason, keep, f"matches rules.{name}")

    def _generated_by_folder(self, path: str) -> bool:
        """True when only folder patterns of ``generated`` match ``path``, which does match."""
        return self._generated_files.first(path) is None

    def _skips(self, reason: SkipReason) -> bool:
        if reason is SkipReason.GENERATED:
            return self.rules.skip_generated
        if reason is SkipReason.VENDORED:
            return self.rules.skip_vendored
        return True

    def refine(self, verdict: PathClass, path: str, size: int, text: str) -> PathClass:
        """The verdict once the content is known: generated markers, large data files."""
        if verdict.kind in (FileKind.VENDORED, FileKind.GENERATED):
            return verdict
        if self._markers is not None and self._markers.search(_head(text)):
            skip = SkipReason.GENERATED if self.rules.skip_generated and not verdict.keep else None
            return PathClass(FileKind.GENERATED, skip, verdict.keep, "generated-code marker")
        large = size > self.rules.data_threshold_bytes
        if large and verdict.kind is not FileKind.DATA and self._large.first(path) is not None:
            return PathClass(FileKind.DATA, None, verdict.keep, "rules.data_if_large")
        return verdict


def _is_folder_pattern(pattern: str) -> bool:
    body = pattern.strip()
    return not body.startswith("!") and (body.endswith("/") or body.endswith("/**"))


def _marker_regex(markers: Sequence[str]) -> re.Pattern[str] | None:
    if not markers:
        return None
    for marker in markers:
        try:
            re.compile(marker)
        except re.error as error:
            raise ConfigError(f"rules.generated_markers: bad regex {marker!r} ({error})") from None
    # The head is lowercased before the search; IGNORECASE (slower) only for markers that need it
    flags = 0 if all(m == m.lower() for m in markers) else re.IGNORECASE
    return re.compile("|".join(f"(?:{m})" for m in markers), flags)


def _head(text: str) -> str:
    lines = text[:4096].split("\n", MARKER_LINES)
    return "\n".join(lines[:MARKER_LINES]).lower()


@functools.lru_cache(maxsize=8)
def _compile(rules: Rules) -> Classifier:
    return Classifier(rules)


# -- text or binary ---------------------------------------------------------------------------

SNIFF_BYTES = 8192
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32-le", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be", "utf-16-be"),
)
_CONTROL = bytes((*range(0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)))
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Characters Shift_JIS text is made of: JIS symbols, Greek and Cyrillic, kana, kanji, full width.
_JAPANESE = (
    *((0x0391, 0x0451), (0x2010, 0x206F), (0x2100, 0x22FF), (0x2460, 0x27BF)),
    *((0x3000, 0x30FF), (0x3200, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)),
    *((0xFF01, 0xFF60), (0xFFE0, 0xFFEF)),
)
_HALF_WIDTH_KANA = (0xFF61, 0xFF9F)  # also what Latin-1 capitals turn into when misread


def decode_text(data: bytes) -> tuple[str, str] | SkipReason:
    """``(text, encoding)`` of a text file, or BINARY / UNDECODABLE.

    A byte order mark decides first (and is stripped); then a NUL byte, or more than 10%
    control characters, in the first 8 KiB means binary; then strict UTF-8, Shift_JIS/cp932
    when the result reads as Japanese, cp1252, and latin-1 (which never fails, so it comes
    last). Newlines are left as they are.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec), name
            except UnicodeDecodeError:
                return SkipReason.UNDECODABLE
    sample = data[:SNIFF_BYTES]
    if b"\0" in sample or len(sample.translate(None, _NOT_CONTROL)) * 10 > len(sample):
        return SkipReason.BINARY
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for codec in ("shift_jis", "cp932"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _reads_as_japanese(text):
            return text, codec
        break
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _reads_as_japanese(text: str) -> bool:
    """True when the non-ASCII runs of ``text`` are Japanese words, not Latin letters misread:
    those come out as lone kanji between ASCII letters, half-width kana or private-use code
    points."""
    good = bad = longest = 0
    for match in _NON_ASCII.finditer(text):
        run = match.group()
        if all(_in(c, (_HALF_WIDTH_KANA,)) for c in run):
            continue
        start, end = match.span()
        if not all(_in(c, _JAPANESE) or _in(c, (_HALF_WIDTH_KANA,)) for c in run):
            bad += len(run)
        elif len(run) == 1 and _between_letters(text, start, end):
            bad += 1
        else:
            good += len(run)
            longest = max(longest, len(run))
    return longest >= 2 and bad * 5 <= good


def _in(char: str, ranges: Sequence[tuple[int, int]]) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def _between_letters(text: str, start: int, end: int) -> bool:
    return start > 0 and end < len(text) and text[start - 1].isalpha() and text[end].isalpha()
