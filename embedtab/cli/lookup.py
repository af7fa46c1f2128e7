"""`embedtab lookup`: maps options onto embedtab.lookup."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, open_store, report_result, reporter


def lookup(
    embeddings: Annotated[str, typer.Option("--embeddings", "-e", help="Embeddings artifact name.", show_default=False)],
    workflow: Annotated[str, typer.Option("--workflow", "-w", help="Fitted workflow whose Categorify ids index the table.", show_default=False)],
    column: Annotated[str, typer.Option("--column", "-c", help="Categorified id column.")] = "item_id",
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Lookup artifact name (default: the embeddings' name).")] = None,
    trust_workflow: Annotated[
        bool, typer.Option("--trust-workflow", help="Load the workflow without checking its recorded sha256s.")
    ] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Build a table whose row i is the embedding of the item with categorified id i.

    Writes table.parquet (cat_id, raw id, present, embedding) and a dense embeddings.npy for
    merlin-dataloader's EmbeddingOperator or Triton. Rows 0 (pad), 1 (null) and the OOV slots,
    and items without an embedding, are zeros with present = false.

    [bold]Examples[/bold]

      embedtab lookup --embeddings text-pca64 --workflow interactions --column item_id
    """
    from embedtab.lookup import LookupOptions, run

    result = run(open_store(artifacts), LookupOptions(embeddings, workflow, column, name, force, trust_workflow), reporter())
    m = result.record.metadata
    report_result(
        result.record, result.up_to_date, as_json,
        [f"{m['cardinality']:,} rows x {m['dim']} dims; {m['with_embedding']:,} of {m['vocabulary']:,} "
         f"vocabulary ids have an embedding ({m['coverage']:.1%})",
         f"dense table: lookups/{result.record.name}/embeddings.npy"],
    )
