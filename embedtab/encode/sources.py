"""Where items come from: tables of texts, tables of image paths, or a plain folder of images.

A Source streams its items in a fixed order as (ids, values) batches, where a value is the
rendered text or the image file path. Streaming keeps memory flat however large the catalog: the
stage scans once to fingerprint every item, then streams again to fetch only what it must encode.
"""

from __future__ import annotations

import hashlib
import os
import stat
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.encode.values import check_value_type, first_invalid_utf8, is_text, not_utf8, plain_values
from embedtab.errors import DataError, UsageError
from embedtab.fingerprint import sha256_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
KEY_BYTES = 16  # 128-bit content keys: collisions are out of reach for any catalog
EMPTY_KEY = b"\x00" * KEY_BYTES


def content_key(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:KEY_BYTES]


def file_key(path: str) -> bytes:
    return bytes.fromhex(sha256_file(path))[:KEY_BYTES]


# ----------------------------------------------------------------------------- templates
def template_fields(template: str) -> list[str]:
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"invalid --template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier() or spec or conversion:
            raise UsageError(f"invalid --template field {{{name}}}: use plain column names such as '{{title}}. {{description}}'")
        if name not in fields:
            fields.append(name)
    if not fields:
        raise UsageError(f"--template {template!r} names no column; e.g. '{{title}}. {{description}}'")
    return fields


def render_texts(
    batch: pa.RecordBatch | pa.Table, template: str, fields: Sequence[str], where: str = "", offset: int = 0
) -> list[str | None]:
    """One string per row; nulls render as empty strings; surrounding whitespace stripped.

    A row whose fields are all null is None, and one whose fields are all null or blank is "":
    the template's own punctuation ("{title}. {description}" -> ".") is no text to encode.
    Fields are rendered by `plain_values` (strings as they are, numbers and dates as plain text);
    a column of another type is refused (`value_type_problem`). `where` (the file) and `offset` (its
    data rows before this batch) name a value that cannot be rendered.
    """
    columns = {f: plain_values(batch.column(f), f, where, offset) for f in fields}
    out: list[str | None] = []
    for i in range(batch.num_rows):
        raw = [columns[f][i] for f in fields]
        if all(v is None for v in raw):
            out.append(None)
        elif all(v is None or not v.strip() for v in raw):
            out.append("")
        else:
            out.append(template.format_map({f: "" if v is None else v for f, v in zip(fields, raw)}).strip())
    return out


# ----------------------------------------------------------------------------- tables
def _columns_of(path: Path) -> list[str]:
    return list(tables.file_schema(path).names)


def iter_table(paths: Sequence[Path], columns: Sequence[str], rows: int, values: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows with exactly `columns`, file after file.

    `values` are the columns whose values are rendered as text: every file's types are checked
    before the first batch (`value_type_problem`), CSV reads them as strings, and their strings
    are checked to be UTF-8 as they stream (naming the file, the column and the row).
    """
    for _, _, batch in _iter_files(paths, columns, rows, values):
        yield batch


def _iter_files(
    paths: Sequence[Path], columns: Sequence[str], rows: int, values: Sequence[str] = ()
) -> Iterator[tuple[Path, int, pa.RecordBatch]]:
    """`iter_table`'s batches with the file of each and its data rows before it."""
    for path in paths:
        schema = tables.file_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (it has {', '.join(schema.names)})")
        for name in values:
            if path.suffix != ".csv" or name not in _csv_strings(columns, values):
                check_value_type(schema.field(name).type, name, str(path))
    for path in paths:
        offset = 0  # data rows of this file before the batch
        try:
            if path.suffix == ".csv":
                strings = _csv_strings(columns, values)
                options = pacsv.ConvertOptions(include_columns=list(columns), column_types={c: pa.string() for c in strings})
                with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=options) as reader:
                    for batch in reader:
                        for start in range(0, batch.num_rows, rows):
                            yield path, offset + start, batch.slice(start, rows)
                        offset += batch.num_rows
            else:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=list(columns)):
                    _check_utf8(batch, values, path, offset)
                    yield path, offset, batch
                    offset += batch.num_rows
        except pa.ArrowInvalid as exc:
            if path.suffix == ".csv":
                _check_csv_utf8(path, columns)
            raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def _csv_strings(columns: Sequence[str], values: Sequence[str]) -> list[str]:
    """The CSV columns read as strings: the rendered ones, except the id column (columns[0]) if it
    is among them -- its type is the id type, inferred as for every id column."""
    return [c for c in values if c != columns[0]]


