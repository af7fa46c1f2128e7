"""`embedtab encode`: item texts or images -> an embeddings artifact keyed by the raw item id.

Output (embeddings/<name>/):
    part-NNNNN.parquet   <id column> (original dtype), embedding fixed_size_list<float32>[dim]
    _metadata            parquet summary of the parts (merlin.io.Dataset(<folder>) reads just them)
    _errors.parquet      <id column>, input, reason  -- items skipped, with why
    _index.parquet       <id column>, key (content hash), row; for images path, size, mtime_ns
    _embeddings.json     encoder identity, dim, counts (also in the manifest record)

How a run goes:
 1. scan  -- stream the inputs once; every item gets a content key (sha256 of the rendered text or
             of the image bytes) or a reason it cannot be encoded. Memory: ids and 16-byte keys.
 2. plan  -- unchanged inputs and options: "up to date". Otherwise keys already in the previous
             artifact (same encoder) are reused, and each distinct new key is encoded once.
 3. work  -- the distinct new contents, in shards; each shard is published on its own (work.py),
             so a killed run resumes and `--shard i/n` splits the work across machines.
 4. seal  -- stream the final parts in input order from reused and new vectors; publish atomically.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import (
    EMBEDDINGS_ERRORS,
    EMBEDDINGS_INDEX,
    EMBEDDINGS_INFO,
    PARQUET_SUMMARY,
    ArtifactRecord,
    ArtifactStore,
)
from embedtab.device import check_device
from embedtab.encode import sources as src
from embedtab.encode.backends import PRECISIONS
from embedtab.encode.encoders import Settings
from embedtab.encode.inputs import ROWS, default_workers
from embedtab.encode.work import WorkDir, copy_previous_vectors
from embedtab.errors import ArtifactExists, DataError, UsageError
from embedtab.fingerprint import files_fingerprint, hash_value
from embedtab.reporting import SILENT, Reporter

ON_ERROR = ("skip", "fail")
_PACKAGES = ("torch", "numpy", "pyarrow", "pillow")


# ----------------------------------------------------------------------------- options
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
    shard_size: int = 4096
    on_error: str = "skip"
    max_errors: int | None = None
    dedupe: bool = False
    shard: str | None = None  # "i/n", 1-based: this job encodes every n-th work shard
    seal: bool = False  # only assemble shards other jobs made
    force: bool = False
    dask_scheduler: str | None = None  # run the work shards as tasks on this Dask cluster
    encoder: str = "auto"  # a registered encoder (embedtab encoders); auto: by the model, else the default
    pretrained: str | None = None  # OpenCLIP: a pretrained tag or checkpoint file
    rows: ClassVar[str] = "text"  # what an input row is (embedtab.encode.inputs)

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
        if self.shard and self.seal:
            raise UsageError("--seal assembles the shards of all jobs; do not combine it with --shard")
        parse_shard(self.shard)

    def recipe(self) -> dict[str, Any]:
        """What decides the vectors (inputs aside): the same recipe may update an artifact in place."""
        recipe = {"model": self.model, "normalize": self.normalize, "precision": self.precision,
                  "id_column": self.id_column, "dedupe": self.dedupe}
        if self.encoder != "auto":  # (only when chosen: artifacts made before encoders were plugins stay up to date)
            recipe["encoder"] = self.encoder
        return recipe

    def settings(self, device: str, precision: str) -> Settings:
        return Settings(self.rows, device, precision, self.batch_size, self.normalize, self.pretrained,
                        getattr(self, "max_pixels", 50_000_000))

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
    image_column: str = "image_path"
    image_root: str | None = None
    max_pixels: int = 50_000_000
    workers: int | None = None  # DataLoader worker processes (None: one per spare core, at most 4)
    allow_outside_root: bool = False  # open paths that resolve outside image_root (or the folder)

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
    if not spec:
        return 0, 1
    try:
        index, count = (int(p) for p in spec.split("/"))
    except ValueError:
        index = count = 0
    if not (count >= 1 and 1 <= index <= count):
        raise UsageError(f"invalid --shard {spec!r}: use i/n with 1 <= i <= n, e.g. --shard 2/4")
    return index - 1, count


def text_template(options: TextOptions) -> str:
    if options.template and options.text_columns:
        raise UsageError("pass either --template or --text-column, not both")
    if options.template:
        return options.template
    if options.text_columns:
        return ". ".join("{" + c + "}" for c in options.text_columns)
    raise UsageError("say which text to encode: --template '{title}. {description}' or --text-column title")


# ----------------------------------------------------------------------------- scan
@dataclass
class Scan:
    """Every item of the input, in order: id, content key, and why it is unusable (if it is)."""

    ids: pa.Array
    keys: np.ndarray  # S16; EMPTY_KEY where the item is unusable
    problems: dict[int, tuple[str, str]]  # position -> (input, reason)
    paths: pa.Array | None = None  # images: file path, size and mtime per item (the stat cache)
    sizes: np.ndarray | None = None
    mtimes: np.ndarray | None = None

    @property
    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        sink = pa.BufferOutputStream()
        batch = pa.record_batch([self.ids], names=["id"])
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest.update(sink.getvalue().to_pybytes())
        digest.update(self.keys.tobytes())
        digest.update(hash_value(sorted((p, r) for p, (_, r) in self.problems.items())).encode())
        return digest.hexdigest()


def _scan(source: src.Source, options: EncodeOptions, stat_cache: src.StatCache, reporter: Reporter) -> Scan:
    ids_parts: list[pa.Array] = []
    keys = bytearray()  # 16 bytes per item, appended in place (no object per item)
    problems: dict[int, tuple[str, str]] = {}
    paths: list[str | None] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    position = 0
    rows = ROWS[source.modality]
    with reporter.progress("scanning inputs", total=None, unit="items") as advance:
        for ids, values in source.batches(options.shard_size):
            ids_parts.append(ids)
            for value in values:
                try:
                    key, size, mtime = rows.key(source, value, stat_cache)
                except src.ItemProblem as exc:
                    key, size, mtime = src.EMPTY_KEY, -1, -1
                    problems[position] = ("" if value is None else value[:200], str(exc))
                    if options.on_error == "fail":
                        raise DataError(f"{options.id_column}={_id_at(ids_parts, position)}: {exc}") from None
                keys += key
                if rows.keeps_files:
                    sizes.append(size)
                    mtimes.append(mtime)
                    paths.append(value)
                position += 1
            advance(len(values))
    ids_all = pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in ids_parts]) if ids_parts else pa.array([], source.id_type())
    if len(ids_all) == 0:
        raise DataError(f"{source.describe()}: no rows to encode")
    scan = Scan(ids_all, np.frombuffer(bytes(keys), dtype=f"S{src.KEY_BYTES}").copy(), problems)
    if rows.keeps_files:
        scan.paths = pa.array(paths, pa.string())
        scan.sizes, scan.mtimes = np.array(sizes, np.int64), np.array(mtimes, np.int64)
    _check_ids(scan, options, source.describe())
    return scan


def _id_at(parts: list[pa.Array], position: int) -> Any:
    for part in parts:
        if position < len(part):
            return part[position].as_py()
        position -= len(part)
    return None


def _check_ids(scan: Scan, options: EncodeOptions, where: str) -> None:
    """Null ids are refused; duplicates are refused unless --dedupe (then the first one wins)."""
    ids, column = scan.ids, options.id_column
    if ids.null_count:
        rows = np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[:5].tolist()
        raise DataError(f"{where}: {ids.null_count} row(s) have a null {column} (rows {rows})")
    counts = pc.value_counts(ids)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    if not len(dupes):
        return
    if not options.dedupe:
        shown = ", ".join(f"{v} (x{c})" for v, c in zip(dupes.field("values").to_pylist()[:5], dupes.field("counts").to_pylist()[:5]))
        raise DataError(f"{where}: {len(dupes)} duplicate {column} value(s): {shown}; pass --dedupe to keep the first of each")
    seen: set[Any] = set()
    for position, value in enumerate(ids.to_pylist()):
        if value in seen:
            scan.problems[position] = ("", "duplicate id (first occurrence kept)")
            scan.keys[position] = src.EMPTY_KEY
        seen.add(value)


# ----------------------------------------------------------------------------- reuse & work list
@dataclass
class Previous:
    """The artifact being updated, when its vectors can be reused (same encoder)."""

    record: ArtifactRecord
    keys: np.ndarray  # sorted S16
    rows: np.ndarray  # artifact row of each sorted key

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Artifact row per key, -1 where the key is not in the previous artifact."""
        if len(self.keys) == 0:
            return np.full(len(keys), -1, np.int64)
        where = np.searchsorted(self.keys, keys)
        where = np.minimum(where, len(self.keys) - 1)
        found = self.keys[where] == keys
        return np.where(found, self.rows[where], -1)


