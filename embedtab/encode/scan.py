"""Phase 1, scan: stream the inputs once; every item gets a content key (sha256 of the rendered
text or of the image bytes) or the reason it cannot be encoded. Memory: ids and 16-byte keys."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedtab.artifacts import EMBEDDINGS_INDEX, ArtifactRecord, ArtifactStore
from embedtab.encode import sources as src
from embedtab.encode.inputs import ROWS
from embedtab.encode.options import EncodeOptions
from embedtab.errors import DataError
from embedtab.fingerprint import hash_value
from embedtab.reporting import Reporter


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


def scan_inputs(source: src.Source, options: EncodeOptions, stat_cache: src.StatCache, reporter: Reporter) -> Scan:
    ids_parts: list[pa.Array] = []
    keys = bytearray()  # 16 bytes per item, appended in place (no object per item)
    problems: dict[int, tuple[str, str]] = {}
    paths: list[str | None] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    position = 0
    rows = ROWS[source.modality]

    def key_of(value: Any) -> tuple[bytes, int, int] | src.ItemProblem:
        try:
            return rows.key(source, value, stat_cache)
        except src.ItemProblem as exc:
            return exc

    # Image keys hash file contents: threads read and hash several files at once (hashlib and
    # file reads release the GIL). Text keys are cheap: computed inline.
    pool = ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) if rows.keeps_files else None
    with reporter.progress("scanning inputs", total=None, unit="items") as advance, pool or contextlib.nullcontext():
        for ids, values in source.batches(options.shard_size):
            ids_parts.append(ids)
            outcomes = pool.map(key_of, values) if pool is not None else map(key_of, values)
            for value, outcome in zip(values, outcomes):
                if isinstance(outcome, src.ItemProblem):
                    key, size, mtime = src.EMPTY_KEY, -1, -1
                    problems[position] = ("" if value is None else value[:200], str(outcome))
                    if options.on_error == "fail":
                        raise DataError(f"{options.id_column}={_id_at(ids_parts, position)}: {outcome}") from None
                else:
                    key, size, mtime = outcome
                keys += key
                if rows.keeps_files:
                    sizes.append(size)
                    mtimes.append(mtime)
                    paths.append(value)
                position += 1
            advance(len(values))
    ids_all = (
        pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in ids_parts])
        if ids_parts
        else pa.array([], source.id_type())
    )
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


def read_index(store: ArtifactStore, record: ArtifactRecord) -> pa.Table | None:
    path = store.sidecar(record, EMBEDDINGS_INDEX)
    return pq.read_table(path) if path is not None and path.exists() else None


def stat_cache_from(index: pa.Table | None) -> src.StatCache:
    if index is None or "path" not in index.column_names:
        return src.StatCache()
    keys = src.keys_from_arrow(index.column("key"))
    entries = {
        path: (size, mtime, keys[i].ljust(src.KEY_BYTES, b"\0"))
        for i, (path, size, mtime) in enumerate(
            zip(index.column("path").to_pylist(), index.column("size").to_pylist(), index.column("mtime_ns").to_pylist())
        )
        if path is not None and size >= 0
    }
    return src.StatCache(entries)
