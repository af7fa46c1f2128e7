"""The `embedtab` command: wiring of subcommands and the one place errors become exit codes.

Exit codes: 0 success (including "up to date"), 1 data/runtime error, 2 usage/config error,
130 interrupted. Errors print one line `Error: ...` on stderr; --debug adds the traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from embedtab import __version__
from embedtab.cli import common
from embedtab.cli.encode import app as encode_app
from embedtab.cli.lookup import lookup
from embedtab.cli.reduce import reduce
from embedtab.cli.status import status
from embedtab.cli.workflow import fit_workflow, transform
from embedtab.errors import EmbedtabError

app = typer.Typer(
    name="embedtab",
    help=(
        "Offline embedding and feature preparation for NVIDIA Merlin recommender systems.\n\n"
        "Each subcommand reads and writes one artifact directory (--artifacts or "
        "EMBEDTAB_ARTIFACTS): encode -> reduce -> fit-workflow/transform -> lookup; "
        "`embedtab status` shows what is there."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"embedtab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info messages.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    common.state.quiet = quiet
    common.state.debug = common.state.debug or debug


app.add_typer(encode_app, name="encode")
app.command("reduce")(reduce)
app.command("fit-workflow")(fit_workflow)
app.command("transform")(transform)
app.command("lookup")(lookup)
app.command("status")(status)


_INTERRUPTED = "interrupted; nothing was published for the interrupted stage (finished work shards are kept: rerun to resume)"


def _fail(message: str, code: int) -> int:
    common.stderr.print(f"Error: {message}", markup=False, highlight=False)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (main() exits with it)."""
    args = sys.argv[1:] if argv is None else argv
    debug = common.state.debug or "--debug" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="embedtab", standalone_mode=False)
        if result == 130:  # typer turns Ctrl-C into a silent exit code 130
            return _fail(_INTERRUPTED, 130)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("aborted", 130)
    except typer.TyperException as exc:  # click-style usage errors (typer vendors click)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 0  # typer has already printed the help
        if debug:
            raise
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and exc.exit_code == 2 else ""
        return _fail(" ".join(exc.format_message().split()) + hint, exc.exit_code)
    except EmbedtabError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail(_INTERRUPTED, 130)
    except Exception as exc:  # an embedtab bug or an unexpected library failure
        if debug:
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


def main() -> None:
    sys.exit(run())
