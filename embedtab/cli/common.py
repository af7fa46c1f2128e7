"""What every command shares: global state, the rich reporter, common options, output helpers.

Only typer and rich are imported at module level, so `embedtab --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
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

if TYPE_CHECKING:
    from embedtab.api import Artifacts
    from embedtab.artifacts import ArtifactRecord


@dataclass
class State:
    quiet: bool = False
    debug: bool = os.environ.get("EMBEDTAB_DEBUG", "") not in ("", "0")


state = State()
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

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
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing artifact made from other inputs or options.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-workflow", help="Load the workflow without checking the recorded sha256s (loading runs code from workflow.pkl)."),
]
SchedulerOpt = Annotated[
    Optional[str],
    typer.Option("--dask-scheduler", envvar="DASK_SCHEDULER_ADDRESS",
                 help="Run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786; default: local."),
]
DEFAULT_ARTIFACTS = Path("artifacts")


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "items")
        return Text(f"{speed:,.1f} {unit}/s" if speed else "", style="progress.data.speed")


class RichReporter:
    """Messages and progress bars on stderr; bars only on a terminal and never with --quiet."""

    def __init__(self) -> None:
        self.bars = stderr.is_terminal and not state.quiet

    def info(self, message: str) -> None:
        if not state.quiet:
            stderr.print(message, markup=False)

    def warn(self, message: str) -> None:
        stderr.print(Text("Warning: ", style="yellow") + Text(message))

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None, unit: str = "items") -> Iterator[Any]:
        if not self.bars:
            yield lambda n: None
            return
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=stderr, transient=False) as bar:
            task = bar.add_task(description, total=total, unit=unit)
            yield lambda n: bar.advance(task, n)


def reporter() -> RichReporter:
    # The core accepts any object with the Reporter interface (embedtab.reporting).
    return RichReporter()


def open_artifacts(artifacts: Path) -> "Artifacts":
    """The Python API over --artifacts, reporting to the terminal."""
    from embedtab.api import Artifacts

    return Artifacts(artifacts, reporter())


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def report_result(record: "ArtifactRecord", up_to_date: bool, as_json: bool, lines: list[str] | None = None) -> None:
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
