"""Where items come from: tables of texts, tables of image paths, or a plain folder of images.

A Source streams its items in a fixed order as (ids, values) batches, where a value is the
rendered text or the image file path. Streaming keeps memory flat however large the catalog: the
stage scans once to fingerprint every item, then streams again to fetch only what it must encode.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def render_texts(batch: pa.RecordBatch | pa.Table, template: str, fields: Sequence[str], where: str = "",
                 offset: int = 0) -> list[str | None]:
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


# ----------------------------------------------------------------------------- value columns
# The one rule for a column whose values are rendered (template fields, --text-column, the image
# path column), whatever the input format:
#   * strings (string, large_string, string_view, dictionary of strings): as they are;
#   * integers, floats, booleans, decimals, dates, times, timestamps (and dictionaries of them):
#     their plain text, Python's str() of the value -- 3, 1.5, True, 1.50, 2024-01-31,
#     2024-01-31 12:00:00; float16/float32 as their shortest decimal (4.7, not 4.699999809265137);
#     decimals in positional notation (0.0000001, 12300: never 1E-7 or 1.23E+4); nanosecond
#     times and timestamps keep their nanoseconds (00:00:00.000000001, as pandas writes them);
#   * a value Python cannot represent (a date or timestamp outside the years 1 to 9999, a time
#     outside the day) or a time zone Python does not know is refused naming the file, the column,
#     its type and the first such data row: no sentinel is turned into a guess;
#   * a null-type column: nulls;
#   * anything else (binary, lists, structs, maps, unions, durations, intervals, extension types)
#     is refused before any work, naming the file, the column and its type: a repr such as
#     "['red', 'shoe']" or "b'abc'" is never encoded.
# CSV columns that are rendered are read as strings, as written in the file ("007", "1.50"); bytes
# that are not UTF-8 (there, or in a parquet string column) are refused naming the file, the
# column and the first bad row.
def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def value_type_problem(kind: pa.DataType) -> str | None:
    """None when a column of this type renders as text, else what to do about it."""
    if pa.types.is_dictionary(kind):
        return value_type_problem(kind.value_type)
    if _is_text(kind) or pa.types.is_null(kind) or any(
        test(kind) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal,
                                pa.types.is_date, pa.types.is_time, pa.types.is_timestamp)
    ):
        return None
    if (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
            or pa.types.is_binary_view(kind)):
        return "decode its bytes to a UTF-8 string column first"
    if any(test(kind) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list,
                                   pa.types.is_list_view, pa.types.is_large_list_view)):
        return "join its items into one string column first"
    if pa.types.is_struct(kind) or pa.types.is_map(kind) or pa.types.is_union(kind):
        return "put the fields you want in string columns first"
    return "cast it to a string column first"


def check_value_type(kind: pa.DataType, column: str, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    problem = value_type_problem(kind)
    if problem is not None:
        raise DataError(f"{prefix}column {column!r} has type {kind}, not text: {problem} (embedtab renders strings, "
                        "numbers, booleans, decimals, dates and times)")
    base = kind.value_type if pa.types.is_dictionary(kind) else kind
    if pa.types.is_timestamp(base) and base.tz is not None and not _known_zone(base.tz):
        raise DataError(f"{prefix}column {column!r} has type {kind}: time zone {base.tz!r} is not one Python knows, so "
                        "its times cannot be rendered; cast the column to UTC or to strings first")


@functools.lru_cache(maxsize=None)
def _known_zone(tz: str) -> bool:
    """Whether Python (zoneinfo or pytz, as pyarrow uses them) can convert times to this zone."""
    try:
        pa.scalar(0, pa.timestamp("s", tz=tz)).as_py()
        return True
    except Exception:  # pytz.UnknownTimeZoneError, ZoneInfoNotFoundError, ArrowInvalid, ValueError ...
        return False


def plain_values(column: pa.Array | pa.ChunkedArray, name: str = "?", where: str = "",
                 offset: int = 0) -> list[str | None]:
    """The values of a column as plain text (None for nulls), by the rule above. `offset` is the
    file's data rows before this column's first value (to name a row that cannot be rendered)."""
    check_value_type(column.type, name, where)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if _is_text(kind):
        try:
            return column.to_pylist()
        except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8 (parquet does not check)
            row = first_invalid_utf8(column)
            raise DataError(_not_utf8(where, name, None if row is None else offset + row)) from None
    if pa.types.is_null(kind):
        return [None] * len(column)
    try:
        return _render(_dense(column), kind, name, where, offset)
    except DataError:
        raise
    except Exception as exc:  # whatever else a conversion raises: one line naming the file and the column
        prefix = f"{where}: " if where else ""
        detail = (str(exc).splitlines() or [""])[0]
        raise DataError(f"{prefix}column {name!r} ({kind}): cannot render its values as text "
                        f"({type(exc).__name__}: {detail})") from None


def _dense(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One plain (not dictionary-encoded) array."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _render(column: pa.Array, kind: pa.DataType, name: str, where: str, offset: int) -> list[str | None]:
    if pa.types.is_floating(kind) and kind.bit_width == 16:
        # float16 4.7 is 4.69921875 as a Python float: numpy's shortest decimal at half precision
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        halves = column.to_numpy(zero_copy_only=False).astype(np.float16)
        return [None if null else str(float(str(v))) for v, null in zip(halves, nulls)]
    if pa.types.is_floating(kind) and kind.bit_width == 32:
        # float32 4.7 is stored as 4.699999809265137 in Python's float: its shortest decimal at the
        # column's own width (arrow's cast to string) is the plain value
        column = pc.cast(pc.cast(column, pa.string()), pa.float64())
    if pa.types.is_decimal(kind):  # positional notation: str(Decimal) would write 1E-7 or 1.23E+4
        return [None if v is None else format(v, "f") for v in column.to_pylist()]
    if pa.types.is_time(kind):
        ticks = pc.cast(column, pa.int32() if kind.bit_width == 32 else pa.int64()).to_numpy(zero_copy_only=False)
        outside = np.flatnonzero(~np.isnan(ticks) & ((ticks < 0) | (ticks >= _DAY[kind.unit])))
        if len(outside):  # Python would wrap 25:00 round to 01:00
            raise DataError(_cannot_represent(where, name, kind, offset + int(outside[0]), "a time outside the day "
                                              "(00:00:00 to 23:59:59.999999999)"))
    if (pa.types.is_time(kind) or pa.types.is_timestamp(kind)) and kind.unit == "ns":
        return _nanoseconds(column, kind)
    try:
        values = column.to_pylist()
    except (OverflowError, ValueError) as exc:
        if not (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
            raise
        row = _first_failing(column)
        if row is None:
            raise exc from None
        raise DataError(_cannot_represent(where, name, kind, offset + row, "a date outside the years 1 to 9999 "
                                          "(what Python's dates hold)")) from None
    return [None if v is None else str(v) for v in values]


def _nanoseconds(column: pa.Array, kind: pa.DataType) -> list[str | None]:
    """time64[ns] and timestamp[ns] with their nanoseconds, as pandas writes them: Python's str() of
    the microseconds, then three more digits when the nanoseconds are not zero
    (1970-01-01 00:00:00.000000001, 00:00:00.000000001+00:00 for a zone)."""
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    ticks = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)
    micros, rest = np.divmod(ticks, 1000)
    coarse = pa.timestamp("us", tz=kind.tz) if pa.types.is_timestamp(kind) else pa.time64("us")
    out: list[str | None] = []
    for value, extra, null in zip(pa.array(micros, coarse).to_pylist(), rest.tolist(), nulls):
        if null:
            out.append(None)
            continue
        text = str(value)
        if extra:
            plain = str(value.replace(tzinfo=None)) if getattr(value, "tzinfo", None) is not None else text
            zone = text[len(plain):]
            text = (plain if "." in plain else plain + ".000000") + f"{extra:03d}" + zone
        out.append(text)
    return out


def _first_failing(column: pa.Array) -> int | None:
    """The first value that Python cannot hold (looked for only once a conversion has failed)."""
    for start in range(0, len(column), 4096):
        chunk = column.slice(start, 4096)
        try:
            chunk.to_pylist()
            continue
        except Exception:
            pass
        for i in range(len(chunk)):
            try:
                chunk[i].as_py()
            except Exception:
                return start + i
    return None


def _cannot_represent(where: str, column: str, kind: pa.DataType, row: int, what: str) -> str:
    prefix = f"{where}: " if where else ""
    return (f"{prefix}column {column!r} ({kind}), data row {row + 1}: {what}, which embedtab cannot render as "
            "text; fix or drop the value, or cast the column to strings first")


def first_invalid_utf8(column: pa.Array | pa.ChunkedArray) -> int | None:
    """Position of the first value that is not valid UTF-8, by arrow's own check (a cast to string),
    bisecting on prefixes: log(n) casts rather than a decode per row. None when all are valid."""
    try:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        data = pc.cast(column, pa.large_binary())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None

    def valid(n: int) -> bool:
        try:
            pc.cast(data.slice(0, n), pa.large_string())
            return True
        except pa.ArrowInvalid:
            return False

    low, high = 0, len(data)  # data[:low] is valid, data[:high] is not
    if valid(high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if valid(middle) else (low, middle)
    return high - 1


def _not_utf8(where: str, column: str, row: int | None) -> str:
    at = f", data row {row + 1}" if row is not None else ""
    prefix = f"{where}: " if where else ""
    fix = "save the file as UTF-8" if where.endswith(".csv") else "write the column as UTF-8 strings"
    return f"{prefix}column {column!r}{at}: bytes that are not valid UTF-8 text; {fix}"


# ----------------------------------------------------------------------------- tables
def _schema_of(path: Path) -> pa.Schema:
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
            schema.field(position).name
        except UnicodeDecodeError:
            raise DataError(_bad_header(path, position)) from None
    return schema


def _bad_header(path: Path, position: int | None) -> str:
    field = "" if position is None else f" (field {position + 1})"
    if path.suffix == ".csv":
        return f"{path}: the header row{field} is not valid UTF-8 text; save the file as UTF-8"
    return f"{path}: a column name{field} is not valid UTF-8 text; rename the column"


def _columns_of(path: Path) -> list[str]:
    return list(_schema_of(path).names)


def iter_table(paths: Sequence[Path], columns: Sequence[str], rows: int,
               values: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows with exactly `columns`, file after file.

    `values` are the columns whose values are rendered as text: every file's types are checked
    before the first batch (`value_type_problem`), CSV reads them as strings, and their strings
    are checked to be UTF-8 as they stream (naming the file, the column and the row).
    """
    for _, _, batch in _iter_files(paths, columns, rows, values):
        yield batch


