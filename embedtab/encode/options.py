"""What `embedtab encode` is asked to do: the options of both modalities and what a run returns.

Each field is the one declaration of an option (embedtab.options): its name is the long flag, its
default and help are what the CLI shows, and `recipe` says whether the artifact records it. This
module imports nothing heavy (`embedtab --help` reads these declarations).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from embedtab import bounds
from embedtab.bounds import (
    DEFAULT_MAX_PIXELS,
    ImageBatch,
    MaxErrors,
    MaxPixels,
    Name,
    Rows,
    ShardSize,
    TextBatch,
    Workers,
)
from embedtab.device import check_device
from embedtab.errors import DataError, UsageError
from embedtab.options import DASK_SCHEDULER, FORCE, IF_SET, help_of, option, recipe_of

if TYPE_CHECKING:
    from embedtab.artifacts import ArtifactRecord
    from embedtab.encode import sources as src
    from embedtab.encode.protocol import Settings

ON_ERROR = ("skip", "fail")
DECODES = ("auto", "cpu", "gpu")  # where image files are decoded (see loading.py)
_SHARDS = "shard CI jobs with the encode command itself"  # (why --shard and --seal stay out of pipeline files)


@dataclass
class EncodeOptions:
    """What both modalities share."""

    inputs: bounds.Paths = option(help="Input table(s): parquet/csv file, glob or directory.")
    name: str = option(help="Name of the embeddings artifact to write.")
    id_column: Name = option("item_id", "Column holding the raw item id (kept with its dtype).", recipe=True)
    model: bounds.Name | None = option(None, "The model: a name or a local path.", recipe=True)
    device: str = option("auto", "auto (cuda when present, or what $EMBEDTAB_DEVICE says), cpu, cuda or cuda:N.")
    precision: str = option("auto", "auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16 (GPU autocast).", recipe=True)
    batch_size: TextBatch | None = option(
        None,
        "Items per model forward pass, 1 to 65,536 (images: 8,192); default 64 on CPU, on a GPU 512 texts "
        "or 256 images, a quarter under 20 GB.",
    )
    normalize: bool = option(True, "L2-normalize every embedding (on by default).", recipe=True)
    shard_size: ShardSize = option(4096, "Items per work shard (the unit of resume) and per output parquet part, 1 to 1,048,576.")
    on_error: str = option("skip", "skip: record unusable items in _errors.parquet; fail: stop at the first.")
    max_errors: MaxErrors | None = option(None, "Stop (nothing written) when more items than this fail (0 or more).")
    dedupe: bool = option(False, "Keep the first row of each duplicate id (others recorded as skipped) instead of failing.", recipe=True)
    shard: str | None = option(
        None,
        "i/n (1 <= i <= n <= 10,000): this job encodes its 1/n of the work into a shared work folder; the job "
        "that completes the set seals the artifact.",
        pipeline=_SHARDS,
    )
    seal: bool = option(False, "Only assemble and publish the shards that --shard jobs made.", pipeline=_SHARDS)
    force: bool = option(False, FORCE)
    dask_scheduler: bounds.SchedulerAddress | None = option(None, DASK_SCHEDULER)
    encoder: str = option("auto", "A registered encoder (see `embedtab encoders`); auto picks by the model.", recipe=IF_SET)
    pretrained: str | None = option(None, "OpenCLIP: a pretrained tag or checkpoint file.", recipe=IF_SET)
    limit: Rows | None = option(
        None,
        "Encode only the first N rows of the input (N >= 1), as a trial run; the artifact records it, so it is not taken for the full one.",
        recipe=IF_SET,
    )
    rows: ClassVar[str] = "text"  # what an input row is (embedtab.encode.inputs)

    def __post_init__(self) -> None:
        self.check()  # when made: the CLI, the Python API and pipeline files refuse the same values before any work

    def check(self) -> None:
        """Every option within its bounds (embedtab.bounds) and the choices valid."""
        from embedtab.encode.backends import PRECISIONS

        bounds.check(self)
        if self.on_error not in ON_ERROR:
            raise UsageError(f"invalid --on-error {self.on_error!r}: use skip or fail")
        check_device(self.device)
        if self.precision not in PRECISIONS:
            raise UsageError(f"invalid --precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.shard and self.seal:
            raise UsageError("--seal assembles the shards of all jobs; do not combine it with --shard")
        parse_shard(self.shard)
        decode = getattr(self, "decode", "auto")
        if decode not in DECODES:
            raise UsageError(f"invalid --decode {decode!r}: use {', '.join(DECODES)}")

    def recipe(self) -> dict[str, Any]:
        """What decides the vectors (inputs aside): the same recipe may update an artifact in place.
        The options declared `recipe` (embedtab.options), and the modality."""
        return {**recipe_of(self), "modality": self.rows}

    def settings(self, device: str, precision: str) -> Settings:
        from embedtab.encode.protocol import Settings

        batch_size = self.batch_size or default_batch_size(self.rows, device)
        return Settings(
            self.rows,
            device,
            precision,
            batch_size,
            self.normalize,
            self.pretrained,
            getattr(self, "max_pixels", DEFAULT_MAX_PIXELS),
            getattr(self, "decode", "auto"),
        )

    def metadata(self) -> dict[str, Any]:
        """What the artifact records about its inputs beyond the encoder."""
        return {}

    def source(self) -> src.Source:
        raise NotImplementedError


@dataclass
class TextOptions(EncodeOptions):
    name: str = option("text", help_of(EncodeOptions, "name"))
    model: bounds.Name | None = option(
        None, "Model name or local path (sentence-transformers default: the packaged all-MiniLM-L6-v2, works offline).", recipe=True
    )
    pretrained: str | None = option(None, "OpenCLIP text tower (--encoder open-clip): pretrained tag or checkpoint file.", recipe=IF_SET)
    template: str | None = option(None, "Python format string over columns, e.g. '{title}. {description}'.", recipe=True)
    # (recorded as the template they make; text_column is the CLI's flag, columns the API's first name for it)
    text_columns: Sequence[str] = option(
        help="Column(s) to encode, joined with '. ' (instead of --template).", factory=tuple, aliases=("text_column", "columns")
    )

    def check(self) -> None:
        super().check()
        if self.template is not None and not isinstance(self.template, str):
            raise UsageError(
                f"template: must be a Python format string such as '{{title}}. {{description}}' (got {type(self.template).__name__})"
            )
        if isinstance(self.text_columns, str):
            self.text_columns = (self.text_columns,)  # one column, named as a string
        if isinstance(self.text_columns, bytes) or not all(isinstance(c, str) for c in self.text_columns):
            raise UsageError("text_columns: must be a list of column names, e.g. ['title', 'description']")
        if any(not c.strip() for c in self.text_columns):
            raise UsageError("text_columns: a column name is empty; name each text column, e.g. --text-column title")

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "template": text_template(self)}

    def metadata(self) -> dict[str, Any]:
        return {"template": text_template(self)}

    def source(self) -> src.Source:
        from embedtab import tables
        from embedtab.encode import sources as src

        template = text_template(self)
        return src.Source(
            "text",
            tables.resolve_inputs(self.inputs),
            self.id_column,
            template=template,
            fields=src.template_fields(template),
            limit=self.limit,
        )


@dataclass
class ImageOptions(EncodeOptions):
    name: str = option("image", help_of(EncodeOptions, "name"))
    model: bounds.Name | None = option(
        None,
        "OpenCLIP: a built-in name (ViT-B-32), 'local-dir:/path', 'hf-hub:org/repo', embedtab-smoke-clip; or "
        "a Hugging Face CLIP/SigLIP id or folder.",
        recipe=True,
        required=True,
    )
    pretrained: str | None = option(None, "Pretrained tag (laion2b_s34b_b79k) or checkpoint file, for built-in names.", recipe=True)
    image_column: Name = option("image_path", "Column with image paths.", recipe=True)
    image_root: str | None = option(None, "Image paths are relative to this (default: the folder of the input file).")
    max_pixels: MaxPixels = option(
        DEFAULT_MAX_PIXELS, "Larger images are skipped (decompression-bomb guard); 1 to 1,000,000,000.", recipe=True
    )
    workers: Workers | None = option(
        None,
        "Image reading/decoding processes, 0 (in this process) to 4 per core, at most 64 (default: one per "
        "spare core, at most 4; beside a GPU all cores but two).",
    )
    # (a smaller bound than texts': each image is a tensor)
    batch_size: ImageBatch | None = option(None, help_of(EncodeOptions, "batch_size"))
    allow_outside_root: bool = option(
        False,
        "Open image paths that resolve outside --image-root (or the folder); by default they are recorded as errors, unread.",
        recipe=IF_SET,
    )
    decode: str = option(
        "auto",
        "Where JPEGs are decoded: gpu (nvJPEG, resized on the device), cpu (Pillow), auto (gpu on a CUDA "
        "device when the encoder supports it). Other formats always use Pillow.",
    )

    rows: ClassVar[str] = "image"

    def source(self) -> src.Source:
        from embedtab import tables
        from embedtab.encode import sources as src

        if src.is_image_folder(self.inputs):
            folder = Path(self.inputs[0])
            return src.Source(
                "image",
                src.image_folder(folder),
                self.id_column,
                folder=folder,
                allow_outside_root=self.allow_outside_root,
                limit=self.limit,
            )
        paths = tables.resolve_inputs(self.inputs)
        root = Path(self.image_root) if self.image_root else paths[0].parent
        if not root.is_dir():
            raise DataError(f"image_root: {root} is not a directory")
        return src.Source(
            "image",
            paths,
            self.id_column,
            image_column=self.image_column,
            image_root=root,
            allow_outside_root=self.allow_outside_root,
            limit=self.limit,
        )


@dataclass
class EncodeResult:
    record: ArtifactRecord | None
    up_to_date: bool
    summary: dict[str, Any] = field(default_factory=dict)
    missing_shards: list[int] = field(default_factory=list)  # sharded jobs: work left to other jobs

    @property
    def sealed(self) -> bool:
        return self.record is not None


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'i/n' (1-based) -> (i - 1, n); None -> (0, 1)."""
    if spec is None:
        return 0, 1
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", str(spec))
    index, count = (int(match[1]), int(match[2])) if match else (0, 0)
    if not (1 <= count <= bounds.MAX_SHARDS and 1 <= index <= count):
        raise UsageError(f"invalid --shard {spec!r}: use i/n with 1 <= i <= n <= {bounds.MAX_SHARDS:,}, e.g. --shard 2/4")
    return index - 1, count


def text_template(options: TextOptions) -> str:
    if options.template and options.text_columns:
        raise UsageError("pass either --template or --text-column, not both")
    if options.template:
        return options.template
    if options.text_columns:
        return ". ".join("{" + c + "}" for c in options.text_columns)
    raise UsageError("say which text to encode: --template '{title}. {description}' or --text-column title")


def default_batch_size(rows: str, device: str) -> int:
    """64 on CPU (what the vectors were always computed with); on a GPU large enough batches to keep
    it busy: 512 texts or 256 images, a quarter of that on devices under 20 GB."""
    if not device.startswith("cuda"):
        return 64
    import torch

    big = torch.cuda.get_device_properties(torch.device(device)).total_memory >= 20 * 2**30
    return (512 if rows == "text" else 256) // (1 if big else 4)
