"""`embedtab encode`: item texts or images -> an embeddings artifact keyed by the raw item id.

Output (embeddings/<name>/):
    part-NNNNN.parquet   <id column> (original dtype), embedding fixed_size_list<float32>[dim]
    errors.parquet       <id column>, input, reason  -- items skipped, with why
    embeddings.json      model identity, dim, counts (also in the manifest record)
"""

from __future__ import annotations

import json
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedtab import tables
from embedtab.device import check_device
from embedtab.encode.backends import PRECISIONS
from embedtab.encode.images import ImageLoadError, load_rgb
from embedtab.artifacts import ArtifactRecord, ArtifactStore, Plan
from embedtab.errors import DataError, UsageError
from embedtab.fingerprint import files_fingerprint, sha256_file
from embedtab.reporting import SILENT, Reporter

ON_ERROR = ("skip", "fail")


class ItemError(Exception):
    """An item that cannot be encoded (reason in str())."""


_SKIPPABLE = (ItemError, ImageLoadError)
_PACKAGES = ("torch", "numpy", "pyarrow", "pillow")


@dataclass
class EncodeOptions:
    """What both modalities share."""

    inputs: Sequence[str]
    name: str
    id_column: str = "item_id"
    model: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    normalize: bool = True
    shard_size: int = 10_000
    on_error: str = "skip"
    max_errors: int | None = None
    force: bool = False

    def check(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise UsageError("--batch-size and --shard-size must be at least 1")
        if self.on_error not in ON_ERROR:
            raise UsageError(f"invalid --on-error {self.on_error!r}: use skip or fail")
        if self.max_errors is not None and self.max_errors < 0:
            raise UsageError("--max-errors must be 0 or more")
        check_device(self.device)
        if self.precision not in PRECISIONS:
            raise UsageError(f"invalid --precision {self.precision!r}: use {', '.join(PRECISIONS)}")


@dataclass
class TextOptions(EncodeOptions):
    template: str | None = None
    text_columns: Sequence[str] = field(default_factory=tuple)


@dataclass
class ImageOptions(EncodeOptions):
    image_column: str = "image_path"
    image_root: str | None = None
    pretrained: str | None = None
    max_pixels: int = 50_000_000


@dataclass
class EncodeResult:
    record: ArtifactRecord
    up_to_date: bool


# ----------------------------------------------------------------------------- inputs
def template_fields(template: str) -> list[str]:
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"invalid --template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier() or spec or conversion:
            raise UsageError(
                f"invalid --template field {{{name}}}: use plain column names such as "
                "'{title}. {description}'"
            )
        if name not in fields:
            fields.append(name)
    if not fields:
        raise UsageError(f"--template {template!r} names no column; e.g. '{{title}}. {{description}}'")
    return fields


def text_template(options: TextOptions) -> str:
    if options.template and options.text_columns:
        raise UsageError("pass either --template or --text-column, not both")
    if options.template:
        return options.template
    if options.text_columns:
        return ". ".join("{" + c + "}" for c in options.text_columns)
    raise UsageError("say which text to encode: --template '{title}. {description}' or --text-column title")


def render_texts(table: pa.Table, template: str, fields: Sequence[str]) -> list[str]:
    """One string per row; nulls render as empty strings; surrounding whitespace stripped."""
    columns = {f: table.column(f).to_pylist() for f in fields}
    rendered = []
    for i in range(table.num_rows):
        values = {f: "" if columns[f][i] is None else columns[f][i] for f in fields}
        rendered.append(template.format_map(values).strip())
    return rendered


def check_ids(ids: pa.ChunkedArray | pa.Array, column: str, source: str) -> None:
    """Null or duplicate ids would make the table ambiguous: refuse them, naming rows and ids."""
    if ids.null_count:
        rows = np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[:5].tolist()
        raise DataError(f"{source}: {ids.null_count} row(s) have a null {column} (rows {rows})")
    counts = pc.value_counts(ids)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dupes):
        shown = ", ".join(f"{v} (x{c})" for v, c in zip(dupes.field("values").to_pylist()[:5], dupes.field("counts").to_pylist()[:5]))
        raise DataError(f"{source}: {len(dupes)} duplicate {column} value(s): {shown}")


