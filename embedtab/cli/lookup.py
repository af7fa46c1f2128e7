"""`embedtab lookup`: maps options onto embedtab.lookup.

Each option is declared once, as a field of LookupOptions (embedtab/lookup_options.py): the flags
here take their help and defaults from there.
"""

from __future__ import annotations

import functools
from typing import Annotated, List, Optional

import typer

from embedtab.cli.common import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    ForceOpt,
    JsonOpt,
    TrustOpt,
    api_options,
    open_artifacts,
    report_result,
)
from embedtab.lookup_options import LookupOptions
from embedtab.options import default_of, help_of

L = functools.partial(help_of, LookupOptions)
default = functools.partial(default_of, LookupOptions)


def lookup(
    embeddings: Annotated[List[str], typer.Option("--embeddings", "-e", help=L("embeddings"), show_default=False)],
    workflow: Annotated[str, typer.Option("--workflow", "-w", help=L("workflow"), show_default=False)],
    column: Annotated[str, typer.Option("--column", "-c", help=L("column"))] = default("column"),
    name: Annotated[Optional[str], typer.Option("--name", "-n", help=L("name"))] = default("name"),
    concat: Annotated[bool, typer.Option("--concat", help=L("concat"))] = default("concat"),
    fill: Annotated[str, typer.Option("--fill", help=L("fill"))] = default("fill"),
    min_coverage: Annotated[float, typer.Option("--min-coverage", help=L("min_coverage"))] = default("min_coverage"),
    min_reachable: Annotated[float, typer.Option("--min-reachable", help=L("min_reachable"))] = default("min_reachable"),
    trust_workflow: TrustOpt = default("trust_workflow"),
    force: ForceOpt = default("force"),
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
    result = open_artifacts(artifacts).lookup(**api_options(locals()))
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.looked_up(result.record))
