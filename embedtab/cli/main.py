"""The `embedtab` command: wiring of subcommands and the one place errors become exit codes.

Exit codes: 0 success (including "up to date"), 1 data/runtime error, 2 usage/config error,
130 interrupted. Errors print one line `Error: ...` on stderr; --debug adds the traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated, Any, Optional

import typer

from embedtab.cli import common
from embedtab.cli.encode import app as encode_app
from embedtab.cli.encode import encoders
from embedtab.cli.export import app as export_app
from embedtab.cli.lookup import lookup
from embedtab.cli.pipeline import run as run_pipeline
from embedtab.cli.reduce import reduce
from embedtab.cli.status import status
from embedtab.cli.workflow import fit_workflow, transform
from embedtab.device import default_device
from embedtab.errors import EmbedtabError
from embedtab.version import __version__

app = typer.Typer(
    name="embedtab",
    help=(
        "Offline embedding and feature preparation for NVIDIA Merlin recommender systems.\n\n"
        "Each subcommand reads and writes one artifact directory (--artifacts or "
        "EMBEDTAB_ARTIFACTS): encode -> reduce -> fit-workflow/transform -> lookup -> export triton; "
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
    common.progress_interval()  # a bad $EMBEDTAB_PROGRESS_INTERVAL is refused before any work
    default_device()  # ... and a bad $EMBEDTAB_DEVICE, whether or not the command needs a device


app.add_typer(encode_app, name="encode")
app.command("reduce")(reduce)
app.command("fit-workflow")(fit_workflow)
app.command("transform")(transform)
app.command("lookup")(lookup)
app.add_typer(export_app, name="export")
app.command("status")(status)
app.command("run")(run_pipeline)
app.command("encoders")(encoders)


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "list[str]": "TEXT", "list[Path]": "PATH"}


def _reflow(text: str | None) -> str | None:
    """Join the source line breaks inside a docstring paragraph (rich help keeps them and then
    wraps again, which leaves ragged lines); paragraphs of indented lines -- examples -- stay."""
    if not text:
        return text
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        indented = all(line.startswith("  ") for line in lines if line.strip())
        paragraphs.append(paragraph if indented else " ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _polish(command) -> None:
    """Help as typer's own examples show it: flags without a type column, values with a classic
    upper-case metavar (typer 0.29 prints <bool>, <str>, <list[str]> otherwise), reflowed text."""
    command.help = _reflow(command.help)
    for param in command.params:
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]  # (typer has no option for it) its name column already says what it is
        elif getattr(param, "is_flag", False):
            param.metavar = ""
        elif getattr(param, "metavar", None) is None and hasattr(param, "bare_type"):
            bare = param.bare_type()
            param.metavar = _METAVARS.get(bare, bare.upper()) + ("..." if getattr(param, "nargs", 1) != 1 else "")
    make_help_option = command.get_help_option

    def help_option(ctx, make=make_help_option):  # --help is made per call, outside command.params
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _polish(sub)


_INTERRUPTED = "interrupted; nothing was published for the interrupted stage (finished work shards are kept: rerun to resume)"


# The library names the option field its message is about ("pretrained: ..."); here it is a flag: the
# field's own (`--pretrained`), or that of an alias its options class declares (text_columns is
# `--text-column`): see embedtab.options.
def _as_flags(message: str, command: Any) -> str:
    field, sep, rest = message.partition(": ")
    flag = _flag_of(field, command) if sep else None
    return f"{flag}: {rest}" if flag else message


def _flag_of(field: str, command: Any) -> str | None:
    from embedtab.options import declared, meta
    from embedtab.stages import COMMANDS

    if not field.isidentifier():
        return None
    aliases = [a for c in COMMANDS.values() if field in declared(c.options) for a in meta(c.options, field, "aliases")]
    flags = _long_flags(command)
    spelled = (f"--{name.replace('_', '-')}" for name in (field, *aliases))
    return next((flag for flag in spelled if flag in flags), None)


def _long_flags(command: Any) -> set[str]:
    """Every long flag of the command line (typer's click command), subcommands included."""
    flags = {
        opt
        for param in command.params
        if param.param_type_name == "option"
        for opt in [*param.opts, *param.secondary_opts]
        if opt.startswith("--")
    }
    for sub in getattr(command, "commands", {}).values():
        flags |= _long_flags(sub)
    return flags


MAX_ERROR_LINE = 1000  # a last guard: messages cut the values they echo, but an error is one readable line


def _fail(message: str, code: int) -> int:
    line = " ".join(f"Error: {message}".split())
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 1] + "…"
    common.stderr.print(line, markup=False, highlight=False)
    return code


_TERMINATED = _INTERRUPTED.replace("interrupted", "terminated (SIGTERM)", 1)
_terms: list[int] = []  # SIGTERMs received during this run


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout, `docker stop`, `kill`) unwinds like Ctrl-C: staging folders are
    removed on the way out and finished work is kept; the exit code is 143."""
    _terms.append(signum)
    raise KeyboardInterrupt


def _interrupted() -> int:
    return _fail(_TERMINATED, 143) if _terms else _fail(_INTERRUPTED, 130)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (main() exits with it)."""
    _terms.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _run(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = common.state.debug or "--debug" in args
    command = typer.main.get_command(app)
    _polish(command)
    try:
        result = command.main(args=args, prog_name="embedtab", standalone_mode=False)
        if result == 130:  # typer turns Ctrl-C into a silent exit code 130
            return _interrupted()
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _interrupted() if _terms else _fail("aborted", 130)
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
        return _fail(_as_flags(str(exc), command), exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        return _interrupted()
    except OSError as exc:  # the machine refused: full disk, read-only folder, permissions
        if debug:
            raise
        return _fail(_os_error(exc), 1)
    except Exception as exc:  # an embedtab bug or an unexpected library failure
        if debug:
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


_KEPT = "nothing was published; finished encode work shards are kept, so a rerun resumes"


def _os_error(exc: OSError) -> str:
    """One line for an OSError a user's machine can cause. numpy and pyarrow raise some without an
    errno ("76800 requested and 48096 written"), so their text is read as well."""
    import errno

    text = str(exc)
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    short_write = exc.errno is None and "requested and" in text and "written" in text
    if exc.errno == errno.EFBIG or "File too large" in text or (short_write and _file_size_limited()):
        return f"a file grew past this process's file-size limit (ulimit -f){where}; {_KEPT}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or short_write:
        return f"the disk is full{where} ({text.strip()}); {_KEPT}: free some space and rerun"
    if exc.errno == errno.EROFS or "Read-only file system" in text:
        return f"read-only file system{where}: point --artifacts at a writable folder; nothing was changed"
    if exc.errno in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        target = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"permission denied{target}: this user cannot read or write there; nothing was changed"
    return f"cannot read or write{where}: {exc.strerror or text}"


def _file_size_limited() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def main() -> None:
    sys.exit(run())
