"""`embedtab reduce`: maps options onto embedtab.reduce.

Each option is declared once, as a field of ReduceOptions or ApplyOptions (embedtab/reduce/options.py):
the flags here take their help and defaults from there.
"""

from __future__ import annotations

import functools
from typing import Annotated, Optional

import typer

from embedtab.cli.common import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    ForceOpt,
    JsonOpt,
    api_options,
    emit_json,
    open_artifacts,
    report_result,
)
from embedtab.options import default_of, help_of
from embedtab.reduce.options import ApplyOptions, ReduceOptions

R = functools.partial(help_of, ReduceOptions)
default = functools.partial(default_of, ReduceOptions)


def reduce(
    source: Annotated[str, typer.Argument(help=R("source"), show_default=False)],
    dims: Annotated[Optional[int], typer.Option("--dims", "-d", help=R("dims"))] = default("dims"),
    variance: Annotated[Optional[float], typer.Option("--variance", help=R("variance"))] = default("variance"),
    name: Annotated[Optional[str], typer.Option("--name", "-n", help=R("name"))] = default("name"),
    backend: Annotated[str, typer.Option("--backend", help=R("backend"))] = default("backend"),
    whiten: Annotated[bool, typer.Option("--whiten", help=R("whiten"))] = default("whiten"),
    normalize: Annotated[bool, typer.Option("--normalize", help=R("normalize"))] = default("normalize"),
    fit_on: Annotated[Optional[str], typer.Option("--fit-on", help=R("fit_on"))] = default("fit_on"),
    seed: Annotated[int, typer.Option("--seed", help=R("seed"))] = default("seed"),
    memory: Annotated[Optional[str], typer.Option("--memory", help=R("memory"))] = default("memory"),
    apply: Annotated[Optional[str], typer.Option("--apply", help=help_of(ApplyOptions, "projection"))] = None,
    force: ForceOpt = default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Fit PCA on an embeddings artifact; save the projection and the reduced embeddings.

    Exact PCA (scikit-learn, cuML, or a one-pass streaming fit for inputs larger than memory), with
    a fixed sign convention so CPU and GPU agree. The projection is saved without pickle and can be
    re-applied to new items with --apply.

    [bold]Examples[/bold]

      embedtab reduce text --dims 64        # -> text-pca64 (projection + embeddings)

      embedtab reduce image --variance 0.95 --fit-on 100000 --backend streaming

      embedtab reduce image --dims 64 --memory 8GB   # keep up to 8 GB of rows: one read

      embedtab reduce image-new --apply image-pca64 --name image-new-pca64
    """
    options = api_options(locals(), "apply")
    from embedtab import summaries

    art = open_artifacts(artifacts)
    if apply is not None:
        if dims is not None or variance is not None or fit_on is not None or whiten or normalize:
            raise typer.BadParameter(
                "--apply reuses the saved projection; drop --dims/--variance/--fit-on/--whiten/--normalize", param_hint="--apply"
            )
        ReduceOptions(source, backend=backend, seed=seed, memory=memory)  # the options it ignores are still checked
        done = art.apply_projection(apply, source, name=name, force=force)
        report_result(done.record, done.up_to_date, as_json, summaries.applied(done.record))
        return
    result = art.reduce(**options)
    if as_json:
        emit_json(
            {
                "up_to_date": result.embeddings.up_to_date,
                "projection": result.projection.record.model_dump(),
                "embeddings": result.embeddings.record.model_dump(),
            }
        )
        return
    report_result(
        result.embeddings.record, result.embeddings.up_to_date, False, summaries.reduced(result.projection.record, result.embeddings.record)
    )
