"""Reading input tables and reading/writing embedding parquet files (pyarrow throughout)."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab.errors import DataError, UsageError

TABLE_SUFFIXES = (".parquet", ".csv")
EMBEDDING = "embedding"
# Data parts of an embeddings artifact: part-00000.parquet, ... Spelled here, below the artifact
# layer (embedtab.artifacts.layout names every other file), because the part writer lives here.
PART_PREFIX = "part-"


def resolve_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A file, a glob, a directory of parquet/csv files, or a list of those -> sorted file list."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[Path] = []
    for item in specs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            hits = [p for p in sorted(path.iterdir()) if p.suffix in TABLE_SUFFIXES and p.is_file()]
            if not hits:
                raise DataError(f"{path} holds no .parquet or .csv files")
            found.extend(hits)
        elif any(ch in text for ch in "*?["):
            hits = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
            if not hits:
                raise DataError(f"no files match {text}")
            found.extend(hits)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise DataError(f"input {text} is {special_file_kind(path)}, not a file")
        else:
            raise DataError(f"input {text} does not exist")
    for path in found:
        if path.suffix not in TABLE_SUFFIXES:
            raise UsageError(f"{path}: unsupported input format (use .parquet or .csv)")
    return found


def special_file_kind(path: Path) -> str:
    """What a path that exists but is no regular file or directory is, for messages."""
    import stat

    mode = path.stat().st_mode
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def file_schema(path: Path) -> pa.Schema:
    """The schema of one parquet or csv input, its column names checked: a header that is not
    UTF-8 is one line naming the file (and the field), like any file that cannot be read."""
    import pyarrow.csv as pacsv

    try:
        if path.suffix == ".csv":
            with pacsv.open_csv(path) as reader:
                schema = reader.schema
        else:
            schema = pq.read_schema(path)
    except UnicodeDecodeError:
        raise DataError(_bad_header(path, None)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    for position in range(len(schema)):  # arrow decodes column names lazily, and does not check them
        try:
            _ = schema.field(position).name  # (the decoding is what is checked)
        except UnicodeDecodeError:
            raise DataError(_bad_header(path, position)) from None
    return schema


def _bad_header(path: Path, position: int | None) -> str:
    field = "" if position is None else f" (field {position + 1})"
    if path.suffix == ".csv":
        return f"{path}: the header row{field} is not valid UTF-8 text; save the file as UTF-8"
    return f"{path}: a column name{field} is not valid UTF-8 text; rename the column"


def read_column(path: Path, column: str) -> pa.ChunkedArray:
    """One column of a parquet or csv file; a missing column or unreadable file names both."""
    return read_columns(path, [column]).column(column)


def read_columns(path: Path, columns: Sequence[str]) -> pa.Table:
    """These columns of a parquet or csv file, in one read; a missing column or unreadable file names both."""
    import pyarrow.csv as pacsv

    what = f"column {columns[0]!r}" if len(columns) == 1 else f"columns {', '.join(columns)}"
    try:
        if path.suffix == ".csv":
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=list(columns)))
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (it has {', '.join(names)})")
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        raise DataError(f"{path}: cannot read {what} ({str(exc).splitlines()[0]})") from None


def embedding_type(dim: int) -> pa.DataType:
    """fixed_size_list<element: float not null>[dim]: values declared non-null (a vector has no
    missing components), which lets parquet readers skip the per-value definition levels --
    reading is ~1.6x faster than with nullable values. Older artifacts (nullable values) read the same."""
    return pa.list_(pa.field("element", pa.float32(), nullable=False), dim)


def embedding_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(rows, dim) -> fixed_size_list<float32>[dim], without copying float32 input."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, type=embedding_type(vectors.shape[1]))


def embeddings_table(id_name: str, ids: pa.Array, vectors: np.ndarray) -> pa.Table:
    """`id` (original dtype) + `embedding` as fixed_size_list<float32>[dim]."""
    return pa.table({id_name: ids, EMBEDDING: embedding_column(vectors)})


def vectors(table: pa.Table | pa.RecordBatch, column: str = EMBEDDING) -> np.ndarray:
    """(rows, dim) float32 array of a fixed-size-list column: a view for a single chunk,
    one copy for several (never a combine_chunks copy plus a conversion copy)."""
    col = table.column(column)
    if not pa.types.is_fixed_size_list(col.type):
        raise DataError(f"column {column!r} is {col.type}, expected a fixed-size list of float32")
    dim = col.type.list_size
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    arrays = [_values(c).to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim) for c in chunks]
    if not arrays:
        return np.zeros((0, dim), np.float32)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _values(chunk: pa.FixedSizeListArray) -> pa.Array:
    """The chunk's float values: a slice of its child array when no vector is null (flatten()
    does the same but costs ~2 ms per 16k x 512 batch)."""
    if chunk.null_count:
        return chunk.flatten()
    dim = chunk.type.list_size
    return chunk.values.slice(chunk.offset * dim, len(chunk) * dim)


ROW_GROUP = 16_384


def writer_options(columns: Sequence[str]) -> dict:
    """zstd for ordinary columns; float vectors stored plain (they barely compress, and dictionary
    or zstd decoding would triple read time) and without min/max statistics (no reader prunes on
    them; computing them costs ~7 % of the write), in row groups small enough to decode in parallel."""
    vectors_ = [c for c in columns if c.startswith(EMBEDDING)]
    others = [c for c in columns if c not in vectors_]
    return {
        "compression": {**{c: "zstd" for c in others}, **{c: "none" for c in vectors_}},
        "use_dictionary": others,
        "write_statistics": others,
    }


def write_parquet(table: pa.Table, path: Path) -> None:
    if EMBEDDING not in table.column_names:
        pq.write_table(table, path, compression="zstd")
        return
    pq.write_table(table, path, row_group_size=ROW_GROUP, **writer_options(table.column_names))


class PartWriter:
    """Embedding batches -> part files, a new part whenever the source part changes."""

    def __init__(self, directory: Path, id_name: str):
        self.directory, self.id_name = directory, id_name
        self.parts, self.rows = 0, 0
        self._source: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, source: Path, ids: pa.Array, vectors_: np.ndarray) -> None:
        table = embeddings_table(self.id_name, ids, vectors_)
        if source != self._source:
            self.close()
            self._writer = pq.ParquetWriter(self.directory / part_name(self.parts), table.schema, **writer_options(table.column_names))
            self._source = source
            self.parts += 1
        if self._writer is None:  # closed, and written again from the same source: what None.write_table raised
            raise AttributeError("'NoneType' object has no attribute 'write_table'")
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self.rows += len(ids)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def part_name(index: int) -> str:
    """The file name of data part `index` of an embeddings artifact (see embedtab.artifacts.layout)."""
    return f"{PART_PREFIX}{index:05d}.parquet"


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PART_PREFIX}*.parquet"))


def write_summary(directory: Path, parts: Sequence[Path], name: str) -> None:
    """A parquet `_metadata` file listing `parts` (schema and row groups), the way Dask writes one.

    Dask reads a folder through its `_metadata` when there is one, and otherwise every *.parquet
    file below it -- sidecars included -- so this is what keeps merlin.io.Dataset(<folder>) to the
    data parts.
    """
    collected = []
    schema = None
    for part in parts:
        meta = pq.read_metadata(part)
        meta.set_file_path(part.relative_to(directory).as_posix())
        collected.append(meta)
        schema = schema or pq.read_schema(part)
    if schema is None:
        return
    pq.write_metadata(schema, directory / name, metadata_collector=collected)


def parquet_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def read_parts(files: Iterable[Path], columns: Sequence[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Produce the next items in a background thread (parquet decoding releases the GIL), so
    reading overlaps with the computation on the current item. Exceptions surface in order."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                box.put((None, item))
            box.put((None, done))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put((exc, None))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            error, item = box.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def ordered_map(function: Callable[[Any], Any], items: Iterable, workers: int, ahead: int) -> Iterator:
    """function(item) for each item on `workers` threads, results in order, at most `ahead` in flight.

    Written here because concurrent.futures.Executor.map submits every item at once (its
    `buffersize` arrives in Python 3.14), which would decode a whole artifact into memory; and the
    Arrow dataset scanner, measured on 1M x 512 embeddings, held 740-1320 MB ahead of the consumer
    against 430 MB here and decoded 13 % slower. Exceptions surface in order; stopping the
    consumer cancels what has not started.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embedtab-read") as pool:
        try:
            for item in source:
                pending.append(pool.submit(function, item))
                if len(pending) >= ahead:
                    break
            while pending:
                result = pending.popleft().result()
                following = next(source, _END)
                if following is not _END:
                    pending.append(pool.submit(function, following))
                yield result
        finally:
            for future in pending:
                future.cancel()


