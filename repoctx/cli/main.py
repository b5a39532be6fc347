"""The command line: ``repoctx pack``, ``repoctx bench``. Renders the core's events and
results; every RepoctxError becomes one line on stderr and its exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from repoctx import __version__
from repoctx.errors import RepoctxError
from repoctx.kv.kvtypes import KV_TYPES
from repoctx.model.choice import EMBEDDED_NAME
from repoctx.model.synthshape import LLAMA3_8B, PRESETS, QUANTS

F = TypeVar("F", bound=Callable[..., Any])


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except RepoctxError as error:
        click.echo(f"repoctx: {error}", err=True)
        sys.exit(error.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="repoctx")
def cli() -> None:
    """A local code assistant that reads whole repositories."""


def pack_options(function: F) -> F:
    """Options shared by every command that builds a pack."""
    decorators = [
        click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path)),
        click.option(
            "--include",
            multiple=True,
            metavar="GLOB",
            help="Pack only files matching these gitignore-style patterns.",
        ),
        click.option(
            "--exclude",
            multiple=True,
            metavar="GLOB",
            help="Leave out files matching these gitignore-style patterns.",
        ),
        click.option(
            "--budget",
            type=int,
            metavar="N",
            help="Token budget (default: the model's context minus a reserve).",
        ),
        click.option(
            "--reserve",
            type=int,
            metavar="N",
            help="Tokens kept free for the conversation when no budget is given.",
        ),
        click.option(
            "--model",
            metavar="PATH|NAME",
            help="GGUF model whose vocabulary counts the tokens: a file, or a name `repoctx "
            "models list` shows (default: embedded).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@cli.command()
@pack_options
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the pack here.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["xml", "markdown", "json"]),
    help="Output format (default xml: the exact text the model sees).",
)
@click.option("--stats", is_flag=True, help="Print a table of files, tokens and omissions.")
@click.option("--graph", is_flag=True, help="Print the dependency edges and import cycles.")
def pack(
    paths: tuple[Path, ...],
    output: Path | None,
    fmt: str | None,
    stats: bool,
    graph: bool,
    **flags: Any,
) -> None:
    """Pack repositories into one prompt: dependency-ordered, exactly counted, within budget.

    Prints the pack to stdout (or -o FILE). With --stats or --graph, prints the report
    instead, and the pack only to -o FILE."""
    from repoctx.cli.pack import run_pack

    run_pack(paths, output=output, fmt=fmt, stats=stats, graph=graph, flags=flags)


def engine_options(function: F) -> F:
    """Options of commands that run the model."""
    decorators = [
        click.option(
            "--kv-type",
            type=click.Choice(KV_TYPES),
            help="KV cache type (default: the largest that fits in memory).",
        ),
        click.option(
            "--flash-attn/--no-flash-attn",
            default=None,
            help="Flash attention (default: on where the backend has it).",
        ),
        click.option("--max-tokens", type=int, metavar="N", help="Longest answer (default 1024)."),
        click.option(
            "--temperature",
            type=float,
            metavar="T",
            help="Sampling temperature (default 0: the same answer every time).",
        ),
        click.option(
            "--repeat-penalty",
            type=float,
            metavar="P",
            help="Penalty on tokens the answer repeats, 1.0 (off) to 2.0 (default 1.1).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


tail_option = click.option(
    "--tail-tokens",
    type=int,
    metavar="N",
    help="When the pack leaves files out, add those a question is about before it, up to N "
    "tokens (default 8192; 0: never).",
)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("arguments", nargs=-1, required=True)
@click.option("--include", multiple=True, metavar="GLOB", help="Pack only matching files.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out matching files.")
@click.option("--budget", type=int, metavar="N", help="Token budget of the pack.")
@click.option("--reserve", type=int, metavar="N", help="Tokens kept free for the conversation.")
@click.option(
    "--model",
    metavar="PATH|NAME",
    help=f"GGUF file, or a name `repoctx models list` shows (default: embedded {EMBEDDED_NAME}).",
)
@engine_options
@tail_option
@click.option(
    "-c",
    "--continue",
    "continue_",
    is_flag=True,
    help="Continue the latest conversation about these repositories (its history and patterns).",
)
@click.option("--json", "as_json", is_flag=True, help="Emit the event stream as JSON lines.")
def ask(arguments: tuple[str, ...], as_json: bool, continue_: bool, **flags: Any) -> None:
    """Answer a question about the repositories: PATH... QUESTION, or PATH... (or PATH... -)
    with the question on stdin. The last argument is the question unless it is - or an
    existing folder. The answer streams to stdout; progress and the cache outcome go to
    stderr. Exit codes: 0 answered, 2 usage, 3 pack, 4 model, 5 cache, 130 interrupted."""
    from repoctx.cli.ask import run_ask

    sys.exit(run_ask(arguments, as_json=as_json, flags=flags, continue_latest=continue_))


@cli.command()
@pack_options
@tail_option
@click.option(
    "--watch/--no-watch",
    default=None,
    help="Refresh the pack (and its KV state) as files are saved (default: on; REPOCTX_WATCH=0).",
)
def chat(paths: tuple[Path, ...], **flags: Any) -> None:
    """Talk with the code of PATHS in a terminal UI."""
    from tui.app import run_chat

    run_chat(paths, flags)


@cli.command()
@click.option("--stdio", is_flag=True, required=True, help="Speak JSON-RPC on stdin/stdout.")
@click.option("--model", metavar="PATH", help="GGUF model (default: embedded).")
def serve(stdio: bool, model: str | None) -> None:
    """Serve editors over JSON-RPC 2.0 on stdin/stdout (one message per line)."""
    from repoctx.protocol.serve import serve_stdio

    sys.exit(serve_stdio({"model": model}))


@cli.group()
def engine() -> None:
    """The resident engine: one process per user that keeps the model loaded for every
    `repoctx` process (started on demand; docs/engine.md)."""


@engine.command("start")
@click.option("--foreground", is_flag=True, help="Serve in this process until it stops.")
@click.option(
    "--idle-timeout",
    type=float,
    metavar="S",
    help="Exit after S seconds with no client and no work (default: REPOCTX_ENGINE_IDLE or "
    "600; 0: never).",
)
def engine_start(foreground: bool, idle_timeout: float | None) -> None:
    """Start the resident engine unless it runs; print where it listens and its pid."""
    from repoctx.cli.engine import start_engine

    sys.exit(start_engine(foreground, idle_timeout))


@engine.command("stop")
def engine_stop() -> None:
    """Stop the resident engine (it finishes the answer in flight and saves) and wait."""
    from repoctx.cli.engine import stop_engine

    sys.exit(stop_engine())


@engine.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def engine_status(as_json: bool) -> None:
    """Whether the resident engine runs, and what it holds. Exit code 3 when it does not run
    (as `systemctl status`)."""
    from repoctx.cli.engine import engine_status as show

    sys.exit(show(as_json))


@cli.group()
def bench() -> None:
    """Benchmarks that print figures."""


@cli.group()
def models() -> None:
    """The models repoctx knows, downloads and uses."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON array.")
