"""`repoctx pack`: building the pack and showing it, its statistics or its graph."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repoctx.config import load_settings
from repoctx.deps.graph import backward_violations
from repoctx.errors import UsageError
from repoctx.fsutil import atomic_write
from repoctx.pack.fit import Pack
from repoctx.pack.pipeline import PackResult, build_pack
from repoctx.paths import user_path
from repoctx.scan.rules import TRACKED_IN_GENERATED_FOLDER

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def run_pack(
    paths: tuple[Path, ...],
    *,
    output: Path | None,
    fmt: str | None,
    stats: bool,
    graph: bool,
    flags: dict[str, Any],
) -> None:
    from repoctx.cli.console import StderrEvents

    roots = [user_path(path) for path in paths]
    settings = load_settings(roots, {**flags, "format": fmt})
    with StderrEvents() as events:
        result = build_pack(roots, settings, on_event=events)
    pieces = [pack_json(result)] if settings.format == "json" else result.pack.pieces()
    if output is not None:
        write_output(output, pieces)
    if stats or graph:
        from rich.console import Console  # rich: imported only by the runs that print with it

        console = Console(highlight=False, soft_wrap=True)
        if graph:
            print_graph(console, result)
        if stats:
            print_stats(console, result, output)
    elif output is None:
        for piece in pieces:
            sys.stdout.write(piece)
        sys.stdout.flush()


def write_output(output: Path, pieces: list[str]) -> None:
    """The pack to ``-o``: atomically for a file, directly for a device or a pipe."""
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; pass a file path to -o")
    try:
        atomic_write(output, (p.encode("utf-8", "surrogatepass") for p in pieces), mode=0o644)
    except OSError as error:
        raise UsageError(
            f"{output}: cannot be written ({error.strerror}); pass another -o"
        ) from error


def pack_json(result: PackResult) -> str:
    pack = result.pack
    document = {
        "version": 1,
        "model": {"path": str(result.model.path), "context_length": result.model.context_length},
        "budget": pack.budget,
        "tokens": pack.tokens,
        "roots": [
            {"name": r.name, "path": str(r.path), "git": r.is_git, "head": r.head}
            for r in result.snapshot.roots
        ],
        "files": [
            {
                "path": s.file.key,
                "language": s.file.language,
                "kind": s.file.kind.value,
                "tokens": s.tokens,
                "reduced": s.reduced,
                "encoding": s.file.encoding,
                "text": s.text,
            }
            for s in pack.segments
        ],
        "omitted": [o.__dict__ for o in pack.omitted],
        "reduced": [o.__dict__ for o in pack.reduced],
        "edges": {k: sorted(v) for k, v in sorted(result.graph.edges.items())},
        "cycles": [list(c) for c in result.ordering.cycles],
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def print_stats(console: Console, result: PackResult, output: Path | None) -> None:
    from rich.table import Table

    pack = result.pack
    files = Table(title="Packed files, in pack order", title_justify="left")
    for column in ("#", "file", "language", "kind", "tokens"):
        files.add_column(column, justify="right" if column in ("#", "tokens") else "left")
    for number, segment in enumerate(pack.segments, 1):
        mark = " (signatures)" if segment.reduced else ""
        files.add_row(
            str(number),
            segment.file.key + mark,
            segment.file.language or "-",
            segment.file.kind.value,
            f"{segment.tokens:,}",
        )
    console.print(files)
    console.print(_language_table(result))
    if pack.omitted or pack.reduced:
        console.print(_omitted_table(result))
    summary = (
        f"{len(pack.segments):,} files packed ({len(pack.reduced):,} reduced), "
        f"{len(pack.omitted):,} omitted; {_tokens_of_budget(pack)} "
        f"({result.model.path.name}); {sum(result.timings.values()):.2f} s"
    )
    if output is not None:
        summary += f"; written to {output}"
    console.print(summary)
    demoted = _tracked_in_generated_folders(result)
    if demoted:
        console.print(demoted, markup=False)


def _tokens_of_budget(pack: Pack) -> str:
    if pack.fitted_tokens is None:
        return f"{pack.tokens:,} of {pack.budget:,} tokens"
    return (
        f"{pack.tokens:,} tokens as {pack.format}, fitted on the xml the model sees: "
        f"{pack.fitted_tokens:,} of {pack.budget:,} tokens"
    )


def _tracked_in_generated_folders(result: PackResult) -> str:
    """The note on tracked files that a folder pattern of rules.generated would have skipped."""
    kept = [f.key for f in result.snapshot.files if f.kind_detail == TRACKED_IN_GENERATED_FOLDER]
    if not kept:
        return ""
    packed = [s for s in result.pack.segments if s.file.kind_detail == TRACKED_IN_GENERATED_FOLDER]
    shown = ", ".join(kept[:3]) + (", ..." if len(kept) > 3 else "")
    return (
        f"{len(kept):,} files git tracks in folders that rules.generated matches (build/, "
        f"dist/...), such as {shown}, are kept as generated files, the first shed over budget: "
        f"{len(packed):,} of them packed"
    )


def _language_table(result: PackResult) -> Table:
    from rich.table import Table

    tokens: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for segment in result.pack.segments:
        language = segment.file.language or "other"
        tokens[language] += segment.tokens
        counts[language] += 1
    table = Table(title="By language", title_justify="left")
    table.add_column("language")
    table.add_column("files", justify="right")
    table.add_column("tokens", justify="right")
    for language, total in tokens.most_common():
        table.add_row(language, f"{counts[language]:,}", f"{total:,}")
    return table


def _omitted_table(result: PackResult) -> Table:
    from rich.table import Table

    table = Table(title="Omitted or reduced", title_justify="left")
    table.add_column("file")
    table.add_column("reason")
    table.add_column("size", justify="right")
    table.add_column("tokens", justify="right")
    for item in (*result.pack.reduced, *result.pack.omitted):
        reason = f"{item.reason} ({item.detail})" if item.detail else item.reason
        tokens = f"{item.tokens:,}" if item.tokens is not None else "-"
        table.add_row(item.key, reason, f"{item.size:,}", tokens)
    return table


def print_graph(console: Console, result: PackResult) -> None:
    edges = result.graph.edges
    packed = {s.file.key for s in result.pack.segments}
    cycle_of = {k: n for n, c in enumerate(result.ordering.cycles, 1) for k in c}
    for key in result.ordering.order:
        mark = "" if key in packed else "  [omitted]"
        cycle = f"  (cycle {cycle_of[key]})" if key in cycle_of else ""
        console.print(f"{key}{cycle}{mark}", markup=False)
        for target in sorted(edges.get(key, ())):
            console.print(f"    imports {target}", markup=False)
    for number, members in enumerate(result.ordering.cycles, 1):
        console.print(f"cycle {number}: " + " <-> ".join(members), markup=False)
    bad = backward_violations(result.ordering.order, result.graph, result.ordering.cycles)
    console.print(
        f"{len(result.ordering.order):,} files, {result.graph.edge_count():,} import edges, "
        f"{len(result.ordering.cycles):,} cycles; "
        + ("every edge points backwards" if not bad else f"{len(bad)} edges point forwards"),
        markup=False,
    )
