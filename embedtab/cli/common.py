"""What every command shares: global state, the rich reporter, common options, output helpers.

Only typer and rich, and the options' declarations (embedtab.options and the options classes,
which import nothing heavy), are imported at module level, so `embedtab --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from embedtab.options import DASK_SCHEDULER, FORCE, TRUST_WORKFLOW
from embedtab.reporting import Reporter

if TYPE_CHECKING:
    from embedtab.api import Artifacts
    from embedtab.artifacts import ArtifactRecord


@dataclass
class State:
    quiet: bool = False
    debug: bool = os.environ.get("EMBEDTAB_DEBUG", "") not in ("", "0")


state = State()


class _Console(Console):
    """On a terminal, the terminal's width. Off one (piped, a file, CI logs) as wide as what is
    printed: rich would cut tables to $COLUMNS or an 80-column guess (`heal…`), and nothing reads
    such output at a width. (soft_wrap already leaves plain lines unbroken.)"""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]  # mypy: a property with a setter, read off the class
        return size if self.is_terminal else ConsoleDimensions(max(size.width, _UNLIMITED), size.height)

    @size.setter
    def size(self, value: tuple[int, int]) -> None:
        Console.size.fset(self, value)  # type: ignore[attr-defined]  # (as above)


_UNLIMITED = 10_000
stderr = _Console(stderr=True, highlight=False, soft_wrap=True)
stdout = _Console(highlight=False, soft_wrap=True)

ArtifactsOpt = Annotated[
    Path,
    typer.Option(
        "--artifacts",
        "-A",
        envvar="EMBEDTAB_ARTIFACTS",
        help="Artifact directory shared by all stages.",
        show_default=True,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help=FORCE)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-workflow", help=TRUST_WORKFLOW),
]
SchedulerOpt = Annotated[
    Optional[str],
    typer.Option("--dask-scheduler", envvar="DASK_SCHEDULER_ADDRESS", help=DASK_SCHEDULER),
]
DEFAULT_ARTIFACTS = Path("artifacts")


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "items")
        return Text(f"{speed:,.1f} {unit}/s" if speed else "", style="progress.data.speed")


def progress_interval() -> float:
    """Seconds between plain progress lines off a terminal ($EMBEDTAB_PROGRESS_INTERVAL, default 10)."""
    from embedtab.bounds import seconds_from_environment

    return seconds_from_environment("EMBEDTAB_PROGRESS_INTERVAL", 10.0, 86400)


class _PlainProgress:
    """Progress off a terminal: a plain line every `interval` seconds with the count, share and
    rate, and a last one when the loop ends if it printed any -- no bars, no escape codes."""

    def __init__(self, reporter: RichReporter, description: str, total: int | None, unit: str, interval: float) -> None:
        self.reporter, self.description, self.total, self.unit, self.interval = reporter, description, total, unit, interval
        self.done = 0
        self.started = self.last = time.monotonic()
        self.printed = False
        self.lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self.line(now)

    def line(self, now: float, last: bool = False) -> None:
        elapsed = now - self.started
        count = f"{self.done:,}/{self.total:,} {self.unit} ({self.done / self.total:.0%})" if self.total else f"{self.done:,} {self.unit}"
        rate = f", {self.done / elapsed:,.1f} {self.unit}/s" if self.done and elapsed > 0 else ""
        self.reporter.line(f"{self.description}: {count}{rate}, {elapsed:.0f}s{' - done' if last else ''}")
        self.printed = True

    def close(self) -> None:
        with self.lock:
            if self.printed:
                self.line(time.monotonic(), last=True)


class RichReporter(Reporter):
    """Messages and progress on stderr, never with --quiet: bars on a terminal, plain lines every
    few seconds elsewhere (piped, CI logs).

    `embedtab run` sets `heading` (printed before a stage's first line, so a stage that has nothing
    to say prints nothing) and `transient` (bars vanish when done: the stage's summary follows),
    and bar descriptions then start with `prefix`."""

    def __init__(self) -> None:
        self.bars = stderr.is_terminal and not state.quiet
        self.plain = not stderr.is_terminal and not state.quiet
        self.heading: Text | str | None = None
        self.transient = False
        self.prefix = ""

    def flush_heading(self) -> None:
        heading, self.heading = self.heading, None
        if heading is not None:
            stderr.print(heading, markup=False)

    def line(self, message: str) -> None:
        """A plain line (after the heading, if one is waiting)."""
        self.flush_heading()
        stderr.print(message, markup=False)

    def info(self, message: str) -> None:
        if not state.quiet:
            self.line(message)

    def warn(self, message: str) -> None:
        self.flush_heading()
        stderr.print(Text("Warning: ", style="yellow") + Text(message))

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None, unit: str = "items") -> Iterator[Any]:
        if self.plain:
            plain = _PlainProgress(self, description, total, unit, progress_interval())
            yield plain.advance
            plain.close()
            return
        if not self.bars:
            yield lambda n: None
            return
        description = f"{self.prefix}{description}"
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=stderr, transient=self.transient) as bar:
            task = bar.add_task(description, total=total, unit=unit)
            yield lambda n: bar.advance(task, n)


def reporter() -> RichReporter:
    # The core accepts any object with the Reporter interface (embedtab.reporting).
    return RichReporter()


def open_artifacts(artifacts: Path) -> Artifacts:
    """The Python API over --artifacts, reporting to the terminal."""
    from embedtab.api import Artifacts

    return Artifacts(artifacts, reporter())


def api_options(parameters: dict[str, Any], *left_out: str) -> dict[str, Any]:
    """A command's parameters (its `locals()` before anything else) as the Python API's keyword
    arguments: each under its own name -- an option's field name, or an alias its options class
    declares --, but --json, --artifacts and `left_out`."""
    return {k: v for k, v in parameters.items() if k not in ("as_json", "artifacts", *left_out)}


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def report_result(record: ArtifactRecord, up_to_date: bool, as_json: bool, lines: list[str] | None = None) -> None:
    """The closing message of a stage: one status line (+ details) on stderr, or JSON on stdout."""
    if as_json:
        emit_json({"up_to_date": up_to_date, **record.model_dump()})
        return
    if up_to_date:
        stderr.print(f"{record.kind} {record.name!r} is up to date; nothing to do", markup=False)
        return
    stderr.print(Text(f"wrote {record.kind}/{record.name}", style="green") + Text(f" in {record.duration_s:.1f}s"))
    for line in lines or []:
        stderr.print(f"  {line}", markup=False)
