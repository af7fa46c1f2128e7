"""Value columns of every Arrow type: text as it is, plain values rendered, everything else refused.

Template fields, --text-column columns and the image path column follow one rule (sources.py):
strings as they are; numbers, booleans, decimals, dates and times as their plain text; bytes,
lists, structs, maps and other types refused naming the file, the column and its type -- never
encoded as a Python repr such as "['red', 'shoe']" or "b'abc'". CSV text is read as written, and
bytes that are not UTF-8 are refused naming the file, the column and the row.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from embedtab import tables
from embedtab.cli.main import run
from embedtab.encode import TextOptions
from embedtab.encode.sources import content_key, render_texts
from embedtab.errors import DataError

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))
N = 3  # rows of the table of refused columns

REFUSED = {  # column -> (array, the type as the error names it)
    "tags": (pa.array([["red", "shoe"], ["blue"], []], pa.list_(pa.string())), "list<"),
    "big_tags": (pa.array([["red", "shoe"], ["blue"], []], pa.large_list(pa.string())), "large_list<"),
    "pair": (pa.array([["a", "b"], ["c", "d"], ["e", "f"]], pa.list_(pa.string(), 2)), "fixed_size_list<"),
    "raw": (pa.array([b"abc", b"ok text", b"x"], pa.binary()), "binary"),
    "big_raw": (pa.array([b"abc", b"ok text", b"x"], pa.large_binary()), "large_binary"),
    "fixed_raw": (pa.array([b"abc", b"def", b"ghi"], pa.binary(3)), "fixed_size_binary[3]"),
    "dict_raw": (pa.array([b"abc", b"abc", b"x"], pa.binary()).dictionary_encode(), "dictionary<values=binary"),
    "attrs": (pa.array([{"colour": "red"}, {"colour": "blue"}, {"colour": None}]), "struct<colour: string>"),
    "props": (pa.array([[("colour", "red")], [], [("size", "9")]], pa.map_(pa.string(), pa.string())), "map<string, string"),
    "waited": (pa.array([1, 2, 3], pa.duration("s")), "duration[s]"),
}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the artifact directory and its sha256 (lock files and embedtab's cache of
    file hashes aside: they are no part of what is published)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and ".cache" not in p.relative_to(root).parts
    }


def cli_error(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = run(["-q", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()


def index_keys(store_root: Path, name: str) -> list[bytes]:
    index = pq.read_table(store_root / "embeddings" / name / "_index.parquet")
    return [bytes(k) for k in index.column("key").to_pylist()]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A table with a good text column and one refused column of each kind, and an artifact
    `t` already published from its good column."""
    folder = tmp_path_factory.mktemp("types")
    path = folder / "items.parquet"
    columns = {
        "item_id": pa.array([1, 2, 3]),
        "title": pa.array(["red shoe", "blue hat", "green sock"]),
        "image_path": pa.array(["a.jpg", "b.jpg", "c.jpg"]),
    }
    columns.update({name: array for name, (array, _) in REFUSED.items()})
    pq.write_table(pa.table(columns), path)
    root = folder / "artifacts"
    assert run(["-q", "encode", "text", str(path), "-c", "title", "--name", "t", "-A", str(root)]) == 0
    return path, root


@pytest.mark.parametrize("column", list(REFUSED))
@pytest.mark.parametrize("how", ["text-column", "template"])
def test_non_text_columns_are_refused_by_name_and_type(published, capsys, column, how):
    path, root = published
    before = snapshot(root)
    fields = ["-c", column] if how == "text-column" else ["-t", "{title}: {" + column + "}"]
    # --force: the refusal comes from the data, before anything would be replaced
    code, lines = cli_error(capsys, "encode", "text", str(path), *fields, "--name", "t", "--force", "-A", str(root))
    assert code == 1 and len(lines) == 1, lines
    expected_type = REFUSED[column][1]
    assert lines[0].startswith(f"Error: {path}: column '{column}' has type {expected_type}"), lines[0]
    assert "not text:" in lines[0] and "first" in lines[0]  # and says what to do
    assert snapshot(root) == before  # the published artifact is untouched, no work folder left
    code, lines = cli_error(capsys, "encode", "text", str(path), *fields, "--name", "fresh", "-A", str(root))
    assert code == 1 and f"column '{column}' has type" in lines[0]
    assert not (root / "embeddings" / "fresh").exists() and snapshot(root) == before