# ----------------------------------------------------------------------------- core loop
class _Writer:
    """Writes vectors into parquet parts of at most shard_size rows, in input order."""

    def __init__(self, staging: Path, id_name: str, id_type: pa.DataType, shard_size: int):
        self.staging, self.id_name, self.id_type, self.shard_size = staging, id_name, id_type, shard_size
        self.ids: list[Any] = []
        self.vectors: list[np.ndarray] = []
        self.parts = 0
        self.rows = 0

    def add(self, ids: list[Any], vectors: np.ndarray) -> None:
        self.ids.extend(ids)
        self.vectors.append(vectors)
        if len(self.ids) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.ids:
            return
        table = tables.embeddings_table(
            self.id_name, pa.array(self.ids, type=self.id_type), np.concatenate(self.vectors)
        )
        tables.write_parquet(table, self.staging / tables.part_name(self.parts))
        self.parts += 1
        self.rows += len(self.ids)
        self.ids, self.vectors = [], []


def _encode_rows(
    ids: list[Any],
    sources: list[Any],
    load: Callable[[Any], Any],
    embed: Callable[[list[Any]], np.ndarray],
    batch_size: int,
    writer: _Writer,
    errors: list[tuple[Any, str, str]],
    options: EncodeOptions,
    reporter: Reporter,
    what: str,
) -> None:
    """Load and embed items batch by batch; failed loads are recorded, not raised (unless --on-error fail)."""
    with reporter.progress(f"encoding {what}", total=len(ids), unit=what) as advance:
        for start in range(0, len(ids), batch_size):
            batch_ids, batch_items = [], []
            for item_id, source in zip(ids[start : start + batch_size], sources[start : start + batch_size]):
                try:
                    batch_items.append(load(source))
                    batch_ids.append(item_id)
                except _SKIPPABLE as exc:
                    errors.append((item_id, str(source), str(exc)))
                    if options.on_error == "fail":
                        raise DataError(f"{options.id_column}={item_id}: {source}: {exc}") from None
                    _check_error_budget(errors, options)
            if batch_items:
                writer.add(batch_ids, embed(batch_items))
            advance(min(batch_size, len(ids) - start))
    writer.flush()


def _check_error_budget(errors: list, options: EncodeOptions) -> None:
    if options.max_errors is not None and len(errors) > options.max_errors:
        raise DataError(
            f"more than --max-errors {options.max_errors} items failed "
            f"(last: {options.id_column}={errors[-1][0]}: {errors[-1][2]}); nothing was written"
        )


def _errors_table(errors: list[tuple[Any, str, str]], id_name: str, id_type: pa.DataType) -> pa.Table:
    return pa.table(
        {
            id_name: pa.array([e[0] for e in errors], type=id_type),
            "input": pa.array([e[1] for e in errors], type=pa.string()),
            "reason": pa.array([e[2] for e in errors], type=pa.string()),
        }
    )


