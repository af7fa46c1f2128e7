"""`embedtab export triton`: maps options onto embedtab.export.triton.

Each option is declared once, as a field of ExportOptions (embedtab/export/options.py): the flags
here take their help and defaults from there.
"""

from __future__ import annotations

import functools
from typing import Annotated, List, Optional

import typer

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, api_options, open_artifacts, report_result
from embedtab.export.options import ExportOptions
from embedtab.options import default_of, help_of

X = functools.partial(help_of, ExportOptions)
default = functools.partial(default_of, ExportOptions)

app = typer.Typer(help="Export artifacts for serving.", no_args_is_help=True)


@app.command("triton")
def triton(
    lookups: Annotated[List[str], typer.Option("--lookup", "-l", help=X("lookups"), show_default=False)] = default("lookups"),
    workflows: Annotated[List[str], typer.Option("--workflow", "-w", help=X("workflows"), show_default=False)] = default("workflows"),
    name: Annotated[str, typer.Option("--name", "-n", help=X("name"))] = default("name"),
    version: Annotated[Optional[int], typer.Option("--version", help=X("version"), show_default=False)] = default("version"),
    keep: Annotated[int, typer.Option("--keep", help=X("keep"))] = default("keep"),
    force: ForceOpt = default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Write a Triton model repository to exports/NAME/: each workflow as a merlin-systems
    TransformWorkflow model (nvt_<workflow>), each lookup as a model returning its rows by id
    (lookup_<lookup>), and an id decoder per looked-up id space (decode_<workflow>_<column>).

    Each export with new inputs adds a version, one above the newest, and keeps the --keep newest;
    nothing changed: up to date. Every input is verified first; a damaged or stale one (a lookup
    older than its workflow's refit) is refused by name. Serve it with
    `scripts/tritonserver.sh ARTIFACTS/exports/triton` (README, "Serving with Triton").

    [bold]Examples[/bold]

      embedtab export triton

      embedtab export triton -l text-train -l image-train -w interactions --keep 2
    """
    result = open_artifacts(artifacts).export_triton(**api_options(locals()))
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.exported(result.record))
