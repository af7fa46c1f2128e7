"""Table helpers: background prefetch, embedding part streaming."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embedtab import tables
from embedtab.errors import DataError


def test_prefetch_keeps_order_and_raises_in_place():
    assert list(tables.prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        yield 2
        raise ValueError("broken part")

    seen = []
    with pytest.raises(ValueError, match="broken part"):
        for item in tables.prefetch(failing()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetch_stops_its_producer_when_the_consumer_stops():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in tables.prefetch(endless(), depth=2):
        if item == 5:
            break
    count = len(produced)
    assert count <= 10  # bounded look-ahead, then the producer ends


def test_iter_embeddings_streams_batches_and_part_writer_keeps_parts(tmp_path):
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    for index in range(2):
        ids = pa.array(np.arange(index * 50, index * 50 + 50))
        tables.write_parquet(tables.embeddings_table("item_id", ids, np.full((50, 3), index, np.float32)), source / tables.part_name(index))
    batches = list(tables.iter_embeddings(source, "item_id", batch_rows=20))
    assert [len(b[0]) for b in batches] == [20, 20, 10, 20, 20, 10]
    writer = tables.PartWriter(out, "item_id")
    for ids, x, path in batches:
        writer.write(path, ids, x * 2)
    writer.close()
    assert [p.name for p in tables.part_files(out)] == ["part-00000.parquet", "part-00001.parquet"]
    back = tables.read_parts(tables.part_files(out))
    assert back.column("item_id").to_pylist() == list(range(100))
    np.testing.assert_array_equal(tables.vectors(back)[50:], np.full((50, 3), 2, np.float32))


def test_columns_fingerprint_follows_only_the_columns_asked_for(tmp_path):
    import pandas as pd

    from embedtab.fingerprint import columns_fingerprint

    path = tmp_path / "t.parquet"
    frame = pd.DataFrame({"a": [1, 2, None], "b": ["x", "y", "z"], "tags": [[1], [2], []]})
    frame.to_parquet(path)
    first = columns_fingerprint([path], ["a"])
    frame.assign(b=["changed", "y", "z"]).to_parquet(path)
    assert columns_fingerprint([path], ["a"]) == first  # another column changed
    assert columns_fingerprint([path], ["a", "b"]) != columns_fingerprint([path], ["a"])
    frame.assign(a=[2, 1, None]).to_parquet(path)
    assert columns_fingerprint([path], ["a"]) != first  # values (here: row order) changed
    frame.assign(a=[1, 2, 3]).to_parquet(path)
    assert columns_fingerprint([path], ["a"]) != first  # a null became a value
    assert columns_fingerprint([path], ["tags"]) is None  # nested values: the caller hashes the file


def test_iter_embeddings_reads_row_groups_in_parallel_in_order_and_streams_big_ones(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 4), dtype=np.float32)
    ids = np.arange(1000)
    # part 0: small row groups (decoded on threads); part 1: one big row group (streamed in batches)
    pq.write_table(tables.embeddings_table("item_id", pa.array(ids[:500]), x[:500]), tmp_path / tables.part_name(0), row_group_size=50)
    pq.write_table(tables.embeddings_table("item_id", pa.array(ids[500:]), x[500:]), tmp_path / tables.part_name(1), row_group_size=500)
    batches = list(tables.iter_embeddings(tmp_path, "item_id", batch_rows=40, workers=3))
    assert max(len(b[0]) for b in batches) == 40
    assert np.concatenate([b[0].to_numpy() for b in batches]).tolist() == ids.tolist()
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), x)
    assert [b[2].name for b in batches][:2] == ["part-00000.parquet"] * 2 and batches[-1][2].name == "part-00001.parquet"
    np.testing.assert_array_equal(tables.read_vectors(tmp_path), x)
    # old artifacts (nullable values) read the same
    pq.write_table(
        pa.table({"item_id": pa.array(ids[:3]), "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[:3].ravel()), 4)}),
        tmp_path / tables.part_name(2),
    )
    assert len(tables.read_vectors(tmp_path)) == 1003


def test_iter_embeddings_names_the_broken_file_and_stops_cleanly(tmp_path):
    for index in range(3):
        tables.write_parquet(
            tables.embeddings_table("item_id", pa.array([index]), np.ones((1, 2), np.float32)), tmp_path / tables.part_name(index)
        )
    (tmp_path / tables.part_name(1)).write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"part-00001.parquet: cannot read embeddings"):
        list(tables.iter_embeddings(tmp_path, "item_id"))


def test_ordered_map_keeps_order_bounds_look_ahead_and_stops():
    import threading
    import time

    started = []
    lock = threading.Lock()

    def slow(item):
        with lock:
            started.append(item)
        time.sleep(0.002 * (item % 3))
        return item * 2

    assert list(tables.ordered_map(slow, range(50), workers=4, ahead=6)) == [i * 2 for i in range(50)]
    started.clear()
    for value in tables.ordered_map(slow, range(1000), workers=2, ahead=3):
        if value == 4:
            break
    time.sleep(0.05)
    assert len(started) <= 6  # three done, three at most submitted ahead

    def failing(item):
        if item == 3:
            raise ValueError("part 3 is broken")
        return item

    seen = []
    with pytest.raises(ValueError, match="part 3 is broken"):
        for value in tables.ordered_map(failing, range(10), workers=2, ahead=4):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_vectors_are_written_with_non_null_values():
    table = tables.embeddings_table("item_id", pa.array([1]), np.ones((1, 3), np.float32))
    assert table.schema.field("embedding").type == tables.embedding_type(3)
    assert not table.schema.field("embedding").type.value_field.nullable
