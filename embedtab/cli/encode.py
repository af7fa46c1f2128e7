"""`embedtab encode text|image`: maps options onto embedtab.encode.

Each option is declared once, as a field of TextOptions or ImageOptions (embedtab/encode/options.py):
the flags here take their help and defaults from there, and every parameter of a command, but
--json and --artifacts, is passed to the Python API under its own name.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from embedtab.cli.common import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    ForceOpt,
    JsonOpt,
    SchedulerOpt,
    api_options,
    emit_json,
    open_artifacts,
    report_result,
    stderr,
)
from embedtab.encode.options import EncodeOptions, ImageOptions, TextOptions
from embedtab.options import default_of, help_of

app = typer.Typer(
    help="Encode item texts (sentence-transformers, CLIP text towers) or images (OpenCLIP, Hugging Face CLIP/SigLIP, plugins) into an embeddings artifact.",
    no_args_is_help=True,
)

E = functools.partial(help_of, EncodeOptions)  # the declared help of an option both commands share
T = functools.partial(help_of, TextOptions)
I = functools.partial(help_of, ImageOptions)  # noqa: E741
text_default = functools.partial(default_of, TextOptions)
image_default = functools.partial(default_of, ImageOptions)

EncoderOpt = Annotated[str, typer.Option("--encoder", "-E", help=E("encoder"))]
InputsArg = Annotated[List[str], typer.Argument(help=E("inputs"), show_default=False)]
NameOpt = Annotated[str, typer.Option("--name", "-n", help=E("name"))]
IdOpt = Annotated[str, typer.Option("--id-column", help=E("id_column"))]
DeviceOpt = Annotated[str, typer.Option("--device", help=E("device"))]
PrecisionOpt = Annotated[str, typer.Option("--precision", help=E("precision"))]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", "-b", help=E("batch_size"))]
NormalizeOpt = Annotated[bool, typer.Option("--normalize/--no-normalize", help=E("normalize"))]
ShardSizeOpt = Annotated[int, typer.Option("--shard-size", help=E("shard_size"))]
DedupeOpt = Annotated[bool, typer.Option("--dedupe", help=E("dedupe"))]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help=E("shard"))]
SealOpt = Annotated[bool, typer.Option("--seal", help=E("seal"))]
OnErrorOpt = Annotated[str, typer.Option("--on-error", help=E("on_error"))]
MaxErrorsOpt = Annotated[Optional[int], typer.Option("--max-errors", help=E("max_errors"))]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help=E("limit"))]


def _finish(result, as_json: bool) -> None:
    """Closing report: the artifact, or (a --shard job that left work to others) what is left."""
    from embedtab.api import ShardJob

    if isinstance(result, ShardJob):
        if as_json:
            emit_json({"sealed": False, "missing_shards": result.missing_shards, "summary": result.summary})
            return
        s = result.summary
        stderr.print(
            f"this job's shards are done: {s['done_shards']} of {s['work_shards']} work shards complete; "
            "the job that completes the set publishes the artifact (or run the same command with --seal)",
            markup=False,
        )
        return
    from embedtab import summaries

    report_result(result.record, result.up_to_date, as_json, summaries.encoded(result.record))


@app.command("text")
def text(
    inputs: InputsArg,
    name: NameOpt = text_default("name"),
    template: Annotated[Optional[str], typer.Option("--template", "-t", help=T("template"))] = text_default("template"),
    text_column: Annotated[Optional[List[str]], typer.Option("--text-column", "-c", help=T("text_columns"))] = text_default("text_columns"),
    id_column: IdOpt = text_default("id_column"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=T("model"))] = text_default("model"),
    encoder: EncoderOpt = text_default("encoder"),
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", "-p", help=T("pretrained"))] = text_default("pretrained"),
    device: DeviceOpt = text_default("device"),
    precision: PrecisionOpt = text_default("precision"),
    batch_size: BatchOpt = text_default("batch_size"),
    normalize: NormalizeOpt = text_default("normalize"),
    shard_size: ShardSizeOpt = text_default("shard_size"),
    dedupe: DedupeOpt = text_default("dedupe"),
    shard: ShardOpt = text_default("shard"),
    seal: SealOpt = text_default("seal"),
    on_error: OnErrorOpt = text_default("on_error"),
    max_errors: MaxErrorsOpt = text_default("max_errors"),
    limit: LimitOpt = text_default("limit"),
    dask_scheduler: SchedulerOpt = text_default("dask_scheduler"),
    force: ForceOpt = text_default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Encode item texts: sentence-transformers (default), a CLIP text tower (open-clip, hf-clip) or a plugin.

    --encoder picks one of `embedtab encoders`; auto: the encoder that claims the model (hf-clip
    for a Hugging Face CLIP/SigLIP folder), else sentence-transformers. Texts encoded by a CLIP
    text tower land in the same space as that model's images.

    Each distinct text is encoded once. A rerun with the same inputs and options does nothing; after
    the catalog changed only new or changed texts are encoded, the rest reused, removed ids dropped.
    A killed run resumes where it stopped. Empty texts are skipped and listed in _errors.parquet.

    [bold]Examples[/bold]

      embedtab encode text items.parquet --template '{title}. {description}'

      embedtab encode text 'catalog/*.parquet' -c title -m ./my-sbert-model

      embedtab encode text items.parquet -c title --limit 100 --name trial
    """
    _finish(open_artifacts(artifacts).encode_text(**api_options(locals())), as_json)


