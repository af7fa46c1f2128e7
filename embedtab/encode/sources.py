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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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
            raise UsageError(
                f"invalid --template field {{{name}}}: use plain column names such as "
                "'{title}. {description}'"
            )
        if name not in fields:
            fields.append(name)
    if not fields:
        raise UsageError(f"--template {template!r} names no column; e.g. '{{title}}. {{description}}'")
    return fields


def render_texts(batch: pa.RecordBatch | pa.Table, template: str, fields: Sequence[str]) -> list[str | None]:
    """One string per row; nulls render as empty strings; surrounding whitespace stripped.

    A row whose fields are all null is None, and one whose fields are all null or blank is "":
    the template's own punctuation ("{title}. {description}" -> ".") is no text to encode.
    """
    columns = {f: batch.column(f).to_pylist() for f in fields}
    out: list[str | None] = []
    for i in range(batch.num_rows):
        raw = [columns[f][i] for f in fields]
        if all(v is None for v in raw):
            out.append(None)
        elif all(v is None or not str(v).strip() for v in raw):
            out.append("")
        else:
            out.append(template.format_map({f: "" if v is None else v for f, v in zip(fields, raw)}).strip())
    return out


# ----------------------------------------------------------------------------- tables
def _schema_of(path: Path) -> pa.Schema:
    try:
        if path.suffix == ".csv":
            with pacsv.open_csv(path) as reader:
                return reader.schema
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def _columns_of(path: Path) -> list[str]:
    return list(_schema_of(path).names)


def iter_table(paths: Sequence[Path], columns: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows with exactly `columns`, file after file."""
    for path in paths:
        missing = [c for c in columns if c not in _columns_of(path)]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (it has {', '.join(_columns_of(path))})")
    for path in paths:
        try:
            if path.suffix == ".csv":
                options = pacsv.ConvertOptions(include_columns=list(columns))
                with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22), convert_options=options) as reader:
                    for batch in reader:
                        for start in range(0, batch.num_rows, rows):
                            yield batch.slice(start, rows)
            else:
                yield from pq.ParquetFile(path).iter_batches(batch_size=rows, columns=list(columns))
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


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
                schema = _schema_of(path)
                if self.id_column not in schema.names:
                    raise DataError(f"{path}: missing column(s) {self.id_column} (it has {', '.join(schema.names)})")
                found.setdefault(schema.field(self.id_column).type, path)
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
        if self.folder is not None:
            for start in range(0, len(self.paths), rows):
                chunk = self.paths[start : start + rows]
                yield pa.array([p.stem for p in chunk], type=pa.string()), [str(p) for p in chunk]
            return
        id_type = self.id_type()
        if self.modality == "text":
            columns = [self.id_column] + [f for f in self.fields if f != self.id_column]
            for batch in iter_table(self.paths, columns, rows):
                yield batch.column(self.id_column).cast(id_type), render_texts(batch, self.template or "", self.fields)
        else:
            assert self.image_column and self.image_root is not None
            for batch in iter_table(self.paths, [self.id_column, self.image_column], rows):
                raw = batch.column(self.image_column).to_pylist()
                values = [None if p is None or not str(p).strip() else str(self.image_root / str(p)) for p in raw]
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