def _read_index(store: ArtifactStore, record: ArtifactRecord) -> pa.Table | None:
    path = store.sidecar(record, EMBEDDINGS_INDEX)
    return pq.read_table(path) if path is not None and path.exists() else None


def _stat_cache(index: pa.Table | None) -> src.StatCache:
    if index is None or "path" not in index.column_names:
        return src.StatCache()
    keys = src.keys_from_arrow(index.column("key"))
    entries = {
        path: (size, mtime, keys[i].ljust(src.KEY_BYTES, b"\0"))
        for i, (path, size, mtime) in enumerate(zip(index.column("path").to_pylist(), index.column("size").to_pylist(), index.column("mtime_ns").to_pylist()))
        if path is not None and size >= 0
    }
    return src.StatCache(entries)


def _previous(record: ArtifactRecord | None, index: pa.Table | None, identity: dict[str, Any]) -> Previous | None:
    if record is None or index is None or record.metadata.get("encoder") != identity:
        return None
    rows = np.asarray(index.column("row").to_numpy(zero_copy_only=False), np.int64)
    keys = src.keys_from_arrow(index.column("key"))
    usable = rows >= 0
    keys, rows = keys[usable], rows[usable]
    order = np.argsort(keys, kind="stable")
    return Previous(record, keys[order], rows[order])


