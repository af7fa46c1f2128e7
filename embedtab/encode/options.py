"""What `embedtab encode` is asked to do: the options of both modalities and what a run returns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from embedtab import bounds, tables
from embedtab.artifacts import ArtifactRecord
from embedtab.bounds import ImageBatch, MaxErrors, MaxPixels, Name, ShardSize, TextBatch, Workers
from embedtab.device import check_device
from embedtab.encode import sources as src
from embedtab.encode.backends import PRECISIONS
from embedtab.encode.encoders import Settings
from embedtab.errors import DataError, UsageError

ON_ERROR = ("skip", "fail")
DECODES = ("auto", "cpu", "gpu")  # where image files are decoded (see loading.py)


@dataclass
class EncodeOptions:
    """What both modalities share."""

    inputs: Sequence[str]
    name: str
    id_column: Name = "item_id"
    model: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: TextBatch | None = None  # None: default_batch_size() for the rows and the device
    normalize: bool = True
    shard_size: ShardSize = 4096
    on_error: str = "skip"
    max_errors: MaxErrors | None = None
    dedupe: bool = False
    shard: str | None = None  # "i/n", 1-based: this job encodes every n-th work shard
    seal: bool = False  # only assemble shards other jobs made
    force: bool = False
    dask_scheduler: str | None = None  # run the work shards as tasks on this Dask cluster
    encoder: str = "auto"  # a registered encoder (embedtab encoders); auto: by the model, else the default
    pretrained: str | None = None  # OpenCLIP: a pretrained tag or checkpoint file
    rows: ClassVar[str] = "text"  # what an input row is (embedtab.encode.inputs)

    def __post_init__(self) -> None:
        self.check()  # when made: the CLI, the Python API and pipeline files refuse the same values before any work

    def check(self) -> None:
        """Every option within its bounds (embedtab.bounds) and the choices valid."""
        bounds.check(self)
        if self.on_error not in ON_ERROR:
            raise UsageError(f"invalid --on-error {self.on_error!r}: use skip or fail")
        check_device(self.device)
        if self.precision not in PRECISIONS:
            raise UsageError(f"invalid --precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.shard and self.seal:
            raise UsageError("--seal assembles the shards of all jobs; do not combine it with --shard")
        parse_shard(self.shard)
        if getattr(self, "decode", "auto") not in DECODES:
            raise UsageError(f"invalid --decode {self.decode!r}: use {', '.join(DECODES)}")

    def recipe(self) -> dict[str, Any]:
        """What decides the vectors (inputs aside): the same recipe may update an artifact in place."""
        recipe = {"model": self.model, "normalize": self.normalize, "precision": self.precision,
                  "id_column": self.id_column, "dedupe": self.dedupe}
        if self.encoder != "auto":  # (only when chosen: artifacts made before encoders were plugins stay up to date)
            recipe["encoder"] = self.encoder
        return recipe

    def settings(self, device: str, precision: str) -> Settings:
        return Settings(self.rows, device, precision, self.batch_size or default_batch_size(self.rows, device), self.normalize, self.pretrained,
                        getattr(self, "max_pixels", 50_000_000), getattr(self, "decode", "auto"))

    def metadata(self) -> dict[str, Any]:
        """What the artifact records about its inputs beyond the encoder."""
        return {}

    def source(self) -> src.Source:
        raise NotImplementedError


@dataclass
class TextOptions(EncodeOptions):
    template: str | None = None
    text_columns: Sequence[str] = field(default_factory=tuple)

    def recipe(self) -> dict[str, Any]:
        recipe = {**super().recipe(), "modality": "text", "template": text_template(self)}
        if self.pretrained:
            recipe["pretrained"] = self.pretrained
        return recipe

    def metadata(self) -> dict[str, Any]:
        return {"template": text_template(self)}

    def source(self) -> src.Source:
        template = text_template(self)
        return src.Source("text", tables.resolve_inputs(self.inputs), self.id_column, template=template,
                          fields=src.template_fields(template))


@dataclass
class ImageOptions(EncodeOptions):
    image_column: Name = "image_path"
    image_root: str | None = None
    max_pixels: MaxPixels = 50_000_000
    workers: Workers | None = None  # DataLoader worker processes (None: one per spare core, at most 4)
    batch_size: ImageBatch | None = None  # (a smaller bound than texts': each image is a tensor)
    allow_outside_root: bool = False  # open paths that resolve outside image_root (or the folder)
    decode: str = "auto"  # where JPEGs are decoded: cpu (Pillow), gpu (nvJPEG), auto (gpu on CUDA when the encoder can)

    def recipe(self) -> dict[str, Any]:
        recipe = {**super().recipe(), "modality": "image", "pretrained": self.pretrained,
                  "image_column": self.image_column, "max_pixels": self.max_pixels}
        if self.allow_outside_root:  # (only when set: artifacts made before the option stay up to date)
            recipe["allow_outside_root"] = True
        return recipe

    rows: ClassVar[str] = "image"

    def source(self) -> src.Source:
        if src.is_image_folder(self.inputs):
            folder = Path(self.inputs[0])
            return src.Source("image", src.image_folder(folder), self.id_column, folder=folder,
                              allow_outside_root=self.allow_outside_root)
        paths = tables.resolve_inputs(self.inputs)
        root = Path(self.image_root) if self.image_root else paths[0].parent
        if not root.is_dir():
            raise DataError(f"image_root: {root} is not a directory")
        return src.Source("image", paths, self.id_column, image_column=self.image_column, image_root=root,
                          allow_outside_root=self.allow_outside_root)


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
    if spec is None or spec == "":
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