def models_list(as_json: bool) -> None:
    """Registered and downloaded models: each name works as --model NAME and $REPOCTX_MODEL."""
    from repoctx.cli.admin import list_models

    list_models(as_json)


@models.command("pull")
@click.argument("spec")
@click.option("--revision", help="A branch, tag or commit of the model's repository.")
def models_pull(spec: str, revision: str | None) -> None:
    """Download a model: a registered NAME or ORG/REPO:FILE.gguf (resumable, verified)."""
    from repoctx.cli.admin import pull_model

    pull_model(spec, revision)


@models.command("path")
@click.argument("name", required=False)
def models_path(name: str | None) -> None:
    """The file of a model (default: the one repoctx would use)."""
    from repoctx.cli.admin import model_path

    model_path(name)


@models.command("synth")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="tiny",
    show_default=True,
    help="The shapes: tiny (a few MB), kv-heavy (Llama-3-8B's KV cache), llama3-8b (4.9 GB).",
)
@click.option(
    "--vocab-from",
    type=click.Path(path_type=Path),
    help="Copy the vocabulary of this GGUF (default: a small built-in one).",
)
@click.option("--context-length", type=int, metavar="N", help="Training context (default 1048576).")
@click.option("--quant", type=click.Choice(QUANTS), help="Weight types (default: the preset's).")
@click.option(
    "--rope-freq-base", type=float, metavar="F", help="RoPE base (default: the preset's)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
def models_synth(
    out: Path,
    preset: str,
    vocab_from: Path | None,
    context_length: int | None,
    quant: str | None,
    rope_freq_base: float | None,
    seed: int,
) -> None:
    """Write a synthetic llama GGUF to OUT: a preset's real tensor shapes with random weights,
    for tests and benchmarks (speed and memory never depend on the weights' values)."""
    from repoctx.cli.synth import write_synthetic_model

    overrides = {"context_length": context_length, "quant": quant, "rope_freq_base": rope_freq_base}
    write_synthetic_model(out, preset, vocab_from, seed, overrides)


@cli.group()
def cache() -> None:
    """The KV states and the file index repoctx keeps on disk."""


@cache.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the states as a JSON array.")
def cache_list(as_json: bool) -> None:
    """Stored KV states: for which model and repositories, how many tokens, how big."""
    from repoctx.cli.admin import list_cache

    list_cache(as_json)


@cache.command("stats")
def cache_stats() -> None:
    """Where the caches live and how big they are."""
    from repoctx.cli.admin import cache_stats as show

    show()


@cache.command("clear")
@click.argument("pattern", required=False)
@click.option("--all", "everything", is_flag=True, help="Also clear the file index.")
def cache_clear(pattern: str | None, everything: bool) -> None:
    """Remove stored KV states: all, or those PATTERN matches: an id prefix, or a glob on a
    repository's path or folder name (`.` or any existing folder: that repository), or on the
    label. Case-insensitive."""
    from repoctx.cli.admin import clear_cache

    clear_cache(pattern, everything)


@bench.command("engine")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="GGUF to measure (default: write the Llama-3-8B Q4_K_M stand-in).",
)
@click.option(
    "--synth-dir",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to write the stand-in model when no --model.",
)
@click.option(
    "--vocab-from",
    type=click.Path(path_type=Path),
    help="Vocabulary for the stand-in (a Llama 3 vocab GGUF).",
)
@click.option(
    "--tokens",
    default="32768,131072,262144",
    show_default=True,
    help="Prompt lengths, comma-separated.",
)
@click.option("--kv-type", default="q8_0", show_default=True, type=click.Choice(KV_TYPES))
@click.option("--flash-attn/--no-flash-attn", default=True, show_default=True)
@click.option(
    "--llama-bench",
    "llama_bench",
    type=click.Path(path_type=Path),
    help="llama.cpp's llama-bench binary, to compare prefill throughput.",
)
@click.option(
    "--prefill-only",
    is_flag=True,
    help="Only a prefill from memory (no state file), for the longest contexts.",
)
@click.option("--deadline", type=float, default=0, help="Stop a --prefill-only run after S s.")
def bench_engine(
    model_path: Path | None,
    synth_dir: Path,
    vocab_from: Path | None,
    tokens: str,
    kv_type: str,
    flash_attn: bool,
    llama_bench: Path | None,
    prefill_only: bool,
    deadline: float,
) -> None:
    """Prefill, state save/restore and time to first token at several prompt lengths."""
    from repoctx.cli.bench_engine import run_engine_bench

    if model_path is None:
        from repoctx.model.synth import write_synthetic_gguf

        model_path = synth_dir / "llama3-8b-gradient-1048k-standin.Q4_K_M.gguf"
        if not model_path.exists():
            write_synthetic_gguf(model_path, LLAMA3_8B, vocab_from=vocab_from)
    sizes = [int(size.replace("_", "")) for size in tokens.split(",") if size.strip()]
    if prefill_only:
        from repoctx.cli.bench_engine import run_prefill_only

        for size in sizes:
            run_prefill_only(model_path, size, kv_type, flash_attn, deadline)
        return
    run_engine_bench(model_path, sizes, kv_type, flash_attn, llama_bench)


@bench.command("pack")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--runs", default=3, show_default=True, help="Repetitions of each measurement.")
@click.option("--model", metavar="PATH", help="GGUF model whose vocabulary counts tokens.")
@click.option(
    "--against",
    metavar="COMMAND",
    help="Also time COMMAND PATH -o /dev/null (e.g. repomix) in the same loop; print ratios.",
)
def bench_pack(path: Path, runs: int, model: str | None, against: str | None) -> None:
    """Cold, warm and after-one-edit timings and peak memory of `repoctx pack PATH`."""
    from repoctx.cli.bench import run_pack_bench

    run_pack_bench(path, runs=runs, model=model, against=against)
