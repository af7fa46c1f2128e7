"""`embedtab reduce`: maps options onto embedtab.reduce."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, emit_json, open_store, reporter, report_result


def reduce(
    source: Annotated[str, typer.Argument(help="Name of the embeddings artifact to reduce.", show_default=False)],
    dims: Annotated[int, typer.Option("--dims", "-d", help="Output dimensions.")] = 64,
    name: Annotated[
        Optional[str], typer.Option("--name", "-n", help="Output name for the projection and the embeddings (default: SOURCE-pcaDIMS).")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto (cuML with a GPU, else scikit-learn), sklearn or cuml.")] = "auto",
    whiten: Annotated[bool, typer.Option("--whiten", help="Scale components to unit variance.")] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Fit PCA on an embeddings artifact; save the projection and the reduced embeddings.

    [bold]Examples[/bold]

      embedtab reduce text --dims 64            # -> projections/text-pca64, embeddings/text-pca64

      embedtab reduce image -d 32 --name image-small --backend sklearn
    """
    from embedtab.reduce import ReduceOptions, run

    result = run(open_store(artifacts), ReduceOptions(source, dims, name, backend, whiten, force), reporter())
    if as_json:
        emit_json({"up_to_date": result.up_to_date, "projection": result.projection.model_dump(), "embeddings": result.embeddings.model_dump()})
        return
    info = result.projection.metadata
    report_result(
        result.embeddings, result.up_to_date, False,
        [
            f"{info['input_dim']} -> {info['dims']} dims with {info['backend']}: "
            f"{info['explained_variance_ratio_total']:.1%} of the variance kept",
            f"projection saved as projections/{result.projection.name} (re-applicable to new items)",
        ],
    )