@pytest.mark.parametrize("column", ["raw", "big_raw", "tags", "attrs"])
def test_image_path_column_of_bytes_or_nested_values_is_refused(published, capsys, column):
    path, root = published
    before = snapshot(root)
    code, lines = cli_error(
        capsys, "encode", "image", str(path), "-m", "embedtab-smoke-clip", "--image-column", column, "--name", "image", "-A", str(root)
    )
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"Error: {path}: column '{column}' has type {REFUSED[column][1]}"), lines[0]
    assert snapshot(root) == before and not (root / "embeddings" / "image").exists()


def test_every_input_file_is_checked_before_any_work(tmp_path, capsys):
    good, bad = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"item_id": [1], "title": ["red shoe"]}), good)
    pq.write_table(pa.table({"item_id": [2], "title": pa.array([b"blue hat"])}), bad)
    code, lines = cli_error(capsys, "encode", "text", str(tmp_path / "*.parquet"), "-c", "title", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {bad}: column 'title' has type binary, not text: decode its bytes to a UTF-8 "
        "string column first (embedtab renders strings, numbers, booleans, decimals, dates and times)"
    ]
    assert not (tmp_path / "art" / "embeddings").exists()


# ----------------------------------------------------------------------------- bytes that are not UTF-8
def test_csv_with_a_byte_that_is_not_utf8_is_refused_naming_file_column_and_row(tmp_path):
    """The reported case: one bad byte made the whole column bytes and every row "b'ok text'"."""
    path = tmp_path / "items.csv"
    path.write_bytes(b'item_id,title,note\n1,ok text,x\n2,"quoted, ok",y\n3,bad \xff text,z\n4,fine,w\n')
    proc = subprocess.run(
        [EMBEDTAB, "encode", "text", str(path), "-c", "title", "-A", str(tmp_path / "art")], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: {path}: column 'title', data row 3: bytes that are not valid UTF-8 text; save the file as UTF-8"
    ]
    assert not (tmp_path / "art" / "embeddings").exists()


def test_csv_bad_byte_in_a_later_block_is_found(tmp_path, capsys):
    """Past the reader's first 4 MiB block: the row counts every block before it."""
    path = tmp_path / "items.csv"
    rows = 300_000
    body = b"".join(b"%d,plain title number %d\n" % (i, i) for i in range(1, rows + 1))
    path.write_bytes(b"item_id,title\n" + body + b"%d,caf\xe9 latin-1\n" % (rows + 1))
    assert path.stat().st_size > 2 * (1 << 22)
    code, lines = cli_error(capsys, "encode", "text", str(path), "-t", "{item_id}: {title}", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {path}: column 'title', data row {rows + 1}: bytes that are not valid UTF-8 text; save the file as UTF-8"
    ]


def test_parquet_string_column_with_bytes_that_are_not_utf8_is_refused(tmp_path, capsys):
    """Parquet readers do not check UTF-8: a string column written by another tool may hold any bytes."""
    path = tmp_path / "items.parquet"
    raw = pa.array([b"red shoe", b"blue hat", b"caf\xe9"])
    pq.write_table(pa.table({"item_id": [1, 2, 3], "title": pa.Array.from_buffers(pa.string(), 3, raw.buffers())}), path)
    code, lines = cli_error(capsys, "encode", "text", str(path), "-c", "title", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {path}: column 'title', data row 3: bytes that are not valid UTF-8 text; write the column as UTF-8 strings"
    ]


