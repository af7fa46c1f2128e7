"""`embedtab reduce`: maps options onto embedtab.reduce."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from embedtab.cli.common import DEFAULT_ARTIFACTS, ArtifactsOpt, ForceOpt, JsonOpt, emit_json, open_artifacts, report_result


def reduce(
    source: Annotated[str, typer.Argument(help="Name of the embeddings artifact to reduce (or, with --apply, to project).", show_default=False)],
    dims: Annotated[Optional[int], typer.Option("--dims", "-d", help="Output dimensions, 1 to 65,536 and fewer than the input's (default 64 unless --variance).")] = None,
    variance: Annotated[
        Optional[float], typer.Option("--variance", help="Instead of --dims: the fewest dims explaining this share, in (0, 1], e.g. 0.95.")
    ] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", "-n", help="Output name for the projection and the embeddings (default: SOURCE-pcaDIMS).")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (cuML on GPU; scikit-learn for small inputs; else streaming), sklearn, cuml or streaming.")
    ] = "auto",
    whiten: Annotated[bool, typer.Option("--whiten", help="Scale components to unit variance.")] = False,
    normalize: Annotated[
        bool,
        typer.Option("--normalize", help="L2-normalize after projecting: use it when the consumer compares vectors by cosine or dot product (retrieval, FAISS); leave it off for features fed to a model."),
    ] = False,
    fit_on: Annotated[
        Optional[str], typer.Option("--fit-on", help="Fit on a random sample of N rows (N >= 2), or on another embeddings artifact; transform all rows.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --fit-on sample, 0 to 4,294,967,295.")] = 0,
    memory: Annotated[
        Optional[str],
        typer.Option("--memory", help="RAM for fitted rows kept for the transform instead of read again, e.g. 4GB "
                     "(0 to the machine's RAM; default 1/32 of it; 0 reads the input twice). On a GPU: half its free memory."),
    ] = None,
    apply: Annotated[
        Optional[str], typer.Option("--apply", help="Project SOURCE with this saved projection instead of fitting (new items, same space).")
    ] = None,
    force: ForceOpt = False,
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
    from embedtab import summaries

    art = open_artifacts(artifacts)
    if apply:
        if dims is not None or variance is not None or fit_on is not None or whiten or normalize:
            raise typer.BadParameter("--apply reuses the saved projection; drop --dims/--variance/--fit-on/--whiten/--normalize", param_hint="--apply")
        from embedtab.reduce import ReduceOptions

        ReduceOptions(source, backend=backend, seed=seed, memory=memory)  # the options it ignores are still checked
        done = art.apply_projection(apply, source, name, force)
        report_result(done.record, done.up_to_date, as_json, summaries.applied(done.record))
        return
    result = art.reduce(source, dims, variance=variance, name=name, backend=backend, whiten=whiten, normalize=normalize,
                        fit_on=fit_on, seed=seed, memory=memory, force=force)
    if as_json:
        emit_json({"up_to_date": result.embeddings.up_to_date, "projection": result.projection.record.model_dump(),
                   "embeddings": result.embeddings.record.model_dump()})
        return
    report_result(result.embeddings.record, result.embeddings.up_to_date, False, summaries.reduced(result.projection.record))
