"""reduce over a grown source: the saved projection is re-applied, never refitted, and unchanged
items keep their reduced bytes (embedtab/reduce/update.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedtab import reduce, tables
from embedtab.encode import TextOptions, run_text
from embedtab.errors import ArtifactExists
from embedtab.reduce import ReduceOptions


def write_catalog(path, ids, titles):
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "title": pa.array(titles)}), path)


def titled(ids) -> list[str]:
    return [f"a {['red', 'blue'][i % 2]} thing number {i}" for i in ids]


def vectors_by_id(store, name) -> dict[int, bytes]:
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return {i: v.tobytes() for i, v in zip(table.column("item_id").to_pylist(), tables.vectors(table))}


def test_a_grown_source_is_projected_with_the_saved_projection_and_old_rows_keep_their_bytes(store, tmp_path):
    path = tmp_path / "catalog.parquet"
    ids = list(range(100, 160))
    titles = [f"item number {i}: a {['red', 'green', 'blue'][i % 3]} {['lamp', 'chair', 'mug', 'sofa'][i % 4]}" for i in ids]
    write_catalog(path, ids, titles)
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"]))
    day1 = reduce.run(store, ReduceOptions("text", dims=8))
    projection_bytes = (store.path("projections", "text-pca8") / "projection.npz").read_bytes()
    before = vectors_by_id(store, "text-pca8")

    # Day 2: three new items inserted among the old ones (every later row moves), one title edited.
    new_ids, new_titles = [5, 999999, 100500], ["a brand new lamp", "a brand new mug", "a brand new chair"]
    grown_ids = ids[:20] + new_ids + ids[20:]
    grown_titles = titles[:19] + ["item number 119: now a yellow lamp"] + new_titles + titles[20:]
    write_catalog(path, grown_ids, grown_titles)
    encoded = run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"]))
    assert encoded.summary["reused"] == 59 and encoded.summary["encoded"] == 4

    day2 = reduce.run(store, ReduceOptions("text", dims=8))  # the same command: an update, no --force
    assert not day2.up_to_date
    assert (store.path("projections", "text-pca8") / "projection.npz").read_bytes() == projection_bytes  # not refitted
    assert day2.projection.metadata == day1.projection.metadata and day2.projection.summary["kept"] is True
    assert day2.embeddings.summary["reused"] == 59
    after = vectors_by_id(store, "text-pca8")
    assert sorted(after) == sorted(grown_ids)
    unchanged = [i for i in ids if i != 119]
    assert all(after[i] == before[i] for i in unchanged)  # bit for bit
    assert after[119] != before[119]  # its text changed: projected afresh
    source = vectors_by_id(store, "text")
    from embedtab.reduce import Projection

    projection = Projection.load(store.path("projections", "text-pca8"))
    fresh = projection.transform(np.stack([np.frombuffer(source[i], np.float32) for i in [119, *new_ids]]), np)
    got = np.stack([np.frombuffer(after[i], np.float32) for i in [119, *new_ids]])
    np.testing.assert_allclose(got, fresh, atol=1e-5)

    assert reduce.run(store, ReduceOptions("text", dims=8)).up_to_date
    refit = reduce.run(store, ReduceOptions("text", dims=8, force=True))  # --force refits on today's source
    assert refit.projection.metadata["fit_on"]["fingerprint"] == store.get("embeddings", "text").fingerprint
    assert refit.projection.metadata["fit_on"]["fingerprint"] != day1.projection.metadata["fit_on"]["fingerprint"]


def reduced_catalog(store, tmp_path) -> tuple:
    """Day 1 of a small catalog: 40 titled items encoded as `text` and reduced to 4 dims."""
    path = tmp_path / "catalog.parquet"
    ids = list(range(40))
    write_catalog(path, ids, titled(ids))
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"]))
    reduce.run(store, ReduceOptions("text", dims=4))
    return path, ids


def test_vectors_of_another_encoder_are_never_projected_with_the_kept_projection(store, tmp_path):
    path, ids = reduced_catalog(store, tmp_path)
    # The same items through another encoder setting: another vector space.
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"], normalize=False, force=True))
    with pytest.raises(ArtifactExists, match="embeddings/text changed|made from other inputs"):
        reduce.run(store, ReduceOptions("text", dims=4))  # a refit of another space: --force, as before
    refit = reduce.run(store, ReduceOptions("text", dims=4, force=True))
    assert refit.projection.summary.get("kept") is None


def test_ids_of_another_type_are_projected_afresh_not_reused(store, tmp_path):
    path, ids = reduced_catalog(store, tmp_path)
    titles = titled(ids)
    pq.write_table(pa.table({"item_id": pa.array([str(i) for i in ids]), "title": pa.array(titles)}), path)
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"], force=True))
    updated = reduce.run(store, ReduceOptions("text", dims=4))
    assert updated.embeddings.summary["reused"] == 0 and updated.embeddings.summary["rows"] == 40


def test_damaged_reduced_vectors_are_projected_again_not_reused(store, tmp_path):
    path, ids = reduced_catalog(store, tmp_path)
    (store.path("embeddings", "text-pca4") / "_source_keys.parquet").unlink()
    write_catalog(path, [*ids, 99], [*titled(ids), "a new thing"])
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"]))
    updated = reduce.run(store, ReduceOptions("text", dims=4))  # the projection is intact: kept, not refitted
    assert updated.projection.summary["kept"] is True and updated.embeddings.summary["reused"] == 0


def _grown_day(store, path, ids, titles):
    """Day 1 encoded and reduced; then two new items encoded (the source grew)."""
    write_catalog(path, ids, titles)
    run_text(store, TextOptions(inputs=[str(path)], name="text", text_columns=["title"]))


def test_a_reduction_of_a_reduction_is_refitted_only_when_asked(store, tmp_path):
    path, ids = tmp_path / "catalog.parquet", list(range(40))
    _grown_day(store, path, ids, titled(ids))
    reduce.run(store, ReduceOptions("text", dims=8))
    reduce.run(store, ReduceOptions("text-pca8", dims=4, name="p4"))
    reduce.run(store, ReduceOptions("text", dims=8, whiten=True, name="text-pca8", force=True))  # another space upstream
    with pytest.raises(ArtifactExists):  # not re-applied silently: its source has no encoder identity to check
        reduce.run(store, ReduceOptions("text-pca8", dims=4, name="p4"))


def test_a_damaged_projection_kept_over_a_grown_source_is_refused_not_refitted(store, tmp_path):
    from embedtab.errors import IntegrityError

    path, ids = tmp_path / "catalog.parquet", list(range(40))
    titles = titled(ids)
    _grown_day(store, path, ids, titles)
    reduce.run(store, ReduceOptions("text", dims=8))
    _grown_day(store, path, [*ids, 77], [*titles, "a new lamp"])
    reduce.run(store, ReduceOptions("text", dims=8))  # day 2: kept, fitted on day 1's vectors
    npz = store.path("projections", "text-pca8") / "projection.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 1
    npz.write_bytes(bytes(data))
    _grown_day(store, path, [*ids, 77, 78], [*titles, "a new lamp", "a new mug"])
    with pytest.raises(IntegrityError, match=r"projections 'text-pca8' is damaged .*a refit would move every reduced vector"):
        reduce.run(store, ReduceOptions("text", dims=8))


def test_fit_on_another_artifact_that_did_not_change_is_re_applied(store, tmp_path):
    path, ids = tmp_path / "catalog.parquet", list(range(40))
    titles = titled(ids)
    write_catalog(tmp_path / "base.parquet", ids, titles)
    run_text(store, TextOptions(inputs=[str(tmp_path / "base.parquet")], name="base", text_columns=["title"]))
    _grown_day(store, path, ids, titles)
    reduce.run(store, ReduceOptions("text", dims=8, fit_on="base", name="fb"))
    before = vectors_by_id(store, "fb")
    _grown_day(store, path, [*ids, 77], [*titles, "a new lamp"])
    day2 = reduce.run(store, ReduceOptions("text", dims=8, fit_on="base", name="fb"))  # no --force needed
    assert day2.projection.summary["kept"] is True and day2.embeddings.summary["reused"] == 40
    after = vectors_by_id(store, "fb")
    assert all(after[i] == before[i] for i in ids)