# ----------------------------------------------------------------------------- plain values
PLAIN = {  # column -> (array, how each value renders)
    "count": (pa.array([3, None], pa.int64()), ["3", None]),
    "small": (pa.array([7, 0], pa.uint8()), ["7", "0"]),
    "price": (pa.array([1.5, 2.0]), ["1.5", "2.0"]),
    "rating": (pa.array([4.7, 0.1], pa.float32()), ["4.7", "0.1"]),  # not 4.699999809265137
    "ok": (pa.array([True, False]), ["True", "False"]),
    "day": (pa.array([datetime.date(2024, 1, 31), None], pa.date32()), ["2024-01-31", None]),
    "when": (pa.array([datetime.datetime(2024, 1, 31, 12, 30), None], pa.timestamp("us")), ["2024-01-31 12:30:00", None]),
    "when_ns": (pa.array([1_706_704_200_000_000_001, None], pa.timestamp("ns")), ["2024-01-31 12:30:00.000000001", None]),
    "when_tz": (pa.array([datetime.datetime(2024, 1, 31, 12, 30)] * 2, pa.timestamp("s", tz="UTC")), ["2024-01-31 12:30:00+00:00"] * 2),
    "at": (pa.array([datetime.time(9, 5), None], pa.time64("us")), ["09:05:00", None]),
    "cost": (pa.array([decimal.Decimal("1.50"), decimal.Decimal("-0.05")], pa.decimal128(6, 2)), ["1.50", "-0.05"]),
    "colour": (pa.array(["red", "red"]).dictionary_encode(), ["red", "red"]),
    "long": (pa.array(["large string", None], pa.large_string()), ["large string", None]),
    "rated": (pa.array([4.7, 4.7], pa.float32()).dictionary_encode(), ["4.7", "4.7"]),
    "nothing": (pa.nulls(2), [None, None]),
    "half": (pa.array(np.array([4.7, 0.1], np.float16)), ["4.7", "0.1"]),  # not 4.69921875
    "at_ns": (pa.array([1, None], pa.time64("ns")), ["00:00:00.000000001", None]),  # the nanosecond kept
    "when_ns_tz": (
        pa.array([1, 1_706_704_200_000_000_000], pa.timestamp("ns", tz="UTC")),
        ["1970-01-01 00:00:00.000000001+00:00", "2024-01-31 12:30:00+00:00"],
    ),
    "tiny": (
        pa.array([decimal.Decimal("0.0000001"), decimal.Decimal("0E-7")], pa.decimal128(10, 7)),
        ["0.0000001", "0.0000000"],
    ),  # positional, never 1E-7
}


@pytest.mark.parametrize("column", list(PLAIN))
def test_plain_values_render_as_their_text(column):
    array, expected = PLAIN[column]
    table = pa.table({column: array})
    texts = render_texts(table, "{" + column + "}", [column])
    assert texts == expected
    for text in texts:
        assert text is None or not any(mark in text for mark in ("(", "[", "b'", "np.", "Decimal", "Timestamp"))


IN_MEMORY_ONLY = {  # types no parquet file holds, refused all the same
    "span": pa.array([(1, 2, 3)], pa.month_day_nano_interval()),
    "either": pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array(["a"]), pa.array([1])]),
    "views": pa.array([["red", "shoe"]], pa.list_view(pa.string())),
    "runs": pc.run_end_encode(pa.array(["a"])),
}


@pytest.mark.parametrize("column", ["tags", "raw", "attrs", "props", *IN_MEMORY_ONLY])
def test_render_texts_refuses_what_would_be_a_repr(column):
    array = IN_MEMORY_ONLY[column] if column in IN_MEMORY_ONLY else REFUSED[column][0]
    with pytest.raises(DataError, match=rf"^column '{column}' has type .*, not text: .* first"):
        render_texts(pa.table({column: array}), "{" + column + "}", [column])


def test_plain_values_through_the_cli_are_the_vectors_of_their_text(tmp_path, capsys):
    """Every type in one template: the content keys are the sha256 of the expected plain text, and
    the vectors equal those of a string column holding that text."""
    template = " | ".join("{" + c + "}" for c in PLAIN if c != "nothing")
    columns = {"item_id": pa.array([10, 20])}
    columns.update({c: a for c, (a, _) in PLAIN.items()})
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table(columns), typed)
    expected = [template.format_map({c: (PLAIN[c][1][i] or "") for c in PLAIN}).strip() for i in range(2)]
    assert "{" not in expected[0] and "4.7 | True | 2024-01-31 | 2024-01-31 12:30:00 |" in expected[0]
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"item_id": [10, 20], "text": expected}), plain)
    root = tmp_path / "art"
    assert run(["-q", "encode", "text", str(typed), "-t", template, "--name", "typed", "-A", str(root)]) == 0
    assert run(["-q", "encode", "text", str(plain), "-c", "text", "--name", "plain", "-A", str(root)]) == 0
    assert index_keys(root, "typed") == [content_key(t.encode()) for t in expected]
    vectors = {n: tables.vectors(tables.read_parts(tables.part_files(root / "embeddings" / n))) for n in ("typed", "plain")}
    np.testing.assert_array_equal(vectors["typed"], vectors["plain"])


