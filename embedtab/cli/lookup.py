"""`embedtab lookup`: maps options onto embedtab.lookup."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, TrustOpt, open_artifacts, report_result


def lookup(
    embeddings: Annotated[
        List[str], typer.Option("--embeddings", "-e", help="Embeddings artifact name (repeat for several, e.g. image and text).", show_default=False)
    ],
    workflow: Annotated[str, typer.Option("--workflow", "-w", help="Fitted workflow whose Categorify ids index the table.", show_default=False)],
    column: Annotated[str, typer.Option("--column", "-c", help="Categorified id column.")] = "item_id",
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Lookup artifact name (default: the embeddings' names joined by '+').")] = None,
    concat: Annotated[bool, typer.Option("--concat", help="Several sources: one table of their vectors side by side (else one table each).")] = False,
    fill: Annotated[str, typer.Option("--fill", help="Rows without an embedding: zeros, or the mean of present rows (padding stays zero).")] = "zeros",
    min_coverage: Annotated[
        float, typer.Option("--min-coverage", help="Fail (nothing written) when a source covers less of the vocabulary: a share from 0 to 1, e.g. 0.95.")
    ] = 0.0,
    min_reachable: Annotated[
        float, typer.Option("--min-reachable", help="Fail when the vocabulary holds a smaller share (0 to 1) of a source's encoded items (their vectors could never be looked up).")
    ] = 0.95,
    trust_workflow: TrustOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Build a table whose row i is the embedding of the item with categorified id i.

    Writes table.parquet (cat_id, raw id, present, embedding) and a dense _embeddings.npy for
    merlin-dataloader's EmbeddingOperator or Triton. Rows 0 (pad), 1 (null) and the OOV slots,
    and items without an embedding, are filled (--fill) with present = false. Refused when the
    vocabulary misses encoded items (--min-reachable). Rebuilt when the workflow or the
    embeddings change; `embedtab status` marks it stale until then.

    [bold]Examples[/bold]

      embedtab lookup --embeddings text-pca64 --workflow item --column item_id

      embedtab lookup -e image-pca16 -e text-pca64 -w item --concat --fill mean
    """
    result = open_artifacts(artifacts).lookup(
        embeddings, workflow=workflow, column=column, name=name, concat=concat, fill=fill, min_coverage=min_coverage,
        min_reachable=min_reachable, trust_workflow=trust_workflow, force=force,
    )
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.looked_up(result.record))
