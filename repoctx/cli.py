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
            metavar="PATH",
            help="GGUF model whose vocabulary counts the tokens (default: embedded).",
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
    from repoctx.cli_pack import run_pack

    run_pack(paths, output=output, fmt=fmt, stats=stats, graph=graph, flags=flags)


@cli.command()
@pack_options
def chat(paths: tuple[Path, ...], **flags: Any) -> None:
    """Talk with the code of PATHS in a terminal UI."""
    from tui.app import run_chat

    run_chat(paths, flags)


@cli.command()
@click.option("--stdio", is_flag=True, required=True, help="Speak JSON-RPC on stdin/stdout.")
@click.option("--model", metavar="PATH", help="GGUF model (default: embedded).")
def serve(stdio: bool, model: str | None) -> None:
    """Serve editors over JSON-RPC 2.0 on stdin/stdout (one message per line)."""
    from repoctx.protocol import serve_stdio

    sys.exit(serve_stdio({"model": model}))


@cli.group()
def bench() -> None:
    """Benchmarks that print figures."""


@bench.command("pack")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--runs", default=3, show_default=True, help="Repetitions of each measurement.")
@click.option("--model", metavar="PATH", help="GGUF model whose vocabulary counts tokens.")
def bench_pack(path: Path, runs: int, model: str | None) -> None:
    """Cold, warm and after-one-edit timings and peak memory of `repoctx pack PATH`."""
    from repoctx.bench import run_pack_bench

    run_pack_bench(path, runs=runs, model=model)