def _finish(
    store: ArtifactStore,
    plan: Plan,
    staging: Path,
    writer: _Writer,
    errors: list[tuple[Any, str, str]],
    identity: dict[str, Any],
    device: str,
    total: int,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> ArtifactRecord:
    options_id = writer.id_name
    tables.write_parquet(_errors_table(errors, options_id, writer.id_type), staging / "errors.parquet")
    metadata = {
        "id_column": options_id,
        "id_type": str(writer.id_type),
        "dim": identity["dim"],
        "model": identity,
        "count": writer.rows,
        **(extra or {}),
    }
    (staging / "embeddings.json").write_text(json.dumps(metadata, indent=2, default=str))
    summary = {
        "items": total,
        "encoded": writer.rows,
        "skipped": len(errors),
        "seconds": round(seconds, 3),
        "items_per_s": round(writer.rows / seconds, 1) if seconds > 0 else None,
    }
    return store.publish(plan, staging, metadata=metadata, summary=summary, device=device)


def _read_inputs(options: EncodeOptions, columns: list[str]) -> tuple[list[Path], pa.Table]:
    options.check()
    paths = tables.resolve_inputs(options.inputs)
    table = tables.read_table(paths, [options.id_column] + [c for c in columns if c != options.id_column])
    source = paths[0].name if len(paths) == 1 else f"{len(paths)} input files"
    if table.num_rows == 0:
        raise DataError(f"{source}: no rows to encode")
    check_ids(table.column(options.id_column), options.id_column, source)
    return paths, table


# ----------------------------------------------------------------------------- text
def run_text(store: ArtifactStore, options: TextOptions, reporter: Reporter = SILENT) -> EncodeResult:
    from embedtab.device import torch_device
    from embedtab.encode.backends import DEFAULT_TEXT_MODEL, TextBackend, resolve_precision

    template = text_template(options)
    fields = template_fields(template)
    model = options.model or DEFAULT_TEXT_MODEL
    paths, table = _read_inputs(options, fields)
    texts = render_texts(table, template, fields)
    params = {
        "modality": "text",
        "inputs": [str(p) for p in paths],
        "id_column": options.id_column,
        "template": template,
        "model": model,
        "normalize": options.normalize,
        "precision": options.precision,
        "on_error": options.on_error,
    }
    plan = store.plan(
        "embeddings", options.name, "encode text", params,
        input_files=files_fingerprint(paths), force=options.force,
        packages=_PACKAGES + ("sentence-transformers", "transformers"),
    )
    if plan.up_to_date:
        return EncodeResult(plan.existing, True)

    device = torch_device(options.device)
    precision = resolve_precision(options.precision, device)
    reporter.info(f"loading text model {model} on {device} ({precision})")
    backend = TextBackend(model, device, precision, options.batch_size, options.normalize)

    def load(text: str) -> str:
        if not text:
            raise ItemError("empty text")
        return text

    id_column = table.column(options.id_column)
    # A token covers at least one character, so only long strings need the tokenizer.
    truncated = sum(1 for t in texts if len(t) + 2 > backend.max_seq_length and backend.count_tokens(t) > backend.max_seq_length)
    if truncated:
        reporter.warn(f"{truncated} text(s) exceed the model's {backend.max_seq_length} tokens and are truncated")
    started = time.time()
    errors: list[tuple[Any, str, str]] = []
    with store.staging(plan) as staging:
        writer = _Writer(staging, options.id_column, id_column.type, options.shard_size)
        # Chunks of several model batches keep progress lively without slowing encode().
        _encode_rows(
            id_column.to_pylist(), texts, load, backend.embed_batch, options.batch_size * 4,
            writer, errors, options, reporter, "texts",
        )
        record = _finish(
            store, plan, staging, writer, errors, backend.identity, device, len(texts),
            time.time() - started, {"template": template, "truncated": truncated},
        )
    return EncodeResult(record, False)


# ----------------------------------------------------------------------------- image
def run_image(store: ArtifactStore, options: ImageOptions, reporter: Reporter = SILENT) -> EncodeResult:
    from embedtab.device import torch_device
    from embedtab.encode.backends import ImageBackend, resolve_precision
    if not options.model:
        raise UsageError("pass --model (an OpenCLIP model name, 'local-dir:/path', or embedtab-smoke-clip)")
    paths, table = _read_inputs(options, [options.image_column])
    root = Path(options.image_root) if options.image_root else paths[0].parent
    if not root.is_dir():
        raise DataError(f"--image-root {root} is not a directory")
    rel_paths = table.column(options.image_column).to_pylist()
    files = [None if p is None or not str(p).strip() else root / str(p) for p in rel_paths]
    # Image bytes are part of the input: a changed picture means a changed artifact.
    with reporter.progress("fingerprinting images", total=len(files), unit="images") as advance:
        digests = []
        for file in files:
            digests.append(sha256_file(file) if file is not None and file.is_file() else None)
            advance(1)
    params = {
        "modality": "image",
        "inputs": [str(p) for p in paths],
        "id_column": options.id_column,
        "image_column": options.image_column,
        "image_root": str(root),
        "model": options.model,
        "pretrained": options.pretrained,
        "normalize": options.normalize,
        "precision": options.precision,
        "max_pixels": options.max_pixels,
        "on_error": options.on_error,
    }
    plan = store.plan(
        "embeddings", options.name, "encode image", params,
        input_files=files_fingerprint(paths), force=options.force,
        packages=_PACKAGES + ("open-clip-torch", "torchvision"), content=digests,
    )
    if plan.up_to_date:
        return EncodeResult(plan.existing, True)

    device = torch_device(options.device)
    precision = resolve_precision(options.precision, device)
    reporter.info(f"loading image model {options.model} on {device} ({precision})")
    backend = ImageBackend(options.model, options.pretrained, device, precision, options.batch_size, options.normalize)
    if backend.smoke:
        reporter.warn("using the SMOKE CLIP model: seeded random weights, embeddings carry no meaning")

    def load(file: Path | None) -> Any:
        if file is None:
            raise ItemError("no image path")
        return backend.preprocess(load_rgb(file, options.max_pixels))

    id_column = table.column(options.id_column)
    started = time.time()
    errors: list[tuple[Any, str, str]] = []
    with store.staging(plan) as staging:
        writer = _Writer(staging, options.id_column, id_column.type, options.shard_size)
        _encode_rows(
            id_column.to_pylist(), files, load, backend.embed_batch, options.batch_size,
            writer, errors, options, reporter, "images",
        )
        record = _finish(
            store, plan, staging, writer, errors, backend.identity, device, len(files),
            time.time() - started, {"image_root": str(root)},
        )
    return EncodeResult(record, False)
