"""JavaScript, and the module resolution that TypeScript shares.

References: ``import ... from "x"`` and ``import "x"`` (kind ``import``), ``export ... from "x"``
(``export``), ``require("x")`` (``require``) and ``import("x")`` (``dynamic``); the module is the
specifier as written.

Resolution follows Node and TypeScript: relative specifiers with extension and ``index``
probing (``./x.js`` may name ``x.ts``), folders with a ``package.json``, the nearest
``tsconfig.json`` / ``jsconfig.json`` (``baseUrl``, ``paths`` with wildcards, relative
``extends``) and packages of the workspace by their ``package.json`` name. Other bare
specifiers are dependencies outside the repository and resolve to nothing.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import tree_sitter

from repoctx.languages import extensions_of
from repoctx.languages.base import (
    BodyElider,
    ImportRef,
    RepoIndex,
    captures,
    join_relative,
    load_language,
    node_text,
    parse,
    unquote,
)

JS_QUERY = """
(import_statement source: (string) @import)
(export_statement source: (string) @export)
((call_expression
   function: (identifier) @_fn
   arguments: (arguments . [(string) (template_string)] @require))
 (#eq? @_fn "require"))
(call_expression function: (import) arguments: (arguments . [(string) (template_string)] @dynamic))
"""

FUNCTION_TYPES = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "function_expression",
        "generator_function",
        "arrow_function",
        "method_definition",
    }
)

_KINDS = ("import", "export", "require", "dynamic")
_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
_TS_FOR_JS = {
    ".js": (".ts", ".tsx", ".d.ts"),
    ".jsx": (".tsx",),
    ".mjs": (".mts", ".d.mts"),
    ".cjs": (".cts", ".d.cts"),
}
_TS_SUFFIXES = (*extensions_of("typescript"), *extensions_of("tsx"))
_ENTRY_FIELDS = ("source", "exports", "module", "main", "types", "typings")
_CONDITIONS = ("source", "types", "import", "module", "default", "require", "node")
_CONFIG_NAMES = ("tsconfig.json", "jsconfig.json")
_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)
_TRAILING_COMMA = re.compile(r'"(?:\\.|[^"\\])*"|,(?=\s*[}\]])')


# --- extraction -------------------------------------------------------------------------------


def extract_imports(language: tree_sitter.Language, query: str, source: bytes) -> list[ImportRef]:
    """The references captured by ``query`` (captures named after the kinds), in file order."""
    tree = parse(language, source)
    found = captures(language, query, tree.root_node)
    nodes = [(node, kind) for kind in _KINDS for node in found.get(kind, [])]
    nodes.sort(key=lambda item: item[0].start_byte)
    refs: list[ImportRef] = []
    for node, kind in nodes:
        if any(child.type == "template_substitution" for child in node.children):
            continue
        specifier = unquote(node_text(node))
        if specifier:
            refs.append(ImportRef(specifier, (), kind))
    return refs


@functools.cache
def elider(module: str, function: str) -> BodyElider:
    """The body elider of a JavaScript-family grammar (built once, kept off the specs so that
    they stay picklable)."""
    return BodyElider(load_language(module, function), FUNCTION_TYPES)


# --- lenient JSON and package.json ------------------------------------------------------------


def loads_lenient(text: str | None) -> Any:
    """JSON with comments and trailing commas (tsconfig style); None when unreadable."""
    if text is None:
        return None

    def keep_strings(match: re.Match[str]) -> str:
        token = match.group()
        return token if token.startswith('"') else ""

    cleaned = _TRAILING_COMMA.sub(keep_strings, _COMMENT.sub(keep_strings, text.lstrip("\ufeff")))
    try:
        return json.loads(cleaned)
    except ValueError:
        return None


def _read_json_object(path: str, index: RepoIndex) -> dict[str, Any]:
    data = loads_lenient(index.read_text(path)) if index.has(path) else None
    return data if isinstance(data, dict) else {}


def _packages(index: RepoIndex) -> dict[str, dict[str, Any]]:
    """Folder -> parsed ``package.json`` for every package of the repository."""

    def build() -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for path in index.by_name.get("package.json", []):
            if "node_modules/" not in path:
                result[posixpath.dirname(path)] = _read_json_object(path, index)
        return result

    packages: dict[str, dict[str, Any]] = index.memo("javascript.packages", build)
    return packages


def _workspaces(index: RepoIndex) -> dict[str, str]:
    """Package name -> its folder, for the packages of a monorepo."""

    def build() -> dict[str, str]:
        names: dict[str, str] = {}
        for folder, data in sorted(_packages(index).items()):
            name = data.get("name")
            if isinstance(name, str) and name not in names:
                names[name] = folder
        return names

    workspaces: dict[str, str] = index.memo("javascript.workspaces", build)
    return workspaces


def _condition_target(value: Any) -> str | None:
    """The first file target of an ``exports`` value (a string or a conditions object)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return next((t for v in value if (t := _condition_target(v)) is not None), None)
    if isinstance(value, dict):
        for key in _CONDITIONS:
            if key in value and (target := _condition_target(value[key])) is not None:
                return target
    return None


def _export_target(data: dict[str, Any], subpath: str) -> str | None:
    exports = data.get("exports")
    if isinstance(exports, dict) and any(key.startswith(".") for key in exports):
        return _condition_target(exports.get(subpath))
    return _condition_target(exports) if subpath == "." else None


def _package_entry(folder: str, index: RepoIndex) -> str | None:
    """The entry file of the package in ``folder``, from its ``package.json`` fields."""
    data = _packages(index).get(folder)
    if data is None:
        return None
    for field in _ENTRY_FIELDS:
        target = _export_target(data, ".") if field == "exports" else data.get(field)
        if isinstance(target, str) and (path := _join(folder, target)) is not None:
            found = _probe_file(path, index) or _probe_index(path, index)
            if found is not None:
                return found
    return None


# --- file probing -----------------------------------------------------------------------------


def _join(folder: str, relative: str) -> str | None:
    joined = posixpath.normpath(posixpath.join(folder, relative))
    if joined == ".." or joined.startswith("../"):
        return None
    return "" if joined == "." else joined


def _probe_file(path: str, index: RepoIndex, prefer_ts: bool = False) -> str | None:
    """``path`` itself, its TypeScript source for a ``.js``-style path (first when
    ``prefer_ts``: TypeScript importers mean the ``.ts`` file), or ``path`` plus an extension."""
    stem, extension = posixpath.splitext(path)
    replacements = [stem + r for r in _TS_FOR_JS.get(extension, ())]
    candidates = [*replacements, path] if prefer_ts else [path, *replacements]
    found = next((c for c in candidates if c and index.has(c)), None)
    if found is not None:
        return found
    return next((path + ext for ext in _EXTENSIONS if index.has(path + ext)), None)


def _probe_index(folder: str, index: RepoIndex) -> str | None:
    prefix = folder + "/index" if folder else "index"
    return next((prefix + ext for ext in _EXTENSIONS if index.has(prefix + ext)), None)


def probe(path: str, index: RepoIndex, prefer_ts: bool = False) -> str | None:
    """The file that ``path`` (a module path without or with extension) names, Node style:
    the file, the file with an extension, the folder's ``package.json`` entry, its index."""
    found = _probe_file(path, index, prefer_ts)
    if found is None and path != "":
        found = _package_entry(path, index)
    if found is None:
        found = _probe_index(path, index)
    return found


# --- tsconfig ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompilerPaths:
    """``baseUrl`` and ``paths`` of one tsconfig, as folders of the repository."""

    base_url: str | None = None
    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    paths_base: str = ""


def _extends_path(folder: str, value: str, index: RepoIndex) -> str | None:
    if not value.startswith("."):
        return None
    path = _join(folder, value)
    if path is None:
        return None
    for candidate in (path, path + ".json", path + "/tsconfig.json"):
        if index.has(candidate):
            return candidate
    return None


def _load_config(path: str, index: RepoIndex, depth: int = 0) -> CompilerPaths:
    data = _read_json_object(path, index)
    folder = posixpath.dirname(path)
    result = CompilerPaths(paths_base=folder)
    extends = data.get("extends")
    parents = extends if isinstance(extends, list) else [extends]
    for parent in parents:
        if isinstance(parent, str) and depth < 8:
            parent_path = _extends_path(folder, parent, index)
            if parent_path is not None:
                result = _load_config(parent_path, index, depth + 1)
    options = data.get("compilerOptions")
    if not isinstance(options, dict):
        return result
    base_url, paths, paths_base = result.base_url, result.paths, result.paths_base
    if isinstance(options.get("baseUrl"), str):
        base_url = _join(folder, options["baseUrl"])
    if isinstance(options.get("paths"), dict):
        paths = tuple(
            (str(pattern), tuple(t for t in targets if isinstance(t, str)))
            for pattern, targets in options["paths"].items()
            if isinstance(targets, list)
        )
        paths_base = folder
    return CompilerPaths(base_url, paths, paths_base)


def _config_for(importer: str, index: RepoIndex) -> CompilerPaths | None:
    """The compiler options of the nearest tsconfig/jsconfig above ``importer``."""
    cache: dict[str, CompilerPaths | None] = index.memo("javascript.configs", dict)
    folder = posixpath.dirname(importer)
    visited: list[str] = []
    found: CompilerPaths | None = None
    while True:
        if folder in cache:
            found = cache[folder]
            break
        visited.append(folder)
        config = next((c for n in _CONFIG_NAMES if index.has(c := _join_dir(folder, n))), None)
        if config is not None:
            found = _load_config(config, index)
            break
        if not folder:
            break
        folder = posixpath.dirname(folder)
    for seen in visited:
        cache[seen] = found
    return found


def _join_dir(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _match_paths(specifier: str, config: CompilerPaths) -> list[str]:
    """Candidate module paths from ``paths``: the most specific matching pattern's targets."""
    best: tuple[int, str, tuple[str, ...]] | None = None
    for pattern, targets in config.paths:
        if "*" not in pattern:
            score, matched = (1 << 30, "") if pattern == specifier else (-1, "")
        else:
            prefix, _, suffix = pattern.partition("*")
            fits = specifier.startswith(prefix) and specifier.endswith(suffix)
            fits = fits and len(specifier) >= len(prefix) + len(suffix)
            score = len(prefix) if fits else -1
            matched = specifier[len(prefix) : len(specifier) - len(suffix)] if fits else ""
        if score >= 0 and (best is None or score > best[0]):
            best = (score, matched, targets)
    if best is None:
        return []
    base = config.base_url if config.base_url is not None else config.paths_base
    joined = (_join(base, target.replace("*", best[1])) for target in best[2])
    return [path for path in joined if path is not None]


# --- resolution -------------------------------------------------------------------------------


def _clean_specifier(specifier: str) -> str:
    specifier = specifier.rsplit("!", 1)[-1]
    specifier = specifier.split("?", 1)[0]
    return specifier.rstrip("/") if len(specifier) > 1 else specifier


def _is_relative(specifier: str) -> bool:
    return specifier in (".", "..") or specifier.startswith(("./", "../"))


def _resolve_workspace(specifier: str, index: RepoIndex) -> str | None:
    parts = specifier.split("/")
    size = 2 if specifier.startswith("@") else 1
    folder = _workspaces(index).get("/".join(parts[:size]))
    if folder is None:
        return None
    subpath = "/".join(parts[size:])
    if not subpath:
        return _package_entry(folder, index) or probe(_join_dir(folder, "src"), index)
    exported = _export_target(_packages(index).get(folder, {}), "./" + subpath)
    candidates = [exported] if exported is not None else []
    candidates += [subpath, "src/" + subpath]
    for candidate in candidates:
        path = _join(folder, candidate)
        found = probe(path, index) if path is not None else None
        if found is not None:
            return found
    return None


def _resolve_bare(specifier: str, importer: str, index: RepoIndex, prefer_ts: bool) -> str | None:
    config = _config_for(importer, index)
    if config is not None:
        for path in _match_paths(specifier, config):
            if (found := probe(path, index, prefer_ts)) is not None:
                return found
        under_base = _join(config.base_url, specifier) if config.base_url is not None else None
        if under_base is not None and (found := probe(under_base, index, prefer_ts)) is not None:
            return found
    return _resolve_workspace(specifier, index)


def resolve_specifier(ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
    """The file a JavaScript or TypeScript module specifier names, if it is in the index."""
    specifier = _clean_specifier(ref.module)
    if not specifier or specifier.startswith("/") or specifier.startswith("#"):
        return []
    if importer is None:
        found = None if _is_relative(specifier) else _resolve_workspace(specifier, index)
    else:
        prefer_ts = importer.endswith(_TS_SUFFIXES)
        if _is_relative(specifier):
            path = join_relative(importer, specifier)
            found = probe(path, index, prefer_ts) if path is not None else None
        else:
            found = _resolve_bare(specifier, importer, index, prefer_ts)
    return [found] if found is not None and found != importer else []


class JavaScriptSpec:
    name = "javascript"
    extensions = extensions_of("javascript")

    def extract(self, source: bytes) -> list[ImportRef]:
        return extract_imports(load_language("tree_sitter_javascript"), JS_QUERY, source)

    def resolve(self, ref: ImportRef, importer: str | None, index: RepoIndex) -> list[str]:
        return resolve_specifier(ref, importer, index)

    def reduce(self, source: bytes) -> str:
        return elider("tree_sitter_javascript", "language")(source)


SPEC = JavaScriptSpec()
