"""The image loader: one per run, and the tensor (GPU) decoding path checked on the CPU against
the Pillow path -- same code, with torchvision decoding on the CPU instead of nvJPEG."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embedtab import tables
from embedtab.encode import ImageOptions, run_image
from embedtab.encode.encoders import Settings
from embedtab.encode.loading import ImageBatches, gpu_decodable
from embedtab.errors import UsageError


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients with texture: resizing and cropping change what a model sees."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 / width), (y * 255 / height), ((x + y) * 128 / (width + height))], axis=-1)
    noise = rng.normal(0, 20, (height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:height, :width]
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def image_set(folder) -> tuple[list[str], set[int]]:
    """Paths of plain JPEGs (the device path takes them) and of everything else, and which are which."""
    folder.mkdir(exist_ok=True)
    paths, device_path = [], set()
    sizes = [(97, 61), (64, 64), (33, 120), (200, 151), (81, 80), (150, 99)]
    for i, (w, h) in enumerate(sizes):
        path = folder / f"rgb{i}.jpg"
        photo(w, h, i).save(path, quality=92)
        device_path.add(len(paths))
        paths.append(str(path))
    path = folder / "grey.jpg"
    photo(90, 70, 7).convert("L").save(path, quality=92)
    device_path.add(len(paths))
    paths.append(str(path))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(80, 50, 8).save(folder / "rotated.jpg", exif=exif.tobytes())
    photo(70, 90, 9).convert("CMYK").save(folder / "cmyk.jpg")
    photo(60, 60, 10).save(folder / "pic.png")
    paths += [str(folder / "rotated.jpg"), str(folder / "cmyk.jpg"), str(folder / "pic.png")]
    (folder / "broken.jpg").write_bytes(io.BytesIO(open(paths[0], "rb").read()[:300]).getvalue())
    paths.append(str(folder / "broken.jpg"))
    return paths, device_path


def run_batches(encoder, paths, tensor):
    batches = ImageBatches(pa.array(paths), encoder.preprocess, 4, 0, "cpu", 50_000_000, gpu=tensor)
    out, errors = {}, {}
    for indices, batch, failed in batches:
        if batch is not None:
            for index, vector in zip(indices, encoder.embed_batch(batch)):
                out[index] = vector
        errors.update(failed)
    return out, errors, batches.decoded


def make_encoder(kind, tiny_clip):
    from embedtab.encode.backends import HuggingFaceClipEncoder, OpenClipEncoder

    settings = Settings("image", "cpu", "fp32", 4, True)
    if kind == "open_clip":
        return OpenClipEncoder("embedtab-smoke-clip", settings)
    return HuggingFaceClipEncoder(str(tiny_clip), settings)


@pytest.mark.parametrize("kind", ["open_clip", "hf-clip"])
def test_tensor_decoding_matches_the_pillow_path(tmp_path, tiny_clip, kind):  # noqa: F811
    encoder = make_encoder(kind, tiny_clip)
    assert encoder.tensor_preprocess is not None
    paths, device_path = image_set(tmp_path / "img")
    pil, pil_errors, pil_counts = run_batches(encoder, paths, None)
    dev, dev_errors, dev_counts = run_batches(encoder, paths, encoder.tensor_preprocess)
    broken = len(paths) - 1
    assert set(pil) == set(dev) == set(range(len(paths) - 1))
    assert pil_errors.keys() == dev_errors.keys() == {broken} and dev_errors[broken].startswith("corrupt image")
    assert dict(pil_counts) == {"cpu": len(paths) - 1}
    assert dict(dev_counts) == {"gpu": len(device_path), "cpu": len(paths) - 1 - len(device_path)}
    for index in pil:
        a, b = pil[index], dev[index]
        if index in device_path:
            assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.999
        else:  # rotated, CMYK, PNG: the Pillow path on both
            np.testing.assert_allclose(a, b, atol=1e-6)
    # Random-weight models barely look at their input, so compare what they are fed too: the
    # decoders agree exactly (64x64 needs no resize), resizing differs by about one grey level.
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from embedtab.encode.images import load_rgb

    for index in sorted(device_path):
        expected = encoder.preprocess(load_rgb(paths[index]))
        data = torch.frombuffer(bytearray(open(paths[index], "rb").read()), dtype=torch.uint8)
        got = encoder.tensor_preprocess([decode_jpeg(data, mode=ImageReadMode.RGB)])[0]
        assert got.shape == expected.shape
        assert float((got - expected).abs().mean()) <= 0.01  # (normalised units: 0.01 ~ 0.7 grey levels)
        assert float(got.flatten() @ expected.flatten() / (got.norm() * expected.norm())) >= 0.9999


def test_only_plain_jpegs_take_the_device_path(tmp_path):
    paths, device_path = image_set(tmp_path / "img")
    data = [open(p, "rb").read() for p in paths]
    assert {i for i, d in enumerate(data) if gpu_decodable(d, 50_000_000)} == device_path
    assert not gpu_decodable(data[0], 100)  # over --max-pixels: Pillow reports it


def test_one_loader_runs_every_shard_and_the_vectors_do_not_change(store, sample, monkeypatch):
    from embedtab.encode import loading

    made = []
    real = loading.DataLoader

    class Counting(real):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("num_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loading, "DataLoader", Counting)
    items = [str(sample / "items.parquet")]
    small = run_image(store, ImageOptions(inputs=items, name="small", model="embedtab-smoke-clip", shard_size=7, workers=1))
    assert len(made) == 1 and small.record.summary["encoded"] == 198  # 29 work shards, one loader
    assert small.record.metadata["decoded"] == {"cpu": 198, "gpu": 0}
    run_image(store, ImageOptions(inputs=items, name="big", model="embedtab-smoke-clip", shard_size=4096, workers=0))
    a = tables.read_parts(tables.part_files(store.path("embeddings", "small")))
    b = tables.read_parts(tables.part_files(store.path("embeddings", "big")))
    assert a.column("item_id").to_pylist() == b.column("item_id").to_pylist()
    np.testing.assert_array_equal(tables.vectors(a), tables.vectors(b))
    reasons = sorted(pq.read_table(store.path("embeddings", "small") / "_errors.parquet").column("reason").to_pylist())
    assert len(reasons) == 2 and reasons[0].startswith("corrupt image") and reasons[1] == "file not found"


def test_decode_option_is_checked(store, sample):
    items = [str(sample / "items.parquet")]
    with pytest.raises(UsageError, match="invalid --decode 'fast': use auto, cpu, gpu"):
        run_image(store, ImageOptions(inputs=items, name="x", model="embedtab-smoke-clip", decode="fast"))
    with pytest.raises(UsageError, match="--decode gpu needs a CUDA device; this run is on cpu"):
        run_image(store, ImageOptions(inputs=items, name="x", model="embedtab-smoke-clip", decode="gpu", device="cpu"))
    assert store.get("embeddings", "x") is None and not (store.root / "work").exists()  # refused before the scan
