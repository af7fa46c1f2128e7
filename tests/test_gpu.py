"""GPU paths: skipped here (no device); run on a machine with CUDA, CuPy, cuML and cuDF."""

from __future__ import annotations

import numpy as np
import pytest

from embedtab import reduce, tables

pytestmark = pytest.mark.gpu


def test_cuml_pca_matches_sklearn(store):
    from tests.test_reduce import correlated, put_embeddings

    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    cpu = reduce.run(store, reduce.ReduceOptions("src", 8, name="cpu", backend="sklearn"))
    gpu = reduce.run(store, reduce.ReduceOptions("src", 8, name="gpu", backend="cuml"))
    assert gpu.projection.metadata["backend"] == "cuml" and gpu.embeddings.device == "cuda"
    a = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "cpu"))))
    b = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "gpu"))))
    assert np.abs(a - b).max() / np.abs(a).max() <= 1e-4  # same sign convention, so no alignment needed
    assert cpu.projection.metadata["dims"] == gpu.projection.metadata["dims"]


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_image_encoding_on_cuda_matches_cpu(store, sample, precision, tolerance):
    from embedtab.encode import ImageOptions, run_image

    items = [str(sample / "items.parquet")]
    run_image(store, ImageOptions(inputs=items, name="cpu", model="embedtab-smoke-clip", device="cpu"))
    result = run_image(store, ImageOptions(inputs=items, name="gpu", model="embedtab-smoke-clip", device="cuda", precision=precision))
    assert result.record.device == "cuda"
    a = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "cpu"))))
    b = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "gpu"))))
    np.testing.assert_allclose(a, b, atol=tolerance)


def test_text_encoding_on_cuda_matches_cpu(store, sample):
    from embedtab.encode import TextOptions, run_text

    items = [str(sample / "items.parquet")]
    run_text(store, TextOptions(inputs=items, name="cpu", text_columns=["title"], device="cpu"))
    run_text(store, TextOptions(inputs=items, name="gpu", text_columns=["title"], device="cuda", precision="fp32"))
    a = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "cpu"))))
    b = tables.vectors(tables.read_parts(tables.part_files(store.path("embeddings", "gpu"))))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.merlin
def test_workflow_fits_on_cudf_when_present(store, sample):
    from embedtab.workflow import stage
    from tests.conftest import CONFIGS

    result = stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    assert result.record.metadata["engine"] == "gpu" and result.record.device == "cuda"


def test_streaming_pca_on_the_gpu_matches_cpu(store):
    from embedtab.reduce import Covariance
    from tests.test_reduce import correlated

    import cupy

    x = correlated(n=2000, d=32).astype(np.float32)
    cpu, gpu = Covariance(32), Covariance(32, cupy)
    for start in range(0, 2000, 300):
        cpu.add(x[start : start + 300])
        gpu.add(x[start : start + 300])
    a, b = cpu.spectrum().projection(8, False, False), gpu.spectrum().projection(8, False, False)
    np.testing.assert_allclose(a.components, b.components, atol=1e-5)
    np.testing.assert_allclose(a.transform(x), cupy.asnumpy(b.transform(cupy.asarray(x), cupy)), atol=1e-4)
