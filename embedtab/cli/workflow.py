"""`embedtab fit-workflow` and `embedtab transform`: map options onto embedtab.workflow.stage."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer
from rich.table import Table

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, open_store, report_result, reporter, stderr

DataOpt = Annotated[
    List[str], typer.Option("--data", "-d", help="Input parquet/csv: file, glob or directory (repeatable).", show_default=False)
]


def fit_workflow(
    config: Annotated[str, typer.Argument(help="Workflow YAML (see configs/).", show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Workflow artifact name (default: the config's name).")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Fit an NVTabular workflow declared in YAML and save it (plain nvtabular.Workflow.load opens it).

    Prints the categorical cardinalities and default embedding sizes.

    [bold]Examples[/bold]

      embedtab fit-workflow configs/item.yaml --data sample_data/items.parquet

      embedtab fit-workflow configs/interactions.yaml -d 'sample_data/interactions/*.parquet' -n train
    """
    from embedtab.workflow.stage import FitOptions, fit

    result = fit(open_store(artifacts), FitOptions(config, data, name, force), reporter())
    report_result(result.record, result.up_to_date, as_json)
    cards = result.record.metadata.get("cardinalities", {})
    if cards and not as_json and not result.up_to_date:
        table = Table("categorical column", "cardinality", "embedding dim", title="Categorify cardinalities", title_justify="left")
        for column, sizes in cards.items():
            table.add_row(column, f"{sizes['cardinality']:,}", str(sizes["embedding_dim"]))
        stderr.print(table)


def transform(
    workflow: Annotated[str, typer.Argument(help="Name of a fitted workflow artifact.", show_default=False)],
    data: DataOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Dataset artifact name (default: the workflow's name).")] = None,
    part_size: Annotated[Optional[str], typer.Option("--part-size", help="Dask partition size, e.g. 256MB (bounds memory).")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Apply a fitted workflow to data; write parquet parts plus the Merlin schema.

    The workflow's files are checked against the sha256 recorded at fit time before loading.

    [bold]Examples[/bold]

      embedtab transform interactions --data 'sample_data/interactions/*.parquet' --name train
    """
    from embedtab.workflow.stage import TransformOptions, transform as run_transform

    result = run_transform(open_store(artifacts), TransformOptions(workflow, data, name, force, part_size), reporter())
    report_result(result.record, result.up_to_date, as_json, [f"{result.record.metadata.get('rows', 0):,} rows"])
