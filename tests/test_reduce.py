"""reduce: every backend equals scikit-learn PCA, saved projections re-apply exactly, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedtab import reduce, tables
from embedtab.errors import ArtifactNotFound, DataError, UsageError


def put_embeddings(store, name, ids, vectors, part_rows=100):
    plan = store.plan("embeddings", name, "test", {"n": len(ids), "sum": float(np.nansum(vectors))}, force=True)
    with store.staging(plan) as staging:
        for index, start in enumerate(range(0, len(ids), part_rows)):
            table = tables.embeddings_table(
                "item_id", pa.array(ids[start : start + part_rows], type=pa.int64()), vectors[start : start + part_rows]
            )
            tables.write_parquet(table, staging / tables.part_name(index))
        return store.publish(plan, staging, metadata={"id_column": "item_id", "dim": vectors.shape[1]})


def correlated(n=300, d=24, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) * np.linspace(3, 0.1, d)) @ basis + 5.0


def read(store, name):
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return table.column("item_id").to_pylist(), tables.vectors(table)


def align_signs(reference, other):
    signs = np.sign(np.sum(reference * other, axis=0))
    return other * signs


def relative_error(got, expected):
    return np.abs(got - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("backend", ["sklearn", "streaming"])
@pytest.mark.parametrize("whiten", [False, True])
def test_every_backend_equals_sklearn_pca_up_to_sign(store, backend, whiten):
    from sklearn.decomposition import PCA

    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(1000, 1300)), x, part_rows=64)
    result = reduce.run(store, reduce.ReduceOptions("src", 8, whiten=whiten, backend=backend))
    ids, got = read(store, "src-pca8")
    assert ids == list(range(1000, 1300))
    expected = PCA(8, whiten=whiten).fit_transform(x.astype(np.float64))
    assert relative_error(got, align_signs(got, expected)) <= 1e-4
    ratio = PCA(8).fit(x.astype(np.float64)).explained_variance_ratio_
    np.testing.assert_allclose(result.projection.metadata["explained_variance_ratio"], ratio, atol=1e-5)
    assert result.projection.metadata["backend"] == backend


def test_backends_agree_exactly_in_sign(store):
    x = correlated(n=500, d=16).astype(np.float32)
    put_embeddings(store, "src", list(range(500)), x)
    reduce.run(store, reduce.ReduceOptions("src", 5, name="a", backend="sklearn"))
    reduce.run(store, reduce.ReduceOptions("src", 5, name="b", backend="streaming"))
    a = reduce.Projection.load(store.path("projections", "a")).components
    b = reduce.Projection.load(store.path("projections", "b")).components
    np.testing.assert_allclose(a, b, atol=1e-5)  # same sign convention: no alignment needed
    rows = np.arange(5)
    assert (a[rows, np.abs(a).argmax(axis=1)] > 0).all()


def test_apply_on_training_rows_reproduces_the_fit_exactly_and_projects_new_items(store):
    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    reduce.run(store, reduce.ReduceOptions("src", 6, name="p", normalize=True))
    record, up_to_date = reduce.apply(store, "p", "src", name="again")
    assert not up_to_date and record.metadata["projection"] == "p"
    assert {u["name"] for u in record.inputs["artifacts"]} == {"src", "p"}
    np.testing.assert_array_equal(read(store, "again")[1], read(store, "p")[1])
    np.testing.assert_allclose(np.linalg.norm(read(store, "p")[1], axis=1), 1.0, atol=1e-5)  # --normalize

    new = correlated(n=40, seed=9).astype(np.float32)
    put_embeddings(store, "new", list(range(5000, 5040)), new)
    reduce.apply(store, "p", "new")
    projection = reduce.Projection.load(store.path("projections", "p"))
    ids, got = read(store, "new-p")
    assert ids == list(range(5000, 5040))
    np.testing.assert_array_equal(got, projection.transform(new))
    assert reduce.apply(store, "p", "new")[1]  # up to date
    with np.load(store.path("projections", "p") / "projection.npz", allow_pickle=False) as data:
        assert sorted(data.files) == [
            "components",
            "explained_variance",
            "explained_variance_ratio",
            "mean",
            "normalize",
            "shift",
            "whiten",
        ]


def test_variance_picks_the_smallest_dims_and_the_curve_is_recorded(store):
    x = correlated(d=20).astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    result = reduce.run(store, reduce.ReduceOptions("src", None, variance=0.9))
    meta = result.projection.metadata
    cumulative = np.cumsum(meta["explained_variance_ratio"])
    assert cumulative[-1] >= 0.9 and (len(cumulative) == 1 or cumulative[-2] < 0.9)
    assert result.projection.name == "src-pca90pct"
    assert meta["explained_variance_curve"][str(meta["dims"])] == round(float(cumulative[-1]), 4)


def test_fit_on_a_sample_or_another_artifact(store):
    x = correlated(n=600).astype(np.float32)
    put_embeddings(store, "src", list(range(600)), x)
    sampled = reduce.run(store, reduce.ReduceOptions("src", 4, name="s", fit_on="200", seed=1, backend="streaming"))
    assert sampled.projection.metadata["fit_on"]["rows"] == 200 and len(read(store, "s")[0]) == 600
    again = reduce.run(store, reduce.ReduceOptions("src", 4, name="s2", fit_on="200", seed=1, backend="sklearn"))
    a = reduce.Projection.load(store.path("projections", "s")).components
    b = reduce.Projection.load(store.path("projections", "s2")).components
    np.testing.assert_allclose(a, b, atol=1e-5)  # the same seeded sample, whatever the backend
    assert again.projection.metadata["fit_on"]["seed"] == 1

    put_embeddings(store, "catalog", list(range(300)), correlated(seed=3).astype(np.float32))
    for backend in ("sklearn", "streaming"):
        other = reduce.run(store, reduce.ReduceOptions("src", 4, name=f"o-{backend}", fit_on="catalog", backend=backend, memory=10**9))
        assert other.projection.metadata["fit_on"]["name"] == "catalog" and other.projection.metadata["kept_in_memory"] == 0
        assert read(store, f"o-{backend}")[0] == list(range(600))  # the source's rows, not the catalog's
    assert {u["name"] for u in other.projection.inputs["artifacts"]} == {"src", "catalog"}
    projection = reduce.Projection.load(store.path("projections", "o-streaming"))
    np.testing.assert_allclose(read(store, "o-streaming")[1], projection.transform(x), atol=1e-5)


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
    put_embeddings(store, "tiny", [1, 2, 3], correlated(n=3, d=6).astype(np.float32))
    with pytest.raises(UsageError, match="needs more than 4 rows to fit on; there are 3"):
        reduce.run(store, reduce.ReduceOptions("tiny", 4))
    with pytest.raises(ArtifactNotFound):
        reduce.run(store, reduce.ReduceOptions("nope", 2))
    with pytest.raises(UsageError, match="give either --dims or --variance"):
        reduce.run(store, reduce.ReduceOptions("small", 2, variance=0.5))
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    for backend in ("sklearn", "streaming"):
        put_embeddings(store, "nan", list(range(100, 110)), bad)
        with pytest.raises(DataError, match=r"2 rows hold NaN or inf \(ids \[103, 107\]\); nothing was written"):
            reduce.run(store, reduce.ReduceOptions("nan", 2, backend=backend))
    assert store.get("embeddings", "nan-pca2") is None and store.get("projections", "nan-pca2") is None
    with pytest.raises(UsageError, match="--backend cuml needs cuML"):
        reduce.choose_backend("cuml", 1)
    put_embeddings(store, "wide", list(range(10)), correlated(n=10, d=8).astype(np.float32))
    reduce.run(store, reduce.ReduceOptions("small", 2, name="p6"))
    with pytest.raises(DataError, match="embeddings 'wide' have 8 dims; projection 'p6' was fitted on 6"):
        reduce.apply(store, "p6", "wide")


def test_parts_with_differing_dims_are_refused(store):
    plan = store.plan("embeddings", "mixed", "test", {})
    with store.staging(plan) as staging:
        tables.write_parquet(
            tables.embeddings_table("item_id", pa.array([1, 2]), np.ones((2, 4), np.float32)), staging / tables.part_name(0)
        )
        tables.write_parquet(
            tables.embeddings_table("item_id", pa.array([3, 4]), np.ones((2, 5), np.float32)), staging / tables.part_name(1)
        )
        store.publish(plan, staging, metadata={"id_column": "item_id", "dim": 4})
    with pytest.raises(DataError, match=r"part-00001.parquet: embeddings have 5 dims, earlier parts have 4"):
        reduce.run(store, reduce.ReduceOptions("mixed", 1, backend="streaming"))


def test_streaming_covariance_matches_numpy_in_chunks():
    x = correlated(n=1000, d=12, seed=4)
    cov = reduce.Covariance(12)
    for start in range(0, 1000, 137):
        cov.add(x[start : start + 137])
    spectrum = cov.spectrum()
    np.testing.assert_allclose(spectrum.mean, x.mean(axis=0), rtol=1e-5, atol=1e-4)
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(spectrum.variance, expected, rtol=1e-4, atol=1e-7 * expected[0])  # float32 Gram
    assert spectrum.rows == 1000


@pytest.mark.parametrize("memory", [0, 10**9])
def test_the_fit_is_the_same_bits_on_one_thread_or_many(store, monkeypatch, memory):
    """The fit shifts and multiplies batches on a thread per core, each into its own buffer, and
    adds them up in batch order: the result does not depend on how many threads ran."""
    import os

    x = correlated(n=40_000, d=64, seed=2).astype(np.float32)
    put_embeddings(store, "src", list(range(40_000)), x, part_rows=2000)
    got = {}
    for cores in (1, 2, 5):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        reduce.run(store, reduce.ReduceOptions("src", 6, name=f"c{cores}", memory=memory, backend="streaming"))
        got[cores] = (reduce.Projection.load(store.path("projections", f"c{cores}")), read(store, f"c{cores}")[1])
    for cores in (2, 5):
        for field in ("mean", "components", "explained_variance", "shift"):
            np.testing.assert_array_equal(getattr(got[cores][0], field), getattr(got[1][0], field))
        np.testing.assert_array_equal(got[cores][1], got[1][1])


@pytest.mark.parametrize("memory", [0, 150 * 24 * 4, 10**9])
def test_rows_kept_in_memory_or_read_again_give_the_same_result(store, memory):
    """--memory decides which parts the transform reads again; the vectors are the same bits."""
    from sklearn.decomposition import PCA

    x = correlated(n=600, d=24).astype(np.float32)
    put_embeddings(store, "src", list(range(600)), x, part_rows=100)
    result = reduce.run(store, reduce.ReduceOptions("src", 5, name="p", memory=memory, backend="streaming"))
    kept = result.projection.metadata["kept_in_memory"]
    assert kept == pytest.approx({0: 0.0, 150 * 24 * 4: 1 / 6, 10**9: 1.0}[memory], abs=1e-3)  # whole parts: 150 rows keep one part of 100
    ids, got = read(store, "p")
    assert ids == list(range(600))
    expected = PCA(5).fit_transform(x.astype(np.float64))
    assert relative_error(got, align_signs(got, expected)) <= 1e-4
    again, _ = reduce.apply(store, "p", "src", name="again")  # every row read again: identical bits
    np.testing.assert_array_equal(read(store, "again")[1], got)


def test_memory_option_is_parsed_and_bad_values_are_refused(store):
    put_embeddings(store, "src", list(range(300)), correlated().astype(np.float32))

    def kept(name, memory):
        options = reduce.ReduceOptions("src", 4, name=name, memory=memory, backend="streaming")
        return reduce.run(store, options).projection.metadata["kept_in_memory"]

    assert kept("a", "1MB") == 1.0 and kept("b", "0") == 0.0
    # scikit-learn fits on rows in memory: they are all kept, whatever --memory says
    assert (
        reduce.run(store, reduce.ReduceOptions("src", 4, name="s", memory=0, backend="sklearn")).projection.metadata["kept_in_memory"]
        == 1.0
    )
    for bad in ("lots", "-1GB", -3):
        with pytest.raises(UsageError, match=r"invalid --memory .*: give bytes or a size such as 512MB or 4GB"):
            reduce.run(store, reduce.ReduceOptions("src", 4, name="c", memory=bad))
    assert store.get("embeddings", "c") is None
    assert 0 < reduce.default_memory() < 2**50


def test_projections_saved_before_the_shift_still_apply_as_before(store):
    """Older projection.npz files have no `shift`: rows are centred on the mean, as they were."""
    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    reduce.run(store, reduce.ReduceOptions("src", 4, name="p"))
    folder = store.path("projections", "p")
    projection = reduce.Projection.load(folder)
    old = reduce.Projection(
        projection.mean,
        projection.components,
        projection.explained_variance,
        projection.explained_variance_ratio,
        projection.whiten,
        projection.normalize,
    )
    expected = (x - projection.mean.astype(np.float32)) @ projection.components.astype(np.float32).T
    np.testing.assert_array_equal(old.transform(x), expected)
    np.testing.assert_allclose(projection.transform(x), expected, atol=1e-5)


def test_nan_in_rows_kept_or_read_again_is_refused_with_the_ids(store):
    x = correlated(n=400, d=8).astype(np.float32)
    x[350, 2] = np.nan  # in the last part: read again when the budget keeps only the first ones
    put_embeddings(store, "bad", list(range(400)), x, part_rows=100)
    for memory, backend in ((0, "streaming"), (100 * 8 * 4, "streaming"), (None, "streaming"), (None, "sklearn")):
        with pytest.raises(DataError, match=r"1 rows hold NaN or inf \(ids \[350\]\)"):
            reduce.run(store, reduce.ReduceOptions("bad", 2, memory=memory, backend=backend))
    x[350, 2] = 0
    x[0, 0] = np.inf  # in the first batch: the shift comes from the finite rows only
    put_embeddings(store, "bad2", list(range(400)), x, part_rows=100)
    with pytest.raises(DataError, match=r"1 rows hold NaN or inf \(ids \[0\]\)"):
        reduce.run(store, reduce.ReduceOptions("bad2", 2, backend="streaming"))


def test_the_gpu_code_path_with_numpy_standing_in_for_cupy(store, monkeypatch):
    """Every branch reduce takes on a GPU (rows kept on the device, host batches copied into device
    buffers, the device budget), run here with a module that is numpy under another name."""
    import sys
    import types

    from embedtab.reduce import stage

    fake = types.ModuleType("fakecupy")
    fake.__getattr__ = lambda name: getattr(np, name)
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(memGetInfo=lambda: (2 * 150 * 24 * 4, 2**34)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(stage, "gpu_arrays_available", lambda: True)
    monkeypatch.setattr(stage, "array_module", lambda use_gpu: fake if use_gpu else np)
    x = correlated(n=600, d=24).astype(np.float32)
    put_embeddings(store, "src", list(range(600)), x, part_rows=100)
    result = reduce.run(store, reduce.ReduceOptions("src", 5, name="g", backend="streaming"))
    meta = result.projection.metadata
    assert meta["device"] == "cuda" and meta["kept_in_memory"] == pytest.approx(1 / 6, abs=1e-3)  # half the "free" memory: 150 rows
    monkeypatch.setattr(stage, "gpu_arrays_available", lambda: False)
    cpu = reduce.run(store, reduce.ReduceOptions("src", 5, name="c", backend="streaming", memory=0))
    assert cpu.projection.metadata["device"] == "cpu"
    np.testing.assert_array_equal(read(store, "g")[1], read(store, "c")[1])  # the same arithmetic, bit for bit


def _write_rows(store, name, ids, vectors, row_group_rows):
    plan = store.plan("embeddings", name, "test", {"rows": row_group_rows}, force=True)
    with store.staging(plan) as staging:
        table = tables.embeddings_table("item_id", pa.array(ids, type=pa.int64()), vectors)
        pq.write_table(table, staging / tables.part_name(0), row_group_size=row_group_rows)
        return store.publish(plan, staging, metadata={"id_column": "item_id", "dim": vectors.shape[1]})


def test_the_transform_is_the_same_bits_whatever_the_row_groups(store):
    """Rows are projected in fixed blocks from the part's start on single-threaded BLAS: the row
    groups a file happens to have (another writer's) do not move a bit. BLAS kernels round a row
    differently by the shape of the product it is in, so without the blocks this differs."""
    x = correlated(n=40_000, d=256, seed=4).astype(np.float32)
    ids = list(range(40_000))
    _write_rows(store, "src", ids, x, tables.ROW_GROUP)
    _write_rows(store, "odd", ids, x, 999)
    reduce.run(store, reduce.ReduceOptions("src", 48, name="p", memory=0, backend="streaming"))
    reduce.apply(store, "p", "odd", name="odd-p")
    reduce.apply(store, "p", "src", name="src-p")
    np.testing.assert_array_equal(read(store, "odd-p")[1], read(store, "p")[1])
    np.testing.assert_array_equal(read(store, "src-p")[1], read(store, "p")[1])