def _check_utf8(batch: pa.RecordBatch, values: Sequence[str], path: Path, offset: int) -> None:
    for name in values:
        column = batch.column(name)
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if not is_text(kind):
            continue
        try:
            column.validate(full=True)  # (UTF-8 included: parquet readers do not check it)
        except pa.ArrowInvalid:
            row = first_invalid_utf8(column)
            raise DataError(not_utf8(str(path), name, None if row is None else offset + row)) from None


def _check_csv_utf8(path: Path, columns: Sequence[str]) -> None:
    """A CSV that arrow cannot read: if some bytes of these columns are not UTF-8, say where
    (reading them as bytes this time)."""
    names = list(dict.fromkeys(columns))
    options = pacsv.ConvertOptions(include_columns=names, column_types={c: pa.binary() for c in names})
    offset = 0
    try:
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=options) as reader:
            for batch in reader:
                found = [(row, name) for name in names if (row := first_invalid_utf8(batch.column(name))) is not None]
                if found:
                    row, name = min(found)
                    raise DataError(not_utf8(str(path), name, offset + row)) from None
                offset += batch.num_rows
    except pa.ArrowInvalid:
        return


def _check_id_type(path: Path, column: str, kind: pa.DataType) -> None:
    """Ids are keys: single values (integers, strings, dates, bytes from a parquet file ...). A CSV id
    column is never bytes -- arrow reads a column as binary when a byte in it is not UTF-8 -- and a
    nested column (list, struct, map) holds no key."""
    base = kind.value_type if pa.types.is_dictionary(kind) else kind
    binary = (
        pa.types.is_binary(base) or pa.types.is_large_binary(base) or pa.types.is_fixed_size_binary(base) or pa.types.is_binary_view(base)
    )
    if binary and path.suffix == ".csv":
        _check_csv_utf8(path, [column])  # names the first row whose bytes are not UTF-8
        raise DataError(f"{path}: column {column!r} was read as bytes, not text; save the file as UTF-8")
    if pa.types.is_nested(base) or pa.types.is_union(base) or pa.types.is_run_end_encoded(base):
        raise DataError(
            f"{path}: id column {column!r} has type {kind}: an id must be one value (an integer or a "
            "string); make it a column of those first"
        )


