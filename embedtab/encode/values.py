"""How a column's values become text -- the one rule for template fields, --text-column and the
image path column, described below -- and the checks that refuse what has no plain text (nested
and binary types, values Python cannot hold, bytes that are not UTF-8) by file, column and row.
sources.py reads the tables and streams the items through these."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedtab.errors import DataError


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
def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def value_type_problem(kind: pa.DataType) -> str | None:
    """None when a column of this type renders as text, else what to do about it."""
    if pa.types.is_dictionary(kind):
        return value_type_problem(kind.value_type)
    if (
        is_text(kind)
        or pa.types.is_null(kind)
        or any(
            test(kind)
            for test in (
                pa.types.is_integer,
                pa.types.is_floating,
                pa.types.is_boolean,
                pa.types.is_decimal,
                pa.types.is_date,
                pa.types.is_time,
                pa.types.is_timestamp,
            )
        )
    ):
        return None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind):
        return "decode its bytes to a UTF-8 string column first"
    if any(
        test(kind)
        for test in (
            pa.types.is_list,
            pa.types.is_large_list,
            pa.types.is_fixed_size_list,
            pa.types.is_list_view,
            pa.types.is_large_list_view,
        )
    ):
        return "join its items into one string column first"
    if pa.types.is_struct(kind) or pa.types.is_map(kind) or pa.types.is_union(kind):
        return "put the fields you want in string columns first"
    return "cast it to a string column first"


def check_value_type(kind: pa.DataType, column: str, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    problem = value_type_problem(kind)
    if problem is not None:
        raise DataError(
            f"{prefix}column {column!r} has type {kind}, not text: {problem} (embedtab renders strings, "
            "numbers, booleans, decimals, dates and times)"
        )
    base = kind.value_type if pa.types.is_dictionary(kind) else kind
    if pa.types.is_timestamp(base) and base.tz is not None and not _known_zone(base.tz):
        raise DataError(
            f"{prefix}column {column!r} has type {kind}: time zone {base.tz!r} is not one Python knows, so "
            "its times cannot be rendered; cast the column to UTC or to strings first"
        )


@functools.cache
def _known_zone(tz: str) -> bool:
    """Whether Python (zoneinfo or pytz, as pyarrow uses them) can convert times to this zone."""
    try:
        pa.scalar(0, pa.timestamp("s", tz=tz)).as_py()
        return True
    except Exception:  # pytz.UnknownTimeZoneError, ZoneInfoNotFoundError, ArrowInvalid, ValueError ...
        return False


def plain_values(column: pa.Array | pa.ChunkedArray, name: str = "?", where: str = "", offset: int = 0) -> list[str | None]:
    """The values of a column as plain text (None for nulls), by the rule above. `offset` is the
    file's data rows before this column's first value (to name a row that cannot be rendered)."""
    check_value_type(column.type, name, where)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if is_text(kind):
        try:
            return column.to_pylist()
        except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8 (parquet does not check)
            row = first_invalid_utf8(column)
            raise DataError(not_utf8(where, name, None if row is None else offset + row)) from None
    if pa.types.is_null(kind):
        return [None] * len(column)
    try:
        return _render(_dense(column), kind, name, where, offset)
    except DataError:
        raise
    except Exception as exc:  # whatever else a conversion raises: one line naming the file and the column
        prefix = f"{where}: " if where else ""
        detail = (str(exc).splitlines() or [""])[0]
        raise DataError(f"{prefix}column {name!r} ({kind}): cannot render its values as text ({type(exc).__name__}: {detail})") from None


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
            raise DataError(
                _cannot_represent(where, name, kind, offset + int(outside[0]), "a time outside the day (00:00:00 to 23:59:59.999999999)")
            )
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
        raise DataError(
            _cannot_represent(where, name, kind, offset + row, "a date outside the years 1 to 9999 (what Python's dates hold)")
        ) from None
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
            zone = text[len(plain) :]
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
    return (
        f"{prefix}column {column!r} ({kind}), data row {row + 1}: {what}, which embedtab cannot render as "
        "text; fix or drop the value, or cast the column to strings first"
    )


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


def not_utf8(where: str, column: str, row: int | None) -> str:
    at = f", data row {row + 1}" if row is not None else ""
    prefix = f"{where}: " if where else ""
    fix = "save the file as UTF-8" if where.endswith(".csv") else "write the column as UTF-8 strings"
    return f"{prefix}column {column!r}{at}: bytes that are not valid UTF-8 text; {fix}"
