"""lookup: tables indexed by Categorify ids, checked with Merlin's own dataloader."""

from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedtab import lookup, tables
from embedtab.errors import DataError, UsageError
from embedtab.workflow.stage import load_workflow, quiet_merlin

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)


def encoder_vectors(store, name) -> dict:
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return dict(zip(table.column("item_id").to_pylist(), tables.vectors(table)))


@pytest.mark.parametrize("name, source", [("text-train", "text"), ("image-train", "image")])
def test_merlin_dataloader_gathers_the_encoders_vector_for_every_row(chain, sample, name, source):
    from merlin.dataloader.ops.embeddings import EmbeddingOperator
    from merlin.dataloader.torch import Loader
    from merlin.io import Dataset

    npy = chain.path("lookups", name) / "_embeddings.npy"
    parts = sorted(glob.glob(str(chain.path("datasets", "train") / "*.parquet")))
    with quiet_merlin():
        loader = Loader(
            Dataset(parts, cpu=True),
            batch_size=128,
            shuffle=False,
            transforms=[EmbeddingOperator(str(npy), lookup_key="item_id", embedding_name="item_vec")],
        )
        gathered = [(batch[0]["item_id"].numpy().ravel(), batch[0]["item_vec"].numpy()) for batch in loader]
    cat_ids = np.concatenate([g[0] for g in gathered])
    vectors = np.concatenate([g[1] for g in gathered])

    raw = pd.concat([pd.read_parquet(sample / "interactions" / f"day_{d}.parquet") for d in (1, 2)], ignore_index=True)
    assert len(vectors) == len(raw) == 2000
    encoded = encoder_vectors(chain, source)
    dim = next(iter(encoded.values())).shape[0]
    expected = np.stack([encoded.get(i, np.zeros(dim, np.float32)) for i in raw["item_id"]])
    np.testing.assert_array_equal(vectors, expected)
    assert (cat_ids >= 3).all()  # every training item is in the vocabulary
    if source == "image":  # the items whose image was missing/corrupt gather zeros
        failed = set(pq.read_table(chain.path("embeddings", "image") / "_errors.parquet").column("item_id").to_pylist())
        assert not np.any(vectors[raw["item_id"].isin(failed).to_numpy()])


def test_table_layout_reserved_rows_and_present_flags(chain):
    record = chain.get("lookups", "image-train")
    directory = chain.path("lookups", "image-train")
    table = pq.read_table(directory / "table.parquet")
    matrix = np.load(directory / "_embeddings.npy")
    with quiet_merlin():
        import nvtabular as nvt

        workflow, _ = load_workflow(chain, "interactions")
        cardinality = nvt.ops.get_embedding_sizes(workflow)["item_id"][0]
    assert matrix.shape == (cardinality, 32) and matrix.dtype == np.float32
    assert table.num_rows == cardinality
    assert table.column("cat_id").to_pylist() == list(range(cardinality))
    np.testing.assert_array_equal(tables.vectors(table), matrix)
    present = np.array(table.column("present").to_pylist())
    raw_ids = table.column("item_id").to_pylist()
    assert raw_ids[:3] == [None, None, None] and not present[:3].any()  # pad, null, OOV
    assert not matrix[:3].any()
    encoded = encoder_vectors(chain, "image")
    for cat_id, raw in enumerate(raw_ids[3:], start=3):
        if raw in encoded:
            assert present[cat_id]
            np.testing.assert_array_equal(matrix[cat_id], encoded[raw])
        else:
            assert not present[cat_id] and not matrix[cat_id].any()
    assert record.metadata["cardinality"] == cardinality
    assert record.metadata["with_embedding"] == int(present.sum())
    assert record.metadata["vocabulary"] == cardinality - 3


def put_embeddings(store, name, ids, vectors):
    plan = store.plan("embeddings", name, "test", {"v": vectors.tolist()}, force=True)
    with store.staging(plan) as staging:
        tables.write_parquet(tables.embeddings_table("item_id", ids, vectors), staging / tables.part_name(0))
        return store.publish(plan, staging, metadata={"id_column": "item_id", "dim": vectors.shape[1]})


def test_up_to_date_then_stale_after_upstream_change_then_rebuilt(store, sample):
    from embedtab.status import health
    from embedtab.workflow import stage
    from tests.conftest import CONFIGS

    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    ids = pa.array(pq.read_table(sample / "items.parquet").column("item_id").to_pylist()[:50])
    put_embeddings(store, "e", ids, np.ones((50, 4), np.float32))
    first = lookup.run(store, lookup.LookupOptions("e", "item"))
    assert lookup.run(store, lookup.LookupOptions("e", "item")).up_to_date
    assert health(store, first.record) == ("ok", [])

    put_embeddings(store, "e", ids, np.full((50, 4), 2.0, np.float32))
    assert health(store, store.get("lookups", "e")) == ("stale", ["embeddings/e changed"])
    rebuilt = lookup.run(store, lookup.LookupOptions("e", "item"))  # same recipe: rebuilt without --force
    assert not rebuilt.up_to_date
    matrix = np.load(store.path("lookups", "e") / "_embeddings.npy")
    assert set(np.unique(matrix)) == {0.0, 2.0}
    assert health(store, rebuilt.record) == ("ok", [])
    assert rebuilt.record.metadata["coverage"] == 0.25  # 50 of 200 catalog items


def test_column_without_categorify_and_unmatched_ids(store, sample, tmp_path):
    from embedtab.workflow import stage
    from tests.conftest import CONFIGS

    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    put_embeddings(store, "strs", pa.array(["a", "b"]), np.ones((2, 4), np.float32))
    with pytest.raises(UsageError, match=r"no Categorify for column 'price' \(categorified columns: brand, category, item_id\)"):
        lookup.run(store, lookup.LookupOptions("strs", "item", "price"))
    with pytest.raises(DataError, match="the workflow's vocabulary is int64 and the embeddings' ids are string"):
        lookup.run(store, lookup.LookupOptions("strs", "item", "item_id"))
    assert store.get("lookups", "strs") is None


