"""`embedtab fit-workflow` and `embedtab transform`: map options onto embedtab.workflow.stage.

Each option is declared once, as a field of FitOptions or TransformOptions (embedtab/workflow/options.py):
the flags here take their help and defaults from there.
"""

from __future__ import annotations

import functools
from typing import Annotated, List, Optional

import typer
from rich.table import Table

from embedtab.cli.common import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    ForceOpt,
    JsonOpt,
    SchedulerOpt,
    TrustOpt,
    api_options,
    open_artifacts,
    report_result,
    state,
    stderr,
)
from embedtab.options import default_of, help_of
from embedtab.workflow.options import FitOptions, TransformOptions

F = functools.partial(help_of, FitOptions)
T = functools.partial(help_of, TransformOptions)
PartSizeOpt = Annotated[Optional[str], typer.Option("--part-size", help=F("part_size"))]
DataOpt = Annotated[List[str], typer.Option("--data", "-d", help=F("data"), show_default=False)]
fit_default = functools.partial(default_of, FitOptions)
transform_default = functools.partial(default_of, TransformOptions)


def fit_workflow(
    config: Annotated[str, typer.Argument(help=F("config"), show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help=F("name"))] = fit_default("name"),
    part_size: PartSizeOpt = fit_default("part_size"),
    dask_scheduler: SchedulerOpt = fit_default("dask_scheduler"),
    force: ForceOpt = fit_default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Fit an NVTabular workflow declared in YAML and save it (plain nvtabular.Workflow.load opens it).

    Prints the categorical cardinalities and default embedding sizes.

    [bold]Examples[/bold]

      embedtab fit-workflow configs/item.yaml --data sample_data/items.parquet

      embedtab fit-workflow configs/context.yaml -d 'sample_data/interactions/*.parquet'
    """
    result = open_artifacts(artifacts).fit_workflow(**api_options(locals()))
    report_result(result.record, result.up_to_date, as_json)
    cards = result.record.metadata.get("cardinalities", {})
    if cards and not as_json and not result.up_to_date and not state.quiet:
        table = Table("categorical column", "cardinality", "embedding dim", title="Categorify cardinalities", title_justify="left")
        for column, sizes in cards.items():
            table.add_row(column, f"{sizes['cardinality']:,}", str(sizes["embedding_dim"]))
        stderr.print(table)


def transform(
    workflow: Annotated[str, typer.Argument(help=T("workflow"), show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help=T("name"))] = transform_default("name"),
    part_size: PartSizeOpt = transform_default("part_size"),
    mask: Annotated[bool, typer.Option("--mask", help=T("mask"))] = transform_default("mask"),
    dask_scheduler: SchedulerOpt = transform_default("dask_scheduler"),
    trust_workflow: TrustOpt = transform_default("trust_workflow"),
    force: ForceOpt = transform_default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Apply a fitted workflow to data; write parquet parts plus the Merlin schema.

    The workflow's files are checked against the sha256 recorded at fit time before loading.
    Unseen categories map to the out-of-vocabulary id and are counted in the summary; with --mask,
    the ids the masking set to that id are counted apart.

    [bold]Examples[/bold]

      embedtab transform interactions -d 'data/day_[12].parquet' -n train --mask

      embedtab transform interactions -d data/day_3.parquet -n valid

      embedtab transform interactions -d 'big/*.parquet' --dask-scheduler tcp://h:8786
    """
    result = open_artifacts(artifacts).transform(**api_options(locals()))
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.transformed(result.record))
