"""`embedtab encode text|image`: maps options onto embedtab.encode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from embedtab.cli.common import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    ForceOpt,
    JsonOpt,
    SchedulerOpt,
    emit_json,
    open_artifacts,
    report_result,
    stderr,
)

app = typer.Typer(
    help="Encode item texts (sentence-transformers, CLIP text towers) or images (OpenCLIP, Hugging Face CLIP/SigLIP, plugins) into an embeddings artifact.",
    no_args_is_help=True,
)

EncoderOpt = Annotated[
    str, typer.Option("--encoder", "-E", help="A registered encoder (see `embedtab encoders`); auto picks by the model.")
]
InputsArg = Annotated[List[str], typer.Argument(help="Input table(s): parquet/csv file, glob or directory.", show_default=False)]
NameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the embeddings artifact to write.")]
IdOpt = Annotated[str, typer.Option("--id-column", help="Column holding the raw item id (kept with its dtype).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda when present, or what $EMBEDTAB_DEVICE says), cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[
    str, typer.Option("--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16 (GPU autocast).")
]
BatchOpt = Annotated[
    Optional[int],
    typer.Option("--batch-size", "-b", help="Items per model forward pass, 1 to 65,536 (images: 8,192); default 64 on CPU, on a GPU 512 texts or 256 images, a quarter under 20 GB."),
]
NormalizeOpt = Annotated[
    bool,
    typer.Option("--normalize/--no-normalize", help="L2-normalize every embedding (on by default)."),
]
ShardSizeOpt = Annotated[
    int, typer.Option("--shard-size", help="Items per work shard (the unit of resume) and per output parquet part, 1 to 1,048,576.")
]
DedupeOpt = Annotated[
    bool, typer.Option("--dedupe", help="Keep the first row of each duplicate id (others recorded as skipped) instead of failing.")
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option("--shard", help="i/n (1 <= i <= n <= 10,000): this job encodes its 1/n of the work into a shared work folder; the job that completes the set seals the artifact."),
]
SealOpt = Annotated[bool, typer.Option("--seal", help="Only assemble and publish the shards that --shard jobs made.")]
OnErrorOpt = Annotated[
    str, typer.Option("--on-error", help="skip: record unusable items in _errors.parquet; fail: stop at the first.")
]
MaxErrorsOpt = Annotated[
    Optional[int], typer.Option("--max-errors", help="Stop (nothing written) when more items than this fail (0 or more).")
]


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
    name: NameOpt = "text",
    template: Annotated[
        Optional[str], typer.Option("--template", "-t", help="Python format string over columns, e.g. '{title}. {description}'.")
    ] = None,
    text_column: Annotated[
        Optional[List[str]], typer.Option("--text-column", "-c", help="Column(s) to encode, joined with '. ' (instead of --template).")
    ] = None,
    id_column: IdOpt = "item_id",
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="Model name or local path (sentence-transformers default: the packaged all-MiniLM-L6-v2, works offline)."),
    ] = None,
    encoder: EncoderOpt = "auto",
    pretrained: Annotated[
        Optional[str], typer.Option("--pretrained", "-p", help="OpenCLIP text tower (--encoder open-clip): pretrained tag or checkpoint file.")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = None,
    normalize: NormalizeOpt = True,
    shard_size: ShardSizeOpt = 4096,
    dedupe: DedupeOpt = False,
    shard: ShardOpt = None,
    seal: SealOpt = False,
    on_error: OnErrorOpt = "skip",
    max_errors: MaxErrorsOpt = None,
    dask_scheduler: SchedulerOpt = None,
    force: ForceOpt = False,
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
    """
    result = open_artifacts(artifacts).encode_text(
        inputs, name=name, template=template, columns=text_column or (), id_column=id_column, model=model,
        encoder=encoder, pretrained=pretrained,
        device=device, precision=precision, batch_size=batch_size, normalize=normalize, shard_size=shard_size,
        on_error=on_error, max_errors=max_errors, force=force, dedupe=dedupe, shard=shard, seal=seal,
        dask_scheduler=dask_scheduler,
    )
    _finish(result, as_json)


