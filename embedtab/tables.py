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
        else:
            raise DataError(f"input {text} does not exist")
    for path in found:
        if path.suffix not in TABLE_SUFFIXES:
            raise UsageError(f"{path}: unsupported input format (use .parquet or .csv)")
    return found


def embedding_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(rows, dim) -> fixed_size_list<float32>[dim], without copying float32 input."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def embeddings_table(id_name: str, ids: pa.Array, vectors: np.ndarray) -> pa.Table:
    """`id` (original dtype) + `embedding` as fixed_size_list<float32>[dim]."""
    return pa.table({id_name: ids, EMBEDDING: embedding_column(vectors)})


def vectors(table: pa.Table, column: str = EMBEDDING) -> np.ndarray:
    """(rows, dim) float32 view of a fixed-size-list column."""
    col = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        raise DataError(f"column {column!r} is {col.type}, expected a fixed-size list of float32")
    dim = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, dim)


def write_parquet(table: pa.Table, path: Path) -> None:
    """zstd for ordinary columns; float vectors stored plain (they barely compress, and dictionary
    or zstd decoding would triple read time), in row groups small enough to decode in parallel."""
    if EMBEDDING not in table.column_names:
        pq.write_table(table, path, compression="zstd")
        return
    others = [c for c in table.column_names if c != EMBEDDING]
    compression = {c: "zstd" for c in others} | {EMBEDDING: "none"}
    pq.write_table(table, path, compression=compression, use_dictionary=others, row_group_size=16_384)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def parquet_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def read_parts(files: Iterable[Path], columns: Sequence[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def iter_embeddings(directory: Path, id_column: str) -> Iterator[tuple[pa.Array, np.ndarray, Path]]:
    """(ids, (rows, dim) float32 vectors, file) per part of an embeddings folder, in order.

    All parts must agree on the dim: a mismatch is reported with the file that breaks it.
    """
    dim = None
    for path in part_files(directory):
        table = pq.read_table(path, columns=[id_column, EMBEDDING])
        kind = table.schema.field(EMBEDDING).type
        if not pa.types.is_fixed_size_list(kind):
            raise DataError(f"{path}: column {EMBEDDING!r} is {kind}, expected a fixed-size list of float32")
        if dim is not None and kind.list_size != dim:
            raise DataError(f"{path}: embeddings have {kind.list_size} dims, earlier parts have {dim}")
        dim = kind.list_size
        yield table.column(id_column).combine_chunks(), vectors(table), path