@dataclass
class WorkList:
    reuse_rows: np.ndarray  # per item: row in the previous artifact, or -1
    work_of_item: np.ndarray  # per item: index into `positions`, or -1
    positions: np.ndarray  # per distinct new content: position of its first item (ascending)


def _work_list(scan: Scan, previous: Previous | None) -> WorkList:
    n = len(scan.keys)
    bad = np.zeros(n, bool)
    bad[list(scan.problems)] = True
    reuse = previous.lookup(scan.keys) if previous is not None else np.full(n, -1, np.int64)
    reuse[bad] = -1
    need = np.flatnonzero(~bad & (reuse < 0))
    work_of_item = np.full(n, -1, np.int64)
    if len(need) == 0:
        return WorkList(reuse, work_of_item, np.zeros(0, np.int64))
    # One encode per distinct content, ordered by where it first appears. (Work stays in input
    # order so shards fill while the input streams by; texts are sorted by length within a shard.)
    _, first, inverse = np.unique(scan.keys[need], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    work_of_item[need] = rank[inverse.ravel()]
    return WorkList(reuse, work_of_item, need[first[order]])


# ----------------------------------------------------------------------------- encoder
def _encoder_class(options: EncodeOptions, model: str) -> type:
    from embedtab.encode.encoders import resolve

    return resolve(options.encoder, model, options.rows)


def _load_encoder(options: EncodeOptions, cls: type, model: str, settings: Settings, reporter: Reporter) -> Any:
    reporter.info(f"loading {cls.name} model {model} on {settings.device} ({settings.precision}) for {ROWS[options.rows].plural}")
    encoder = cls(model, settings)
    if encoder.warning:
        reporter.warn(encoder.warning)
    return encoder


# ----------------------------------------------------------------------------- work
def _stream_work_values(source: src.Source, positions: np.ndarray, shards: list[int], work: WorkDir, rows: int):
    """Yield (shard, values) for the given work shards, streaming the input once, in order."""
    wanted: dict[int, tuple[int, int]] = {}
    for shard in shards:
        start, stop = work.bounds(shard)
        for j in range(start, stop):
            wanted[int(positions[j])] = (shard, j - start)
    pending: dict[int, list] = {}
    remaining = {shard: work.bounds(shard)[1] - work.bounds(shard)[0] for shard in shards}
    position = 0
    for _, values in source.batches(rows):
        for value in values:
            hit = wanted.get(position)
            position += 1
            if hit is None:
                continue
            shard, offset = hit
            pending.setdefault(shard, [None] * remaining[shard])[offset] = value
            remaining[shard] -= 1
            if remaining[shard] == 0:
                yield shard, pending.pop(shard)
    if pending:
        raise DataError("the inputs changed while encoding (items vanished); re-run")


def _do_work(source, options, scan, worklist, work, shards, backend, reporter) -> tuple[int, int]:
    decode_errors = truncated = 0
    todo_items = sum(work.bounds(s)[1] - work.bounds(s)[0] for s in shards)
    what = ROWS[source.modality].plural
    with reporter.progress(f"encoding {what}", total=todo_items, unit=what) as advance:
        for shard, values in _stream_work_values(source, worklist.positions, shards, work, options.shard_size):
            vectors, errors, cut = ROWS[source.modality].encode(backend, values, _workers(options), advance)
            start = work.bounds(shard)[0]
            errors = [(start + i, reason) for i, reason in errors]
            if errors and options.on_error == "fail":
                position = int(worklist.positions[errors[0][0]])
                raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {values[errors[0][0] - start]}: {errors[0][1]}")
            work.save(shard, vectors, errors)
            decode_errors += len(errors)
            truncated += cut
            _check_budget(len(scan.problems) + decode_errors, options)
    return decode_errors, truncated


def _workers(options: EncodeOptions) -> int:
    workers = getattr(options, "workers", None)
    return default_workers() if workers is None else workers


def _do_work_on_dask(client, source, options, scan, worklist, work, shards, cls, model, settings, reporter) -> tuple[int, int]:
    """`_do_work` with each shard a task on the cluster (see embedtab.encode.distributed)."""
    from embedtab.encode import distributed

    task = distributed.ShardTask(cls.name, model, settings, getattr(options, "workers", None), str(work.path),
                                 work.shards, work.shard_size, work.total)
    in_flight = 2 * max(1, len(client.scheduler_info()["workers"]))
    decode_errors = truncated = 0
    todo_items = sum(work.bounds(s)[1] - work.bounds(s)[0] for s in shards)
    what = ROWS[source.modality].plural
    with reporter.progress(f"encoding {what} on Dask", total=todo_items, unit=what) as advance:
        values = _stream_work_values(source, worklist.positions, shards, work, options.shard_size)
        for shard, errors, cut in distributed.run_shards(client, task, values, advance, in_flight):
            if errors and options.on_error == "fail":
                position = int(worklist.positions[errors[0][0]])
                raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {errors[0][1]}")
            decode_errors += len(errors)
            truncated += cut
            _check_budget(len(scan.problems) + decode_errors, options)
    return decode_errors, truncated


def _check_budget(errors: int, options: EncodeOptions) -> None:
    if options.max_errors is not None and errors > options.max_errors:
        raise DataError(f"{errors} items cannot be encoded, more than --max-errors {options.max_errors}; nothing was published")


# ----------------------------------------------------------------------------- seal
def _seal(store, plan, source, options, scan, worklist, work, previous, identity, preprocess, device, started, reporter, truncated, model_seconds) -> ArtifactRecord:
    dim = work.verify() or (previous.record.metadata["dim"] if previous else 0)
    decode = work.errors()  # work index -> reason
    n = len(scan.keys)
    failed_work = np.zeros(len(worklist.positions), bool)
    if decode:
        failed_work[list(decode)] = True
    item_work = worklist.work_of_item
    # (nothing new to encode -- every item reused -- leaves failed_work empty)
    item_failed = (item_work >= 0) & (failed_work[np.maximum(item_work, 0)] if len(failed_work) else False)
    problems = dict(scan.problems)
    for position in np.flatnonzero(item_failed):
        problems[int(position)] = (scan.paths[int(position)].as_py() if scan.paths is not None else "", decode[int(item_work[position])])
    _check_budget(len(problems), options)
    if options.on_error == "fail" and problems:
        position, (value, reason) = next(iter(sorted(problems.items())))
        raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {value}: {reason}")
    ok = np.ones(n, bool)
    ok[list(problems)] = False
    if not ok.any():
        _clean_work(store, options.name)  # every shard is done and nothing in it is usable
        reasons = Counter(reason for _, reason in problems.values())
        raise DataError(f"{source.describe()}: none of the {n} items could be encoded "
                        f"({', '.join(f'{count} {reason}' for reason, count in reasons.most_common(3))})")

    previous_npy = None
    if previous is not None and (worklist.reuse_rows >= 0).any():
        parts = tables.part_files(store.path("embeddings", previous.record.name))
        previous_npy = np.load(copy_previous_vectors(parts, work.path / "previous.npy", previous.record.rows(prefix="part-"), dim), mmap_mode="r")

    id_name = options.id_column
    with store.staging(plan) as staging, reporter.progress("writing parts", total=n, unit="items") as advance:
        index_writer = _IndexWriter(staging / EMBEDDINGS_INDEX, id_name, scan.ids.type, ROWS[source.modality].keeps_files)
        row = 0
        parts = 0
        for start in range(0, n, options.shard_size):
            stop = min(start + options.shard_size, n)
            keep = np.flatnonzero(ok[start:stop]) + start
            rows_out = np.full(stop - start, -1, np.int64)
            if len(keep):
                vectors = np.empty((len(keep), dim), np.float32)
                reused = worklist.reuse_rows[keep]
                from_prev = reused >= 0
                if from_prev.any():
                    vectors[from_prev] = previous_npy[reused[from_prev]]
                new_work = item_work[keep[~from_prev]]
                vectors[~from_prev] = _gather_work(work, new_work, dim)
                tables.write_parquet(tables.embeddings_table(id_name, scan.ids.take(pa.array(keep)), vectors), staging / tables.part_name(parts))
                parts += 1
                rows_out[keep - start] = np.arange(row, row + len(keep))
                row += len(keep)
            index_writer.write(scan, start, stop, rows_out)
            advance(stop - start)
        index_writer.close()
        positions = sorted(problems)
        errors = pa.table({
            id_name: scan.ids.take(pa.array(positions, pa.int64())) if positions else pa.array([], scan.ids.type),
            "input": pa.array([problems[p][0] for p in positions], pa.string()),
            "reason": pa.array([problems[p][1] for p in positions], pa.string()),
        })
        tables.write_parquet(errors, staging / EMBEDDINGS_ERRORS)
        tables.write_summary(staging, tables.part_files(staging), PARQUET_SUMMARY)
        reused_items = int(((worklist.reuse_rows >= 0) & ok).sum())
        seconds = time.time() - started
        summary = {
            "items": n,
            "encoded": int(row - reused_items),
            "distinct_encoded": int(len(worklist.positions) - len(decode)),
            "reused": reused_items,
            "skipped": len(problems),
            "seconds": round(seconds, 3),
            "model_seconds": round(model_seconds, 3),  # the rest is loading, decoding and writing
            "items_per_s": round(n / seconds, 1) if seconds > 0 else None,
        }
        metadata = {
            "id_column": id_name,
            "id_type": str(scan.ids.type),
            "dim": int(dim),
            "count": int(row),
            "encoder": identity,
            "model": _model_metadata(options, identity, preprocess),
            "device": device,
            "shard_size": options.shard_size,
            "truncated_texts": truncated,
            **options.metadata(),
        }
        if preprocess is not None:
            metadata["preprocess"] = preprocess
        (staging / EMBEDDINGS_INFO).write_text(json.dumps({**metadata, "summary": summary}, indent=2, default=str))
        record = store.publish(plan, staging, metadata=metadata, summary=summary, device=device)
    return record


def _model_metadata(options: EncodeOptions, identity: dict[str, Any], preprocess: Any) -> dict[str, Any]:
    from embedtab.encode.smoke import SMOKE_MODEL

    meta = {k: identity.get(k) for k in ("library", "model", "normalize", "precision")}
    if "encoder" in identity:
        meta["encoder"] = identity["encoder"]
    if options.pretrained or preprocess is not None:
        meta.update(pretrained=options.pretrained, smoke_model=identity["model"] == SMOKE_MODEL, preprocess=preprocess)
    return meta


def _gather_work(work: WorkDir, indices: np.ndarray, dim: int) -> np.ndarray:
    out = np.empty((len(indices), dim), np.float32)
    if not len(indices):
        return out
    shards = indices // work.shard_size
    for shard in np.unique(shards):
        mask = shards == shard
        vectors = work.vectors(int(shard))  # memory-mapped; dropped after the gather
        out[mask] = vectors[indices[mask] - shard * work.shard_size]
        del vectors
    return out


class _IndexWriter:
    """_index.parquet, written part by part (id, key, row; for images path, size, mtime_ns)."""

    def __init__(self, path: Path, id_name: str, id_type: pa.DataType, images: bool):
        fields = [(id_name, id_type), ("key", pa.binary(src.KEY_BYTES)), ("row", pa.int64())]
        if images:
            fields += [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.images = images

    def write(self, scan: Scan, start: int, stop: int, rows: np.ndarray) -> None:
        columns = [scan.ids.slice(start, stop - start), src.keys_to_arrow(scan.keys[start:stop]), pa.array(rows)]
        if self.images:
            columns += [scan.paths.slice(start, stop - start), pa.array(scan.sizes[start:stop]), pa.array(scan.mtimes[start:stop])]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


# ----------------------------------------------------------------------------- entry points
def run_text(store: ArtifactStore, options: TextOptions, reporter: Reporter = SILENT) -> EncodeResult:
    return _run(store, options, reporter)


def run_image(store: ArtifactStore, options: ImageOptions, reporter: Reporter = SILENT) -> EncodeResult:
    return _run(store, options, reporter)


def _run(store: ArtifactStore, options: EncodeOptions, reporter: Reporter) -> EncodeResult:
    options.check()
    cls = _encoder_class(options, options.model or "")
    model = options.model or cls.default_model
    if not model:
        raise UsageError(f"model: {cls.name} needs a model ({cls.model_help})")
    cls.check(model, options.pretrained)
    source = options.source()
    existing = store.get("embeddings", options.name)
    # Nothing is reused from a damaged artifact (its index or vectors may be wrong): it is re-encoded.
    intact = existing is not None and not store.damaged_files(existing)
    index = _read_index(store, existing) if intact else None
    started = time.time()
    scan = _scan(source, options, _stat_cache(index), reporter)
    if len(scan.problems) == len(scan.keys):  # nothing to encode: say why, leave nothing behind
        reasons = Counter(reason for _, reason in scan.problems.values())
        what = ROWS[source.modality].nothing
        raise DataError(f"{source.describe()}: no row has {what}: {len(scan.keys)} of {len(scan.keys)} "
                        f"({', '.join(f'{n} {reason}' for reason, n in reasons.most_common())})")

    params = {**options.recipe(), "model": model, "on_error": options.on_error, "max_errors": options.max_errors,
              "inputs": [str(p) for p in (source.paths if source.folder is None else [source.folder])]}
    if existing is not None and not options.force:
        _check_same_source(existing, params["inputs"], scan)
    kind = ROWS[source.modality].name
    # The scan (ids, content keys of the texts or image files, unusable rows) is what decides the
    # vectors: other columns of the input tables may change without making the artifact stale.
    files = files_fingerprint(source.paths) if source.folder is None else []
    plan = store.plan(
        "embeddings", options.name, f"encode {kind}", params, read_files=files, was=(files, scan.fingerprint),
        content=scan.fingerprint, force=options.force, refresh=True, refresh_ignore=("inputs", "on_error", "max_errors"),
        packages=tuple(dict.fromkeys(_PACKAGES + cls.packages)),
        warn=reporter.warn,
    )
    if plan.up_to_date:
        return EncodeResult(plan.existing, True, dict(plan.existing.summary))
    if options.shard or options.seal:  # sharded jobs meet in the work folder, not on the build lock
        return _make(store, options, plan, source, scan, existing, index, cls, model, started, reporter)
    with store.building(plan) as made:
        if made is not None:  # an identical run finished it while this one waited
            return EncodeResult(made, True, dict(made.summary))
        return _make(store, options, plan, source, scan, existing, index, cls, model, started, reporter)


def _make(store: ArtifactStore, options: EncodeOptions, plan: Any, source: src.Source, scan: Scan,
          existing: ArtifactRecord | None, index: pa.Table | None, cls: type, model: str, started: float,
          reporter: Reporter) -> EncodeResult:
    """Encode what the plan needs (resuming finished work shards), then seal the artifact."""
    from embedtab.device import torch_device
    from embedtab.encode.backends import resolve_precision

    client = None
    if options.dask_scheduler and not options.seal:
        from embedtab.encode import distributed

        client = distributed.connect(options.dask_scheduler)
        device = client.submit(distributed.worker_device, options.device, pure=False).result()  # the workers' device
        reporter.info(f"encoding on the Dask cluster at {options.dask_scheduler} "
                      f"({len(client.scheduler_info()['workers'])} workers, {device})")
    else:
        device = torch_device(options.device)
    precision = resolve_precision(options.precision, device)
    settings = options.settings(device, precision)
    identity = cls.identity(model, settings)
    previous = _previous(existing, index, identity) if index is not None and not options.force else None
    worklist = _work_list(scan, previous)
    key = hash_value([plan.input_fingerprint, identity, previous.record.fingerprint if previous else None, options.shard_size])[:16]
    work = WorkDir.open(store.work_path("embeddings", options.name, key), len(worklist.positions), options.shard_size)

    job, jobs = parse_shard(options.shard)
    mine = [s for s in range(work.shards) if s % jobs == job]
    todo = [] if options.seal else [s for s in mine if not work.is_done(s)]
    if todo and len(todo) < len(mine):
        reporter.info(f"resuming: {len(mine) - len(todo)} of {len(mine)} work shards already done")
    decode_errors = truncated = 0
    backend = None
    if todo and client is not None:
        try:
            decode_errors, truncated = _do_work_on_dask(client, source, options, scan, worklist, work, todo, cls, model, settings, reporter)
        finally:
            client.close()
    elif todo:
        backend = _load_encoder(options, cls, model, settings, reporter)
        decode_errors, truncated = _do_work(source, options, scan, worklist, work, todo, backend, reporter)
    # The preprocessing an image encoder applies is recorded; when this run encoded nothing, it is
    # the previous artifact's (same identity) or, sealing other jobs' shards, asked of the encoder.
    if backend is not None:
        preprocess = backend.preprocess_config
    elif previous is not None:
        preprocess = previous.record.metadata.get("preprocess")
    else:
        preprocess = _load_encoder(options, cls, model, settings, reporter).preprocess_config if ROWS[options.rows].keeps_files else None

    missing = work.missing()
    if missing:
        if options.seal:
            owners = sorted({s % jobs + 1 for s in missing}) if jobs > 1 else None
            raise DataError(
                f"cannot seal {options.name!r}: {len(missing)} of {work.shards} work shards are missing "
                f"(e.g. {missing[:5]}) in {work.path}; run the --shard jobs first"
                + (f" ({owners})" if owners else "")
            )
        return EncodeResult(None, False, {"items": len(scan.keys), "work_shards": work.shards, "done_shards": work.shards - len(missing)}, missing)

    with store.lock():  # one sealer at a time; another shard job may have sealed already
        done = store.get("embeddings", options.name)
        if store.current(done, plan.input_fingerprint):
            return EncodeResult(done, True, dict(done.summary))
        record = _seal(store, plan, source, options, scan, worklist, work, previous, identity, preprocess,
                       device, started, reporter, truncated, backend.model_seconds if backend else 0.0)
        _clean_work(store, options.name)
    if truncated:
        reporter.warn(f"{truncated} text(s) exceed the model's maximum length and were truncated")
    return EncodeResult(record, False, dict(record.summary))


def _source_of(inputs: list[str]) -> str:
    """What an artifact was encoded from: tables (their paths may change: a catalog's daily file
    or a grown glob is an update) or one image folder (another folder is another input)."""
    if all(Path(p).suffix in tables.TABLE_SUFFIXES for p in inputs):
        return "tables"
    return f"the folder {inputs[0]}"


def _id_kind(type_name: str | None) -> str | None:
    if not type_name:
        return None
    return "integer" if type_name.startswith(("int", "uint")) else "string" if "string" in type_name else type_name


def _check_same_source(existing: ArtifactRecord, inputs: list[str], scan: Scan) -> None:
    """An incremental update keeps the artifact's source and id type; anything else needs --force."""
    old, new = _source_of(existing.params.get("inputs", [])), _source_of(inputs)
    old_ids, new_ids = _id_kind(existing.metadata.get("id_type")), _id_kind(str(scan.ids.type))
    if old != new or (old_ids and old_ids != new_ids):
        made = f"{old} with {old_ids} ids" if old_ids else old
        raise ArtifactExists(
            f"embeddings {existing.name!r} were encoded from {made}; this run reads {new} with {new_ids} ids. "
            "Pass --force to replace them, or choose another --name"
        )


def _clean_work(store: ArtifactStore, name: str) -> None:
    import shutil

    shutil.rmtree(store.work_path("embeddings", name), ignore_errors=True)