@app.command("image")
def image(
    inputs: InputsArg,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="OpenCLIP: a built-in name (ViT-B-32), 'local-dir:/path', 'hf-hub:org/repo', embedtab-smoke-clip; or a Hugging Face CLIP/SigLIP id or folder."),
    ],
    pretrained: Annotated[
        Optional[str], typer.Option("--pretrained", "-p", help="Pretrained tag (laion2b_s34b_b79k) or checkpoint file, for built-in names.")
    ] = None,
    encoder: EncoderOpt = "auto",
    name: NameOpt = "image",
    image_column: Annotated[str, typer.Option("--image-column", help="Column with image paths.")] = "image_path",
    image_root: Annotated[
        Optional[Path], typer.Option("--image-root", help="Image paths are relative to this (default: the folder of the input file).")
    ] = None,
    id_column: IdOpt = "item_id",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = None,
    normalize: NormalizeOpt = True,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Image reading/decoding processes, 0 (in this process) to 4 per core, at most 64 (default: one per spare core, at most 4; beside a GPU all cores but two).")
    ] = None,
    decode: Annotated[
        str, typer.Option("--decode", help="Where JPEGs are decoded: gpu (nvJPEG, resized on the device), cpu (Pillow), auto (gpu on a CUDA device when the encoder supports it). Other formats always use Pillow.")
    ] = "auto",
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Larger images are skipped (decompression-bomb guard); 1 to 1,000,000,000.")] = 50_000_000,
    allow_outside_root: Annotated[
        bool, typer.Option("--allow-outside-root", help="Open image paths that resolve outside --image-root (or the folder); by default they are recorded as errors, unread.")
    ] = False,
    shard_size: ShardSizeOpt = 4096,
    dedupe: DedupeOpt = False,
    shard: ShardOpt = None,
    seal: SealOpt = False,
    on_error: OnErrorOpt = "skip",
    max_errors: MaxErrorsOpt = None,
    dask_scheduler: SchedulerOpt = None,
    force: ForceOpt = False,
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
    result = open_artifacts(artifacts).encode_image(
        inputs, name=name, model=model, pretrained=pretrained, encoder=encoder, image_column=image_column, image_root=image_root,
        id_column=id_column, device=device, precision=precision, batch_size=batch_size, normalize=normalize,
        shard_size=shard_size, on_error=on_error, max_errors=max_errors, force=force, dedupe=dedupe, shard=shard,
        seal=seal, workers=workers, max_pixels=max_pixels, allow_outside_root=allow_outside_root,
        dask_scheduler=dask_scheduler, decode=decode,
    )
    _finish(result, as_json)


def encoders(as_json: JsonOpt = False) -> None:
    """List the encoders installed: built in, or from plugins (entry point group embedtab.encoders).

    [bold]Examples[/bold]

      embedtab encoders

      embedtab encode text items.parquet -c title --encoder my-encoder
    """
    from rich.table import Table

    from embedtab.cli.common import stdout
    from embedtab.encode.encoders import DEFAULTS, available

    rows = [{"name": name, "inputs": list(cls.inputs) if cls else [], "from": where, "default_for": [k for k, v in DEFAULTS.items() if v == name],
             "problem": problem} for name, (cls, where, problem) in available().items()]
    if as_json:
        emit_json(rows)
        return
    table = Table("encoder", "encodes", "from", "note", title="embedtab encoders", title_justify="left")
    for row in rows:
        note = f"[red]cannot load: {row['problem']}[/red]" if row["problem"] else (
            f"default for {' and '.join(row['default_for'])}" if row["default_for"] else "")
        table.add_row(row["name"], ", ".join(row["inputs"]), row["from"], note)
    stdout.print(table)
