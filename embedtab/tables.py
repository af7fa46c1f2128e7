"""Reading input tables and reading/writing embedding parquet files (pyarrow throughout)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab.errors import DataError, UsageError

TABLE_SUFFIXES = (".parquet", ".csv")
EMBEDDING = "embedding"


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
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


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


def embedding_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(rows, dim) -> fixed_size_list<float32>[dim], without copying float32 input."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


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
    arrays = [c.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim) for c in chunks]
    if not arrays:
        return np.zeros((0, dim), np.float32)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


ROW_GROUP = 16_384


def _writer_options(columns: Sequence[str]) -> dict:
    """zstd for ordinary columns; float vectors stored plain (they barely compress, and dictionary
    or zstd decoding would triple read time), in row groups small enough to decode in parallel."""
    vectors_ = [c for c in columns if c.startswith(EMBEDDING)]
    others = [c for c in columns if c not in vectors_]
    return {"compression": {**{c: "zstd" for c in others}, **{c: "none" for c in vectors_}}, "use_dictionary": others}


def write_parquet(table: pa.Table, path: Path) -> None:
    if EMBEDDING not in table.column_names:
        pq.write_table(table, path, compression="zstd")
        return
    pq.write_table(table, path, row_group_size=ROW_GROUP, **_writer_options(table.column_names))


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
            self._writer = pq.ParquetWriter(self.directory / part_name(self.parts), table.schema, **_writer_options(table.column_names))
            self._source = source
            self.parts += 1
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self.rows += len(ids)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


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


def iter_embeddings(directory: Path, id_column: str, batch_rows: int = 16_384) -> Iterator[tuple[pa.Array, np.ndarray, Path]]:
    """(ids, (rows, dim) float32 vectors, file) in batches of at most `batch_rows`, part after
    part, in order -- memory stays at one batch whatever the artifact's size.

    All parts must agree on the dim: a mismatch is reported with the file that breaks it.
    """
    dim = None
    for path in part_files(directory):
        handle = pq.ParquetFile(path)
        kind = handle.schema_arrow.field(EMBEDDING).type
        if not pa.types.is_fixed_size_list(kind):
            raise DataError(f"{path}: column {EMBEDDING!r} is {kind}, expected a fixed-size list of float32")
        if dim is not None and kind.list_size != dim:
            raise DataError(f"{path}: embeddings have {kind.list_size} dims, earlier parts have {dim}")
        dim = kind.list_size
        for batch in handle.iter_batches(batch_size=batch_rows, columns=[id_column, EMBEDDING]):
            yield batch.column(id_column), vectors(batch), path