@dataclass
class Source:
    """One run's items. `values()` yields (ids, values) where a value is text or an image path."""

    modality: str  # "text" | "image"
    paths: list[Path]
    id_column: str
    template: str | None = None
    image_column: str | None = None
    image_root: Path | None = None
    folder: Path | None = None  # a plain folder of images: ids are file stems
    fields: list[str] = field(default_factory=list)
    allow_outside_root: bool = False
    limit: int | None = None  # only the first rows (--limit: a trial run)
    _id_type: pa.DataType | None = None
    _real_root: str | None = None  # the image root, resolved once per run rather than per item

    def check_image_path(self, path: str) -> None:
        """Catalogs come from vendors and scrapers: a path that resolves outside the image root
        (`../../etc/passwd`, an absolute path, a symlink leading out) is an item problem and is
        never opened, unless allowed."""
        root = self.folder if self.folder is not None else self.image_root
        if self.allow_outside_root or root is None:
            return
        try:
            resolved = os.path.realpath(path)
        except ValueError:
            raise ItemProblem("invalid path (contains a NUL byte)") from None
        if self._real_root is None:
            self._real_root = os.path.realpath(root)
        base = self._real_root
        if resolved != base and not resolved.startswith(base.rstrip(os.sep) + os.sep):
            raise ItemProblem("outside the image root")

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return self.paths[0].name if len(self.paths) == 1 else f"{len(self.paths)} input files"

    def id_type(self) -> pa.DataType:
        """The id type of every input file; integers of several widths widen to int64 (lossless),
        strings to string; anything else that differs is an error naming the files."""
        if self.folder is not None:
            return pa.string()
        if self._id_type is None:
            found: dict[pa.DataType, Path] = {}
            for path in self.paths:
                schema = tables.file_schema(path)
                if self.id_column not in schema.names:
                    raise DataError(f"{path}: missing column(s) {self.id_column} (it has {', '.join(schema.names)})")
                kind = schema.field(self.id_column).type
                _check_id_type(path, self.id_column, kind)
                found.setdefault(kind, path)
            types = list(found)
            if len(types) == 1:
                self._id_type = types[0]
            elif all(pa.types.is_integer(t) for t in types) and not any(t == pa.uint64() for t in types):
                self._id_type = pa.int64()
            elif all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
                self._id_type = pa.string()
            else:
                named = ", ".join(f"{path.name}: {kind}" for kind, path in found.items())
                raise DataError(f"the {self.id_column!r} column has different types in the input files ({named}); give them one type")
        return self._id_type

    def batches(self, rows: int) -> Iterator[tuple[pa.Array, list[str | None]]]:
        """(ids, values) of at most `rows` items, in input order; the first `limit` items only,
        when it is set (reading stops there)."""
        left = self.limit
        for ids, values in self._all_batches(rows):
            if left is not None and len(values) >= left:
                yield ids.slice(0, left), values[:left]
                return
            if left is not None:
                left -= len(values)
            yield ids, values

    def _all_batches(self, rows: int) -> Iterator[tuple[pa.Array, list[str | None]]]:
        if self.folder is not None:
            for start in range(0, len(self.paths), rows):
                chunk = self.paths[start : start + rows]
                yield pa.array([p.stem for p in chunk], type=pa.string()), [str(p) for p in chunk]
            return
        id_type = self.id_type()
        if self.modality == "text":
            columns = [self.id_column] + [f for f in self.fields if f != self.id_column]
            for path, offset, batch in _iter_files(self.paths, columns, rows, values=self.fields):
                texts = render_texts(batch, self.template or "", self.fields, str(path), offset)
                yield batch.column(self.id_column).cast(id_type), texts
        else:
            assert self.image_column and self.image_root is not None
            columns = [self.id_column, self.image_column]
            for path, offset, batch in _iter_files(self.paths, columns, rows, values=[self.image_column]):
                raw = plain_values(batch.column(self.image_column), self.image_column, str(path), offset)
                values = [None if p is None or not p.strip() else str(self.image_root / p) for p in raw]
                yield batch.column(self.id_column).cast(id_type), values


def image_folder(path: Path) -> list[Path]:
    # Non-regular entries (a FIFO named x.jpg) are kept so they are reported, not silently ignored.
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no tables")
    return files


def is_image_folder(spec: Sequence[str]) -> bool:
    """A single directory holding images and no tables."""
    if len(spec) != 1 or not Path(spec[0]).is_dir():
        return False
    entries = list(Path(spec[0]).iterdir())
    has_tables = any(p.suffix in (".parquet", ".csv") for p in entries)
    return not has_tables and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)


# ----------------------------------------------------------------------------- item keys
class ItemProblem(Exception):
    """An item that cannot be encoded (the reason is str())."""


@dataclass
class StatCache:
    """(path, size, mtime_ns) -> key from the previous artifact, so unchanged files are not re-read."""

    entries: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)

    def key(self, path: str) -> tuple[bytes, int, int]:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ItemProblem("file not found") from None
        except OSError as exc:
            raise ItemProblem(f"cannot read file ({exc.strerror})") from None
        except ValueError:  # os.stat refuses a path with a NUL byte in it
            raise ItemProblem("invalid path (contains a NUL byte)") from None
        if not stat.S_ISREG(info.st_mode):
            raise ItemProblem("not a regular file")  # a FIFO or device would block the reader
        if info.st_size == 0:
            raise ItemProblem("empty file")
        known = self.entries.get(path)
        if known is not None and known[0] == info.st_size and known[1] == info.st_mtime_ns:
            return known[2], info.st_size, info.st_mtime_ns
        try:
            return file_key(path), info.st_size, info.st_mtime_ns
        except OSError as exc:
            raise ItemProblem(f"cannot read file ({exc.strerror})") from None


def text_key(text: str | None) -> bytes:
    if text is None:
        raise ItemProblem("null text")
    if not text.strip():
        raise ItemProblem("empty text")
    return content_key(text.encode("utf-8"))


def keys_to_arrow(keys: np.ndarray) -> pa.FixedSizeBinaryArray:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(keys), [None, pa.py_buffer(keys.tobytes())])


def keys_from_arrow(column: Any) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.zeros(0, dtype=f"S{KEY_BYTES}")
    data = column.buffers()[1]
    start = column.offset * KEY_BYTES
    return np.frombuffer(data, dtype=f"S{KEY_BYTES}", count=len(column), offset=start).copy()