_END = object()


def reader_threads() -> int:
    """Row groups decoded at once: every core up to 8 (parquet decoding releases the GIL)."""
    return max(1, min(8, os.cpu_count() or 1))


def embedding_parts(source: Path | Sequence[Path]) -> tuple[list[tuple[Path, pq.FileMetaData]], int]:
    """The part files of an embeddings folder (or the files given) with their footers, and the dim,
    after checking that each holds fixed-size float vectors of one dim: a mismatch names the file
    that breaks it."""
    files = part_files(source) if isinstance(source, Path) else [Path(p) for p in source]
    found, dim = [], None
    for path in files:
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: cannot read embeddings ({str(exc).splitlines()[0]})") from None
        names = handle.schema_arrow.names
        if EMBEDDING not in names:
            raise DataError(f"{path}: no column {EMBEDDING!r} (it has {', '.join(names)})")
        kind = handle.schema_arrow.field(EMBEDDING).type
        if not pa.types.is_fixed_size_list(kind):
            raise DataError(f"{path}: column {EMBEDDING!r} is {kind}, expected a fixed-size list of float32")
        if dim is not None and kind.list_size != dim:
            raise DataError(f"{path}: embeddings have {kind.list_size} dims, earlier parts have {dim}")
        dim = kind.list_size
        found.append((path, handle.metadata))
    return found, dim or 0


