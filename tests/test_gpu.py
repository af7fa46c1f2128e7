"""GPU paths: skipped without a CUDA device; each test also skips on the library it needs (torch
with CUDA, CuPy, cuML, cuDF), so a box with only some of them runs what it can.

Tolerances are stated per precision: fp32 on the GPU differs from the CPU by summation order only
(<= 1e-4 absolute on unit vectors); fp16 autocast keeps cosine >= 0.999 to the fp32 CPU vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedtab import reduce, tables

pytestmark = pytest.mark.gpu


def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return torch


def cupy_device():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("CuPy sees no CUDA device")
    except Exception as exc:  # CUDA driver errors
        pytest.skip(f"CuPy cannot use CUDA ({exc})")
    return cupy


def vectors_of(store, name):
    return tables.read_vectors(store.path("embeddings", name))


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_cuml_pca_matches_sklearn(store):
    cupy_device()
    pytest.importorskip("cuml")
    from tests.test_reduce import correlated, put_embeddings

    x = correlated().astype(np.float32)
    put_embeddings(store, "src", list(range(300)), x)
    cpu = reduce.run(store, reduce.ReduceOptions("src", 8, name="cpu", backend="sklearn"))
    gpu = reduce.run(store, reduce.ReduceOptions("src", 8, name="gpu", backend="cuml"))
    assert gpu.projection.metadata["backend"] == "cuml" and gpu.embeddings.device == "cuda"
    a, b = vectors_of(store, "cpu"), vectors_of(store, "gpu")
    assert np.abs(a - b).max() / np.abs(a).max() <= 1e-4  # same sign convention, so no alignment needed
    assert cpu.projection.metadata["dims"] == gpu.projection.metadata["dims"]


@pytest.mark.parametrize("memory", [0, 10**9])
def test_streaming_pca_on_the_gpu_equals_sklearn_kept_on_the_device_or_read_again(store, memory):
    cupy_device()
    from sklearn.decomposition import PCA

    from tests.test_reduce import align_signs, correlated, put_embeddings, relative_error

    x = correlated(n=3000, d=32).astype(np.float32)
    put_embeddings(store, "src", list(range(3000)), x, part_rows=500)
    result = reduce.run(store, reduce.ReduceOptions("src", 8, name="p", backend="streaming", memory=memory))
    meta = result.projection.metadata
    assert meta["device"] == "cuda" and result.embeddings.device == "cuda"
    assert meta["kept_in_memory"] == (0.0 if memory == 0 else 1.0)
    got = vectors_of(store, "p")
    expected = PCA(8).fit_transform(x.astype(np.float64))
    assert relative_error(got, align_signs(got, expected)) <= 1e-4
    reduce.apply(store, "p", "src", name="again")  # cuBLAS may pick other kernels for other shapes
    np.testing.assert_allclose(vectors_of(store, "again"), got, atol=1e-5)


def test_streaming_covariance_on_the_gpu_matches_cpu():
    cupy = cupy_device()
    from embedtab.reduce import Covariance
    from tests.test_reduce import correlated

    x = correlated(n=2000, d=32).astype(np.float32)
    cpu, gpu = Covariance(32), Covariance(32, cupy)
    for start in range(0, 2000, 300):
        cpu.add(x[start : start + 300])
        gpu.add(x[start : start + 300])
    a, b = cpu.spectrum().projection(8, False, False), gpu.spectrum().projection(8, False, False)
    np.testing.assert_allclose(a.components, b.components, atol=1e-5)
    np.testing.assert_allclose(a.transform(x), cupy.asnumpy(b.transform(cupy.asarray(x), cupy)), atol=1e-4)


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_image_encoding_on_cuda_matches_cpu(store, sample, precision, tolerance):
    torch_cuda()
    from embedtab.encode import ImageOptions, run_image

    items = [str(sample / "items.parquet")]
    run_image(store, ImageOptions(inputs=items, name="cpu", model="embedtab-smoke-clip", device="cpu"))
    result = run_image(store, ImageOptions(inputs=items, name="gpu", model="embedtab-smoke-clip", device="cuda", precision=precision))
    assert result.record.device == "cuda"
    a, b = vectors_of(store, "cpu"), vectors_of(store, "gpu")
    np.testing.assert_allclose(a, b, atol=tolerance)
    if precision == "fp16":
        assert cosines(a, b).min() >= 0.999


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 5e-3)])
def test_text_encoding_on_cuda_matches_cpu(store, sample, precision, tolerance):
    torch_cuda()
    from embedtab.encode import TextOptions, run_text

    items = [str(sample / "items.parquet")]
    run_text(store, TextOptions(inputs=items, name="cpu", text_columns=["title"], device="cpu"))
    run_text(store, TextOptions(inputs=items, name="gpu", text_columns=["title"], device="cuda", precision=precision))
    a, b = vectors_of(store, "cpu"), vectors_of(store, "gpu")
    np.testing.assert_allclose(a, b, atol=tolerance)
    assert cosines(a, b).min() >= 0.999


@pytest.mark.merlin
def test_workflow_fits_on_cudf_when_present(store, sample):
    pytest.importorskip("cudf")
    from embedtab.workflow import stage
    from tests.conftest import CONFIGS

    result = stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    assert result.record.metadata["engine"] == "gpu" and result.record.device == "cuda"


def test_nvjpeg_decoding_matches_the_pillow_path(tmp_path):
    """--decode gpu against --decode cpu on the same images: the same items take the device path as
    on the CPU test (tests/encode/test_decode.py), pixels within about a grey level, cosine >= 0.999."""
    torch = torch_cuda()
    import pyarrow as pa

    from embedtab.encode.backends import OpenClipEncoder
    from embedtab.encode.encoders import Settings
    from embedtab.encode.images import load_rgb
    from embedtab.encode.loading import ImageBatches
    from tests.encode.test_decode import image_set

    encoder = OpenClipEncoder("embedtab-smoke-clip", Settings("image", "cuda", "fp32", 4, True))
    paths, device_path = image_set(tmp_path / "img")
    results = {}
    for name, tensor in (("cpu", None), ("gpu", encoder.tensor_preprocess)):
        batches = ImageBatches(pa.array(paths), encoder.preprocess, 4, 0, "cuda", 50_000_000, gpu=tensor)
        out = {}
        for indices, batch, _ in batches:
            if batch is not None:
                out.update(zip(indices, encoder.embed_batch(batch)))
        results[name] = (out, dict(batches.decoded))
    assert results["gpu"][1] == {"gpu": len(device_path), "cpu": len(paths) - 1 - len(device_path)}
    a, b = results["cpu"][0], results["gpu"][0]
    assert set(a) == set(b)
    assert min(float(a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i]))) for i in a) >= 0.999
    from torchvision.io import ImageReadMode, decode_jpeg

    for index in sorted(device_path):
        expected = encoder.preprocess(load_rgb(paths[index])).cuda()
        data = torch.frombuffer(bytearray(open(paths[index], "rb").read()), dtype=torch.uint8)
        got = encoder.tensor_preprocess([decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")])[0]
        assert float((got - expected).abs().mean()) <= 0.01