def test_id_types_are_coerced_only_when_lossless():
    assert lookup.common_type(pa.float64(), pa.int32(), "item_id") == pa.int64()
    assert lookup.common_type(pa.string(), pa.large_string(), "item_id") == pa.large_string()
    assert lookup.common_type(pa.int64(), pa.int64(), "item_id") is None
    with pytest.raises(DataError, match="cannot be converted to int64 without loss"):
        lookup._cast(pa.array([1.5]), pa.int64(), "the vocabulary")
    with pytest.raises(DataError, match="vocabulary is int64 and the embeddings' ids are string"):
        lookup.common_type(pa.int64(), pa.string(), "item_id")


@pytest.fixture
def item_store(store, sample):
    from embedtab.workflow import stage
    from tests.conftest import CONFIGS

    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    ids = pq.read_table(sample / "items.parquet").column("item_id").to_pylist()
    rng = np.random.default_rng(0)
    put_embeddings(store, "image", pa.array(ids[:150]), rng.normal(size=(150, 4)).astype(np.float32))
    put_embeddings(store, "text", pa.array(ids[50:] + [1, 2]), rng.normal(size=(152, 3)).astype(np.float32))
    return store, ids


def test_several_sources_one_table_each_or_concatenated(item_store):
    store, ids = item_store
    separate = lookup.run(store, lookup.LookupOptions(["image", "text"], "item"))
    directory = store.path("lookups", "image+text")
    image, text = np.load(directory / "_image.npy"), np.load(directory / "_text.npy")
    assert image.shape == (203, 4) and text.shape == (203, 3) and not (directory / "_embeddings.npy").exists()
    table = pq.read_table(directory / "table.parquet")
    assert {"present_image", "present_text", "embedding_image", "embedding_text"} <= set(table.column_names)
    cov = separate.record.metadata["by_source"]
    assert (cov["image"]["with_embedding"], cov["text"]["with_embedding"]) == (150, 150)
    assert cov["text"]["embeddings_not_in_vocabulary"] == 2 and cov["text"]["not_in_vocabulary_examples"] == [1, 2]

    joined = lookup.run(store, lookup.LookupOptions(["image", "text"], "item", concat=True, name="both"))
    both = np.load(store.path("lookups", "both") / "_embeddings.npy")
    np.testing.assert_array_equal(both, np.hstack([image, text]))
    present = np.array(pq.read_table(store.path("lookups", "both") / "table.parquet").column("present").to_pylist())
    assert present.sum() == 100  # items 50..149 have both
    assert joined.record.metadata["dim"] == 7


def test_fill_mean_keeps_padding_zero_and_flags_rows(item_store):
    store, ids = item_store
    result = lookup.run(store, lookup.LookupOptions(["image"], "item", fill="mean", name="m"))
    matrix = np.load(store.path("lookups", "m") / "_embeddings.npy")
    table = pq.read_table(store.path("lookups", "m") / "table.parquet")
    present = np.array(table.column("present").to_pylist())
    mean = matrix[present].mean(axis=0)
    assert not matrix[0].any()  # padding
    np.testing.assert_allclose(matrix[1], mean, rtol=1e-6)  # null and OOV rows get the mean
    np.testing.assert_allclose(matrix[~present][1:], np.tile(mean, ((~present).sum() - 1, 1)), rtol=1e-6)
    assert result.record.metadata["fill"] == "mean"


def test_min_coverage_refuses_with_examples(item_store):
    store, ids = item_store
    with pytest.raises(
        DataError, match=r"embeddings 'image' cover 150 of 200 item_id values \(75.0% < --min-coverage 90.0%\); missing e.g. \[\d+"
    ):
        lookup.run(store, lookup.LookupOptions(["image"], "item", min_coverage=0.9))
    assert store.get("lookups", "image") is None


def test_hash_buckets_reserve_several_oov_rows(store, sample, tmp_path):
    import yaml

    from embedtab.workflow import stage

    config = tmp_path / "wf.yaml"
    config.write_text(
        yaml.safe_dump({"features": [{"columns": ["item_id"], "ops": [{"categorify": {"num_buckets": 4, "max_size": 100}}]}]})
    )
    stage.fit(store, stage.FitOptions(str(config), [str(sample / "items.parquet")], name="buckets"))
    ids = pq.read_table(sample / "items.parquet").column("item_id").to_pylist()
    put_embeddings(store, "e", pa.array(ids), np.ones((len(ids), 2), np.float32))
    with pytest.raises(
        DataError,
        match=r"106 of 200 items of embeddings 'e' are not in the item_id vocabulary of workflow 'buckets' \(53.0%; e.g. \[\d+.*pass --min-reachable 0.47 to accept it",
    ):
        lookup.run(store, lookup.LookupOptions(["e"], "buckets"))
    assert store.get("lookups", "e") is None
    result = lookup.run(store, lookup.LookupOptions(["e"], "buckets", min_reachable=0.47))
    assert result.record.metadata["reachable"] == 0.47 and result.record.metadata["by_source"]["e"]["encoded"] == 200
    table = pq.read_table(store.path("lookups", "e") / "table.parquet")
    assert result.record.metadata["reserved_ids"] == 6  # pad, null, 4 OOV buckets
    assert table.column("item_id").to_pylist()[:6] == [None] * 6
    assert table.column("present").to_pylist()[:6] == [False] * 6
    assert (result.record.metadata["vocabulary"], result.record.metadata["cardinality"]) == (94, 100)  # max_size counts the reserved rows
