"""reduce: equality with scikit-learn PCA, saved projection, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embedtab import reduce, tables
from embedtab.errors import ArtifactNotFound, DataError, UsageError


def put_embeddings(store, name, ids, vectors):
    plan = store.plan("embeddings", name, "test", {"n": len(ids)}, force=True)
    with store.staging(plan) as staging:
        tables.write_parquet(tables.embeddings_table("item_id", pa.array(ids, type=pa.int64()), vectors), staging / tables.part_name(0))
        return store.publish(plan, staging, metadata={"id_column": "item_id", "dim": vectors.shape[1]})


def correlated(n=300, d=24, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) * np.linspace(3, 0.1, d)) @ basis + 5.0


def align_signs(reference, other):
    signs = np.sign(np.sum(reference * other, axis=0))
    return other * signs


@pytest.mark.parametrize("whiten", [False, True])
def test_reduce_equals_sklearn_pca_up_to_sign(store, whiten):
    from sklearn.decomposition import PCA

    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(1000, 1300)), x)
    result = reduce.run(store, reduce.ReduceOptions("src", 8, whiten=whiten))
    out = tables.read_parts(tables.part_files(store.path("embeddings", "src-pca8")))
    assert out.column("item_id").to_pylist() == list(range(1000, 1300))
    got = tables.vectors(out)
    expected = PCA(8, whiten=whiten).fit_transform(x.astype(np.float64))
    expected = align_signs(got, expected)
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() / scale <= 1e-4
    ratio = PCA(8).fit(x.astype(np.float64)).explained_variance_ratio_
    np.testing.assert_allclose(result.projection.metadata["explained_variance_ratio"], ratio, atol=1e-6)


def test_sign_convention_and_saved_projection_reapplies(store):
    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    reduce.run(store, reduce.ReduceOptions("src", 6, name="p"))
    projection = reduce.Projection.load(store.path("projections", "p"))
    rows = np.arange(6)
    assert (projection.components[rows, np.abs(projection.components).argmax(axis=1)] > 0).all()
    fitted = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "p"))))
    np.testing.assert_array_equal(projection.transform(x), fitted)  # re-applying reproduces the output exactly
    # npz without pickles: loading with allow_pickle=False worked above; the file has plain arrays only.
    with np.load(store.path("projections", "p") / "projection.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["components", "explained_variance", "explained_variance_ratio", "mean", "whiten"]


def test_rerun_is_up_to_date(store):
    put_embeddings(store, "src", list(range(300)), correlated().astype(np.float32))
    first = reduce.run(store, reduce.ReduceOptions("src", 4))
    again = reduce.run(store, reduce.ReduceOptions("src", 4))
    assert again.up_to_date and again.embeddings.fingerprint == first.embeddings.fingerprint
    assert {u["kind"] for u in first.embeddings.inputs["artifacts"]} == {"embeddings", "projections"}


def test_reduce_errors(store):
    x = correlated(n=10, d=6).astype(np.float32)
    put_embeddings(store, "small", list(range(10)), x)
    with pytest.raises(UsageError, match="between 1 and 5"):
        reduce.run(store, reduce.ReduceOptions("small", 6))
    with pytest.raises(UsageError, match="needs more than"):
        put_embeddings(store, "tiny", [1, 2, 3], correlated(n=3, d=6).astype(np.float32))
        reduce.run(store, reduce.ReduceOptions("tiny", 4))
    with pytest.raises(ArtifactNotFound):
        reduce.run(store, reduce.ReduceOptions("nope", 2))
    bad = x.copy()
    bad[3, 1] = np.nan
    put_embeddings(store, "nan", list(range(100, 110)), bad)
    with pytest.raises(DataError, match=r"1 rows hold NaN or inf \(ids \[103\]\)"):
        reduce.run(store, reduce.ReduceOptions("nan", 2))
    assert store.get("embeddings", "nan-pca2") is None
    with pytest.raises(UsageError, match="--backend cuml needs cuML"):
        reduce.choose_backend("cuml")
