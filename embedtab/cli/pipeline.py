"""`embedtab run`: a pipeline file, make-like (see embedtab.pipeline)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.table import Table
from rich.text import Text

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, JsonOpt, emit_json, open_artifacts, state, stderr

_STYLE = {
    "ran": "green",
    "up to date": "green",
    "run": "yellow",
    "stale": "yellow",
    "needs --force": "red",
    "failed": "red",
    "skipped": "red",
}


def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see configs/pipeline.yaml).", show_default=False)],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Print the plan (run / up to date / stale, and why); change nothing.")
    ] = False,
    only: Annotated[
        Optional[List[str]], typer.Option("--only", help="Run this stage (artifact name or kind/name) and what it needs; repeatable.")
    ] = None,
    force: Annotated[
        Optional[List[str]], typer.Option("--force", help="Rebuild this stage even if up to date, or replace what it made; repeatable.")
    ] = None,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Run the stages of a pipeline file in dependency order over one artifact directory.

    Dependencies come from artifact names. Stages whose inputs and options are unchanged are
    reported up to date and skipped; a failed stage stops the stages that need it, keeps every
    finished artifact, and a rerun continues from there. Exit code 1 when a stage failed (2 when
    every failure is a usage problem, such as a stage that needs --force).

    Each stage that runs prints what its own command prints (skipped items, explained variance,
    unseen and masked categories, coverage); one that is up to date, one line. The run ends with a
    table of every stage, or one line when all were up to date.

    [bold]Examples[/bold]

      embedtab run configs/pipeline.yaml -A artifacts

      embedtab run configs/pipeline.yaml --dry-run

      embedtab run configs/pipeline.yaml --only text-train --force text
    """
    art = open_artifacts(artifacts)
    printer = _StagePrinter(art.reporter, pipeline, talk=not state.quiet and not as_json)
    started = time.time()
    report = art.run_pipeline(
        pipeline, only=only or (), force=force or (), dry_run=dry_run, on_stage=printer.starting, on_done=printer.finished
    )
    printer.close()
    if as_json:
        emit_json(
            {
                "pipeline": report.pipeline,
                "dry_run": dry_run,
                "failed": report.failed,
                "stages": [dataclasses.asdict(s) for s in report.stages],
            }
        )
    elif not dry_run and report.stages and all(s.status == "up to date" for s in report.stages):
        stderr.print(
            Text(f"all {len(report.stages)} stages of {pipeline} are up to date; nothing to do", style="green")
            + Text(f" ({time.time() - started:.1f}s)")
        )
    else:
        stderr.print(_table(report, pipeline, dry_run))
    _raise_if_failed(report)


class _StagePrinter:
    """What a stage prints as the pipeline runs: its heading only once it has something to say
    (its bars, then its summary lines), or one line when it was up to date or skipped."""

    def __init__(self, reporter, pipeline: Path, talk: bool):
        self.reporter, self.pipeline, self.talk = reporter, pipeline, talk
        reporter.transient = True  # a stage's bars make way for its summary

    def heading(self, stage) -> Text:
        return Text(stage.describe(), style="bold") + Text(f"  ({self.pipeline}:{stage.line})", style="dim")

    def starting(self, stage) -> None:
        self.reporter.prefix = f"{stage.key}: "
        if self.talk:  # printed before the stage's first line: a stage with nothing to say prints one line when done
            self.reporter.heading = self.heading(stage)

    def finished(self, stage, result) -> None:
        said = self.reporter.heading is None  # the heading is out: the stage printed something
        self.reporter.heading = None
        if not self.talk:
            return
        if result.status == "ran":
            if not said:
                stderr.print(self.heading(stage))
            stderr.print(
                Text(f"wrote {', '.join(f'{k}/{n}' for k, n in stage.outputs)}", style="green") + Text(f" in {result.duration_s:.1f}s")
            )
            for line in result.lines:
                stderr.print(f"  {line}", markup=False)
        elif result.status == "up to date":
            stderr.print(Text(f"{stage.describe()}: up to date" if not said else "up to date; nothing to do", style="dim"))
        elif result.status == "skipped":
            stderr.print(Text(f"{stage.describe()}: skipped ({result.why})", style="red"))

    def close(self) -> None:
        self.reporter.heading, self.reporter.prefix, self.reporter.transient = None, "", False


def _table(report, pipeline: Path, dry_run: bool) -> Table:
    """Every stage with its status (and, after a run, its time, rows and rate)."""
    table = Table(title=f"{'plan' if dry_run else 'run'} of {pipeline}", title_justify="left")
    columns = ("stage", "command", "status") + (() if dry_run else ("time", "rows", "items/s"))
    for column in columns:
        table.add_column(column, justify="right" if column in ("time", "rows", "items/s") else "left")
    for s in report.stages:
        style = _STYLE.get(s.status, "")
        status = f"[{style}]{s.status}[/{style}]" + (f": {s.why}" if s.why else "") + (f": {s.error}" if s.error else "")
        measured = (f"{s.duration_s:.1f}s", f"{s.rows:,}" if s.rows is not None else "", f"{s.items_per_s:,.0f}" if s.items_per_s else "")
        table.add_row(s.stage, s.command, status, *(() if dry_run else measured))
    return table


def _raise_if_failed(report) -> None:
    """Exit 2 when every failure is a usage problem (a stage needs --force, an unrecorded folder):
    what the stage's own command exits with; else 1."""
    if not report.failed:
        return
    from embedtab.errors import EmbedtabError, UsageError

    failed = [s.stage for s in report.stages if s.status == "failed"]
    usage = all(s.exit_code == 2 for s in report.stages if s.status == "failed")
    raise (UsageError if usage else EmbedtabError)(
        f"{len(failed)} stage(s) failed ({', '.join(failed)}); the stages that needed them did not run; "
        "finished artifacts are kept: rerun to continue"
    )