def _iter_files(paths: Sequence[Path], columns: Sequence[str], rows: int,
                values: Sequence[str] = ()) -> Iterator[tuple[Path, int, pa.RecordBatch]]:
    """`iter_table`'s batches with the file of each and its data rows before it."""
    for path in paths:
        schema = _schema_of(path)
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
        if not _is_text(kind):
            continue
        try:
            column.validate(full=True)  # (UTF-8 included: parquet readers do not check it)
        except pa.ArrowInvalid:
            row = first_invalid_utf8(column)
            raise DataError(_not_utf8(str(path), name, None if row is None else offset + row)) from None


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
                    raise DataError(_not_utf8(str(path), name, offset + row)) from None
                offset += batch.num_rows
    except pa.ArrowInvalid:
        return


def _check_id_type(path: Path, column: str, kind: pa.DataType) -> None:
    """Ids are keys: single values (integers, strings, dates, bytes from a parquet file ...). A CSV id
    column is never bytes -- arrow reads a column as binary when a byte in it is not UTF-8 -- and a
    nested column (list, struct, map) holds no key."""
    base = kind.value_type if pa.types.is_dictionary(kind) else kind
    binary = (pa.types.is_binary(base) or pa.types.is_large_binary(base) or pa.types.is_fixed_size_binary(base)
              or pa.types.is_binary_view(base))
    if binary and path.suffix == ".csv":
        _check_csv_utf8(path, [column])  # names the first row whose bytes are not UTF-8
        raise DataError(f"{path}: column {column!r} was read as bytes, not text; save the file as UTF-8")
    if pa.types.is_nested(base) or pa.types.is_union(base) or pa.types.is_run_end_encoded(base):
        raise DataError(f"{path}: id column {column!r} has type {kind}: an id must be one value (an integer or a "
                        "string); make it a column of those first")


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
                schema = _schema_of(path)
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