def test_pandas_written_columns_render_plainly(tmp_path):
    """A catalog written by pandas (numpy dtypes, categories, datetimes; pandas 3 strings)."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "item_id": [1, 2],
            "title": pd.Series(["red shoe", "blue hat"]),
            "price": np.array([9.5, 10.0], np.float64),
            "stock": np.array([3, 4], np.int32),
            "rating": np.array([4.7, 3.1], np.float32),
            "sale": np.array([True, False]),
            "colour": pd.Categorical(["red", "blue"]),
            "added": pd.to_datetime(["2024-01-31 12:30", "2024-02-01 00:00"]),
        }
    )
    path = tmp_path / "items.parquet"
    frame.to_parquet(path, index=False)
    template = "{title} {price} {stock} {rating} {sale} {colour} {added}"
    source = TextOptions(inputs=[str(path)], name="t", template=template).source()
    texts = [t for _, batch in source.batches(10) for t in batch]
    assert texts == ["red shoe 9.5 3 4.7 True red 2024-01-31 12:30:00", "blue hat 10.0 4 3.1 False blue 2024-02-01 00:00:00"]


def test_csv_text_is_read_as_written(tmp_path):
    """CSV fields are text: no type guessing ("007" keeps its zeros, "1.50" its digits), and an id
    column used in the template keeps its own (integer) type."""
    path = tmp_path / "items.csv"
    path.write_text("item_id,code,price,sale,title\n1,007,1.50,true,red shoe\n2,,2,false,\n")
    source = TextOptions(inputs=[str(path)], name="t", template="{item_id}: {code} {price} {sale} {title}").source()
    ((ids, texts),) = list(source.batches(10))
    assert ids.type == pa.int64() and ids.to_pylist() == [1, 2]
    assert texts == ["1: 007 1.50 true red shoe", "2:  2 false"]


def test_csv_with_valid_utf8_encodes_and_a_bad_byte_elsewhere_does_not_matter(tmp_path, capsys):
    """Only the columns that are rendered must be text: bad bytes in another column are not read."""
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title,blob\n1," + "café crème".encode() + b",\xff\xfe\n2,ok text,x\n")
    root = tmp_path / "art"
    assert run(["-q", "encode", "text", str(path), "-c", "title", "--name", "t", "-A", str(root)]) == 0
    assert index_keys(root, "t") == [content_key("café crème".encode()), content_key(b"ok text")]


def test_image_paths_of_plain_types_are_their_text(tmp_path):
    """A numeric path column names files like 7 -> <root>/7; a dictionary of strings works as strings."""
    from embedtab.encode import ImageOptions

    path = tmp_path / "items.parquet"
    pq.write_table(
        pa.table({"item_id": [1, 2], "image_path": pa.array(["a.jpg", "a.jpg"]).dictionary_encode(), "number": pa.array([7, None])}), path
    )
    by_name = ImageOptions(inputs=[str(path)], name="i", model="embedtab-smoke-clip").source()
    assert [v for _, values in by_name.batches(10) for v in values] == [str(tmp_path / "a.jpg")] * 2
    numbered = ImageOptions(inputs=[str(path)], name="i", model="embedtab-smoke-clip", image_column="number").source()
    assert [v for _, values in numbered.batches(10) for v in values] == [str(tmp_path / "7"), None]


def test_string_view_columns_are_strings(tmp_path):
    """string_view: what newer pyarrow writes and reads back for a view column."""
    table = pa.table({"item_id": [1, 2], "title": pa.array(["red shoe", None], pa.string_view())})
    assert render_texts(table, "{title}!", ["title"]) == ["red shoe!", None]
    path = tmp_path / "items.parquet"
    try:
        pq.write_table(table, path)
    except pa.ArrowNotImplementedError:
        pytest.skip(f"pyarrow {pa.__version__} writes no string_view to parquet")
    source = TextOptions(inputs=[str(path)], name="t", text_columns=["title"]).source()
    assert [t for _, batch in source.batches(10) for t in batch] == ["red shoe", None]


def test_image_path_csv_with_a_byte_that_is_not_utf8_is_refused(tmp_path, capsys):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,image_path\n1,a.jpg\n2,caf\xe9.jpg\n")
    code, lines = cli_error(capsys, "encode", "image", str(path), "-m", "embedtab-smoke-clip", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {path}: column 'image_path', data row 2: bytes that are not valid UTF-8 text; save the file as UTF-8"
    ]
    assert not (tmp_path / "art" / "embeddings").exists()


# ----------------------------------------------------------------------------- values that cannot be rendered
def test_more_plain_renderings():
    """Nanoseconds as pandas writes them (before a time zone too), decimals of any scale without
    exponents, huge integers and decimal256 extremes as their digits."""
    ns = pa.array([-1, 999, 1000, None], pa.timestamp("ns", tz="+05:30"))
    assert render_texts(pa.table({"v": ns}), "{v}", ["v"]) == [
        "1970-01-01 05:29:59.999999999+05:30",
        "1970-01-01 05:30:00.000000999+05:30",
        "1970-01-01 05:30:00.000001+05:30",
        None,
    ]
    times = pa.array([86_399_999_999_999, 5_000, 0], pa.time64("ns")).dictionary_encode()
    assert render_texts(pa.table({"v": times}), "{v}", ["v"]) == ["23:59:59.999999999", "00:00:00.000005", "00:00:00"]
    halves = pa.array(np.array([65504, -0.0001, np.inf], np.float16))
    assert render_texts(pa.table({"v": halves}), "{v}", ["v"]) == ["65500.0", "-0.0001", "inf"]
    coarse = pa.array([decimal.Decimal("1.23E+4")], pa.decimal128(5, -2))
    assert render_texts(pa.table({"v": coarse}), "{v}", ["v"]) == ["12300"]
    widest = decimal.Decimal("9" * 71 + ".99999")
    wide = pa.array([widest, decimal.Decimal("-0.00001")], pa.decimal256(76, 5))
    assert render_texts(pa.table({"v": wide}), "{v}", ["v"]) == [str(widest), "-0.00001"]
    huge = pa.array([2**64 - 1], pa.uint64())
    assert render_texts(pa.table({"v": huge}), "{v}", ["v"]) == ["18446744073709551615"]


UNREPRESENTABLE = {  # column -> (array, the bad value in data row 3, what the error says)
    "far_future": (pa.array([0, None, 253402300800 * 10], pa.timestamp("s")), "a date outside the years 1 to 9999"),
    "before_year_1": (pa.array([0, None, -62135596800 * 10**6 - 1], pa.timestamp("us")), "a date outside the years 1 to 9999"),
    "sentinel_day": (pa.array([0, None, 2**31 - 1], pa.date32()), "a date outside the years 1 to 9999"),
    "past_midnight": (pa.array([0, None, 90_000], pa.time32("s")), "a time outside the day"),
    "before_midnight": (pa.array([0, None, -1], pa.time64("ns")), "a time outside the day"),
}


@pytest.fixture(scope="module")
def unrepresentable(tmp_path_factory):
    path = tmp_path_factory.mktemp("overflow") / "items.parquet"
    columns = {"item_id": pa.array([1, 2, 3])}
    columns.update({name: array for name, (array, _) in UNREPRESENTABLE.items()})
    columns["mars_time"] = pa.array([1, None, 2], pa.timestamp("s", tz="Mars/Olympus"))
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("column", list(UNREPRESENTABLE))
@pytest.mark.parametrize("how", ["template", "image"])
def test_values_python_cannot_hold_are_refused_naming_file_column_type_and_row(unrepresentable, tmp_path, capsys, column, how):
    """Sentinels such as 2**31-1 days or year 10000 used to end in 'unexpected OverflowError'."""
    path = unrepresentable
    if how == "template":
        args = ["encode", "text", str(path), "-t", "{" + column + "}"]
    else:
        args = ["encode", "image", str(path), "-m", "embedtab-smoke-clip", "--image-column", column]
    code, lines = cli_error(capsys, *args, "-A", str(tmp_path / "art"))
    assert code == 1 and len(lines) == 1, lines
    kind = pq.read_schema(path).field(column).type
    assert lines[0].startswith(f"Error: {path}: column '{column}' ({kind}), data row 3: {UNREPRESENTABLE[column][1]}"), lines[0]
    assert not (tmp_path / "art" / "embeddings").exists()


@pytest.mark.parametrize("how", ["template", "image"])
def test_a_time_zone_python_does_not_know_is_refused_before_any_work(unrepresentable, tmp_path, capsys, how):
    path = unrepresentable
    if how == "template":
        args = ["encode", "text", str(path), "-t", "{mars_time}"]
    else:
        args = ["encode", "image", str(path), "-m", "embedtab-smoke-clip", "--image-column", "mars_time"]
    code, lines = cli_error(capsys, *args, "-A", str(tmp_path / "art"))
    kind = pq.read_schema(path).field("mars_time").type
    assert code == 1 and lines == [
        f"Error: {path}: column 'mars_time' has type {kind}: time zone 'Mars/Olympus' is not "
        "one Python knows, so its times cannot be rendered; cast the column to UTC or to "
        "strings first"
    ]


def test_the_row_is_counted_across_batches_and_files(tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"item_id": [1, 2, 3], "day": pa.array([0, 1, 2], pa.date32())}), first)
    days = pa.array([0, 1, 2, 3, 2**31 - 1, 4], pa.date32())
    pq.write_table(pa.table({"item_id": [4, 5, 6, 7, 8, 9], "day": days}), second, row_group_size=2)
    source = TextOptions(inputs=[str(tmp_path / "*.parquet")], name="t", template="{day}").source()
    with pytest.raises(DataError, match=rf"^{second}: column 'day' \(date32\[day\]\), data row 5: a date outside"):
        list(source.batches(2))


def test_any_other_rendering_failure_is_one_line_naming_file_and_column(tmp_path, capsys, monkeypatch):
    from embedtab.encode import values

    def broken(*args):
        raise ArithmeticError("some conversion\nthat fails")

    monkeypatch.setattr(values, "_render", broken)
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": [1], "price": [1.5]}), path)
    code, lines = cli_error(capsys, "encode", "text", str(path), "-t", "{price}", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {path}: column 'price' (double): cannot render its values as text (ArithmeticError: some conversion)"
    ]


# ----------------------------------------------------------------------------- CSV header and id column
def test_csv_header_that_is_not_utf8_is_refused_naming_the_file(tmp_path, capsys):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,t\xeftle,desc\n1,a,b\n")
    code, lines = cli_error(capsys, "encode", "text", str(path), "-t", "{title}", "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [f"Error: {path}: the header row (field 2) is not valid UTF-8 text; save the file as UTF-8"]


@pytest.mark.parametrize("template", ["{title}", "{item_id}: {title}"])
def test_csv_id_with_a_byte_that_is_not_utf8_is_refused_not_read_as_bytes(tmp_path, capsys, template):
    """One bad byte made the id column binary: ids b'1', b'\\xff2' were published."""
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title,desc\n1,a,b\n\xff2,c,d\n")
    code, lines = cli_error(capsys, "encode", "text", str(path), "-t", template, "-A", str(tmp_path / "art"))
    assert code == 1 and lines == [
        f"Error: {path}: column 'item_id', data row 2: bytes that are not valid UTF-8 text; save the file as UTF-8"
    ]
    assert not (tmp_path / "art" / "embeddings").exists()


@pytest.mark.parametrize(
    "ids", [pa.array([[1], [2]]), pa.array([{"a": 1}, {"a": 2}]), pa.array([[("k", "v")], []], pa.map_(pa.string(), pa.string()))]
)
def test_nested_id_columns_are_refused(tmp_path, capsys, ids):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ids, "title": ["red shoe", "blue hat"]}), path)
    code, lines = cli_error(capsys, "encode", "text", str(path), "-c", "title", "-A", str(tmp_path / "art"))
    kind = pq.read_schema(path).field("item_id").type  # (as parquet names the list's and map's fields)
    assert code == 1 and lines == [
        f"Error: {path}: id column 'item_id' has type {kind}: an id must be one value (an "
        "integer or a string); make it a column of those first"
    ]


def test_parquet_binary_ids_stay_keys(tmp_path):
    """Bytes are a fine key in parquet (UUIDs as fixed_size_binary[16]): kept as they are, never rendered."""
    path = tmp_path / "items.parquet"
    ids = pa.array([b"\x00" * 16, b"\xff" * 16], pa.binary(16))
    pq.write_table(pa.table({"item_id": ids, "title": ["red shoe", "blue hat"]}), path)
    ((got, texts),) = list(TextOptions(inputs=[str(path)], name="t", text_columns=["title"]).source().batches(10))
    assert got.type == pa.binary(16) and got.to_pylist() == ids.to_pylist() and texts == ["red shoe", "blue hat"]
