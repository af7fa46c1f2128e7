"""Table helpers: background prefetch, embedding part streaming."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embedtab import tables


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