@app.command("image")
def image(
    inputs: InputsArg,
    model: Annotated[str, typer.Option("--model", "-m", help=I("model"))],
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", "-p", help=I("pretrained"))] = image_default("pretrained"),
    encoder: EncoderOpt = image_default("encoder"),
    name: NameOpt = image_default("name"),
    image_column: Annotated[str, typer.Option("--image-column", help=I("image_column"))] = image_default("image_column"),
    image_root: Annotated[Optional[Path], typer.Option("--image-root", help=I("image_root"))] = image_default("image_root"),
    id_column: IdOpt = image_default("id_column"),
    device: DeviceOpt = image_default("device"),
    precision: PrecisionOpt = image_default("precision"),
    batch_size: BatchOpt = image_default("batch_size"),
    normalize: NormalizeOpt = image_default("normalize"),
    workers: Annotated[Optional[int], typer.Option("--workers", help=I("workers"))] = image_default("workers"),
    decode: Annotated[str, typer.Option("--decode", help=I("decode"))] = image_default("decode"),
    max_pixels: Annotated[int, typer.Option("--max-pixels", help=I("max_pixels"))] = image_default("max_pixels"),
    allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help=I("allow_outside_root"))] = image_default(
        "allow_outside_root"
    ),
    shard_size: ShardSizeOpt = image_default("shard_size"),
    dedupe: DedupeOpt = image_default("dedupe"),
    shard: ShardOpt = image_default("shard"),
    seal: SealOpt = image_default("seal"),
    on_error: OnErrorOpt = image_default("on_error"),
    max_errors: MaxErrorsOpt = image_default("max_errors"),
    limit: LimitOpt = image_default("limit"),
    dask_scheduler: SchedulerOpt = image_default("dask_scheduler"),
    force: ForceOpt = image_default("force"),
    as_json: JsonOpt = False,
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
) -> None:
    """Encode item images: OpenCLIP (default), Hugging Face CLIP/SigLIP (hf-clip) or a plugin.

    --encoder picks one of `embedtab encoders`; auto: the encoder that claims the model (hf-clip
    for a Hugging Face CLIP/SigLIP folder), else open-clip.

    Input: a table with an image-path column, or a folder of images (id = file stem). Missing,
    empty, corrupt or oversized images are skipped and listed in _errors.parquet; CMYK, grayscale,
    palette, alpha, 16-bit and EXIF-rotated images are converted and encoded. Reruns reuse
    unchanged images (by content hash) and a killed run resumes.

    [bold]Examples[/bold]

      embedtab encode image items.parquet --model embedtab-smoke-clip

      embedtab encode image ./photos/ --model local-dir:/models/clip --name photos

      embedtab encode image items.parquet -m ViT-B-32 -p vit.pt --shard 2/4

      embedtab encode image items.parquet -m ViT-B-32 -p vit.pt --image-root /img

      embedtab encode image items.parquet -m ViT-B-32 -p vit.pt --device cuda --decode gpu
    """
    _finish(open_artifacts(artifacts).encode_image(**api_options(locals())), as_json)


def encoders(as_json: JsonOpt = False) -> None:
    """List the encoders installed: built in, or from plugins (entry point group embedtab.encoders).

    [bold]Examples[/bold]

      embedtab encoders

      embedtab encode text items.parquet -c title --encoder my-encoder
    """
    from rich.table import Table

    from embedtab.cli.common import stdout
    from embedtab.encode.encoders import DEFAULTS, available

    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "inputs": list(cls.inputs) if cls else [],
            "from": where,
            "default_for": [k for k, v in DEFAULTS.items() if v == name],
            "problem": problem,
        }
        for name, (cls, where, problem) in available().items()
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("encoder", "encodes", "from", "note", title="embedtab encoders", title_justify="left")
    for row in rows:
        note = (
            f"[red]cannot load: {row['problem']}[/red]"
            if row["problem"]
            else (f"default for {' and '.join(row['default_for'])}" if row["default_for"] else "")
        )
        table.add_row(row["name"], ", ".join(row["inputs"]), row["from"], note)
    stdout.print(table)