def iter_embeddings(
    source: Path | Sequence[Path], id_column: str | None, batch_rows: int = ROW_GROUP, workers: int | None = None
) -> Iterator[tuple[pa.Array | None, np.ndarray, Path]]:
    """(ids, (rows, dim) float32 vectors, file) in batches of at most `batch_rows`, part after part,
    in order. The one reader of embeddings (reduce, lookup, encode's reuse, the Python API).

    Row groups are decoded on `workers` threads ahead of the consumer (reading then overlaps with
    what the caller computes, and decoding away from the main thread also avoids the allocator's
    page-fault cost measured there); memory stays at a few row groups whatever the artifact's size.
    Row groups much larger than `batch_rows` (files written by other tools) stream in batches
    instead. The vectors are read-only views of Arrow memory: copy them to keep them.
    """
    yield from _iter_parts(embedding_parts(source)[0], id_column, batch_rows, workers or reader_threads())


def _iter_parts(
    parts: list[tuple[Path, pq.FileMetaData]], id_column: str | None, batch_rows: int, workers: int
) -> Iterator[tuple[pa.Array | None, np.ndarray, Path]]:
    columns = [id_column, EMBEDDING] if id_column else [EMBEDDING]
    units = [(path, group, meta.row_group(group).num_rows) for path, meta in parts for group in range(meta.num_row_groups)]

    def read_group(unit: tuple[Path, int, int]) -> tuple[pa.Table, Path]:
        path, group, _ = unit
        try:
            return pq.ParquetFile(path).read_row_group(group, columns=columns, use_threads=False), path
        except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
            raise DataError(f"{path}: cannot read embeddings ({str(exc).splitlines()[0]})") from None

    def stream_group(path: Path, group: int) -> Iterator[tuple[pa.RecordBatch, Path]]:
        for batch in prefetch(pq.ParquetFile(path).iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)):
            yield batch, path

    def pieces() -> Iterator[tuple[pa.Table | pa.RecordBatch, Path]]:
        start = 0
        while start < len(units):
            stop = start
            while stop < len(units) and units[stop][2] <= 4 * batch_rows:
                stop += 1
            yield from ordered_map(read_group, units[start:stop], workers, ahead=workers + 2)
            if stop < len(units):
                yield from stream_group(units[stop][0], units[stop][1])
            start = stop + 1

    for piece, path in pieces():
        for offset in range(0, piece.num_rows, batch_rows):
            part = piece.slice(offset, batch_rows)
            yield (_one_array(part.column(id_column)) if id_column else None), vectors(part), path


def _one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def read_vectors(source: Path | Sequence[Path], out: np.ndarray | None = None) -> np.ndarray:
    """Every vector of the parts as one (rows, dim) float32 array, filled batch by batch -- into
    `out` when given (e.g. a memory-mapped .npy), which must have exactly that shape."""
    parts, dim = embedding_parts(source)
    shape = (sum(meta.num_rows for _, meta in parts), dim)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape:
        raise DataError(f"the embeddings hold {shape[0]:,} vectors of {dim} dims, {out.shape[0]:,} x {out.shape[1]} were expected")
    position = 0
    for _, x, _ in _iter_parts(parts, None, ROW_GROUP, reader_threads()):
        out[position : position + len(x)] = x
        position += len(x)
    return out
