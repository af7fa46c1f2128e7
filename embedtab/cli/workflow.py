"""`embedtab fit-workflow` and `embedtab transform`: map options onto embedtab.workflow.stage."""

from __future__ import annotations

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
    open_artifacts,
    report_result,
    state,
    stderr,
)

PartSizeOpt = Annotated[Optional[str], typer.Option("--part-size", help="Dask partition size, e.g. 256MB (bounds memory): from 1MB to the machine's RAM.")]
DataOpt = Annotated[
    List[str], typer.Option("--data", "-d", help="Input parquet/csv: file, glob or directory (repeatable).", show_default=False)
]


def fit_workflow(
    config: Annotated[str, typer.Argument(help="Workflow YAML (see configs/).", show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Workflow artifact name (default: the config's name).")] = None,
    part_size: PartSizeOpt = None,
    dask_scheduler: SchedulerOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Fit an NVTabular workflow declared in YAML and save it (plain nvtabular.Workflow.load opens it).

    Prints the categorical cardinalities and default embedding sizes.

    [bold]Examples[/bold]

      embedtab fit-workflow configs/item.yaml --data sample_data/items.parquet

      embedtab fit-workflow configs/context.yaml -d 'sample_data/interactions/*.parquet'
    """
    result = open_artifacts(artifacts).fit_workflow(config, data, name=name, force=force, dask_scheduler=dask_scheduler,
                                                     part_size=part_size)
    report_result(result.record, result.up_to_date, as_json)
    cards = result.record.metadata.get("cardinalities", {})
    if cards and not as_json and not result.up_to_date and not state.quiet:
        table = Table("categorical column", "cardinality", "embedding dim", title="Categorify cardinalities", title_justify="left")
        for column, sizes in cards.items():
            table.add_row(column, f"{sizes['cardinality']:,}", str(sizes["embedding_dim"]))
        stderr.print(table)


def transform(
    workflow: Annotated[str, typer.Argument(help="Name of a fitted workflow artifact (or, with --trust-workflow, a folder).", show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Dataset artifact name (default: the workflow's name).")] = None,
    part_size: PartSizeOpt = None,
    mask: Annotated[bool, typer.Option("--mask", help="Apply the config's cold-start masking (training data only; never the default).")] = False,
    dask_scheduler: SchedulerOpt = None,
    trust_workflow: TrustOpt = False,
    force: ForceOpt = False,
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
    result = open_artifacts(artifacts).transform(workflow, data, name=name, mask=mask, force=force, part_size=part_size,
                                                  dask_scheduler=dask_scheduler, trust_workflow=trust_workflow)
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.transformed(result.record))
